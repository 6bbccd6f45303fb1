//! `-p` on compare, rebase, amend and commit: qemu-img's progress lines (`    (P/100%)` ended by a
//! carriage return, then a line feed when the command ends) on standard output, compared with
//! qemu-img's on the same images. Each command that changes an image runs on its own copy.

mod common;
use common::*;
use std::path::Path;
use vdisk_testutil::{qemu_available, Scratch};

/// base.qcow2 (64 MiB: data at 0-8 MiB and 32-36 MiB) <- top.qcow2 (data at 4-12 MiB); a copy of
/// base; an empty image; images of other sizes; a raw copy of base.
fn fixtures(d: &Path) {
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "base.qcow2", "64M"]);
    qemu_io(
        d,
        "qcow2",
        "base.qcow2",
        &["write -P 1 0 8M", "write -P 2 32M 4M"],
    );
    qemu_overlay(d, "base.qcow2", "qcow2", "top.qcow2", None);
    qemu_io(d, "qcow2", "top.qcow2", &["write -P 3 4M 8M"]);
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "empty.qcow2", "64M"]);
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "small.qcow2", "32M"]);
    qemu_ok(d, &["convert", "-O", "raw", "base.qcow2", "base.raw"]);
    std::fs::copy(d.join("base.qcow2"), d.join("copy.qcow2")).unwrap();
    std::fs::copy(d.join("base.qcow2"), d.join("grown.qcow2")).unwrap();
    qemu_ok(d, &["resize", "-q", "grown.qcow2", "128M"]);
    std::fs::copy(d.join("grown.qcow2"), d.join("grown-data.qcow2")).unwrap();
    qemu_io(d, "qcow2", "grown-data.qcow2", &["write -P 7 100M 64k"]);
}

/// Both tools' standard output and exit code for `args`, each in its own copy of the fixtures.
fn both(args: &[&str]) -> ((String, Option<i32>), (String, Option<i32>)) {
    let (sq, sv) = (Scratch::new("progress-q"), Scratch::new("progress-v"));
    fixtures(sq.path());
    fixtures(sv.path());
    let q = qemu(sq.path(), args);
    let v = vdisk(sv.path(), args);
    // What each tool did to an image it changed must read the same.
    if !matches!(args.first(), Some(&"compare")) {
        if let Some(image) = args.last() {
            let a = sq.path().join(image);
            let b = sv.path().join(image);
            if a.exists() && b.exists() {
                let c = qemu(
                    sq.path(),
                    &["compare", "-q", a.to_str().unwrap(), b.to_str().unwrap()],
                );
                assert_eq!(c.status.code(), Some(0), "{args:?}: images differ");
            }
        }
    }
    ((out(&q), q.status.code()), (out(&v), v.status.code()))
}

fn same(args: &[&str]) {
    let (q, v) = both(args);
    assert_eq!(v, q, "{args:?}");
}

#[test]
fn compare_progress_is_qemus() {
    if !qemu_available() {
        return;
    }
    for pair in [
        ["base.qcow2", "copy.qcow2"],
        ["base.qcow2", "top.qcow2"],
        ["base.raw", "base.qcow2"],
        ["base.qcow2", "grown.qcow2"],
        ["grown-data.qcow2", "base.qcow2"],
        ["base.qcow2", "small.qcow2"],
    ] {
        for flags in [&["-p"][..], &["-p", "-s"], &["-p", "-q"]] {
            let mut args = vec!["compare"];
            args.extend_from_slice(flags);
            args.extend_from_slice(&pair);
            same(&args);
        }
    }
    // Steps of 2 MiB through data, one over each run both images leave unallocated: 9 lines, and
    // the verdict before the last line feed.
    let (_, (v, _)) = both(&["compare", "-p", "base.qcow2", "copy.qcow2"]);
    assert_eq!(v.matches("/100%)\r").count(), 9, "{v:?}");
    assert!(v.starts_with("    (0.00/100%)\r    (3.12/100%)\r"), "{v:?}");
    assert!(
        v.ends_with("    (100.00/100%)\rImages are identical.\n\n"),
        "{v:?}"
    );
    // An image that cannot be opened: the line feed that ends the progress output, nothing more.
    same(&["compare", "-p", "missing.qcow2", "base.qcow2"]);
}

#[test]
fn rebase_progress_is_qemus() {
    if !qemu_available() {
        return;
    }
    same(&[
        "rebase",
        "-p",
        "-b",
        "empty.qcow2",
        "-F",
        "qcow2",
        "top.qcow2",
    ]);
    // The new backing file is the old one: no step needs work, so none counts.
    same(&[
        "rebase",
        "-p",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        "top.qcow2",
    ]);
    same(&["rebase", "-p", "-b", "", "top.qcow2"]);
    same(&[
        "rebase",
        "-p",
        "-c",
        "-b",
        "empty.qcow2",
        "-F",
        "qcow2",
        "top.qcow2",
    ]);
    same(&[
        "rebase",
        "-p",
        "-u",
        "-b",
        "empty.qcow2",
        "-F",
        "qcow2",
        "top.qcow2",
    ]);
    same(&[
        "rebase",
        "-p",
        "-q",
        "-b",
        "empty.qcow2",
        "-F",
        "qcow2",
        "top.qcow2",
    ]);
    same(&[
        "rebase",
        "-p",
        "-b",
        "missing.qcow2",
        "-F",
        "qcow2",
        "top.qcow2",
    ]);
    // 32 steps of 2 MiB, 4 of them allocated in the image itself: 28 lines between 0 and 100.
    let (_, (v, _)) = both(&[
        "rebase",
        "-p",
        "-b",
        "empty.qcow2",
        "-F",
        "qcow2",
        "top.qcow2",
    ]);
    assert_eq!(v.matches("/100%)\r").count(), 30, "{v:?}");
    assert!(
        v.ends_with("    (87.50/100%)\r    (100.00/100%)\r\n"),
        "{v:?}"
    );
}

