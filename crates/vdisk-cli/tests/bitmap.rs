//! `vdisk bitmap` against `qemu-img bitmap`: each command runs on two copies of the same image,
//! one per tool, and must give the same exit code and first error line (QEMU's node name
//! `#blockN` read as the file's name), leave bitmaps that `qemu-img info` lists the same way and
//! whose bits are the same, and leave an image that `qemu-img check` finds clean.

mod common;
use common::*;
use std::path::Path;
use vdisk::qcow2::mutate::{read_persistent_bitmaps, PersistentBitmap};
use vdisk_testutil::{qemu_available, qemu_create, Scratch};

/// base.qcow2: 10 MiB with bitmaps a (4 KiB granularity, enabled), b (default, enabled) and c
/// (disabled), each with the writes made while it was enabled; other.qcow2: the same size, with a
/// bitmap a of its own bits; small.qcow2: smaller, with a bitmap a; v2.qcow2; r.raw; inuse.qcow2:
/// base.qcow2 with bitmap b marked in use (inconsistent).
fn fixtures(d: &Path) {
    qemu_create(&d.join("base.qcow2"), "qcow2", "", "10M");
    qemu_ok(d, &["bitmap", "--add", "-g", "4k", "base.qcow2", "a"]);
    qemu_io(
        d,
        "qcow2",
        "base.qcow2",
        &["write -P 1 0 100k", "write -P 2 5M 4k"],
    );
    qemu_ok(d, &["bitmap", "--add", "base.qcow2", "b"]);
    qemu_io(
        d,
        "qcow2",
        "base.qcow2",
        &["write -P 3 1M 8k", "write -P 4 9M 1k"],
    );
    qemu_ok(d, &["bitmap", "--add", "--disable", "base.qcow2", "c"]);
    qemu_io(d, "qcow2", "base.qcow2", &["write -P 5 3M 64k"]);
    qemu_create(&d.join("other.qcow2"), "qcow2", "", "10M");
    qemu_ok(d, &["bitmap", "--add", "-g", "1k", "other.qcow2", "a"]);
    qemu_io(
        d,
        "qcow2",
        "other.qcow2",
        &["write -P 6 7M 3k", "write -P 7 200k 1k"],
    );
    qemu_create(&d.join("small.qcow2"), "qcow2", "", "5M");
    qemu_ok(d, &["bitmap", "--add", "small.qcow2", "a"]);
    qemu_create(&d.join("v2.qcow2"), "qcow2", "compat=0.10", "10M");
    qemu_create(&d.join("r.raw"), "raw", "", "10M");
    std::fs::copy(d.join("base.qcow2"), d.join("inuse.qcow2")).unwrap();
    mark_in_use(&d.join("inuse.qcow2"), 1);
}

/// Sets the in-use flag of directory entry `index` (as a crashed QEMU leaves it).
fn mark_in_use(path: &Path, index: usize) {
    let b = std::fs::read(path).unwrap();
    let at = b[..65536]
        .windows(4)
        .position(|w| w == [0x23, 0x85, 0x28, 0x75])
        .expect("no bitmaps extension");
    let dir = u64::from_be_bytes(b[at + 24..at + 32].try_into().unwrap()) as usize;
    let mut e = dir;
    for _ in 0..index {
        let name = u16::from_be_bytes([b[e + 18], b[e + 19]]) as usize;
        let extra = u32::from_be_bytes(b[e + 20..e + 24].try_into().unwrap()) as usize;
        e += (24 + extra + name).next_multiple_of(8);
    }
    let flags = u32::from_be_bytes(b[e + 12..e + 16].try_into().unwrap()) | 1;
    patch_file(path, (e + 12) as u64, &flags.to_be_bytes());
}

fn bitmaps(path: &Path) -> Vec<PersistentBitmap> {
    let storage = std::sync::Arc::new(vdisk::core::FileStorage::open(path).unwrap());
    let files = std::sync::Arc::new(vdisk::core::storage::HostFiles);
    let r = vdisk::qcow2::open(storage, files, &Default::default()).unwrap();
    if r.header().version < 3 {
        return Vec::new();
    }
    read_persistent_bitmaps(&r).unwrap()
}

fn listed(dir: &Path, file: &str) -> serde_json::Value {
    let v = json(&qemu_ok(dir, &["info", "--output=json", "-U", file]));
    v["format-specific"]["data"]["bitmaps"].clone()
}

