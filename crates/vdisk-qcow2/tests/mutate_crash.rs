//! Crash tests: each operation runs with a failure (or a silent loss of every later write)
//! injected at each of its modifying calls in turn; after every interrupted run `qemu-img check`
//! must find no errors (leaks allowed) and the image must be exactly the old or the new one
//! (guest content, snapshot list, each snapshot's content).

mod mutate_common;

use mutate_common::*;
use vdisk_core::CreateOptions;
use vdisk_qcow2::mutate;
use vdisk_testutil::*;

fn fixture(tag: &str, opts: &str) -> (Scratch, std::path::PathBuf) {
    let d = Scratch::new(tag);
    let p = qemu_fixture(&d, "base.qcow2", opts, "2M");
    (d, p)
}

#[test]
fn crash_snapshot_create() {
    if !qemu_available() {
        return;
    }
    let (_d, p) = fixture("crash-snc", "cluster_size=4k");
    let n = crash_test(&p, &|s| mutate::snapshot_create_in(s, "crash"));
    eprintln!("snapshot_create: {n} fault points");
}

#[test]
fn crash_snapshot_apply_and_delete() {
    if !qemu_available() {
        return;
    }
    let (d, p) = fixture("crash-sna", "cluster_size=4k");
    qemu_img(&["snapshot", "-c", "one", &p.to_string_lossy()]);
    qemu_io("qcow2", &p, &["write -P 0x31 0 300k"]);
    qemu_img(&["snapshot", "-c", "two", &p.to_string_lossy()]);
    qemu_io("qcow2", &p, &["write -P 0x32 64k 64k"]);
    let n = crash_test(&p, &|s| mutate::snapshot_apply_in(s, "one"));
    eprintln!("snapshot_apply: {n} fault points");
    let n = crash_test(&p, &|s| mutate::snapshot_delete_in(s, "one"));
    eprintln!("snapshot_delete: {n} fault points");
    drop(d);
}

#[test]
fn crash_resize() {
    if !qemu_available() {
        return;
    }
    let (_d, p) = fixture("crash-rs", "cluster_size=512");
    let n = crash_test(&p, &|s| mutate::resize_in(s, 8 << 20, false));
    eprintln!("resize grow: {n} fault points");
    let n = crash_test(&p, &|s| mutate::resize_in(s, 700 << 10, true));
    eprintln!("resize shrink: {n} fault points");
}

#[test]
fn crash_repair() {
    if !qemu_available() {
        return;
    }
    use std::os::unix::fs::FileExt;
    let (_d, p) = fixture("crash-rp", "");
    // A leak: one more cluster at the end with refcount 1 (cluster index = old length / 64 KiB).
    let len = std::fs::metadata(&p).unwrap().len().next_multiple_of(65536);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    f.set_len(len + 65536).unwrap();
    let mut h = [0u8; 64];
    f.read_exact_at(&mut h, 0).unwrap();
    let rt = u64::from_be_bytes(h[48..56].try_into().unwrap());
    let mut e = [0u8; 8];
    f.read_exact_at(&mut e, rt).unwrap();
    f.write_all_at(&1u16.to_be_bytes(), u64::from_be_bytes(e) + 2 * (len >> 16))
        .unwrap();
    drop(f);
    assert_eq!(check(&p).0, 3);
    // Content is unchanged by a repair, so check the leak is gone after the uninterrupted run.
    let done = copy(&p, "repaired.qcow2");
    mutate::repair(&done, true, false).unwrap();
    assert_clean(&done);
    let before = state(&p);
    for fault in [Fault::Fail, Fault::Drop] {
        let mut at = 1;
        loop {
            let c = copy(&p, "crash.qcow2");
            let s = FailingStorage::new(&c, at, fault);
            let r = mutate::repair_in(s.clone(), true, false);
            let calls = s.calls();
            drop(s); // closed before qemu-img looks, as the writing process would be
            let (code, out) = check(&c);
            assert!(code == 0 || code == 3, "{fault:?} at {at}: {out}");
            assert!(state(&c) == before);
            if calls < at {
                assert!(r.is_ok());
                break;
            }
            at += 1;
        }
        eprintln!("repair: {} fault points", at - 1);
    }
}

#[test]
fn crash_amend() {
    if !qemu_available() {
        return;
    }
    let (_d, p) = fixture("crash-am", "compat=0.10");
    let n = crash_test(&p, &|s| {
        mutate::amend_in(s, &CreateOptions::parse(&["compat=1.1"]).unwrap())
    });
    eprintln!("amend upgrade: {n} fault points");
}

