//! Images with persistent dirty bitmaps (`qemu-img bitmap --add`): resize, snapshots, amend,
//! rebase -u and writes into the image, against qemu-img on twin images. Compared: qemu-img
//! info's bitmap list (names, flags, granularity), the bits of every bitmap (read from the file
//! here, qcow2.txt "Bitmap table"), content and qemu-img check. Plus qemu's refusals and crash
//! tests.

mod mutate_common;

use mutate_common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vdisk_core::{CreateOptions, Payload, Storage};
use vdisk_qcow2::mutate::{self, Prealloc};
use vdisk_testutil::*;

fn be(d: &[u8], at: usize, n: usize) -> u64 {
    d[at..at + n]
        .iter()
        .fold(0u64, |a, x| (a << 8) | u64::from(*x))
}

/// Every bitmap as (name, flags, granularity, indices of its set bits), from the file.
fn bits(p: &Path) -> Vec<(String, u64, u64, Vec<u64>)> {
    let d = std::fs::read(p).unwrap();
    let cs = 1usize << be(&d, 20, 4);
    let mut o = be(&d, 100, 4) as usize;
    let mut out = Vec::new();
    while o + 8 <= d.len() {
        let (t, l) = (be(&d, o, 4), be(&d, o + 4, 4) as usize);
        if t == 0 {
            break;
        }
        if t == 0x2385_2875 {
            let nb = be(&d, o + 8, 4);
            let mut e = be(&d, o + 24, 8) as usize;
            for _ in 0..nb {
                let (to, ts) = (be(&d, e, 8) as usize, be(&d, e + 8, 4) as usize);
                let flags = be(&d, e + 12, 4);
                let gran = 1u64 << d[e + 17];
                let (ns, ex) = (be(&d, e + 18, 2) as usize, be(&d, e + 20, 4) as usize);
                let name = String::from_utf8_lossy(&d[e + 24 + ex..e + 24 + ex + ns]).into_owned();
                let mut set = Vec::new();
                for k in 0..ts {
                    let entry = be(&d, to + 8 * k, 8);
                    let off = (entry & 0x00ff_ffff_ffff_fe00) as usize;
                    for b in 0..cs {
                        let byte = match (off, entry & 1) {
                            (0, 1) => 0xff,
                            (0, _) => 0,
                            _ => d[off + b],
                        };
                        if byte == 0 {
                            continue;
                        }
                        for i in (0..8).filter(|i| byte >> i & 1 == 1) {
                            set.push(((k * cs + b) * 8 + i) as u64);
                        }
                    }
                }
                out.push((name, flags, gran, set));
                e = (e + 24 + ex + ns).next_multiple_of(8);
            }
        }
        o += 8 + l.next_multiple_of(8);
    }
    out
}

/// qemu-img info's bitmap list.
fn listed(p: &Path) -> serde_json::Value {
    qemu_info_json(p)["format-specific"]["data"]["bitmaps"].clone()
}

fn agree(ours: &Path, theirs: &Path, what: &str) {
    assert_clean(ours);
    assert_clean(theirs);
    assert_same_bytes(&raw(ours), &raw(theirs), what);
    assert_eq!(info_summary(ours), info_summary(theirs), "{what}");
    assert_eq!(listed(ours), listed(theirs), "{what}: bitmap list");
    assert_eq!(bits(ours), bits(theirs), "{what}: bitmap bits");
}

/// Data, then three bitmaps (enabled 64k, enabled 128k, disabled), then more writes they record.
fn with_bitmaps(d: &Scratch, name: &str, opts: &str) -> PathBuf {
    let p = d.join(name);
    let mut a = vec!["create", "-q", "-f", "qcow2"];
    if !opts.is_empty() {
        a.extend(["-o", opts]);
    }
    let ps = s(&p);
    a.extend([ps.as_str(), "4M"]);
    qemu_img(&a);
    qemu_io("qcow2", &p, &["write -P 1 0 1M"]);
    qemu_img(&["bitmap", "--add", &ps, "b1"]);
    qemu_img(&["bitmap", "--add", "-g", "128k", &ps, "b2"]);
    qemu_img(&["bitmap", "--add", "--disable", &ps, "b3"]);
    if opts.contains("4k") {
        // 32 MiB per cluster of bitmap data: resizing to 40M changes the table's size.
        qemu_img(&["bitmap", "--add", "-g", "1k", &ps, "b4"]);
    }
    qemu_io(
        "qcow2",
        &p,
        &[
            "write -P 2 64k 4k",
            "write -P 3 3M 1M",
            "write -z 1536k 64k",
        ],
    );
    p
}