/// Runs each command of `steps` (FILE standing for the image) with both tools on their own copy of
/// `image`; returns what differs.
fn compare(d: &Path, image: &str, steps: &[&[&str]], case: usize) -> Vec<String> {
    let ext = Path::new(image).extension().unwrap().to_str().unwrap();
    let (qf, vf) = (format!("q{case}.{ext}"), format!("v{case}.{ext}"));
    std::fs::copy(d.join(image), d.join(&qf)).unwrap();
    std::fs::copy(d.join(image), d.join(&vf)).unwrap();
    let mut differ = Vec::new();
    for step in steps {
        let with = |f: &str| -> Vec<String> {
            step.iter()
                .map(|a| {
                    if *a == "FILE" {
                        f.to_string()
                    } else {
                        a.to_string()
                    }
                })
                .collect()
        };
        let (qa, va) = (with(&qf), with(&vf));
        let q = qemu(d, &qa.iter().map(String::as_str).collect::<Vec<_>>());
        let v = vdisk(d, &va.iter().map(String::as_str).collect::<Vec<_>>());
        let re = regex_lite(&first_message(&err(&q)), &qf);
        let ve = first_message(&err(&v)).replace(&vf, &qf);
        if q.status.code() != v.status.code() || re != ve {
            differ.push(format!(
                "{step:?}: exit {:?} / {:?}\n  qemu-img: {re}\n  vdisk:    {ve}",
                q.status.code(),
                v.status.code()
            ));
        }
    }
    if ext == "qcow2" {
        if listed(d, &qf) != listed(d, &vf) {
            differ.push(format!(
                "{steps:?}: bitmaps listed\n  qemu-img: {}\n  vdisk:    {}",
                listed(d, &qf),
                listed(d, &vf)
            ));
        }
        let (qb, vb) = (bitmaps(&d.join(&qf)), bitmaps(&d.join(&vf)));
        if qb != vb {
            differ.push(format!("{steps:?}: the bitmaps' bits differ"));
        }
        let c = qemu(d, &["check", &vf]);
        if c.status.code() != Some(0) {
            differ.push(format!("{steps:?}: qemu-img check: {}", out(&c)));
        }
    }
    differ
}

