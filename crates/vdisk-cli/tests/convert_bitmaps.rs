//! `convert --bitmaps` (and `--skip-broken-bitmaps`): the persistent bitmaps of a qcow2 source
//! copied into a new qcow2 image, or with `-n` into an existing one (beside its own bitmaps),
//! compared with qemu-img's copy of the same source: the same bitmaps in `info`, the same bits, a
//! clean `check`, qemu-img reading the bits vdisk wrote, and qemu-img's errors.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use vdisk_testutil::{assert_qemu_check_clean, qemu_available, Scratch};

/// (name, enabled, granularity bits, bits) of each bitmap, as vdisk reads them.
fn bitmaps_of(path: &Path) -> Vec<(String, bool, u32, Vec<u8>)> {
    let s = Arc::new(vdisk::core::FileStorage::open(path).unwrap());
    let files = Arc::new(vdisk::core::storage::HostFiles);
    let r = vdisk::qcow2::open(s, files, &Default::default()).unwrap();
    vdisk::qcow2::mutate::read_persistent_bitmaps(&r)
        .unwrap()
        .into_iter()
        .map(|b| (b.name_text(), b.enabled, b.granularity_bits, b.bits))
        .collect()
}

/// s.qcow2 (64 MiB): data, then bitmaps b1 (64 KiB), b2 (128 KiB), b3 (disabled) and b4 (1 MiB,
/// 100 MiB of disk would need more than one 4 KiB cluster of bits at 512 bytes), then writes that
/// the enabled ones record.
fn source(d: &Path) {
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "s.qcow2", "64M"]);
    qemu_io(d, "qcow2", "s.qcow2", &["write -P 1 0 4M"]);
    for add in [
        &["bitmap", "--add", "s.qcow2", "b1"][..],
        &["bitmap", "--add", "-g", "128k", "s.qcow2", "b2"],
        &["bitmap", "--add", "--disable", "s.qcow2", "b3"],
        &["bitmap", "--add", "-g", "512", "s.qcow2", "b4"],
    ] {
        qemu_ok(d, add);
    }
    qemu_io(
        d,
        "qcow2",
        "s.qcow2",
        &["write -P 2 8M 1M", "write -P 3 40M 4k", "write -z 63M 512"],
    );
}

fn format_specific_bitmaps(d: &Path, f: &str) -> Value {
    let v: Value = serde_json::from_str(&qemu_ok(d, &["info", "--output=json", f])).unwrap();
    v["format-specific"]["data"]["bitmaps"].clone()
}

#[test]
fn bitmaps_are_copied_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-bitmaps");
    let d = s.path();
    source(d);
    let src = bitmaps_of(&d.join("s.qcow2"));
    assert_eq!(src.len(), 4);
    assert!(src[0].3.iter().any(|b| *b != 0), "b1 recorded the writes");
    for (i, extra) in [
        &[][..],
        &["-o", "cluster_size=4096"],
        &["-c"],
        &["-o", "extended_l2=on"],
    ]
    .iter()
    .enumerate()
    {
        let (ours, theirs) = (format!("ours{i}.qcow2"), format!("theirs{i}.qcow2"));
        let args = |out: &str| -> Vec<String> {
            let mut a = vec!["convert", "--bitmaps", "-O", "qcow2"];
            a.extend(extra.iter());
            a.extend(["s.qcow2", out]);
            a.into_iter().map(String::from).collect()
        };
        let v = args(&ours);
        vdisk_ok(d, &v.iter().map(String::as_str).collect::<Vec<_>>());
        let q = args(&theirs);
        qemu_ok(d, &q.iter().map(String::as_str).collect::<Vec<_>>());
        assert_qemu_check_clean(&d.join(&ours), "qcow2");
        qemu_ok(d, &["compare", &ours, "s.qcow2"]);
        assert_eq!(
            format_specific_bitmaps(d, &ours),
            format_specific_bitmaps(d, &theirs),
            "{extra:?}"
        );
        assert_eq!(bitmaps_of(&d.join(&ours)), src, "{extra:?}");
        assert_eq!(bitmaps_of(&d.join(&theirs)), src, "{extra:?}");
    }
    // qemu-img reads the bits vdisk wrote: merged into a new bitmap of a qemu-made image.
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "c.qcow2", "64M"]);
    for (name, _, gran, bits) in &src {
        let g = (1u64 << gran).to_string();
        qemu_ok(d, &["bitmap", "--add", "-g", &g, "c.qcow2", name]);
        qemu_ok(
            d,
            &[
                "bitmap",
                "--merge",
                name,
                "-b",
                "ours1.qcow2",
                "-F",
                "qcow2",
                "c.qcow2",
                name,
            ],
        );
        let merged = bitmaps_of(&d.join("c.qcow2"));
        let m = merged.iter().find(|b| &b.0 == name).unwrap();
        assert_eq!(&m.3, bits, "{name} as qemu-img read it");
    }
}

