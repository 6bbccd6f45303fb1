//! Images with an external data file (`-o data_file=...`, with and without data_file_raw):
//! resize (the data file is resized too), amend, rebase -u and snapshots, against qemu-img on
//! twin images (each twin with its own data file), qemu's refusals with its messages, and crash
//! tests.

mod mutate_common;

use mutate_common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use vdisk_core::{CreateOptions, Payload};
use vdisk_qcow2::mutate::{self, Prealloc};
use vdisk_testutil::*;

/// `name`.qcow2 with data file `name`.data (absolute name), written by qemu-io.
fn image(d: &Scratch, name: &str, raw: bool) -> PathBuf {
    let p = d.join(&format!("{name}.qcow2"));
    let data = d.join(&format!("{name}.data"));
    let o = format!(
        "data_file={},data_file_raw={}",
        s(&data),
        if raw { "on" } else { "off" }
    );
    qemu_create(&p, "qcow2", &o, "4M");
    qemu_io(
        "qcow2",
        &p,
        &[
            "write -P 0x61 0 1M",
            "write -z 2M 64k",
            "write -P 0x62 3M 100k",
        ],
    );
    p
}

fn data_len(p: &Path) -> u64 {
    std::fs::metadata(p.with_extension("data")).unwrap().len()
}

fn map_kinds(p: &Path) -> Vec<String> {
    qemu_map_json(p, Some("qcow2"))
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {} {}",
                e["start"], e["length"], e["present"], e["zero"], e["data"]
            )
        })
        .collect()
}

fn agree(ours: &Path, theirs: &Path, what: &str) {
    assert_clean(ours);
    assert_clean(theirs);
    assert_same_bytes(&raw(ours), &raw(theirs), what);
    assert_eq!(info_summary(ours), info_summary(theirs), "{what}");
    let fs = |p: &Path| {
        let mut v = qemu_info_json(p)["format-specific"]["data"].clone();
        v["data-file"] = serde_json::Value::Null;
        v
    };
    assert_eq!(fs(ours), fs(theirs), "{what}: format-specific");
    assert_eq!(map_kinds(ours), map_kinds(theirs), "{what}: map");
    assert_eq!(data_len(ours), data_len(theirs), "{what}: data file length");
}

/// qemu-img's message for `args`, which must fail with exit code 1.
fn qemu_fails(args: &[&str]) -> String {
    let o = Command::new("qemu-img").args(args).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{args:?}");
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    e.trim_end().trim_start_matches("qemu-img: ").to_string()
}

#[test]
fn resize_with_a_data_file_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("mut-df-resize");
    for raw in [false, true] {
        for (k, (size, shrink, pre)) in [
            (8u64 << 20, false, Prealloc::Off),
            (2 << 20, true, Prealloc::Off),
            ((6 << 20) + 512, false, Prealloc::Metadata),
            (6 << 20, false, Prealloc::Falloc),
            (5 << 20, false, Prealloc::Full),
        ]
        .iter()
        .enumerate()
        {
            let ours = image(&d, &format!("o{k}{raw}"), raw);
            let theirs = image(&d, &format!("t{k}{raw}"), raw);
            mutate::resize_with(&ours, *size, *shrink, *pre).unwrap();
            let mut a = vec!["resize".to_string(), "-q".into()];
            if *shrink {
                a.push("--shrink".into());
            }
            let mode = match pre {
                Prealloc::Off => "off",
                Prealloc::Metadata => "metadata",
                Prealloc::Falloc => "falloc",
                Prealloc::Full => "full",
            };
            a.push(format!("--preallocation={mode}"));
            a.extend([s(&theirs), size.to_string()]);
            qemu_img(&a.iter().map(String::as_str).collect::<Vec<_>>());
            let what = format!("raw {raw}: resize {size} {mode}");
            agree(&ours, &theirs, &what);
            qemu_io("qcow2", &ours, &["write -P 0x63 1800k 8k"]);
            qemu_io("qcow2", &theirs, &["write -P 0x63 1800k 8k"]);
            agree(&ours, &theirs, &format!("{what}, then written"));
        }
    }
}

