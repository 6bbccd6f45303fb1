//! `amend -o refcount_bits=N` and `amend -o size=N` against qemu-img on twin images: every width
//! from every width, on cluster sizes 512 to 64 KiB, with snapshots (refcount 2), compressed
//! clusters sharing a host cluster, bitmaps and a leak; qemu-img's refusal, word for word, where a
//! refcount does not fit, with the file unchanged; the same content, snapshots and info (the
//! width) and a clean check where it succeeds. Plus crash tests of the switch.

mod mutate_common;

use mutate_common::*;
use std::path::Path;
use vdisk_core::CreateOptions;
use vdisk_qcow2::mutate;
use vdisk_testutil::*;

fn opts(o: &str) -> CreateOptions {
    CreateOptions::parse(&[o]).unwrap()
}

/// Runs `amend -o o` through vdisk on a copy of `fixture` and through qemu-img on another, and
/// asserts the same outcome: the same error or success, then the same state with clean checks
/// (`leaks`: the fixture's leaks, which both copy). A refusal that leaves qemu-img's copy as it
/// was must leave vdisk's too; one that comes after an earlier step (a size, then a downgrade
/// that fails) leaves that step done in both.
fn twin_amend(fixture: &Path, o: &str, leaks: bool) {
    let ours = copy(fixture, "ours.qcow2");
    let theirs = copy(fixture, "theirs.qcow2");
    let before = std::fs::read(&ours).unwrap();
    let q = std::process::Command::new("qemu-img")
        .args(["amend", "-o", o])
        .arg(&theirs)
        .output()
        .unwrap();
    match mutate::amend(&ours, &opts(o)) {
        Err(e) => {
            assert_eq!(
                q.status.code(),
                Some(1),
                "{o}: qemu-img succeeded, vdisk: {e}"
            );
            let qe = String::from_utf8_lossy(&q.stderr);
            assert_eq!(
                e.to_string(),
                qe.trim_end().trim_start_matches("qemu-img: "),
                "{o}"
            );
            if std::fs::read(&theirs).unwrap() == before {
                assert!(
                    std::fs::read(&ours).unwrap() == before,
                    "{o}: a refusal wrote"
                );
            }
        }
        Ok(()) => {
            assert_eq!(
                q.status.code(),
                Some(0),
                "{o}: vdisk succeeded where qemu-img failed"
            );
        }
    }
    if leaks {
        let (a, b) = (check(&ours), check(&theirs));
        assert_eq!(a.0, 3, "{o}: {}", a.1);
        assert_eq!(b.0, 3, "{o}: {}", b.1);
        let leaks = |out: &str| out.lines().filter(|l| l.starts_with("Leaked")).count();
        assert_eq!(leaks(&a.1), leaks(&b.1), "{o}: {}\n{}", a.1, b.1);
        assert_same_bytes(&raw(&ours), &raw(&theirs), o);
        assert_eq!(info_summary(&ours), info_summary(&theirs), "{o}");
    } else {
        same_state(&ours, &theirs);
    }
}

#[test]
fn refcount_width_changes_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("qcow2-refwidth");
    // Every width from 16 bits, and the extremes into each other; 512-byte clusters need many
    // refcount blocks at every width but 1 bit.
    let cases: [(u32, &[u32]); 3] = [(16, &[1, 2, 4, 8, 32, 64]), (1, &[64]), (64, &[1, 16])];
    for cs in ["512", "64k"] {
        for (from, tos) in cases {
            let p = qemu_fixture(
                &d,
                "f.qcow2",
                &format!("cluster_size={cs},refcount_bits={from}"),
                "4M",
            );
            qemu_io("qcow2", &p, &["write -P 0x61 2M 1M"]);
            for to in tos {
                twin_amend(&p, &format!("refcount_bits={to}"), false);
            }
        }
    }
}