#[test]
fn bitmap_refusals_match_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-bitmaps-refused");
    let d = s.path();
    source(d);
    qemu_ok(d, &["convert", "-O", "raw", "s.qcow2", "s.raw"]);
    qemu_ok(
        d,
        &[
            "convert",
            "-O",
            "qcow2",
            "-o",
            "compat=0.10",
            "s.raw",
            "v2.qcow2",
        ],
    );
    for (i, args) in [
        &["--bitmaps", "-O", "raw", "s.qcow2"][..],
        &["--bitmaps", "-O", "vdi", "s.qcow2"],
        &["--bitmaps", "-O", "qcow2", "-o", "compat=0.10", "s.qcow2"],
        &["--skip-broken-bitmaps", "-O", "qcow2", "s.qcow2"],
        &["--bitmaps", "-O", "qcow2", "s.raw"],
        &["--bitmaps", "-O", "qcow2", "v2.qcow2"],
        &["--bitmaps", "-f", "raw", "-O", "qcow2", "s.qcow2"],
        &["--bitmaps", "-O", "qcow2", "s.qcow2", "s.qcow2"],
    ]
    .iter()
    .enumerate()
    {
        let (ours, theirs) = (format!("ours{i}"), format!("theirs{i}"));
        let mut a = vec!["convert"];
        a.extend(args.iter());
        let v = vdisk(d, &[&a[..], &[ours.as_str()]].concat());
        let q = qemu(d, &[&a[..], &[theirs.as_str()]].concat());
        assert_eq!(v.status.code(), Some(1), "{a:?}: {}", err(&v));
        assert_eq!(q.status.code(), Some(1), "{a:?}: {}", err(&q));
        assert_eq!(first_message(&err(&v)), first_message(&err(&q)), "{a:?}");
        // vdisk fails before it writes (qemu-img may leave the image it created).
        assert!(!d.join(&ours).exists(), "{a:?}");
    }
}

#[test]
fn inconsistent_bitmaps_fail_or_are_skipped_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-bitmaps-in-use");
    let d = s.path();
    source(d);
    // qemu-io marks the enabled bitmaps in use while it has the image open; killed, it leaves
    // them so: inconsistent.
    let o = qemu_io_killed(d);
    assert!(!o.status.success());
    let base = ["convert", "--bitmaps", "-O", "qcow2", "s.qcow2"];
    let (v, q) = (
        vdisk(d, &[&base[..], &["ours.qcow2"]].concat()),
        qemu(d, &[&base[..], &["theirs.qcow2"]].concat()),
    );
    assert_eq!((v.status.code(), q.status.code()), (Some(1), Some(1)));
    assert_eq!(unprefixed_lines(&err(&v)), unprefixed_lines(&err(&q)));
    assert!(err(&v).contains("Cannot copy inconsistent bitmap"));
    let skip = [
        "convert",
        "--bitmaps",
        "--skip-broken-bitmaps",
        "-O",
        "qcow2",
    ];
    let (v, q) = (
        vdisk(d, &[&skip[..], &["s.qcow2", "ours2.qcow2"]].concat()),
        qemu(d, &[&skip[..], &["s.qcow2", "theirs2.qcow2"]].concat()),
    );
    assert_eq!((v.status.code(), q.status.code()), (Some(0), Some(0)));
    assert_eq!(unprefixed_lines(&err(&v)), unprefixed_lines(&err(&q)));
    assert!(err(&v).contains("Skipping inconsistent bitmap"));
    assert_qemu_check_clean(&d.join("ours2.qcow2"), "qcow2");
    assert_eq!(
        format_specific_bitmaps(d, "ours2.qcow2"),
        format_specific_bitmaps(d, "theirs2.qcow2")
    );
}