#[test]
fn amend_rebase_snapshot_with_a_data_file_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("mut-df-ops");
    let opts = |o: &str| CreateOptions::parse(&[o]).unwrap();
    for is_raw in [false, true] {
        let ours = image(&d, &format!("o{is_raw}"), is_raw);
        let theirs = image(&d, &format!("t{is_raw}"), is_raw);
        let ts = s(&theirs);
        // What qemu-img accepts.
        let mut ok = vec!["lazy_refcounts=on", "data_file_raw=off"];
        if is_raw {
            ok.insert(0, "data_file_raw=on");
        }
        for o in ok {
            mutate::amend(&ours, &opts(o)).unwrap();
            qemu_img(&["amend", "-o", o, &ts]);
            agree(&ours, &theirs, &format!("raw {is_raw}: amend {o}"));
        }
        // What it refuses, with its messages; nothing written.
        let bytes = std::fs::read(&ours).unwrap();
        for o in ["data_file_raw=on", "compat=0.10"] {
            let e = mutate::amend(&ours, &opts(o)).unwrap_err().to_string();
            assert_eq!(e, qemu_fails(&["amend", "-o", o, &ts]), "{o}");
        }
        let e = mutate::snapshot_create(&ours, "s").unwrap_err().to_string();
        assert_eq!(e, qemu_fails(&["snapshot", "-c", "s", &ts]));
        let e = mutate::snapshot_apply(&ours, "s").unwrap_err().to_string();
        assert_eq!(e, qemu_fails(&["snapshot", "-a", "s", &ts]));
        assert_eq!(std::fs::read(&ours).unwrap(), bytes, "nothing written");
        // rebase -u: a backing file under a (formerly raw, now plain) data file image.
        mutate::rebase_unsafe(&ours, "x.raw", Some("raw")).unwrap();
        qemu_img(&["rebase", "-u", "-b", "x.raw", "-F", "raw", &ts]);
        let info = |p: &Path| qemu_info_json(p)["backing-filename"].clone();
        assert_eq!(info(&ours), info(&theirs));
        mutate::rebase_unsafe(&ours, "", None).unwrap();
        qemu_img(&["rebase", "-u", "-b", "", &ts]);
        agree(&ours, &theirs, &format!("raw {is_raw}: rebase -u"));
        // Pointing the image at a copy of its data file.
        let moved = d.join(&format!("moved{is_raw}.data"));
        std::fs::copy(ours.with_extension("data"), &moved).unwrap();
        let o = format!("data_file={}", s(&moved));
        mutate::amend(&ours, &opts(&o)).unwrap();
        std::fs::remove_file(ours.with_extension("data")).unwrap();
        assert_clean(&ours);
        assert_same_bytes(&raw(&ours), &raw(&theirs), "data file renamed");
        assert_eq!(
            qemu_info_json(&ours)["format-specific"]["data"]["data-file"],
            s(&moved).as_str()
        );
    }
    // A raw data file refuses a backing file.
    let r = image(&d, "r", true);
    let q = image(&d, "q", true);
    let e = mutate::rebase_unsafe(&r, "x.raw", Some("raw"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        qemu_fails(&["rebase", "-u", "-b", "x.raw", "-F", "raw", &s(&q)])
    );
    // data_file on an image without one.
    let p = d.join("plain.qcow2");
    qemu_create(&p, "qcow2", "", "1M");
    let e = mutate::amend(&p, &opts("data_file=x.data"))
        .unwrap_err()
        .to_string();
    assert_eq!(e, qemu_fails(&["amend", "-o", "data_file=x.data", &s(&p)]));
}

/// Like `crash_test`, with the image's data file restored along with it before every run (the
/// copies share it), and the data file's length checked too. Failed calls only: the data file
/// is not behind the failing storage, so a run whose image writes are silently dropped would go
/// on to cut the data file as if its synced switch had happened (no real crash does both).
fn crash_test_with_data_file(
    p: &Path,
    op: &dyn Fn(std::sync::Arc<dyn vdisk_core::Storage>) -> vdisk_core::Result<()>,
) -> usize {
    let data = p.with_extension("data");
    let (img0, data0) = (std::fs::read(p).unwrap(), std::fs::read(&data).unwrap());
    let restore = || {
        std::fs::write(p, &img0).unwrap();
        std::fs::write(&data, &data0).unwrap();
    };
    let before = (state(p), data_len(p));
    let counter = FailingStorage::new(p, usize::MAX, Fault::Fail);
    op(counter.clone()).unwrap();
    let points = counter.calls();
    drop(counter); // closed before qemu-img looks, as the writing process would be
    assert_clean(p);
    let after = (state(p), data_len(p));
    assert!(before != after);
    for fault in [Fault::Fail] {
        for at in 1..=points {
            restore();
            let r = op(FailingStorage::new(p, at, fault));
            assert!(r.is_err(), "{fault:?} at {at} must surface");
            let (code, out) = check(p);
            assert!(code == 0 || code == 3, "{fault:?} at {at}/{points}:\n{out}");
            let now = (state(p), data_len(p));
            // The data file grows before the switch and shrinks after it.
            assert!(
                now.0 == before.0 || now.0 == after.0,
                "{fault:?} at {at}/{points}: neither the old nor the new image"
            );
            assert!(
                now.1 >= before.1.min(after.1),
                "{fault:?} at {at}: data file cut early"
            );
        }
    }
    restore();
    points
}