#[test]
fn refcount_width_keeps_snapshots_bitmaps_and_leaks_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("qcow2-refwidth-more");
    let snap = qemu_fixture(&d, "snap.qcow2", "", "4M");
    qemu_img(&["snapshot", "-c", "s1", &s(&snap)]);
    qemu_io("qcow2", &snap, &["write -P 0x71 0 64k"]);
    let bm = qemu_fixture(&d, "bm.qcow2", "cluster_size=4k", "4M");
    qemu_img(&["bitmap", "--add", &s(&bm), "b0"]);
    qemu_img(&["bitmap", "--add", "-g", "128k", &s(&bm), "b1"]);
    for to in [1u32, 2, 8, 64] {
        // Refcount 2 in snap.qcow2: qemu-img refuses widths of 1 bit, and so must vdisk.
        twin_amend(&snap, &format!("refcount_bits={to}"), false);
        twin_amend(&bm, &format!("refcount_bits={to}"), false);
    }
    // A leaked cluster keeps its refcount, as QEMU copies it; so does one past the end of the
    // file, which qemu-img check does not see (and must not see afterwards either).
    let leak = qemu_fixture(&d, "leak.qcow2", "", "4M");
    qemu_io("qcow2", &leak, &["write -P 0x62 3M 64k", "discard 3M 64k"]);
    assert_eq!(check(&leak).0, 0);
    // The discarded cluster (the file's last), leaked; and one far past the end.
    poke_refcount(&leak, 11, 1);
    poke_refcount(&leak, 60, 1);
    let (code, out) = check(&leak);
    assert!(
        code == 3 && out.contains("Leaked cluster 11 ") && !out.contains(" 60 "),
        "{out}"
    );
    twin_amend(&leak, "refcount_bits=8", true);
    // Every width into version 2, the downgrade after the change, and the refusals of the value.
    let v2 = qemu_fixture(&d, "v2.qcow2", "compat=0.10", "4M");
    let wide = qemu_fixture(&d, "w.qcow2", "refcount_bits=64", "4M");
    for (p, o) in [
        (&v2, "refcount_bits=8"),
        (&v2, "compat=1.1,refcount_bits=8"),
        (&wide, "compat=0.10"),
        (&wide, "compat=0.10,refcount_bits=16"),
        (&wide, "compat=0.10,refcount_bits=32"),
        (&wide, "refcount_bits=010"),
        (&wide, "refcount_bits=0x4"),
        (&wide, "refcount_bits=-64"),
        (&wide, "refcount_bits=3"),
        (&wide, "refcount_bits=x"),
        (&snap, "lazy_refcounts=on,refcount_bits=8"),
    ] {
        twin_amend(p, o, false);
    }
}

#[test]
fn amend_size_resizes_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("qcow2-amend-size");
    let p = qemu_fixture(&d, "p.qcow2", "", "4M");
    let snap = qemu_fixture(&d, "snap.qcow2", "", "4M");
    qemu_img(&["snapshot", "-c", "s1", &s(&snap)]);
    let v2snap = qemu_fixture(&d, "v2.qcow2", "compat=0.10", "4M");
    qemu_img(&["snapshot", "-c", "s1", &s(&v2snap)]);
    for (f, o) in [
        (&p, "size=64M"),
        // amend shrinks without being asked twice (qemu-img resize wants --shrink).
        (&p, "size=1M"),
        (&p, "size=0"),
        (&p, "size=1000"),
        (&p, "size=abc"),
        (&p, "size=16E"),
        (&p, "size=9E"),
        (&p, "size=-1"),
        (&p, "size=1M,refcount_bits=8"),
        (&p, "compat=0.10,size=6M"),
        (&snap, "size=8M"),
        (&snap, "compat=0.10,size=8M"),
        (&v2snap, "size=8M"),
    ] {
        twin_amend(f, o, false);
    }
}

#[test]
fn crash_refcount_width_change() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("crash-refwidth");
    for (cs, to) in [("512", "refcount_bits=64"), ("4k", "refcount_bits=8")] {
        let p = qemu_fixture(&d, "c.qcow2", &format!("cluster_size={cs}"), "4M");
        let n = crash_test(&p, &|st| mutate::amend_in(st, &opts(to)));
        eprintln!("{to} at cluster size {cs}: {n} fault points");
    }
}
