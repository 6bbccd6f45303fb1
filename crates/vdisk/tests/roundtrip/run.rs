//! One round trip: write the source disk as a raw file, convert it through the library (source
//! reader -> `create_image` -> `convert`, as `vdisk convert` does), read the result back with
//! `open_image`, and hold it against the source byte for byte, its map against `qemu-img map`,
//! against vdisk's own check, and against `qemu-img compare` and `qemu-img check`.

use crate::disk::Disk;
use crate::target::{Engine, Target, DATA_FILE};
use proptest::test_runner::TestCaseError;
use std::path::{Path, PathBuf};
use std::process::Command;
use vdisk::convert::ConvertOptions;
use vdisk::core::CreateOptions;
use vdisk::{create_image, open_backing_for, open_image, Format, ImageReader, OpenRequest};
use vdisk_testutil::{qemu_map_json, vdisk_map_json, Scratch};

pub type Outcome = Result<(), TestCaseError>;

pub fn fail(what: &str, e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("{what}: {e}"))
}

pub fn s(p: &Path) -> String {
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
        for_check: false,
    };
    open_image(path, &req).map_err(|e| fail(&format!("open {}", path.display()), e))
}

/// Runs qemu-img with `args`; the failure message holds its output.
pub fn qemu_img(args: &[&str]) -> Result<String, TestCaseError> {
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

/// Reads all of `image` in `chunk`-byte reads, spread round-robin over `threads` threads reading
/// at the same time (readers are shared by the engine's workers).
fn read_back(
    image: &dyn ImageReader,
    chunk: usize,
    threads: usize,
) -> Result<Vec<u8>, TestCaseError> {
    let size = usize::try_from(image.virtual_size()).map_err(|e| fail("virtual size", e))?;
    let mut out = vec![0u8; size];
    let mut shares: Vec<Vec<(u64, &mut [u8])>> = (0..threads.max(1)).map(|_| Vec::new()).collect();
    let n = shares.len();
    for (i, piece) in out.chunks_mut(chunk).enumerate() {
        shares[i % n].push(((i * chunk) as u64, piece));
    }
    let errors: Vec<String> = std::thread::scope(|sc| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                sc.spawn(move || {
                    for (off, piece) in share {
                        if let Err(e) = image.read_at(piece, off) {
                            return Some(format!("read {} bytes at {off:#x}: {e}", piece.len()));
                        }
                    }
                    None
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| {
                h.join()
                    .unwrap_or_else(|_| Some("reader thread panicked".into()))
            })
            .collect()
    });
    match errors.first() {
        Some(e) => Err(TestCaseError::fail(e.clone())),
        None => Ok(out),
    }
}

pub fn same_bytes(got: &[u8], want: &[u8], what: &str) -> Outcome {
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

/// Makes the `-B` image in `dir` and returns its content (padded to whole sectors, as qemu reads
/// it).
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
    roundtrip_in(&dir, disk, target, engine).map(|_| ())
}

/// [`roundtrip`] in `dir`; returns the output's path and its expected content.
pub fn roundtrip_in(
    dir: &Scratch,
    disk: &Disk,
    target: &Target,
    engine: &Engine,
) -> Result<(PathBuf, Vec<u8>), TestCaseError> {
    let base = make_backing(dir, target)?;
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
        if *k == "data_file" {
            // qemu (and vdisk) resolve a relative data file name from the working directory, not
            // from the image's: name it in the scratch directory.
            opts.set(k, &s(&dir.join(v)));
        } else {
            opts.set(k, v);
        }
    }
    let mut copts = ConvertOptions {
        workers: engine.workers,
        out_of_order: engine.out_of_order,
        min_sparse: engine.min_sparse,
        chunk_size: engine.chunk_size,
        target_is_zero: engine.target_is_zero && target.backing.is_none(),
        compress: target.compress,
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

    // With data_file_raw the external data file is itself the disk, as a raw image.
    let mut want = src_bytes;
    want.resize(size as usize, 0);
    if target
        .opts
        .iter()
        .any(|(k, v)| *k == "data_file_raw" && v == "on")
    {
        let mut data = std::fs::read(dir.join(DATA_FILE)).map_err(|e| fail("read data file", e))?;
        proptest::prop_assert!(data.len() as u64 <= size, "data file longer than the disk");
        data.resize(size as usize, 0);
        same_bytes(&data, &want, "raw external data file")?;
    }

    // vdisk reads back exactly the source (zero-padded to whole sectors), maps it as qemu does,
    // and vdisk and qemu find its metadata clean.
    check_output(&dst, target.format, &want, engine)?;
    if target.format == Format::Vpc {
        want = padded_to(&want, output_size(&dst, target.format)?);
    }

    // qemu agrees on the content.
    let fmt = target.format.name();
    qemu_img(&["compare", "-f", "raw", "-F", fmt, &s(&src), &s(&dst)])?;
    Ok((dst, want))
}

/// A second conversion, of what [`roundtrip_in`] wrote (with its backing chain, so this also
/// flattens it) into `second`, read back and checked the same way: vdisk's readers as the
/// engine's source, with their compressed, zero and unallocated extents.
pub fn second_hop(
    disk: &Disk,
    first: &Target,
    e1: &Engine,
    second: &Target,
    e2: &Engine,
) -> Outcome {
    let dir = Scratch::new("two-hops");
    let (mid, want) = roundtrip_in(&dir, disk, first, e1)?;
    let source = open(&mid, first.format, true)?.image;
    let dst = dir.join(&format!("hop2.{}", second.format.name()));
    let mut opts = CreateOptions::new();
    for (k, v) in &second.opts {
        if *k == "data_file" {
            opts.set(k, &s(&dir.join("hop2.data")));
        } else {
            opts.set(k, v);
        }
    }
    let copts = ConvertOptions {
        workers: e2.workers,
        out_of_order: e2.out_of_order,
        min_sparse: e2.min_sparse,
        chunk_size: e2.chunk_size,
        target_is_zero: e2.target_is_zero,
        compress: second.compress,
        ..ConvertOptions::default()
    };
    let writer = create_image(
        second.format,
        &dst,
        source.virtual_size(),
        &opts,
        second.compress,
    )
    .map_err(|e| fail("create_image (second hop)", e))?;
    vdisk::convert::convert(source.as_ref(), writer, &copts, &|_, _| {})
        .map_err(|e| fail("convert (second hop)", e))?;
    drop(source);
    check_output(&dst, second.format, &want, e2)?;
    qemu_img(&[
        "compare",
        "-f",
        first.format.name(),
        "-F",
        second.format.name(),
        &s(&mid),
        &s(&dst),
    ])?;
    Ok(())
}

/// Checks an image vdisk wrote against its expected content `want`: vdisk reads it back (with
/// its backing chain) in the engine's `read_chunk`-byte reads from `read_threads` threads, its
/// map is `qemu-img map`'s, and vdisk's check and `qemu-img check` find nothing wrong.
pub fn check_output(dst: &Path, format: Format, want: &[u8], engine: &Engine) -> Outcome {
    let out = open(dst, format, true)?;
    let padded;
    let want = if format == Format::Vpc && out.image.virtual_size() > want.len() as u64 {
        // Without force_size a VHD's size is rounded up to its CHS geometry, as qemu-img
        // rounds it; the sectors added read as zeros.
        padded = padded_to(want, out.image.virtual_size());
        &padded[..]
    } else {
        want
    };
    proptest::prop_assert_eq!(
        out.image.virtual_size(),
        want.len() as u64,
        "output virtual size"
    );
    let got = read_back(out.image.as_ref(), engine.read_chunk, engine.read_threads)?;
    same_bytes(&got, want, "vdisk read-back of the output")?;

    let ours = vdisk_map_json(out.image.as_ref());
    let theirs = qemu_map_json(dst, Some(format.name()));
    proptest::prop_assert!(
        ours == theirs,
        "map differs from qemu-img map:\nvdisk: {}\nqemu:  {}",
        ours,
        theirs
    );

    if format == Format::Vpc {
        // Neither qemu-img nor vdisk has a check for VHD (exit code 63).
        let unsupported = matches!(
            out.top().reader.check(),
            Err(vdisk::Error::Unsupported { .. })
        );
        proptest::prop_assert!(unsupported, "vdisk check of a VHD");
    } else if format != Format::Raw {
        let report = out
            .top()
            .reader
            .check()
            .map_err(|e| fail("vdisk check", e))?;
        proptest::prop_assert_eq!(report.exit_code(), 0, "vdisk check: {:?}", report);
        drop(out);
        qemu_img(&["check", "-f", format.name(), &s(dst)])?;
    }
    Ok(())
}

/// `want` with zeros up to `size` bytes.
fn padded_to(want: &[u8], size: u64) -> Vec<u8> {
    let mut w = want.to_vec();
    w.resize(size as usize, 0);
    w
}

/// The virtual size of the image vdisk wrote.
fn output_size(dst: &Path, format: Format) -> Result<u64, TestCaseError> {
    Ok(open(dst, format, false)?.image.virtual_size())
}

/// The content of `image` as qemu reads it (`qemu-img convert -O raw` into `tmp`).
pub fn qemu_raw(image: &Path, format: &str, tmp: &Path) -> Result<Vec<u8>, TestCaseError> {
    qemu_img(&["convert", "-f", format, "-O", "raw", &s(image), &s(tmp)])?;
    let bytes = std::fs::read(tmp).map_err(|e| fail("read qemu's raw copy", e))?;
    let _ = std::fs::remove_file(tmp);
    Ok(bytes)
}