#[test]
fn amend_progress_is_qemus() {
    if !qemu_available() {
        return;
    }
    same(&["amend", "-p", "-o", "lazy_refcounts=on", "base.qcow2"]);
    same(&["amend", "-p", "-o", "size=128M", "base.qcow2"]);
    same(&["amend", "-p", "-o", "compat=1.1", "base.qcow2"]);
    same(&["amend", "-p", "-q", "-o", "lazy_refcounts=on", "base.qcow2"]);
    // An option qcow2 cannot amend is refused before the progress starts.
    same(&["amend", "-p", "-o", "bogus=on", "base.qcow2"]);
    let (_, (v, _)) = both(&["amend", "-p", "-o", "lazy_refcounts=on", "base.qcow2"]);
    assert_eq!(v, "    (0.00/100%)\r    (100.00/100%)\r\n");
}

/// qemu-img commit's lines between 0 and 100 come from its block job whenever it polls, so they
/// differ from run to run; both tools' outputs must have the same shape: 0 first, percentages
/// that never fall, 100 last, the line feed, then "Image committed.".
#[test]
fn commit_progress_has_qemus_shape() {
    if !qemu_available() {
        return;
    }
    let shape = |o: &str| -> Vec<f64> {
        let (lines, tail) = o.rsplit_once('\r').unwrap_or_else(|| panic!("{o:?}"));
        assert_eq!(tail, "\nImage committed.\n", "{o:?}");
        let p: Vec<f64> = lines
            .split('\r')
            .map(|l| {
                l.strip_prefix("    (")
                    .and_then(|x| x.strip_suffix("/100%)"))
                    .unwrap_or_else(|| panic!("not a progress line: {l:?} in {o:?}"))
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(p.windows(2).all(|w| w[0] <= w[1]), "{o:?}");
        assert_eq!((p.first(), p.last()), (Some(&0.0), Some(&100.0)), "{o:?}");
        p
    };
    let ((q, qc), (v, vc)) = both(&["commit", "-p", "top.qcow2"]);
    assert_eq!((vc, qc), (Some(0), Some(0)));
    shape(&q);
    let steps = shape(&v);
    // 8 MiB copied in 1 MiB writes: a line for each, past qemu's 1-point minimum.
    assert_eq!(steps.len(), 10, "{v:?}");
    same(&["commit", "-p", "-q", "top.qcow2"]);
    // No backing file: qemu-img's error, after the first line.
    same(&["commit", "-p", "base.qcow2"]);
}

/// Without `-p`, SIGUSR1 makes a running conversion print its next progress step on standard
/// error, `    (P/100%)` and a line feed, and go on (qemu's `progress_dummy_print`); it does not end
/// the process. Checked on both tools, each converting at 16 MiB/s (`-r`) so that the signal comes
/// while it runs: sent once the output file exists, which both create after installing the handler.
#[test]
fn sigusr1_prints_the_next_step_on_standard_error() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("progress-usr1");
    let d = s.path();
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "data.qcow2", "48M"]);
    qemu_io(d, "qcow2", "data.qcow2", &["write -P 4 0 48M"]);
    for (tool, program) in [
        ("qemu-img", "qemu-img"),
        ("vdisk", env!("CARGO_BIN_EXE_vdisk")),
    ] {
        let child = std::process::Command::new(program)
            .current_dir(d)
            .args(["convert", "-r", "16M", "-O", "raw", "data.qcow2", "out.raw"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        // vdisk writes under a hidden temporary name first: any new file will do.
        while std::fs::read_dir(d).unwrap().count() < 2 {
            assert!(started.elapsed().as_secs() < 30, "{tool}: no output file");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        // SAFETY: kill(2) on the child's pid, which has not been waited for yet.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) }, 0);
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{tool}: {}", err(&o));
        assert_eq!(out(&o), "", "{tool}");
        let e = err(&o);
        let p: f64 = e
            .strip_prefix("    (")
            .and_then(|x| x.strip_suffix("/100%)\n"))
            .unwrap_or_else(|| panic!("{tool}: {e:?}"))
            .parse()
            .unwrap();
        assert!((0.0..=100.0).contains(&p), "{tool}: {e:?}");
        qemu_ok(
            d,
            &[
                "compare",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "raw",
                "data.qcow2",
                "out.raw",
            ],
        );
        std::fs::remove_file(d.join("out.raw")).unwrap();
    }
}
