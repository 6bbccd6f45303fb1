//! `vdisk convert -C` (copy offloading) end to end, against `qemu-img convert -C`: the same bytes
//! from every source format, the same allocation where both tools offload (raw and qcow2 sources)
//! or both fall back to reading (compressed clusters), and qemu-img's refusals of `-C` with `-c`
//! and `-S`.

mod common;
use common::*;
use vdisk_testutil::{
    assert_qemu_check_clean, assert_qemu_compare_equal, assert_same_bytes, qemu_available,
    qemu_raw_bytes, Scratch,
};

const SIZE: &str = "64M";

/// A new `SIZE` image of `fmt` (with `-o opts`) holding patterned data, a zero cluster, a cluster
/// of zero-filled data (allocated, all zeros) and a cluster of data with 4 KiB of zeros inside
/// it, made by qemu-img and written by qemu-io.
fn make_filled(dir: &std::path::Path, fmt: &str, name: &str, opts: Option<&str>) {
    let mut create = vec!["create", "-q", "-f", fmt];
    if let Some(o) = opts {
        create.extend(["-o", o]);
    }
    create.extend([name, SIZE]);
    qemu_ok(dir, &create);
    qemu_io(
        dir,
        fmt,
        name,
        &[
            "write -P 0x11 0 64k",
            "write -P 0x22 1M 1M",
            "write -P 0x33 5M 4k",
            "write -P 0x44 8M 3M",
            "write -P 0 20M 64k",
            "write -P 0x77 24M 64k",
            "write -P 0 25174016 4k",
            "write -P 0x55 40M 512",
            "write -P 0x66 67043328 64k",
        ],
    );
}

/// Asserts that `out` (raw) holds what `qemu-img convert -O raw` reads from `src`.
fn assert_reads_like(out: &std::path::Path, src: &std::path::Path, fmt: &str, what: &str) {
    let oracle = qemu_raw_bytes(src, Some(fmt));
    let got = std::fs::read(out).unwrap();
    assert_same_bytes(&got, &oracle, what);
}

fn convert_both(dir: &std::path::Path, src: &str, fmt: &str) -> (String, String) {
    let (ours, theirs) = (format!("{src}.vdisk.raw"), format!("{src}.qemu.raw"));
    vdisk_ok(dir, &["convert", "-C", "-f", fmt, "-O", "raw", src, &ours]);
    qemu_ok(
        dir,
        &["convert", "-C", "-f", fmt, "-O", "raw", src, &theirs],
    );
    assert_reads_like(
        &dir.join(&ours),
        &dir.join(src),
        fmt,
        &format!("convert -C of {src}"),
    );
    assert_qemu_compare_equal(&dir.join(src), &dir.join(&ours));
    (ours, theirs)
}

