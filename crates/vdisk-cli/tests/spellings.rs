//! qemu-img's option spellings on vdisk: the long names qemu-img 10 accepts (`--source-format`,
//! `--oob-writes`, `--left-format`, ...), unambiguous abbreviations (getopt_long's `--out=json`),
//! cache modes (`-t`/`-T`, `off` for `none`) and `convert -r` / `commit -r`, each with qemu-img's exit code and
//! error message on the same files.

mod common;
use common::*;
use std::path::Path;
use std::time::Instant;
use vdisk_testutil::{qemu_available, Scratch};

/// base.qcow2 <- top.qcow2 with data in both, and a copy of each for the commands that change them.
fn fixtures(d: &Path) {
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "base.qcow2", "3M"]);
    qemu_io(d, "qcow2", "base.qcow2", &["write -P 0x11 0 3M"]);
    qemu_overlay(d, "base.qcow2", "qcow2", "top.qcow2", None);
    qemu_io(d, "qcow2", "top.qcow2", &["write -P 0x22 1M 64k"]);
}

/// Runs `args` with both tools, each on its own copy of the fixtures, and asserts the same exit
/// code (and, on failure, the same message).
fn same(args: &[&str]) {
    let (sq, sv) = (Scratch::new("spell-q"), Scratch::new("spell-v"));
    fixtures(sq.path());
    fixtures(sv.path());
    let q = qemu(sq.path(), args);
    let v = vdisk(sv.path(), args);
    assert_eq!(
        v.status.code(),
        q.status.code(),
        "{args:?}\nqemu-img: {}\nvdisk: {}",
        err(&q),
        err(&v)
    );
    if q.status.code() != Some(0) {
        assert_eq!(first_message(&err(&v)), first_message(&err(&q)), "{args:?}");
    }
}

#[test]
fn qemu_long_options_and_abbreviations_work() {
    if !qemu_available() {
        return;
    }
    let runs: &[&[&str]] = &[
        &["info", "--out=json", "--force", "top.qcow2"],
        &["info", "-b", "top.qcow2"],
        &["info", "--backing", "--output", "json", "top.qcow2"],
        &[
            "convert",
            "--source-format",
            "qcow2",
            "--output-format",
            "raw",
            "--oob-writes",
            "--output-cache",
            "writeback",
            "top.qcow2",
            "o.raw",
        ],
        &[
            "compare",
            "--left-format",
            "qcow2",
            "--right-format",
            "qcow2",
            "top.qcow2",
            "top.qcow2",
        ],
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "--backing-unsafe",
            "-b",
            "nowhere.qcow2",
            "-F",
            "qcow2",
            "n.qcow2",
            "1M",
        ],
        &[
            "rebase",
            "--backing-unsafe",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "-U",
            "-p",
            "top.qcow2",
        ],
        &["commit", "--drop", "top.qcow2"],
        // -b is needed only in safe mode; -u alone drops the backing reference.
        &["rebase", "top.qcow2"],
        &["rebase", "-u", "top.qcow2"],
        &["snapshot", "-q", "-c", "s1", "base.qcow2"],
        &["amend", "-q", "-o", "lazy_refcounts=on", "base.qcow2"],
        // Options after the file names, as getopt allows them (`convert disk.vmdk -O qcow2 x`).
        &["convert", "top.qcow2", "-O", "qcow2", "o.qcow2"],
        &["convert", "top.qcow2", "-O", "raw", "-p", "o.raw"],
        &["convert"],
        &["convert", "top.qcow2"],
        &[
            "dd",
            "if=top.qcow2",
            "of=o.qcow2",
            "-O",
            "qcow2",
            "bs=64k",
            "count=2",
        ],
        &[
            "amend",
            "-p",
            "--force",
            "-o",
            "lazy_refcounts=off",
            "base.qcow2",
        ],
    ];
    for args in runs {
        same(args);
    }
}

/// `rebase -u` with no `-b` drops the backing reference (vdisk required `-b`, exit 2).
#[test]
fn rebase_u_alone_drops_the_backing_file_like_qemu() {
    if !qemu_available() {
        return;
    }
    let (sq, sv) = (Scratch::new("spell-rq"), Scratch::new("spell-rv"));
    fixtures(sq.path());
    fixtures(sv.path());
    qemu_ok(sq.path(), &["rebase", "-u", "top.qcow2"]);
    vdisk_ok(sv.path(), &["rebase", "-u", "top.qcow2"]);
    let info = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&qemu_ok(d, &["info", "--output=json", "top.qcow2"])).unwrap()
    };
    let (q, v) = (info(sq.path()), info(sv.path()));
    assert!(q.get("backing-filename").is_none() && v.get("backing-filename").is_none());
    qemu_ok(sq.path(), &["convert", "-O", "raw", "top.qcow2", "t.raw"]);
    qemu_ok(sv.path(), &["convert", "-O", "raw", "top.qcow2", "t.raw"]);
    assert!(
        std::fs::read(sq.path().join("t.raw")).unwrap()
            == std::fs::read(sv.path().join("t.raw")).unwrap()
    );
}

