//! `vdisk convert`'s backing file flags against qemu-img's: -B, -F, `-o backing_file=` and
//! `-o backing_fmt=` in every combination qemu-img takes or refuses, and -B with -n.

mod common;
use common::*;
use serde_json::Value;
use vdisk_testutil::{assert_qemu_check_clean, qemu_available, Scratch};

/// Bytes of `image` stored in its own layer (qemu-img map, depth 0).
fn own_data(d: &std::path::Path, image: &str) -> u64 {
    let map: Value = json(&qemu_ok(d, &["map", "--output=json", image]));
    map.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["depth"] == 0 && e["data"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum()
}

/// The backing file and its format as qemu-img reads them from a new image.
fn backing_of(d: &std::path::Path, image: &str) -> (Value, Value) {
    let i = json(&qemu_ok(d, &["info", "--output=json", image]));
    (
        i["backing-filename"].clone(),
        i["backing-filename-format"].clone(),
    )
}

/// `base.raw` (the patterned image) and `changed.raw`, the same with one 64 KiB cluster
/// rewritten: converted over `base.raw`, only that cluster belongs in the new image.
fn base_and_changed(d: &std::path::Path) {
    make_pattern_raw(d, "base.raw", 0);
    qemu_ok(d, &["convert", "-O", "raw", "base.raw", "changed.raw"]);
    qemu_io(d, "raw", "changed.raw", &["write -P 0xab 16M 64k"]);
}

/// The backing file comes from -B or `-o backing_file=`, its format from -F or
/// `-o backing_fmt=`; -B and -F win over -o. vdisk took only -B with -F (refusing
/// `-B X -o backing_fmt=F`, dropping -F after `-o backing_file=`, session 24).
#[test]
fn the_backing_file_and_format_come_from_flags_or_options() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-convert-backing");
    let d = s.path();
    base_and_changed(d);
    qemu_ok(d, &["convert", "-O", "qcow2", "base.raw", "base.qcow2"]);
    for (flags, file, fmt) in [
        (&["-B", "base.raw", "-F", "raw"][..], "base.raw", "raw"),
        (
            &["-B", "base.raw", "-o", "backing_fmt=raw"],
            "base.raw",
            "raw",
        ),
        (
            &["-o", "backing_file=base.raw", "-F", "raw"],
            "base.raw",
            "raw",
        ),
        (
            &["-o", "backing_file=base.raw,backing_fmt=raw"],
            "base.raw",
            "raw",
        ),
        (
            &[
                "-B",
                "base.qcow2",
                "-o",
                "backing_file=base.raw,backing_fmt=qcow2",
            ],
            "base.qcow2",
            "qcow2",
        ),
        (
            &["-B", "base.qcow2", "-F", "qcow2", "-o", "backing_fmt=raw"],
            "base.qcow2",
            "qcow2",
        ),
    ] {
        for (tool, out) in [
            (vdisk_ok as fn(&_, &[&str]) -> _, "ours.qcow2"),
            (qemu_ok, "theirs.qcow2"),
        ] {
            let _ = std::fs::remove_file(d.join(out));
            let args = [
                &["convert", "-O", "qcow2"][..],
                flags,
                &["changed.raw", out],
            ]
            .concat();
            tool(d, &args);
        }
        assert_eq!(
            backing_of(d, "ours.qcow2"),
            (Value::from(file), Value::from(fmt)),
            "{flags:?}"
        );
        assert_eq!(
            backing_of(d, "ours.qcow2"),
            backing_of(d, "theirs.qcow2"),
            "{flags:?}"
        );
        assert_qemu_check_clean(&d.join("ours.qcow2"), "qcow2");
        assert_eq!(
            qemu(d, &["compare", "changed.raw", "ours.qcow2"])
                .status
                .code(),
            Some(0),
            "{flags:?}"
        );
        assert_eq!(own_data(d, "ours.qcow2"), 64 << 10, "{flags:?}");
    }
}

/// What qemu-img refuses about a target's backing file, vdisk refuses with its message and exit
/// code, and leaves no output (vdisk converted the first four and the seventh, and gave its own
/// message for the sixth, session 24).
#[test]
fn backing_flags_qemu_img_refuses_are_refused() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-convert-backing-no");
    let d = s.path();
    base_and_changed(d);
    for args in [
        "-O qcow2 -B base.raw -F raw changed.raw changed.raw out.img",
        "-O qcow2 -o backing_file=base.raw,backing_fmt=raw changed.raw changed.raw out.img",
        "-O qcow2 -o backing_file=base.raw changed.raw out.img",
        "-O qcow2 -F raw changed.raw out.img",
        "-O qcow2 -B base.raw changed.raw out.img",
        "-O raw -B base.raw -F raw changed.raw out.img",
        "-O raw -F raw changed.raw out.img",
        "-O vdi -o backing_fmt=raw changed.raw out.img",
        "-O raw -o foo=bar -B base.raw changed.raw out.img",
    ] {
        let args: Vec<&str> = std::iter::once("convert").chain(args.split(' ')).collect();
        let t = qemu(d, &args);
        assert_eq!(t.status.code(), Some(1), "qemu-img {args:?}");
        assert!(!d.join("out.img").exists(), "qemu-img {args:?}");
        let o = vdisk(d, &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", err(&o));
        assert_eq!(first_message(&err(&o)), first_message(&err(&t)), "{args:?}");
        assert!(!d.join("out.img").exists(), "{args:?}");
    }
}

/// -B with -n: the existing target keeps its backing file, and what the source shares with the
/// image -B names is left unwritten (README, deliberate differences: qemu-img's -B leaves
/// unwritten what the source's top layer does not allocate) (vdisk refused "-B and -n cannot be used together", which
/// qemu-img 10 takes). `--target-is-zero` with it is refused; qemu-img prints the same message
/// but exits 0 (README, deliberate differences).
#[test]
fn b_with_n_writes_only_what_differs_into_the_existing_target() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-convert-backing-n");
    let d = s.path();
    base_and_changed(d);
    for (tool, out) in [
        (vdisk_ok as fn(&_, &[&str]) -> _, "ours.qcow2"),
        (qemu_ok, "theirs.qcow2"),
    ] {
        qemu_overlay(d, "base.raw", "raw", out, None);
        tool(
            d,
            &[
                "convert",
                "-n",
                "-O",
                "qcow2",
                "-B",
                "base.raw",
                "-F",
                "raw",
                "changed.raw",
                out,
            ],
        );
        assert_qemu_check_clean(&d.join(out), "qcow2");
        assert_eq!(
            qemu(d, &["compare", "changed.raw", out]).status.code(),
            Some(0),
            "{out}"
        );
    }
    // qemu-img leaves unwritten only what the source's top layer leaves unallocated (a raw
    // source: nothing); vdisk compares with the image -B names.
    assert_eq!(own_data(d, "ours.qcow2"), 64 << 10);
    let args = [
        "convert",
        "-n",
        "--target-is-zero",
        "-O",
        "qcow2",
        "-B",
        "base.raw",
        "changed.raw",
        "ours.qcow2",
    ];
    let (o, t) = (vdisk(d, &args), qemu(d, &args));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(first_message(&err(&o)), first_message(&err(&t)));
    assert_eq!(
        first_message(&err(&o)),
        "Cannot use --target-is-zero when the destination image has a backing file"
    );
}