/// Raw and qcow2 sources (plain, an overlay reading through to its backing file, an external
/// data file) are offloaded by both tools: zero-filled data stays allocated, with no zero
/// detection; compressed clusters are read by both, so their zeros become holes.
#[test]
fn convert_c_offloads_raw_and_qcow2_sources_as_qemu_does() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-copy-offload");
    let d = s.path();
    make_filled(d, "raw", "src.raw", None);
    make_filled(d, "qcow2", "src.qcow2", None);
    qemu_ok(
        d,
        &[
            "convert",
            "-q",
            "-c",
            "-O",
            "qcow2",
            "src.qcow2",
            "comp.qcow2",
        ],
    );
    qemu_overlay(d, "src.qcow2", "qcow2", "top.qcow2", None);
    qemu_io(
        d,
        "qcow2",
        "top.qcow2",
        &["write -P 0x99 1536k 1M", "write -z 8M 64k"],
    );
    // An absolute name: qemu resolves a relative data_file name from its working directory.
    let data_opt = format!("data_file={}", d.join("ext.data").display());
    make_filled(d, "qcow2", "ext.qcow2", Some(&data_opt));
    for (src, fmt) in [
        ("src.raw", "raw"),
        ("src.qcow2", "qcow2"),
        ("comp.qcow2", "qcow2"),
        ("top.qcow2", "qcow2"),
        ("ext.qcow2", "qcow2"),
    ] {
        let (ours, theirs) = convert_both(d, src, fmt);
        assert_eq!(
            qemu_map_kinds(d, "raw", &ours),
            qemu_map_kinds(d, "raw", &theirs),
            "{src}: allocation of the -C output differs from qemu-img's"
        );
    }
    // The check that the offloaded path ran: without -C the zero-filled cluster at 20M becomes a
    // hole; with it, it is copied as data.
    let kinds = qemu_map_kinds(d, "raw", "src.qcow2.vdisk.raw");
    let at_20m = kinds
        .iter()
        .find(|(start, len, _, _)| *start <= 20 << 20 && (20 << 20) < start + len)
        .unwrap();
    assert!(
        at_20m.2,
        "zero-filled data was not copied as data: {kinds:?}"
    );
    vdisk_ok(d, &["convert", "-O", "raw", "src.qcow2", "plain.raw"]);
    let kinds = qemu_map_kinds(d, "raw", "plain.raw");
    let at_20m = kinds
        .iter()
        .find(|(start, len, _, _)| *start <= 20 << 20 && (20 << 20) < start + len)
        .unwrap();
    assert!(!at_20m.2, "without -C zeros must become holes: {kinds:?}");
}

/// VMDK and VDI data is offloaded too (qemu-img has no copy offloading for these formats and
/// falls back to reading, so its outputs are sparser where the source stores zero-filled data;
/// the bytes are the same).
#[test]
fn convert_c_copies_vmdk_and_vdi_sources_byte_for_byte() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-copy-offload-vmdk");
    let d = s.path();
    for (name, fmt, opts) in [
        ("sparse.vmdk", "vmdk", "subformat=monolithicSparse"),
        ("flat.vmdk", "vmdk", "subformat=monolithicFlat"),
        ("split.vmdk", "vmdk", "subformat=twoGbMaxExtentFlat"),
        ("dyn.vdi", "vdi", "static=off"),
        ("static.vdi", "vdi", "static=on"),
    ] {
        make_filled(d, fmt, name, Some(opts));
        convert_both(d, name, fmt);
    }
}

/// Into qcow2 (appended clusters, preallocated metadata, an external data file, small clusters),
/// both tools copy whole clusters of data without zero detection: the same clusters are
/// allocated, and the images check clean and compare equal to their source.
#[test]
fn convert_c_into_qcow2_allocates_what_qemu_does() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-copy-offload-qcow2-out");
    let d = s.path();
    make_filled(d, "raw", "src.raw", None);
    make_filled(d, "qcow2", "src.qcow2", None);
    for (src, fmt) in [("src.raw", "raw"), ("src.qcow2", "qcow2")] {
        for (tag, opts) in [
            ("plain", String::new()),
            ("meta", "preallocation=metadata".to_string()),
            ("small", "cluster_size=4k".to_string()),
            ("ext", "data_file=".to_string()),
        ] {
            let mut out = Vec::new();
            for tool in ["vdisk", "qemu"] {
                let name = format!("{src}.{tag}.{tool}.qcow2");
                let o = if tag == "ext" {
                    format!("data_file={}", d.join(format!("{name}.data")).display())
                } else {
                    opts.clone()
                };
                let mut a = vec!["convert", "-C", "-f", fmt, "-O", "qcow2"];
                if !o.is_empty() {
                    a.extend(["-o", &o]);
                }
                a.extend([src, &name]);
                if tool == "vdisk" {
                    vdisk_ok(d, &a);
                } else {
                    qemu_ok(d, &a);
                }
                out.push(name);
            }
            assert_qemu_check_clean(&d.join(&out[0]), "qcow2");
            assert_qemu_compare_equal(&d.join(src), &d.join(&out[0]));
            // With preallocated metadata, qemu leaves the unwritten part of a cluster a hole of
            // the file (read as zeros) where vdisk writes the whole cluster: compare which
            // clusters hold data there, not the zero flags.
            let kinds = |name: &str| {
                let k = qemu_map_kinds(d, "qcow2", name);
                if tag != "meta" {
                    return k;
                }
                let mut merged: Vec<(u64, u64, bool, bool)> = Vec::new();
                for (start, len, data, _) in k {
                    match merged.last_mut() {
                        Some(m) if m.2 == data => m.1 += len,
                        _ => merged.push((start, len, data, false)),
                    }
                }
                merged
            };
            assert_eq!(
                kinds(&out[0]),
                kinds(&out[1]),
                "{src} -> qcow2 {tag}: allocation differs from qemu-img -C"
            );
        }
    }
}

