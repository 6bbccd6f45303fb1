//! Allocation parity with qemu-img: the same source converted by `qemu-img convert` with the same
//! `-O`, `-o`, `-c` and `-S` gives an image that `qemu-img map` describes exactly as it describes
//! vdisk's (which ranges are data, zeros, unallocated or compressed; host offsets aside).

use crate::disk::Disk;
use crate::run::{fail, qemu_img, s, Outcome};
use crate::target::{Engine, Target, DATA_FILE};
use vdisk::convert::ConvertOptions;
use vdisk::core::CreateOptions;
use vdisk::{create_image, open_image, Format, OpenRequest};
use vdisk_testutil::Scratch;

/// `qemu-img map --output=json` without host offsets, from guest offset `from` on, neighbours
/// merged.
fn coverage(
    image: &std::path::Path,
    format: &str,
    from: u64,
) -> Result<Vec<String>, proptest::test_runner::TestCaseError> {
    let text = qemu_img(&["map", "--output=json", "-f", format, &s(image)])?;
    let mut out: Vec<(u64, u64, String)> = Vec::new();
    for line in text.lines() {
        // One entry per line: pick the fields by name.
        let field = |name: &str| -> Option<String> {
            let at = line.find(&format!("\"{name}\": "))? + name.len() + 4;
            let rest = &line[at..];
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            Some(rest[..end].trim().to_string())
        };
        let (Some(start), Some(len)) = (field("start"), field("length")) else {
            continue;
        };
        let start: u64 = start.parse().map_err(|e| fail("map start", e))?;
        let len: u64 = len.parse().map_err(|e| fail("map length", e))?;
        let end = start + len;
        if end <= from {
            continue;
        }
        let (start, len) = (start.max(from), end - start.max(from));
        let kind = ["depth", "present", "zero", "data", "compressed"]
            .iter()
            .map(|k| format!("{k}={}", field(k).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(" ");
        match out.last_mut() {
            Some(last) if last.2 == kind && last.0 + last.1 == start => last.1 += len,
            _ => out.push((start, len, kind)),
        }
    }
    Ok(out
        .into_iter()
        .map(|(st, len, kind)| format!("{st:#x}+{len:#x} {kind}"))
        .collect())
}

/// Options where vdisk's allocation knowingly differs from qemu-img's (contents are equal, which
/// the round-trip properties check): vdisk allocates whole clusters with `extended_l2=on` where
/// qemu leaves zero subclusters unallocated, writes whole clusters into `preallocation` images
/// where qemu leaves zero 4 KiB host blocks as holes, writes whole blocks of a static VDI where
/// qemu leaves holes, and leaves the zero ranges of a `data_file_raw` data file as holes where
/// qemu allocates them. Parity is checked without them. Both refuse `-c` into flat VMDK subformats
/// ("invalid cluster size"), so flat images are compared without `-c`.
pub fn without_known_differences(target: Target) -> Target {
    let flat = target
        .opts
        .iter()
        .any(|(k, v)| *k == "subformat" && v.ends_with("Flat"));
    let opts = target
        .opts
        .into_iter()
        .filter(|(k, _)| !["extended_l2", "preallocation", "static", "data_file_raw"].contains(k))
        .collect();
    Target {
        opts,
        backing: None,
        compress: target.compress && !flat,
        ..target
    }
}

/// Converts `disk` with vdisk and with qemu-img and compares the two images' maps.
pub fn parity(disk: &Disk, target: &Target, engine: &Engine) -> Outcome {
    let mut engine = engine.clone();
    // qemu-img scans zeros one 2 MiB buffer at a time: a zero run cut by a buffer's end is judged
    // on its own, so the chunk size must be qemu's for the same result.
    engine.chunk_size = 2 << 20;
    let engine = &engine;
    let dir = Scratch::new("parity");
    let src = dir.join("src.raw");
    disk.write_raw(&src, None)
        .map_err(|e| fail("write source", e))?;
    let fmt = target.format.name();
    let ours = dir.join(&format!("v.{fmt}"));
    let theirs = dir.join(&format!("q.{fmt}"));
    let mut opts = CreateOptions::new();
    let mut qopts = Vec::new();
    for (k, v) in &target.opts {
        let v = if *k == "data_file" {
            s(&dir.join(v))
        } else {
            v.clone()
        };
        opts.set(k, &v);
        let qv = if *k == "data_file" {
            s(&dir.join(&format!("q-{DATA_FILE}")))
        } else {
            v
        };
        qopts.push(format!("{k}={qv}"));
    }
    let req = OpenRequest {
        format: Some(Format::Raw),
        snapshot: None,
        follow_backing: false,
        for_check: false,
    };
    let source = open_image(&src, &req)
        .map_err(|e| fail("open source", e))?
        .image;
    let writer = create_image(
        target.format,
        &ours,
        source.virtual_size(),
        &opts,
        target.compress,
    )
    .map_err(|e| fail("create_image", e))?;
    let copts = ConvertOptions {
        workers: engine.workers,
        out_of_order: engine.out_of_order,
        min_sparse: engine.min_sparse,
        chunk_size: engine.chunk_size,
        compress: target.compress,
        ..ConvertOptions::default()
    };
    vdisk::convert::convert(source.as_ref(), writer, &copts, &|_, _| {})
        .map_err(|e| fail("convert", e))?;
    drop(source);

    let sparse = engine.min_sparse.to_string();
    let mut args = vec!["convert", "-f", "raw", "-O", fmt, "-S", &sparse];
    let joined = qopts.join(",");
    if !qopts.is_empty() {
        args.extend(["-o", &joined]);
    }
    if target.compress {
        args.push("-c");
    }
    let (src_s, theirs_s) = (s(&src), s(&theirs));
    args.extend([src_s.as_str(), theirs_s.as_str()]);
    qemu_img(&args)?;

    // qemu-img allocates the first 4 KiB of every new image file it creates (file-posix's
    // allocate_first_block); vdisk does so for raw images but not for flat VMDK extents, whose map
    // shows the host file's allocation: compare flat VMDKs from 4 KiB on.
    let flat = target
        .opts
        .iter()
        .any(|(k, v)| *k == "subformat" && v.ends_with("Flat"));
    let from = if flat { 4096 } else { 0 };
    let a = coverage(&ours, fmt, from)?;
    let b = coverage(&theirs, fmt, from)?;
    proptest::prop_assert!(
        a == b,
        "qemu-img map of vdisk's output:\n  {}\nqemu-img map of qemu-img's output:\n  {}",
        a.join("\n  "),
        b.join("\n  ")
    );
    Ok(())
}
