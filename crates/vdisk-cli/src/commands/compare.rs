//! `vdisk compare`: qemu-img compare's verdicts, messages and exit codes (2 when an image cannot be
//! opened).

use super::{check_cache, parse_format};
use crate::progress::QemuProgress;
use std::path::Path;
use std::sync::Arc;
use vdisk::chain::{open_image, OpenRequest};
use vdisk::convert::compare::CompareEvent;
use vdisk::core::{ImageReader, Result};

#[allow(clippy::too_many_arguments)]
pub(super) fn compare(
    format_a: Option<String>,
    format_b: Option<String>,
    strict: bool,
    quiet: bool,
    progress: bool,
    cache: &str,
    first: &Path,
    second: &Path,
) -> Result<u8> {
    // Before the images are opened, as in qemu-img: a failed open still ends the output's line.
    let bar = QemuProgress::new(progress && !quiet, 2.0);
    if let Err(e) = check_cache(cache, "source cache option") {
        // compare's exit code for errors.
        eprintln!("vdisk: {e}");
        return Ok(2);
    }
    let open = |p: &Path, f: Option<String>| -> std::result::Result<Arc<dyn ImageReader>, u8> {
        let req = OpenRequest {
            format: parse_format(f).map_err(|e| {
                eprintln!("vdisk: {e}");
                2u8
            })?,
            snapshot: None,
            follow_backing: true,
            for_check: false,
        };
        // qemu-img opens both for I/O: an image it cannot read is an open error (exit 2).
        open_image(p, &req)
            .and_then(|i| i.image.ready_for_io().map(|()| i.image))
            .map_err(|e| {
                eprintln!("vdisk: {e}");
                2u8
            })
    };
    let a = match open(first, format_a) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    let b = match open(second, format_b) {
        Ok(b) => b,
        Err(code) => return Ok(code),
    };
    bar.print(0.0, 100);
    let outcome = vdisk::convert::compare::compare_watched(
        a.as_ref(),
        b.as_ref(),
        strict,
        &mut |e| match e {
            CompareEvent::Advanced { bytes, of } => bar.advance(bytes, of),
            CompareEvent::SizeMismatch if !quiet => println!("Warning: Image size mismatch!"),
            CompareEvent::SizeMismatch => {}
        },
    )?;
    if let (false, Some(line)) = (quiet, outcome.verdict_line()) {
        println!("{line}");
    }
    if let Some(msg) = outcome.error_message(&first.to_string_lossy(), &second.to_string_lossy()) {
        eprintln!("vdisk: {msg}");
    }
    Ok(outcome.exit_code() as u8)
}