#[test]
fn crash_snapshot_ops_on_other_layouts() {
    if !qemu_available() {
        return;
    }
    for (i, opts) in [
        "extended_l2=on",
        "refcount_bits=8,cluster_size=1k",
        "compat=0.10",
    ]
    .iter()
    .enumerate()
    {
        let (_d, p) = fixture(&format!("crash-lay-{i}"), opts);
        qemu_img(&["snapshot", "-c", "one", &p.to_string_lossy()]);
        qemu_io("qcow2", &p, &["write -P 0x45 40k 100k"]);
        let n = crash_test(&p, &|s| mutate::snapshot_create_in(s, "two"));
        eprintln!("{opts}: snapshot_create: {n} fault points");
        let n = crash_test(&p, &|s| mutate::snapshot_delete_in(s, "one"));
        eprintln!("{opts}: snapshot_delete: {n} fault points");
    }
}

#[test]
fn crash_amend_downgrade_and_lazy() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("crash-am2");
    let p = d.join("down.qcow2");
    qemu_create(&p, "qcow2", "lazy_refcounts=on", "1M");
    qemu_io("qcow2", &p, &["write -P 1 0 64k", "write -c -P 2 128k 64k"]);
    let n = crash_test(&p, &|s| {
        mutate::amend_in(s, &CreateOptions::parse(&["lazy_refcounts=off"]).unwrap())
    });
    eprintln!("amend lazy_refcounts=off: {n} fault points");
    let n = crash_test(&p, &|s| {
        mutate::amend_in(
            s,
            &CreateOptions::parse(&["compat=0.10,lazy_refcounts=off"]).unwrap(),
        )
    });
    eprintln!("amend downgrade: {n} fault points");
}

#[test]
fn crash_repair_all() {
    if !qemu_available() {
        return;
    }
    use std::os::unix::fs::FileExt;
    let (_d, p) = fixture("crash-rpa", "");
    qemu_img(&["snapshot", "-c", "s", &p.to_string_lossy()]);
    // Corruptions: the first data cluster's refcount lowered from 2 to 1, and a COPIED flag set on
    // an active L2 entry whose cluster is shared.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let mut h = [0u8; 64];
    f.read_exact_at(&mut h, 0).unwrap();
    let rd = |off: u64| {
        let mut e = [0u8; 8];
        f.read_exact_at(&mut e, off).unwrap();
        u64::from_be_bytes(e)
    };
    let block = rd(u64::from_be_bytes(h[48..56].try_into().unwrap()));
    let l2 = rd(u64::from_be_bytes(h[40..48].try_into().unwrap())) & 0x00ff_ffff_ffff_fe00;
    let entry = rd(l2);
    f.write_all_at(
        &1u16.to_be_bytes(),
        block + 2 * ((entry & 0x00ff_ffff_ffff_fe00) >> 16),
    )
    .unwrap();
    f.write_all_at(&(rd(l2 + 8) | 1 << 63).to_be_bytes(), l2 + 8)
        .unwrap();
    drop(f);
    let (orig, _) = check(&p);
    assert_eq!(orig, 2);
    let content = raw(&p);
    let done = copy(&p, "repaired.qcow2");
    let out = mutate::repair(&done, true, true).unwrap();
    assert_eq!(out.after.exit_code(), 0, "{out:?}");
    assert_clean(&done);
    let c = copy(&p, "count.qcow2");
    let counter = FailingStorage::new(&c, usize::MAX, Fault::Fail);
    mutate::repair_in(counter.clone(), true, true).unwrap();
    let points = counter.calls();
    drop(counter); // closed before qemu-img looks, as the writing process would be
    for fault in [Fault::Fail, Fault::Drop] {
        for at in 1..=points {
            let c = copy(&p, "crash.qcow2");
            let _ = mutate::repair_in(FailingStorage::new(&c, at, fault), true, true);
            let (code, out) = check(&c);
            assert!(
                code == orig || code == 0 || code == 3,
                "{fault:?} at {at}: {out}"
            );
            assert_eq!(raw(&c), content, "{fault:?} at {at}: content");
        }
    }
    eprintln!("repair -r all: {} fault points", points);
}

#[test]
fn crash_rebase_unsafe() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("crash-rb");
    let b = d.join("b.raw");
    std::fs::write(&b, vec![0x5a; 1 << 20]).unwrap();
    let p = d.join("ov.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "b.raw",
        "-F",
        "raw",
        &p.to_string_lossy(),
    ]);
    qemu_io("qcow2", &p, &["write -P 0x12 64k 64k"]);
    // Dropping the backing file changes the guest content: old or new, never a mix.
    let n = crash_test(&p, &|s| mutate::rebase_unsafe_in(s, "", None));
    eprintln!("rebase -u: {n} fault points");
}
