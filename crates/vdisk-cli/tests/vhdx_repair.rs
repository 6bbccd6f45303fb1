//! `vdisk check -r leaks|all` on VHDX images against `qemu-img check -r`: a clean image (checked,
//! nothing written), and one whose log needs replaying, left so by qemu-io itself (its BAT write
//! made to fail under strace): refused read-only by every other command, replayed by `check -r`
//! with qemu-img's report, exit code and resulting image.

mod common;
use common::*;
use vdisk_testutil::{
    assert_qemu_check_clean, interrupted_vhdx_write, qemu_available, strace_available, Scratch,
};

#[test]
fn check_r_on_a_clean_vhdx_checks_as_qemu_does() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-vhdx-repair-clean");
    let d = s.path();
    qemu_ok(d, &["create", "-q", "-f", "vhdx", "c.vhdx", "8M"]);
    qemu_io(d, "vhdx", "c.vhdx", &["write -P 0x11 0 1M"]);
    let before = std::fs::read(d.join("c.vhdx")).unwrap();
    for args in [
        &["check", "-r", "all", "c.vhdx"][..],
        &["check", "-r", "leaks", "c.vhdx"],
        &["check", "-r", "all", "--output=json", "c.vhdx"],
        &["check", "-r", "all", "-q", "c.vhdx"],
        &["check", "-r", "bogus", "c.vhdx"],
    ] {
        let (v, q) = (vdisk(d, args), qemu(d, args));
        assert_eq!(v.status.code(), q.status.code(), "{args:?}: {}", err(&v));
        assert_eq!(out(&v), out(&q), "{args:?}");
        // (qemu-img adds its "Try 'qemu-img check --help'" line after a bad -r.)
        assert_eq!(first_message(&err(&v)), first_message(&err(&q)), "{args:?}");
    }
    assert_eq!(
        std::fs::read(d.join("c.vhdx")).unwrap(),
        before,
        "nothing written"
    );
}

#[test]
fn check_r_replays_a_log_qemu_left_as_qemu_img_does() {
    if !qemu_available() || !strace_available() {
        return;
    }
    let s = Scratch::new("cli-vhdx-repair-dirty");
    let d = s.path();
    qemu_ok(
        d,
        &[
            "create",
            "-q",
            "-f",
            "vhdx",
            "-o",
            "block_size=1M",
            "g.vhdx",
            "8M",
        ],
    );
    qemu_io(d, "vhdx", "g.vhdx", &["write -P 0x11 0 1M"]);
    let bat = vdisk::vhdx::open(std::sync::Arc::new(
        vdisk::core::FileStorage::open(&d.join("g.vhdx")).unwrap(),
    ))
    .unwrap()
    .regions()
    .bat
    .file_offset;
    interrupted_vhdx_write(
        d,
        &d.join("g.vhdx"),
        bat..bat + (1 << 20),
        "write -P 0x5c 3M 3000",
    );
    let dirty = std::fs::read(d.join("g.vhdx")).unwrap();
    // Read-only, both refuse it (exit 1) and vdisk says how to replay it.
    for args in [
        &["info", "g.vhdx"][..],
        &["check", "g.vhdx"],
        &["convert", "-O", "raw", "g.vhdx", "o.raw"],
    ] {
        let (v, q) = (vdisk(d, args), qemu(d, args));
        assert_eq!(
            (v.status.code(), q.status.code()),
            (Some(1), Some(1)),
            "{args:?}"
        );
        assert!(
            err(&v).contains("contains a log that needs to be replayed"),
            "{}",
            err(&v)
        );
        assert!(
            err(&v).contains("vdisk check -r all 'g.vhdx'"),
            "{}",
            err(&v)
        );
    }
    assert_eq!(
        std::fs::read(d.join("g.vhdx")).unwrap(),
        dirty,
        "read-only opens wrote"
    );
    for (mode, json) in [
        ("all", false),
        ("leaks", false),
        ("all", true),
        ("leaks", true),
    ] {
        std::fs::write(d.join("ours.vhdx"), &dirty).unwrap();
        std::fs::write(d.join("theirs.vhdx"), &dirty).unwrap();
        let args = |f: &'static str| {
            let mut a = vec!["check", "-r", mode];
            if json {
                a.push("--output=json");
            }
            a.push(f);
            a
        };
        let (v, q) = (vdisk(d, &args("ours.vhdx")), qemu(d, &args("theirs.vhdx")));
        assert_eq!(v.status.code(), Some(0), "{}", err(&v));
        assert_eq!(q.status.code(), Some(0));
        let fix = |t: String| t.replace("theirs.vhdx", "ours.vhdx");
        assert_eq!(out(&v), fix(out(&q)), "-r {mode} json {json}");
        assert!(out(&v).contains(if json {
            "\"corruptions-fixed\": 1"
        } else {
            "    1 corruptions"
        }));
        // The same image afterwards: the write is there, and both are clean and replayed.
        qemu_ok(
            d,
            &[
                "compare",
                "-f",
                "vhdx",
                "-F",
                "vhdx",
                "ours.vhdx",
                "theirs.vhdx",
            ],
        );
        assert_qemu_check_clean(&d.join("ours.vhdx"), "vhdx");
        let raw = qemu_ok(d, &["convert", "-O", "raw", "ours.vhdx", "ours.raw"]);
        assert!(raw.is_empty());
        let b = std::fs::read(d.join("ours.raw")).unwrap();
        let at = 3 << 20;
        assert!(
            b[at..at + 3000].iter().all(|x| *x == 0x5c),
            "the journalled write"
        );
        assert!(b[..1 << 20].iter().all(|x| *x == 0x11));
        // A second repair finds nothing to replay.
        let again = vdisk(d, &["check", "-r", mode, "ours.vhdx"]);
        assert_eq!(out(&again), "No errors were found on the image.\n");
    }
}