/// Opens s.qcow2 with qemu-io, writes, and kills it (`sigraise 9`) before it closes the image.
fn qemu_io_killed(d: &Path) -> std::process::Output {
    std::process::Command::new("qemu-io")
        .current_dir(d)
        .args(["-c", "write -P 4 16M 64k", "-c", "sigraise 9", "s.qcow2"])
        .output()
        .unwrap()
}

#[test]
fn bitmaps_go_into_an_existing_image_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-bitmaps-n");
    let d = s.path();
    source(d);
    // Targets: (create arguments, bitmaps they hold, how qemu-img's copy ends).
    let targets: [(&[&str], &[&str]); 6] = [
        (&["-f", "qcow2"], &[]),
        (&["-f", "qcow2"], &["t0"]),
        // A name the source has: the bitmaps after it (walked last first) are added, then the
        // error.
        (&["-f", "qcow2"], &["b2"]),
        (&["-f", "qcow2"], &["b4", "t1"]),
        // Another size: "Bitmaps are of different sizes".
        (&["-f", "qcow2", "-o", "cluster_size=4k"], &[]),
        // Version 2 holds no bitmaps.
        (&["-f", "qcow2", "-o", "compat=0.10"], &[]),
    ];
    for (i, (create, own)) in targets.iter().enumerate() {
        let size = if i == 4 { "80M" } else { "64M" };
        for who in ["v", "q"] {
            let t = format!("{who}{i}.qcow2");
            qemu_ok(
                d,
                &[&["create", "-q"][..], create, &[t.as_str(), size]].concat(),
            );
            qemu_io(d, "qcow2", &t, &["write -P 9 0 1M"]);
            for b in own.iter() {
                qemu_ok(d, &["bitmap", "--add", &t, b]);
            }
        }
        let (ours, theirs) = (format!("v{i}.qcow2"), format!("q{i}.qcow2"));
        let args = ["convert", "-n", "--bitmaps", "-O", "qcow2", "s.qcow2"];
        let v = vdisk(d, &[&args[..], &[ours.as_str()]].concat());
        let q = qemu(d, &[&args[..], &[theirs.as_str()]].concat());
        assert_eq!(v.status.code(), q.status.code(), "target {i}: {}", err(&v));
        if q.status.code() != Some(0) {
            assert_eq!(
                first_message(&err(&v)),
                first_message(&err(&q)),
                "target {i}"
            );
        }
        // The same bitmaps, in the same order, with the same bits; the same guest data.
        assert_eq!(
            format_specific_bitmaps(d, &ours),
            format_specific_bitmaps(d, &theirs),
            "target {i}"
        );
        if i != 5 {
            assert_eq!(
                bitmaps_of(&d.join(&ours)),
                bitmaps_of(&d.join(&theirs)),
                "target {i}"
            );
        }
        assert_qemu_check_clean(&d.join(&ours), "qcow2");
        let cmp = qemu(d, &["compare", &ours, &theirs]);
        assert_eq!(cmp.status.code(), Some(0), "target {i}: {}", out(&cmp));
    }
}