#[test]
fn cache_modes_are_checked_like_qemu() {
    if !qemu_available() {
        return;
    }
    for mode in [
        "off",
        "none",
        "writethrough",
        "directsync",
        "unsafe",
        "writeback",
        "bogus",
    ] {
        same(&["convert", "-T", mode, "-O", "raw", "top.qcow2", "o.raw"]);
        same(&["convert", "-t", mode, "-O", "raw", "top.qcow2", "o.raw"]);
        same(&["compare", "-T", mode, "base.qcow2", "top.qcow2"]);
        same(&["check", "-T", mode, "top.qcow2"]);
        same(&["commit", "-t", mode, "top.qcow2"]);
        same(&["amend", "-t", mode, "-o", "lazy_refcounts=on", "base.qcow2"]);
        // The image's cache, then its backing file's.
        for flag in ["-t", "-T"] {
            let args = [
                "rebase",
                flag,
                mode,
                "-u",
                "-b",
                "base.qcow2",
                "-F",
                "qcow2",
            ];
            same(&[&args[..], &["top.qcow2"]].concat());
        }
    }
}

#[test]
fn convert_rate_is_parsed_and_enforced() {
    if !qemu_available() {
        return;
    }
    for rate in ["1x", "-5", "9999999999999999999999", "0", "1.5M"] {
        same(&["convert", "-r", rate, "-O", "raw", "top.qcow2", "o.raw"]);
        same(&["commit", "-r", rate, "top.qcow2"]);
    }
    // 3 MiB of data at 1 MiB/s: whatever the write sizes, at least 2 MiB less the burst waits.
    let s = Scratch::new("spell-rate");
    fixtures(s.path());
    let t = Instant::now();
    vdisk_ok(
        s.path(),
        &["convert", "-r", "1M", "-O", "raw", "top.qcow2", "o.raw"],
    );
    let took = t.elapsed().as_secs_f64();
    assert!(took >= 1.5, "3 MiB at 1 MiB/s took only {took:.2} s");
    qemu_ok(
        s.path(),
        &["compare", "-f", "qcow2", "-F", "raw", "top.qcow2", "o.raw"],
    );
    // commit -r: 3 MiB of overlay data into the base, at 1 MiB/s, ends as qemu-img's commit.
    let (sq, sv) = (
        Scratch::new("spell-commit-q"),
        Scratch::new("spell-commit-v"),
    );
    for d in [sq.path(), sv.path()] {
        fixtures(d);
        qemu_io(d, "qcow2", "top.qcow2", &["write -P 0x33 0 3M"]);
    }
    qemu_ok(sq.path(), &["commit", "-q", "top.qcow2"]);
    let t = Instant::now();
    vdisk_ok(sv.path(), &["commit", "-q", "-r", "1M", "top.qcow2"]);
    let took = t.elapsed().as_secs_f64();
    assert!(
        took >= 1.5,
        "commit of 3 MiB at 1 MiB/s took only {took:.2} s"
    );
    let raw = |d: &Path| {
        qemu_ok(d, &["convert", "-O", "raw", "base.qcow2", "b.raw"]);
        std::fs::read(d.join("b.raw")).unwrap()
    };
    assert!(raw(sq.path()) == raw(sv.path()), "committed bases differ");
}

/// Usage errors (an unknown option, a missing file name, an unknown command) exit 1, as in
/// qemu-img, not clap's 2; `--help` exits 0.
#[test]
fn usage_errors_exit_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("spell-usage");
    let d = s.path();
    for args in [
        &["convert", "--nope", "a", "b"][..],
        &["info"],
        &["nosuchcommand"],
        &["dd", "-x", "if=a"],
        &["check", "--bogus", "x"],
        &["info", "--help"],
    ] {
        let (v, q) = (vdisk(d, args), qemu(d, args));
        assert_eq!(v.status.code(), q.status.code(), "{args:?}: {}", err(&v));
    }
}

/// `convert -p` with standard output not a terminal prints qemu-img's progress lines: from
/// `    (0.00/100%)` to `    (100.00/100%)`, each ended by a carriage return, then a line feed;
/// `-q` silences them.
#[test]
fn convert_progress_off_a_terminal_prints_qemus_lines() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("spell-progress");
    let d = s.path();
    fixtures(d);
    let shape = |o: &str| -> (String, String, usize) {
        let parts: Vec<&str> = o.split('\r').collect();
        for p in &parts[..parts.len() - 1] {
            let p = p.trim_start_matches('\n');
            let v = p
                .strip_prefix("    (")
                .and_then(|x| x.strip_suffix("/100%)"))
                .unwrap_or_else(|| panic!("not a progress line: {p:?} in {o:?}"));
            let n: f64 = v.parse().unwrap();
            assert!((0.0..=100.0).contains(&n), "{o:?}");
        }
        (
            parts[0].to_string(),
            parts[parts.len() - 2].to_string(),
            parts.len(),
        )
    };
    let v = vdisk_ok(d, &["convert", "-p", "-O", "raw", "top.qcow2", "v.raw"]);
    let q = qemu_ok(d, &["convert", "-p", "-O", "raw", "top.qcow2", "q.raw"]);
    let (vs, qs) = (shape(&v), shape(&q));
    assert_eq!(
        (vs.0.as_str(), vs.1.as_str()),
        (qs.0.as_str(), qs.1.as_str())
    );
    assert!(v.ends_with("\r\n") && q.ends_with("\r\n"));
    assert_eq!(
        vdisk_ok(
            d,
            &["convert", "-p", "-q", "-O", "raw", "top.qcow2", "v2.raw"]
        ),
        ""
    );
}
