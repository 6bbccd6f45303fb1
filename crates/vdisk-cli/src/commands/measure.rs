//! `vdisk measure`: the file size a new raw or qcow2 image needs, as qemu-img measure computes it.

use super::{parse_format, parse_snapshot, print_out};
use crate::cli::OutputFormat;
use std::path::Path;
use vdisk::chain::{open_image, OpenRequest};
use vdisk::core::size::parse_size;
use vdisk::core::{CreateOptions, Error, Format, Result};

#[allow(clippy::too_many_arguments)]
pub(super) fn measure(
    output_format: &str,
    options: &[String],
    size: Option<String>,
    format: Option<String>,
    snapshot: Option<String>,
    output: OutputFormat,
    filename: Option<&Path>,
) -> Result<u8> {
    let out_fmt: Format = output_format.parse()?;
    let opts = CreateOptions::parse(options)?;
    let source = match (filename, size.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "--size N cannot be used together with a filename.",
            ))
        }
        (None, None) => {
            return Err(Error::invalid(
                "Either --size N or one filename must be specified.",
            ))
        }
        (Some(f), None) => {
            let req = OpenRequest {
                format: parse_format(format)?,
                snapshot: snapshot.as_deref().map(parse_snapshot),
                follow_backing: true,
                for_check: false,
            };
            Some(open_image(f, &req)?.image)
        }
        (None, Some(_)) => None,
    };
    let virtual_size = match (&source, size.as_deref()) {
        (Some(s), _) => s.virtual_size(),
        (None, Some(s)) => parse_size(s)?,
        (None, None) => 0,
    };
    let (required, fully, bitmaps) = match out_fmt {
        Format::Raw => {
            opts.ensure_known("raw", vdisk::create_options(Format::Raw)?)?;
            (virtual_size, virtual_size, None)
        }
        Format::Qcow2 => {
            let m = vdisk::qcow2::measure::measure(virtual_size, &opts, source.as_deref())?;
            (m.required, m.fully_allocated, m.bitmaps)
        }
        other => {
            return Err(Error::invalid(format!(
                "Block driver '{other}' does not support size measurement"
            )));
        }
    };
    let text = match output {
        OutputFormat::Human => {
            let mut t = format!("required size: {required}\nfully allocated size: {fully}\n");
            if let Some(b) = bitmaps {
                t.push_str(&format!("bitmaps size: {b}\n"));
            }
            t
        }
        OutputFormat::Json => {
            let mut m = serde_json::Map::new();
            if let Some(b) = bitmaps {
                m.insert("bitmaps".into(), b.into());
            }
            m.insert("required".into(), required.into());
            m.insert("fully-allocated".into(), fully.into());
            crate::json::to_qemu_pretty(&serde_json::Value::Object(m)) + "\n"
        }
    };
    print_out(&text)?;
    Ok(0)
}