#[test]
fn resize_with_bitmaps_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("mut-bm-resize");
    for opts in ["", "cluster_size=4k"] {
        let base = with_bitmaps(&d, "base.qcow2", opts);
        for (size, shrink, pre) in [
            (8u64 << 20, false, Prealloc::Off),
            (3200 << 10, true, Prealloc::Off),
            (4100 << 10, false, Prealloc::Off),
            (6 << 20, false, Prealloc::Metadata),
            (40 << 20, false, Prealloc::Off),
        ] {
            let ours = copy(&base, "ours.qcow2");
            let theirs = copy(&base, "theirs.qcow2");
            mutate::resize_with(&ours, size, shrink, pre).unwrap();
            let mut a = vec!["resize".to_string(), "-q".into()];
            if shrink {
                a.push("--shrink".into());
            }
            if pre == Prealloc::Metadata {
                a.push("--preallocation=metadata".into());
            }
            a.extend([s(&theirs), size.to_string()]);
            qemu_img(&a.iter().map(String::as_str).collect::<Vec<_>>());
            agree(&ours, &theirs, &format!("{opts} resize to {size}"));
            // The resized bitmaps still record writes for qemu.
            qemu_io("qcow2", &ours, &["write -P 4 2M 8k"]);
            qemu_io("qcow2", &theirs, &["write -P 4 2M 8k"]);
            agree(
                &ours,
                &theirs,
                &format!("{opts} resize to {size}, then a write"),
            );
        }
    }
}

#[test]
fn snapshots_amend_rebase_with_bitmaps_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("mut-bm-ops");
    let base = with_bitmaps(&d, "base.qcow2", "");
    let ours = copy(&base, "ours.qcow2");
    let theirs = copy(&base, "theirs.qcow2");
    mutate::snapshot_create(&ours, "s1").unwrap();
    qemu_img(&["snapshot", "-c", "s1", &s(&theirs)]);
    assert_eq!(snapshots(&ours), snapshots(&theirs));
    agree(&ours, &theirs, "snapshot -c");
    mutate::amend(
        &ours,
        &CreateOptions::parse(&["lazy_refcounts=on"]).unwrap(),
    )
    .unwrap();
    qemu_img(&["amend", "-o", "lazy_refcounts=on", &s(&theirs)]);
    agree(&ours, &theirs, "amend lazy_refcounts=on");
    mutate::rebase_unsafe(&ours, "x.raw", Some("raw")).unwrap();
    qemu_img(&["rebase", "-u", "-b", "x.raw", "-F", "raw", &s(&theirs)]);
    mutate::rebase_unsafe(&ours, "", None).unwrap();
    qemu_img(&["rebase", "-u", "-b", "", &s(&theirs)]);
    agree(&ours, &theirs, "rebase -u");
    // Applying a snapshot is refused whenever there are bitmaps, as qemu-img does.
    let e = mutate::snapshot_apply(&ours, "s1").unwrap_err().to_string();
    assert_eq!(
        e,
        "Could not apply snapshot 's1': Device has active dirty bitmaps"
    );
    let o = std::process::Command::new("qemu-img")
        .args(["snapshot", "-a", "s1"])
        .arg(&theirs)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&e));
    mutate::snapshot_delete(&ours, "s1").unwrap();
    qemu_img(&["snapshot", "-d", "s1", &s(&theirs)]);
    agree(&ours, &theirs, "snapshot -d");
    // A downgrade drops the bitmaps: qemu-img keeps the extension in the v2 header and leaks
    // their clusters (check exit code 3); vdisk frees them. Neither lists bitmaps any more.
    mutate::amend(
        &ours,
        &CreateOptions::parse(&["compat=0.10,lazy_refcounts=off"]).unwrap(),
    )
    .unwrap();
    qemu_img(&["amend", "-o", "compat=0.10,lazy_refcounts=off", &s(&theirs)]);
    assert_clean(&ours);
    assert_same_bytes(&raw(&ours), &raw(&theirs), "downgraded");
    assert_eq!(info_summary(&ours), info_summary(&theirs));
    assert_eq!(listed(&ours), listed(&theirs));
    assert_eq!(bits(&ours), Vec::new(), "no bitmaps extension left");
}

/// Sets the in-use flag of the first bitmap, as a crash of a QEMU using it leaves it.
fn mark_in_use(p: &Path) {
    use std::os::unix::fs::FileExt;
    let d = std::fs::read(p).unwrap();
    let mut o = be(&d, 100, 4) as usize;
    while be(&d, o, 4) != 0x2385_2875 {
        o += 8 + (be(&d, o + 4, 4) as usize).next_multiple_of(8);
    }
    let e = be(&d, o + 24, 8);
    let flags = be(&d, e as usize + 12, 4) as u32 | 1;
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(&flags.to_be_bytes(), e + 12).unwrap();
}

#[test]
fn bitmaps_in_use_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("mut-bm-inuse");
    let base = with_bitmaps(&d, "base.qcow2", "");
    mark_in_use(&base);
    let bytes = std::fs::read(&base).unwrap();
    let e = mutate::resize(&base, 8 << 20, false)
        .unwrap_err()
        .to_string();
    assert!(std::fs::read(&base).unwrap() == bytes, "nothing written");
    // qemu-img fails the same way (after rewriting the image's bitmaps).
    let q = copy(&base, "q.qcow2");
    let o = std::process::Command::new("qemu-img")
        .args(["resize"])
        .arg(&q)
        .arg("8M")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!("qemu-img: {e}\n")
    );
    // A snapshot and writes leave an in-use bitmap alone, and record in the others.
    let ours = copy(&base, "ours.qcow2");
    let theirs = copy(&base, "theirs.qcow2");
    mutate::snapshot_create(&ours, "s").unwrap();
    qemu_img(&["snapshot", "-c", "s", &s(&theirs)]);
    agree(&ours, &theirs, "snapshot -c with a bitmap in use");
    write_both(&ours, &theirs);
    agree(&ours, &theirs, "writes with a bitmap in use");
}