#[test]
fn crash_resize_with_a_data_file() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("crash-df");
    for raw in [false, true] {
        let p = image(&d, &format!("c{raw}"), raw);
        let n = crash_test_with_data_file(&p, &|st| {
            mutate::resize_with_in(st, 6 << 20, false, Prealloc::Metadata, None)
        });
        eprintln!("data file (raw {raw}) grow: {n} fault points");
        let n = crash_test_with_data_file(&p, &|st| mutate::resize_in(st, 3 << 20, true));
        eprintln!("data file (raw {raw}) shrink: {n} fault points");
    }
}

/// The same writes through vdisk's in-place writer and through qemu-io: data over allocated and
/// unallocated clusters, zeros, a partial cluster, the last bytes of the disk.
fn write_both(ours: &Path, theirs: &Path) {
    let mut w = mutate::open_writer(ours).unwrap();
    w.write(960 << 10, Payload::data(vec![0x71; 200 << 10]))
        .unwrap();
    w.write(2 << 20, Payload::Zero(128 << 10)).unwrap();
    w.write((3 << 20) + 4096, Payload::data(vec![0x72; 512]))
        .unwrap();
    w.write(256 << 10, Payload::Zero(64 << 10)).unwrap();
    w.write((4 << 20) - 4096, Payload::data(vec![0x73; 4096]))
        .unwrap();
    w.finish().unwrap();
    qemu_io(
        "qcow2",
        theirs,
        &[
            "write -P 0x71 960k 200k",
            "write -z 2M 128k",
            &format!("write -P 0x72 {} 512", (3 << 20) + 4096),
            "write -z 256k 64k",
            &format!("write -P 0x73 {} 4k", (4 << 20) - 4096),
        ],
    );
}

#[test]
fn writes_into_a_data_file_image_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("mut-df-write");
    for raw in [false, true] {
        let ours = image(&d, &format!("o{raw}"), raw);
        let theirs = image(&d, &format!("t{raw}"), raw);
        write_both(&ours, &theirs);
        agree(&ours, &theirs, &format!("raw {raw}: writes"));
        if raw {
            // A raw data file is the guest disk itself.
            let data = std::fs::read(ours.with_extension("data")).unwrap();
            assert_same_bytes(&data, &raw_content(&ours), "raw data file");
        }
    }
    // Emptying an overlay with a data file (commit): it reads its backing file again.
    let b = d.join("b.raw");
    qemu_create(&b, "raw", "", "4M");
    qemu_io("raw", &b, &["write -P 0x55 0 4M"]);
    let top = d.join("top.qcow2");
    let o = format!("data_file={}", s(&d.join("top.data")));
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &o,
        "-b",
        &s(&b),
        "-F",
        "raw",
        &s(&top),
    ]);
    qemu_io("qcow2", &top, &["write -P 0x56 64k 128k"]);
    mutate::make_empty(&top).unwrap();
    assert_clean(&top);
    assert_same_bytes(&raw(&top), &std::fs::read(&b).unwrap(), "emptied overlay");
}

fn raw_content(p: &Path) -> Vec<u8> {
    raw(p)
}

#[test]
fn crash_write_into_a_data_file_image() {
    if !qemu_available() {
        return;
    }
    // New clusters only: an overwritten allocated cluster changes in place (as with QEMU), so
    // only writes to unallocated clusters can be old-or-new.
    let d = Scratch::new("crash-df-write");
    let p = image(&d, "w", false);
    let n = crash_test_with_data_file(&p, &|st| {
        let mut w = mutate::open_writer_in(st)?;
        w.write(1100 << 10, Payload::data(vec![0x44; 300 << 10]))?;
        w.write(2 << 20, Payload::Zero(64 << 10))?;
        w.finish()
    });
    eprintln!("data file write: {n} fault points");
}