/// QEMU's node names (`#block123`) as the file's name.
fn regex_lite(line: &str, file: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("#block") {
        out.push_str(&rest[..i]);
        out.push_str(file);
        rest = rest[i + 6..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

#[test]
fn bitmap_operations_do_what_qemu_img_does() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-bitmap");
    let d = s.path();
    fixtures(d);
    let b = "base.qcow2";
    let cases: Vec<(&str, Vec<&[&str]>)> = vec![
        (b, vec![&["bitmap", "--add", "-g", "16k", "FILE", "n"]]),
        (b, vec![&["bitmap", "--add", "FILE", "a"]]),
        (b, vec![&["bitmap", "--remove", "FILE", "a"]]),
        (b, vec![&["bitmap", "--remove", "FILE", "nope"]]),
        (
            b,
            vec![
                &["bitmap", "--disable", "FILE", "a"],
                &["bitmap", "--enable", "FILE", "c"],
            ],
        ),
        (b, vec![&["bitmap", "--clear", "--disable", "FILE", "b"]]),
        // Merges between granularities: 4 KiB into 64 KiB and 512 bytes, 64 KiB into 4 KiB.
        (b, vec![&["bitmap", "--add", "--merge", "a", "FILE", "m"]]),
        (
            b,
            vec![&["bitmap", "--add", "-g", "512", "--merge", "b", "FILE", "m"]],
        ),
        (b, vec![&["bitmap", "--merge", "b", "FILE", "a"]]),
        (
            b,
            vec![&["bitmap", "--merge", "c", "--merge", "a", "FILE", "b"]],
        ),
        // A failure after a success: the first operation's result is kept.
        (
            b,
            vec![&["bitmap", "--add", "--merge", "nope", "FILE", "m"]],
        ),
        (
            b,
            vec![&["bitmap", "--add", "--remove", "--add", "FILE", "m"]],
        ),
        (
            b,
            vec![&["bitmap", "--clear", "--merge", "nope", "FILE", "a"]],
        ),
        // Granularities: too small, truncated to 32 bits, the largest, not a power of 2, zero.
        (b, vec![&["bitmap", "--add", "-g", "256", "FILE", "z"]]),
        (b, vec![&["bitmap", "--add", "-g", "4G", "FILE", "z"]]),
        (b, vec![&["bitmap", "--add", "-g", "2G", "FILE", "z"]]),
        (b, vec![&["bitmap", "--add", "-g", "1000", "FILE", "z"]]),
        (b, vec![&["bitmap", "--add", "-g", "0", "FILE", "z"]]),
        (b, vec![&["bitmap", "--add", "-g", "x", "FILE", "z"]]),
        (b, vec![&["bitmap", "--add", "FILE", ""]]),
        // Another image's bitmap, and one of another size.
        (
            b,
            vec![&["bitmap", "--merge", "a", "-b", "other.qcow2", "FILE", "b"]],
        ),
        (
            b,
            vec![&[
                "bitmap",
                "--merge",
                "a",
                "-b",
                "other.qcow2",
                "-F",
                "qcow2",
                "FILE",
                "a",
            ]],
        ),
        (
            b,
            vec![&["bitmap", "--merge", "a", "-b", "small.qcow2", "FILE", "a"]],
        ),
        (
            b,
            vec![&["bitmap", "--merge", "x", "-b", "other.qcow2", "FILE", "a"]],
        ),
        (
            b,
            vec![&[
                "bitmap", "--merge", "a", "-b", "r.raw", "-F", "raw", "FILE", "a",
            ]],
        ),
        // Every bitmap removed: the image has no bitmaps extension left.
        (
            b,
            vec![
                &["bitmap", "--remove", "FILE", "a"],
                &["bitmap", "--remove", "FILE", "b"],
                &["bitmap", "--remove", "FILE", "c"],
                &["bitmap", "--add", "FILE", "again"],
            ],
        ),
        // A bitmap in use (inconsistent) can only be removed.
        ("inuse.qcow2", vec![&["bitmap", "--clear", "FILE", "b"]]),
        ("inuse.qcow2", vec![&["bitmap", "--enable", "FILE", "b"]]),
        (
            "inuse.qcow2",
            vec![&["bitmap", "--merge", "b", "FILE", "a"]],
        ),
        (
            "inuse.qcow2",
            vec![&["bitmap", "--merge", "a", "FILE", "b"]],
        ),
        ("inuse.qcow2", vec![&["bitmap", "--disable", "FILE", "a"]]),
        ("inuse.qcow2", vec![&["bitmap", "--remove", "FILE", "b"]]),
        // Images that cannot hold bitmaps.
        ("v2.qcow2", vec![&["bitmap", "--add", "FILE", "a"]]),
        ("v2.qcow2", vec![&["bitmap", "--remove", "FILE", "a"]]),
        (
            "r.raw",
            vec![&["bitmap", "-f", "raw", "--add", "FILE", "a"]],
        ),
        (
            "r.raw",
            vec![&["bitmap", "-f", "raw", "--clear", "FILE", "a"]],
        ),
        // The command line, checked in qemu-img's order.
        (b, vec![&["bitmap", "FILE", "a"]]),
        (b, vec![&["bitmap", "-g", "4k", "--remove", "FILE", "a"]]),
        (
            b,
            vec![&["bitmap", "--merge", "a", "-F", "qcow2", "FILE", "b"]],
        ),
        (
            b,
            vec![&["bitmap", "-b", "other.qcow2", "--clear", "FILE", "b"]],
        ),
        (b, vec![&["bitmap", "--clear", "FILE"]]),
        (b, vec![&["bitmap", "--clear", "FILE", "a", "b"]]),
        (b, vec![&["bitmap", "--cl", "--dis", "FILE", "a"]]),
        (
            b,
            vec![&[
                "bitmap",
                "--clear",
                "-f",
                "qcow2",
                "--image-opts",
                "FILE",
                "a",
            ]],
        ),
    ];
    let mut differ = Vec::new();
    for (i, (image, steps)) in cases.iter().enumerate() {
        differ.extend(compare(d, image, steps, i));
    }
    // The comparisons would pass if neither tool did anything: vdisk did.
    let after = bitmaps(&d.join("v0.qcow2"));
    assert_eq!(
        after.iter().map(|b| b.name_text()).collect::<Vec<_>>(),
        ["a", "b", "c", "n"]
    );
    assert!(after.iter().any(|b| b.bits.iter().any(|&x| x != 0)));
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

#[test]
fn bitmap_image_opts_and_help() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-bitmap-opts");
    let d = s.path();
    fixtures(d);
    vdisk_ok(
        d,
        &[
            "bitmap",
            "--image-opts",
            "--disable",
            "driver=qcow2,file.filename=base.qcow2",
            "a",
        ],
    );
    let flags = &listed(d, "base.qcow2")[0]["flags"];
    assert_eq!(flags, &serde_json::json!([]), "{flags}");
    let help = vdisk_ok(d, &["bitmap", "--help"]);
    assert!(help.contains("--merge SOURCE"), "{help}");
}
