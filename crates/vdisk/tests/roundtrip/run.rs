//! One round trip: write the source disk as a raw file, convert it through the library (source
//! reader -> `create_image` -> `convert`, as `vdisk convert` does), read the result back with
//! `open_image`, and hold it against the source byte for byte, its map against `qemu-img map`,
//! against vdisk's own check, and against `qemu-img compare` and `qemu-img check`.

use crate::disk::Disk;
use crate::target::{Engine, Target};
use proptest::test_runner::TestCaseError;
use std::path::Path;
use std::process::Command;
use vdisk::convert::ConvertOptions;
use vdisk::core::CreateOptions;
use vdisk::{create_image, open_backing_for, open_image, Format, ImageReader, OpenRequest};
use vdisk_testutil::{qemu_map_json, vdisk_map_json, Scratch};

type Outcome = Result<(), TestCaseError>;

fn fail(what: &str, e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("{what}: {e}"))
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn open(
    path: &Path,
    format: Format,
    follow_backing: bool,
) -> Result<vdisk::OpenedImage, TestCaseError> {
    let req = OpenRequest {
        format: Some(format),
        snapshot: None,
        follow_backing,
    };
    open_image(path, &req).map_err(|e| fail(&format!("open {}", path.display()), e))
}

/// Runs qemu-img with `args`; the failure message holds its output.
fn qemu_img(args: &[&str]) -> Result<String, TestCaseError> {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .map_err(|e| fail("run qemu-img", e))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(TestCaseError::fail(format!(
            "qemu-img {} failed ({}):\n{text}",
            args.join(" "),
            out.status
        )))
    }
}

/// Reads all of `image` in `chunk`-byte reads.
fn read_back(image: &dyn ImageReader, chunk: usize) -> Result<Vec<u8>, TestCaseError> {
    let size = usize::try_from(image.virtual_size()).map_err(|e| fail("virtual size", e))?;
    let mut out = vec![0u8; size];
    for (i, piece) in out.chunks_mut(chunk).enumerate() {
        let off = (i * chunk) as u64;
        image
            .read_at(piece, off)
            .map_err(|e| fail(&format!("read {} bytes at {off:#x}", piece.len()), e))?;
    }
    Ok(out)
}

fn same_bytes(got: &[u8], want: &[u8], what: &str) -> Outcome {
    if got.len() != want.len() {
        return Err(TestCaseError::fail(format!(
            "{what}: {} bytes, expected {}",
            got.len(),
            want.len()
        )));
    }
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let end = got[i..]
            .iter()
            .zip(&want[i..])
            .position(|(a, b)| a == b)
            .map_or(got.len(), |n| i + n);
        return Err(TestCaseError::fail(format!(
            "{what}: bytes differ from {i:#x} to {end:#x} (first: got {:#04x}, expected {:#04x})",
            got[i], want[i]
        )));
    }
    Ok(())
}

fn round_up_512(n: u64) -> u64 {
    n.div_ceil(512) * 512
}

/// Makes the `-B` image in `dir` and returns its content (padded to whole sectors, as qemu reads it).
fn make_backing(dir: &Scratch, target: &Target) -> Result<Option<Vec<u8>>, TestCaseError> {
    let (Some(b), Some(name)) = (&target.backing, target.backing_name()) else {
        return Ok(None);
    };
    let raw = dir.join("backing-src.raw");
    let mut content = b
        .disk
        .write_raw(&raw, None)
        .map_err(|e| fail("write backing", e))?;
    content.resize(round_up_512(b.disk.len) as usize, 0);
    let dest = dir.join(&name);
    match b.format {
        Format::Raw => std::fs::rename(&raw, &dest).map_err(|e| fail("rename backing", e))?,
        Format::Qcow2 => {
            let o = format!("cluster_size={}", b.cluster_size);
            qemu_img(&[
                "convert",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-o",
                &o,
                &s(&raw),
                &s(&dest),
            ])?;
        }
        other => {
            qemu_img(&[
                "convert",
                "-f",
                "raw",
                "-O",
                other.name(),
                &s(&raw),
                &s(&dest),
            ])?;
        }
    }
    Ok(Some(content))
}

/// Converts `disk` as `target` and `engine` say and checks the result.
pub fn roundtrip(disk: &Disk, target: &Target, engine: &Engine) -> Outcome {
    let dir = Scratch::new("roundtrip");
    let base = make_backing(&dir, target)?;
    let src = dir.join("src.raw");
    let src_bytes = disk
        .write_raw(&src, base.as_deref())
        .map_err(|e| fail("write source", e))?;
    let source = open(&src, Format::Raw, false)?.image;
    let size = source.virtual_size();
    proptest::prop_assert_eq!(size, round_up_512(disk.len), "raw reader's virtual size");

    let dst = dir.join(&target.file_name());
    let mut opts = CreateOptions::new();
    for (k, v) in &target.opts {
        opts.set(k, v);
    }
    let mut copts = ConvertOptions {
        workers: engine.workers,
        out_of_order: engine.out_of_order,
        min_sparse: engine.min_sparse,
        chunk_size: engine.chunk_size,
        target_is_zero: engine.target_is_zero && target.backing.is_none(),
        ..ConvertOptions::default()
    };
    if let (Some(b), Some(name)) = (&target.backing, target.backing_name()) {
        opts.set("backing_file", &name);
        opts.set("backing_fmt", b.format.name());
        let chain =
            open_backing_for(&dst, &name, Some(b.format)).map_err(|e| fail("open -B", e))?;
        copts.backing = Some(chain.image);
    }
    let writer = create_image(target.format, &dst, size, &opts, target.compress)
        .map_err(|e| fail("create_image", e))?;
    vdisk::convert::convert(source.as_ref(), writer, &copts, &|_, _| {})
        .map_err(|e| fail("convert", e))?;
    drop(source);

    // The source is left as it was.
    let after = std::fs::read(&src).map_err(|e| fail("read source", e))?;
    same_bytes(&after, &src_bytes, "source file after convert")?;

    // vdisk reads back exactly the source (zero-padded to whole sectors).
    let mut want = src_bytes;
    want.resize(size as usize, 0);
    let out = open(&dst, target.format, true)?;
    proptest::prop_assert_eq!(out.image.virtual_size(), size, "output virtual size");
    let got = read_back(out.image.as_ref(), engine.read_chunk)?;
    same_bytes(&got, &want, "vdisk read-back of the output")?;

    // vdisk's map of the output (with its backing chain) is qemu's.
    let ours = vdisk_map_json(out.image.as_ref());
    let theirs = qemu_map_json(&dst, Some(target.format.name()));
    proptest::prop_assert!(
        ours == theirs,
        "map differs from qemu-img map:\nvdisk: {}\nqemu:  {}",
        ours,
        theirs
    );

    // vdisk's own check finds nothing wrong.
    if target.format != Format::Raw {
        let report = out
            .top()
            .reader
            .check()
            .map_err(|e| fail("vdisk check", e))?;
        proptest::prop_assert_eq!(report.exit_code(), 0, "vdisk check: {:?}", report);
    }
    drop(out);

    // qemu agrees: same content, clean metadata.
    let fmt = target.format.name();
    qemu_img(&["compare", "-f", "raw", "-F", fmt, &s(&src), &s(&dst)])?;
    if target.format != Format::Raw {
        qemu_img(&["check", "-f", fmt, &s(&dst)])?;
    }
    Ok(())
}