/// `-n -C` into an existing raw file full of other bytes: the copies are made in place (no write
/// pool) and the source's zeros overwrite what was there.
#[test]
fn convert_n_c_copies_into_an_existing_raw_file() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-copy-offload-existing");
    let d = s.path();
    make_filled(d, "qcow2", "src.qcow2", None);
    qemu_ok(d, &["create", "-q", "-f", "raw", "dst.raw", SIZE]);
    qemu_io(d, "raw", "dst.raw", &["write -P 0xff 0 64M"]);
    vdisk_ok(
        d,
        &["convert", "-n", "-C", "-O", "raw", "src.qcow2", "dst.raw"],
    );
    assert_reads_like(
        &d.join("dst.raw"),
        &d.join("src.qcow2"),
        "qcow2",
        "convert -n -C into an existing file",
    );
}

/// A source on another filesystem (tmpfs) than the output: where the kernel refuses to copy
/// between them, the range is read and written instead, with the same result.
#[test]
fn convert_c_across_filesystems_gives_the_same_bytes() {
    if !qemu_available() {
        return;
    }
    let shm = std::path::Path::new("/dev/shm");
    let s = Scratch::new("cli-copy-offload-xfs");
    let d = s.path();
    let src_name = format!("vdisk-copy-offload-{}.qcow2", std::process::id());
    let src = if shm.is_dir() {
        shm.join(&src_name)
    } else {
        d.join(&src_name)
    };
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = Remove(src.clone());
    let src_s = src.to_str().unwrap();
    make_filled(d, "qcow2", src_s, None);
    vdisk_ok(d, &["convert", "-C", "-O", "raw", src_s, "out.raw"]);
    assert_reads_like(
        &d.join("out.raw"),
        &src,
        "qcow2",
        "convert -C from another filesystem",
    );
}

/// qemu-img's refusals, with its messages and exit code 1, and no output left behind.
#[test]
fn convert_c_refuses_compression_and_explicit_sparse_size_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-copy-offload-refuse");
    let d = s.path();
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "src.qcow2", "1M"]);
    for args in [
        vec!["convert", "-C", "-c", "-O", "qcow2", "src.qcow2", "out"],
        vec!["convert", "-C", "-S", "4k", "-O", "raw", "src.qcow2", "out"],
        vec!["convert", "-C", "-S", "0", "-O", "raw", "src.qcow2", "out"],
    ] {
        let ours = vdisk(d, &args);
        let theirs = qemu(d, &args);
        assert_eq!(ours.status.code(), Some(1), "{args:?}: {}", err(&ours));
        assert_eq!(theirs.status.code(), Some(1), "{args:?}: {}", err(&theirs));
        let msg = err(&theirs);
        let msg = msg.trim().trim_start_matches("qemu-img: ");
        assert!(
            err(&ours).contains(msg),
            "{args:?}: vdisk said {:?}, qemu-img {msg:?}",
            err(&ours)
        );
        assert!(!d.join("out").exists(), "{args:?} left an output");
    }
}