/// The same writes through vdisk's in-place writer and through qemu-io.
fn write_both(ours: &Path, theirs: &Path) {
    let mut w = mutate::open_writer(ours).unwrap();
    w.write(128 << 10, Payload::data(vec![7; 200 << 10]))
        .unwrap();
    w.write(2 << 20, Payload::Zero(64 << 10)).unwrap();
    w.write((4 << 20) - 4096, Payload::data(vec![8; 4096]))
        .unwrap();
    w.finish().unwrap();
    qemu_io(
        "qcow2",
        theirs,
        &[
            "write -P 7 128k 200k",
            "write -z 2M 64k",
            &format!("write -P 8 {} 4k", (4 << 20) - 4096),
        ],
    );
}

#[test]
fn writes_into_an_image_with_bitmaps_set_their_bits_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("mut-bm-write");
    let base = with_bitmaps(&d, "base.qcow2", "cluster_size=16k");
    let ours = copy(&base, "ours.qcow2");
    let theirs = copy(&base, "theirs.qcow2");
    write_both(&ours, &theirs);
    agree(&ours, &theirs, "writes");
    // Emptying the image (commit) does not touch the bitmaps.
    let before = bits(&ours);
    mutate::make_empty(&ours).unwrap();
    assert_clean(&ours);
    assert_eq!(bits(&ours), before);
    assert_eq!(listed(&ours), listed(&theirs));
}

/// The names of the bitmaps of the image at `p`, as `bits` lists them.
fn bitmap_names(p: &Path) -> Vec<String> {
    bits(p).into_iter().map(|b| b.0).collect()
}

#[test]
fn crash_resize_and_write_with_bitmaps() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("crash-bm");
    let p = with_bitmaps(&d, "base.qcow2", "cluster_size=4k");
    let before = bits(&p);
    for (k, op) in [
        &(|st| mutate::resize_in(st, 3 << 20, true)) as &dyn Fn(_) -> _,
        &|st| {
            let mut w = mutate::open_writer_in(st)?;
            w.write(8 << 10, Payload::data(vec![9; 100 << 10]))?;
            w.finish()
        },
    ]
    .iter()
    .enumerate()
    {
        let done = copy(&p, "done.qcow2");
        op(FailingStorage::new(&done, usize::MAX, Fault::Fail)).unwrap();
        let after = bits(&done);
        assert_ne!(before, after, "op {k} changes the bitmaps");
        let n = crash_test(&p, op);
        for at in 1..=n {
            let c = copy(&p, "bm-crash.qcow2");
            let _ = op(FailingStorage::new(&c, at, Fault::Fail));
            let now = bits(&c);
            assert!(now == before || now == after, "op {k}: fault at {at}/{n}");
        }
        eprintln!("op {k} with bitmaps: {n} fault points");
    }
}

#[test]
fn crash_bitmap_operations() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("crash-bm-ops");
    let p = with_bitmaps(&d, "base.qcow2", "cluster_size=4k");
    let first = bitmap_names(&p)[0].clone();
    let before = bits(&p);
    let ops: [&dyn Fn(Arc<dyn Storage>) -> vdisk_core::Result<()>; 2] = [
        // Several operations stored in one change.
        &|st| {
            let ops = [
                mutate::BitmapOp::Add { granularity: None },
                mutate::BitmapOp::Merge {
                    source: first.clone(),
                },
                mutate::BitmapOp::Disable,
            ];
            mutate::bitmap_ops_in(st, "new", &ops, None)
        },
        &|st| mutate::bitmap_ops_in(st, &first, &[mutate::BitmapOp::Remove], None),
    ];
    for (k, op) in ops.iter().enumerate() {
        let done = copy(&p, "done.qcow2");
        let counter = FailingStorage::new(&done, usize::MAX, Fault::Fail);
        op(counter.clone()).unwrap();
        let n = counter.calls();
        drop(counter); // closed before qemu-img looks, as the writing process would be
        assert_clean(&done);
        let after = bits(&done);
        assert_ne!(before, after, "op {k} changes the bitmaps");
        for fault in [Fault::Fail, Fault::Drop] {
            for at in 1..=n {
                let c = copy(&p, "bm-crash.qcow2");
                let r = op(FailingStorage::new(&c, at, fault));
                if matches!(fault, Fault::Fail) {
                    assert!(r.is_err(), "op {k}: a fault at {at} must surface");
                }
                let (code, out) = check(&c);
                assert!(
                    code == 0 || code == 3,
                    "op {k}, {fault:?} at {at}/{n}:\n{out}"
                );
                let now = bits(&c);
                assert!(
                    now == before || now == after,
                    "op {k}: {fault:?} at {at}/{n}"
                );
            }
        }
        eprintln!("bitmap op {k}: {n} fault points");
    }
}
