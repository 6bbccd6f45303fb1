//! qcow2 output through the CLI: `create -f qcow2`, `convert -O qcow2` (plain, `-c`, `-B`), and
//! `measure`, each checked with qemu-img check, compare, info and measure.

mod common;
use common::*;
use serde_json::Value;
use vdisk_testutil::{assert_qemu_check_clean, qemu_available, Scratch};

fn info(d: &std::path::Path, f: &str) -> Value {
    serde_json::from_str(&qemu_ok(d, &["info", "--output=json", f])).expect("qemu info json")
}

#[test]
fn create_qcow2_with_options_is_what_qemu_reports() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-q-create");
    let d = s.path();
    for (opts, key, want) in [
        ("compat=0.10", "compat", Value::from("0.10")),
        (
            "compat=1.1,lazy_refcounts=on",
            "lazy-refcounts",
            Value::from(true),
        ),
        ("refcount_bits=64", "refcount-bits", Value::from(64)),
        (
            "extended_l2=on,cluster_size=128k",
            "extended-l2",
            Value::from(true),
        ),
        (
            "compression_type=zstd",
            "compression-type",
            Value::from("zstd"),
        ),
    ] {
        vdisk_ok(
            d,
            &["create", "-q", "-f", "qcow2", "-o", opts, "n.qcow2", "1G"],
        );
        assert_qemu_check_clean(&d.join("n.qcow2"), "qcow2");
        let i = info(d, "n.qcow2");
        assert_eq!(i["virtual-size"], 1u64 << 30, "{opts}");
        assert_eq!(i["format-specific"]["data"][key], want, "{opts}");
        std::fs::remove_file(d.join("n.qcow2")).unwrap();
    }
}

#[test]
fn create_overlay_takes_size_from_backing() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-q-overlay");
    let d = s.path();
    make_pattern_raw(d, "base.raw", 0);
    vdisk_ok(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.raw",
            "-F",
            "raw",
            "top.qcow2",
        ],
    );
    assert_qemu_check_clean(&d.join("top.qcow2"), "qcow2");
    let i = info(d, "top.qcow2");
    assert_eq!(i["virtual-size"], 64u64 << 20);
    assert_eq!(i["backing-filename"], "base.raw");
    assert_eq!(i["backing-filename-format"], "raw");
    assert_eq!(
        qemu(d, &["compare", "base.raw", "top.qcow2"]).status.code(),
        Some(0)
    );
}

#[test]
fn convert_to_qcow2_passes_check_and_compare() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-q-convert");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 3 * 512);
    // Sources: raw, plain and compressed qcow2, VMDK, VDI, and a backing chain (overlay over raw).
    qemu_ok(d, &["convert", "-O", "qcow2", "pat.raw", "src.qcow2"]);
    qemu_ok(
        d,
        &["convert", "-c", "-O", "qcow2", "pat.raw", "srcz.qcow2"],
    );
    qemu_ok(d, &["convert", "-O", "vmdk", "pat.raw", "src.vmdk"]);
    qemu_ok(d, &["convert", "-O", "vdi", "pat.raw", "src.vdi"]);
    qemu_overlay(d, "pat.raw", "raw", "chain.qcow2", None);
    qemu_io(
        d,
        "qcow2",
        "chain.qcow2",
        &["write -P 0x5c 2M 192k", "write -z 8M 64k"],
    );
    let sources = [
        "pat.raw",
        "src.qcow2",
        "srcz.qcow2",
        "src.vmdk",
        "src.vdi",
        "chain.qcow2",
    ];
    let options: [&[&str]; 8] = [
        &[],
        &["-o", "compat=0.10"],
        &["-o", "cluster_size=4k,refcount_bits=1"],
        &["-o", "extended_l2=on"],
        &["-c"],
        &["-c", "-o", "compression_type=zstd"],
        &["-o", "preallocation=metadata"],
        &["-W", "-m", "2"],
    ];
    for src in sources {
        for args in options {
            let mut a = vec!["convert", "-O", "qcow2"];
            a.extend(args.iter().copied());
            a.extend([src, "out.qcow2"]);
            vdisk_ok(d, &a);
            assert_qemu_check_clean(&d.join("out.qcow2"), "qcow2");
            let c = qemu(d, &["compare", src, "out.qcow2"]);
            assert_eq!(c.status.code(), Some(0), "{a:?}: {}", out(&c));
            // vdisk reads back what it wrote.
            let c = vdisk(d, &["compare", src, "out.qcow2"]);
            assert_eq!(c.status.code(), Some(0), "{a:?}: {}", out(&c));
            std::fs::remove_file(d.join("out.qcow2")).unwrap();
        }
    }
}

#[test]
fn compressed_output_is_close_to_qemus() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-q-csize");
    let d = s.path();
    // 24 MiB of text-like data (words from a small vocabulary, picked by a fixed LCG) with holes:
    // compressible like real files, so that cluster data, not fixed metadata, decides the size.
    let words: Vec<&[u8]> = [
        "the ",
        "disk ",
        "image ",
        "qcow2 ",
        "cluster ",
        "\n",
        "int ",
        "return ",
        "0x7f ",
        "static ",
        "{ ",
        "} ",
        "if ",
        "else ",
        "error ",
        "refcount ",
        "table ",
        "data ",
        "vmdk ",
        "grain ",
    ]
    .iter()
    .map(|w| w.as_bytes())
    .collect();
    let mut buf = Vec::with_capacity(32 << 20);
    let mut x: u64 = 42;
    while buf.len() < 24 << 20 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        buf.extend_from_slice(words[(x >> 59) as usize % words.len()]);
        if (x >> 40) % 97 == 0 {
            buf.extend_from_slice(&x.to_le_bytes());
        }
    }
    buf.truncate(24 << 20);
    buf.extend(std::iter::repeat_n(0u8, 8 << 20));
    std::fs::write(d.join("pat.raw"), &buf).unwrap();
    for extra in [vec![], vec!["-o", "compression_type=zstd"]] {
        let mut ours = vec!["convert", "-c", "-O", "qcow2"];
        ours.extend(extra.iter().copied());
        let mut theirs = ours.clone();
        ours.extend(["pat.raw", "ours.qcow2"]);
        theirs.extend(["pat.raw", "theirs.qcow2"]);
        vdisk_ok(d, &ours);
        qemu_ok(d, &theirs);
        let (a, b) = (
            std::fs::metadata(d.join("ours.qcow2")).unwrap().len(),
            std::fs::metadata(d.join("theirs.qcow2")).unwrap().len(),
        );
        assert!(
            a as f64 <= b as f64 * 1.05,
            "{extra:?}: vdisk {a} bytes, qemu {b} bytes"
        );
    }
}

#[test]
fn measure_matches_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-measure");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    qemu_ok(d, &["convert", "-O", "qcow2", "pat.raw", "p.qcow2"]);
    for args in [
        vec!["measure", "-O", "qcow2", "--size", "10G"],
        vec!["measure", "--output=json", "-O", "qcow2", "--size", "1G"],
        vec![
            "measure",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4k",
            "--size",
            "100G",
        ],
        vec!["measure", "-O", "qcow2", "pat.raw"],
        vec!["measure", "--output=json", "-O", "qcow2", "p.qcow2"],
        vec!["measure", "-O", "raw", "p.qcow2"],
        vec!["measure", "--output=json", "-O", "raw", "--size", "3G"],
    ] {
        assert_eq!(vdisk_ok(d, &args), qemu_ok(d, &args), "{args:?}");
    }
    let o = vdisk(d, &["measure", "--size", "1G", "pat.raw"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("--size N cannot be used together with a filename."));
}
