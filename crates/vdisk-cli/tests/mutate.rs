//! Commands that change qcow2 images (snapshot -c/-a/-d, resize, check -r, amend): each is run by
//! vdisk on one copy and by qemu-img on another, and the results must agree and check clean.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use vdisk_testutil::{assert_qemu_check_clean, qemu_available, Scratch};

fn raw_of(d: &Path, img: &str, out_name: &str) -> Vec<u8> {
    qemu_ok(d, &["convert", "-O", "raw", img, out_name]);
    let b = std::fs::read(d.join(out_name)).unwrap();
    std::fs::remove_file(d.join(out_name)).unwrap();
    b
}

fn snapshot_names(d: &Path, img: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&qemu_ok(d, &["info", "--output=json", img])).unwrap();
    v["snapshots"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| format!("{}:{}", s["id"], s["name"]))
                .collect()
        })
        .unwrap_or_default()
}

/// Check output without its image end offset line, and that offset.
fn without_end_offset(text: &str) -> (String, Option<u64>) {
    let mut end = None;
    let mut kept = Vec::new();
    for line in text.lines() {
        let t = line.trim().trim_end_matches(',');
        let value = t
            .strip_prefix("Image end offset: ")
            .or_else(|| t.strip_prefix("\"image-end-offset\": "));
        match value {
            Some(v) => end = v.parse().ok(),
            None => kept.push(line),
        }
    }
    (kept.join("\n"), end)
}

/// Makes the same qcow2 twice: `ours.qcow2` for vdisk and `theirs.qcow2` for qemu-img.
fn twins(d: &Path) {
    make_pattern_raw(d, "pat.raw", 0);
    qemu_ok(d, &["convert", "-O", "qcow2", "pat.raw", "ours.qcow2"]);
    std::fs::copy(d.join("ours.qcow2"), d.join("theirs.qcow2")).unwrap();
}

#[test]
fn snapshots_create_apply_delete_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-mut-snap");
    let d = s.path();
    twins(d);
    for (tool, img) in [("vdisk", "ours.qcow2"), ("qemu", "theirs.qcow2")] {
        let run = |args: &[&str]| {
            if tool == "vdisk" {
                vdisk_ok(d, args);
            } else {
                qemu_ok(d, args);
            }
        };
        run(&["snapshot", "-c", "first", img]);
        qemu_io(
            d,
            "qcow2",
            img,
            &["write -P 0xee 0 256k", "write -z 1M 64k"],
        );
        run(&["snapshot", "-c", "second", img]);
        qemu_io(d, "qcow2", img, &["write -P 0xdd 8M 64k"]);
        run(&["snapshot", "-a", "first", img]);
        run(&["snapshot", "-d", "second", img]);
        assert_qemu_check_clean(&d.join(img), "qcow2");
    }
    assert_eq!(
        snapshot_names(d, "ours.qcow2"),
        snapshot_names(d, "theirs.qcow2")
    );
    assert!(raw_of(d, "ours.qcow2", "o.raw") == raw_of(d, "theirs.qcow2", "t.raw"));
    assert!(raw_of(d, "ours.qcow2", "o.raw") == std::fs::read(d.join("pat.raw")).unwrap());
    assert_eq!(
        vdisk_ok(d, &["snapshot", "-l", "ours.qcow2"])
            .lines()
            .count(),
        qemu_ok(d, &["snapshot", "-l", "theirs.qcow2"])
            .lines()
            .count()
    );
    let o = vdisk(d, &["snapshot", "-d", "nope", "ours.qcow2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("Could not delete snapshot 'nope'"),
        "{}",
        err(&o)
    );
}

#[test]
fn resize_qcow2_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-mut-resize");
    let d = s.path();
    twins(d);
    for args in [vec!["+1G"], vec!["--shrink", "32M"]] {
        let mut ours = vec!["resize"];
        ours.extend(args.iter().copied());
        let mut theirs = ours.clone();
        ours.push("ours.qcow2");
        theirs.push("theirs.qcow2");
        // The size goes last.
        let size = ours.remove(ours.len() - 2);
        ours.push(size);
        let size = theirs.remove(theirs.len() - 2);
        theirs.push(size);
        assert_eq!(vdisk_ok(d, &ours), qemu_ok(d, &theirs), "{args:?}");
        assert_qemu_check_clean(&d.join("ours.qcow2"), "qcow2");
        assert!(
            raw_of(d, "ours.qcow2", "o.raw") == raw_of(d, "theirs.qcow2", "t.raw"),
            "{args:?}"
        );
    }
    let o = vdisk(d, &["resize", "ours.qcow2", "16M"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("--shrink"), "{}", err(&o));
}

/// `resize ARGS.. IMG SIZE` by vdisk on ours.qcow2 and by qemu-img on theirs.qcow2 in `d`: both
/// report success, and ours passes `qemu-img check` and reads as theirs.
fn resize_twins(d: &Path, args: &[&str], size: &str, what: &str) {
    for img in ["ours.qcow2", "theirs.qcow2"] {
        let mut all = vec!["resize"];
        all.extend_from_slice(args);
        all.extend([img, size]);
        let o = if img == "ours.qcow2" {
            vdisk_ok(d, &all)
        } else {
            qemu_ok(d, &all)
        };
        assert_eq!(o, "Image resized.\n", "{what}");
    }
    assert_qemu_check_clean(&d.join("ours.qcow2"), "qcow2");
    assert!(
        raw_of(d, "ours.qcow2", "o.raw") == raw_of(d, "theirs.qcow2", "t.raw"),
        "{what}"
    );
}

#[test]
fn resize_qcow2_over_a_longer_backing_file_like_qemu() {
    if !qemu_available() {
        return;
    }
    // The old end (1000k) lies in a cluster still read from the backing file: the CLI opens the
    // backing chain (qcow2 over raw) and copies that cluster's head from it, as qemu-img does.
    let s = Scratch::new("cli-mut-resize-backing");
    let d = s.path();
    qemu_ok(d, &["create", "-q", "-f", "raw", "base.raw", "4M"]);
    qemu_io(d, "raw", "base.raw", &["write -P 0x5a 0 4M"]);
    qemu_overlay(d, "base.raw", "raw", "mid.qcow2", Some("3M"));
    qemu_io(d, "qcow2", "mid.qcow2", &["write -P 0x5b 960k 16k"]);
    for mode in ["off", "metadata", "full"] {
        for img in ["ours.qcow2", "theirs.qcow2"] {
            let _ = std::fs::remove_file(d.join(img));
            qemu_overlay(d, "mid.qcow2", "qcow2", img, Some("1000k"));
            qemu_io(d, "qcow2", img, &["write -P 0x5c 900k 8k"]);
        }
        resize_twins(d, &[&format!("--preallocation={mode}")], "2M", mode);
    }
}

#[test]
fn resize_qcow2_preallocation_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-mut-prealloc");
    let d = s.path();
    for mode in ["metadata", "falloc", "full"] {
        twins(d);
        resize_twins(d, &[&format!("--preallocation={mode}")], "+3M", mode);
        let map = |img: &str| qemu_map_kinds(d, "qcow2", img);
        assert_eq!(map("ours.qcow2"), map("theirs.qcow2"), "{mode}");
    }
    // Preallocation never shrinks, with or without --shrink; qemu-img's message and exit code.
    for extra in [&["--shrink"][..], &[][..]] {
        let mut args = vec!["resize", "--preallocation=full"];
        args.extend_from_slice(extra);
        args.extend(["ours.qcow2", "1M"]);
        let (o, t) = (vdisk(d, &args), qemu(d, &args));
        assert_eq!(o.status.code(), t.status.code());
        assert_eq!(t.status.code(), Some(1));
        let msg = "Preallocation can only be used for growing images";
        assert!(
            err(&o).contains(msg) && err(&t).contains(msg),
            "{}",
            err(&o)
        );
    }
    let o = vdisk(d, &["resize", "--preallocation=bogus", "ours.qcow2", "+1M"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("Invalid preallocation mode 'bogus'"),
        "{}",
        err(&o)
    );
}

#[test]
fn check_repairs_leaks_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-mut-repair");
    let d = s.path();
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "l.qcow2", "8M"]);
    qemu_io(d, "qcow2", "l.qcow2", &["write -P 1 0 128k"]);
    // Leak cluster 12: give it a refcount of 1 in the first refcount block (at 0x20000, 16-bit
    // entries) and make the file long enough to hold it.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(d.join("l.qcow2"))
            .unwrap();
        f.write_all_at(&1u16.to_be_bytes(), 0x20000 + 12 * 2)
            .unwrap();
        f.write_all_at(&[0], 13 * 65536 - 1).unwrap();
    }
    for f in ["a.qcow2", "b.qcow2", "c.qcow2", "d.qcow2"] {
        std::fs::copy(d.join("l.qcow2"), d.join(f)).unwrap();
    }
    let ours = vdisk(d, &["check", "a.qcow2"]);
    let theirs = qemu(d, &["check", "b.qcow2"]);
    assert_eq!(ours.status.code(), Some(3));
    assert_eq!(
        (ours.status.code(), out(&ours)),
        (theirs.status.code(), out(&theirs))
    );
    for (mode, output) in [("leaks", "human"), ("all", "json")] {
        let o = vdisk(
            d,
            &[
                "check",
                "-r",
                mode,
                &format!("--output={output}"),
                "a.qcow2",
            ],
        );
        let t = qemu(
            d,
            &[
                "check",
                "-r",
                mode,
                &format!("--output={output}"),
                "b.qcow2",
            ],
        );
        assert_eq!(o.status.code(), t.status.code(), "-r {mode}");
        // Everything but the image end offset is qemu's to the letter. vdisk's repair is
        // shadow-paged (new refcount structures are written where the old state does not look, then
        // one header write switches), so its tables may end later than qemu's in-place rewrite;
        // they must still end before the damaged file did.
        let (ours, our_end) = without_end_offset(&out(&o).replace("a.qcow2", "X"));
        let (theirs, their_end) = without_end_offset(&out(&t).replace("b.qcow2", "X"));
        assert_eq!(ours, theirs, "-r {mode}");
        assert!(their_end.is_some(), "-r {mode}: qemu reports an end offset");
        assert!(
            our_end.is_some_and(|e| e < 13 * 65536),
            "-r {mode}: {our_end:?}"
        );
        assert_qemu_check_clean(&d.join("a.qcow2"), "qcow2");
        std::fs::copy(d.join("c.qcow2"), d.join("a.qcow2")).unwrap();
        std::fs::copy(d.join("d.qcow2"), d.join("b.qcow2")).unwrap();
    }
}

#[test]
fn amend_changes_options_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-mut-amend");
    let d = s.path();
    twins(d);
    for opts in [
        "lazy_refcounts=on",
        "lazy_refcounts=off",
        "compat=0.10",
        "compat=1.1",
    ] {
        vdisk_ok(d, &["amend", "-o", opts, "ours.qcow2"]);
        qemu_ok(d, &["amend", "-o", opts, "theirs.qcow2"]);
        assert_qemu_check_clean(&d.join("ours.qcow2"), "qcow2");
        let a: Value =
            serde_json::from_str(&qemu_ok(d, &["info", "--output=json", "ours.qcow2"])).unwrap();
        let b: Value =
            serde_json::from_str(&qemu_ok(d, &["info", "--output=json", "theirs.qcow2"])).unwrap();
        assert_eq!(a["format-specific"], b["format-specific"], "{opts}");
        assert!(
            raw_of(d, "ours.qcow2", "o.raw") == std::fs::read(d.join("pat.raw")).unwrap(),
            "{opts}"
        );
    }
}

#[test]
fn unsafe_rebase_rewrites_the_reference_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-mut-rebase");
    let d = s.path();
    make_pattern_raw(d, "base.raw", 0);
    qemu_ok(d, &["convert", "-O", "qcow2", "base.raw", "copy.qcow2"]);
    qemu_overlay(d, "base.raw", "raw", "ours.qcow2", None);
    qemu_io(d, "qcow2", "ours.qcow2", &["write -P 0x61 4M 64k"]);
    std::fs::copy(d.join("ours.qcow2"), d.join("theirs.qcow2")).unwrap();
    let o = vdisk(d, &["rebase", "-u", "-b", "copy.qcow2", "ours.qcow2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("backing format must be specified"),
        "{}",
        err(&o)
    );
    vdisk_ok(
        d,
        &[
            "rebase",
            "-u",
            "-b",
            "copy.qcow2",
            "-F",
            "qcow2",
            "ours.qcow2",
        ],
    );
    qemu_ok(
        d,
        &[
            "rebase",
            "-u",
            "-b",
            "copy.qcow2",
            "-F",
            "qcow2",
            "theirs.qcow2",
        ],
    );
    assert_qemu_check_clean(&d.join("ours.qcow2"), "qcow2");
    let info = |f: &str| -> Value {
        serde_json::from_str(&qemu_ok(d, &["info", "--output=json", f])).unwrap()
    };
    for key in [
        "backing-filename",
        "backing-filename-format",
        "full-backing-filename",
    ] {
        assert_eq!(info("ours.qcow2")[key], info("theirs.qcow2")[key], "{key}");
    }
    assert!(raw_of(d, "ours.qcow2", "o.raw") == raw_of(d, "theirs.qcow2", "t.raw"));
    vdisk_ok(d, &["rebase", "-u", "-b", "", "ours.qcow2"]);
    assert!(info("ours.qcow2").get("backing-filename").is_none());
    assert_qemu_check_clean(&d.join("ours.qcow2"), "qcow2");
}

/// A three-layer chain: base.raw <- mid.qcow2 <- top.qcow2, each with data of its own.
fn chain(d: &Path, top: &str) {
    if !d.join("base.raw").exists() {
        make_pattern_raw(d, "base.raw", 0);
        qemu_overlay(d, "base.raw", "raw", "mid.qcow2", None);
        qemu_io(
            d,
            "qcow2",
            "mid.qcow2",
            &["write -P 0x81 1M 256k", "write -z 8M 64k"],
        );
    }
    qemu_overlay(d, "mid.qcow2", "qcow2", top, None);
    qemu_io(
        d,
        "qcow2",
        top,
        &["write -P 0x82 1152k 64k", "write -P 0x83 20M 64k"],
    );
}

#[test]
fn safe_rebase_and_flatten_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-mut-safe-rebase");
    let d = s.path();
    chain(d, "ours.qcow2");
    chain(d, "theirs.qcow2");
    let before = raw_of(d, "ours.qcow2", "b.raw");
    // Skip the middle layer: what it contributed must be copied into the top.
    vdisk_ok(d, &["rebase", "-b", "base.raw", "-F", "raw", "ours.qcow2"]);
    qemu_ok(
        d,
        &["rebase", "-b", "base.raw", "-F", "raw", "theirs.qcow2"],
    );
    assert_qemu_check_clean(&d.join("ours.qcow2"), "qcow2");
    assert!(
        raw_of(d, "ours.qcow2", "o.raw") == before,
        "content unchanged by a safe rebase"
    );
    assert!(raw_of(d, "theirs.qcow2", "t.raw") == before);
    let info = |f: &str| -> Value {
        serde_json::from_str(&qemu_ok(d, &["info", "--output=json", f])).unwrap()
    };
    assert_eq!(info("ours.qcow2")["backing-filename"], "base.raw");
    // Flatten.
    vdisk_ok(d, &["rebase", "-b", "", "ours.qcow2"]);
    assert!(info("ours.qcow2").get("backing-filename").is_none());
    assert_qemu_check_clean(&d.join("ours.qcow2"), "qcow2");
    assert!(
        raw_of(d, "ours.qcow2", "o.raw") == before,
        "flattened image keeps its content"
    );
}

#[test]
fn commit_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-mut-commit");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    for (extra, keep) in [(vec![], false), (vec!["-d"], true)] {
        for tool in ["vdisk", "qemu"] {
            qemu_ok(
                d,
                &[
                    "convert",
                    "-O",
                    "qcow2",
                    "pat.raw",
                    &format!("{tool}-base.qcow2"),
                ],
            );
            let top = format!("{tool}-top.qcow2");
            let base = format!("{tool}-base.qcow2");
            qemu_overlay(d, &base, "qcow2", &top, None);
            qemu_io(
                d,
                "qcow2",
                &top,
                &[
                    "write -P 0x91 0 128k",
                    "write -z 1M 64k",
                    "write -P 0x92 30M 4k",
                ],
            );
            let mut a = vec!["commit"];
            a.extend(extra.iter().copied());
            a.push(&top);
            let o = if tool == "vdisk" {
                vdisk_ok(d, &a)
            } else {
                qemu_ok(d, &a)
            };
            assert_eq!(o, "Image committed.\n");
        }
        for f in ["vdisk-base.qcow2", "vdisk-top.qcow2"] {
            assert_qemu_check_clean(&d.join(f), "qcow2");
        }
        assert!(
            raw_of(d, "vdisk-base.qcow2", "a.raw") == raw_of(d, "qemu-base.qcow2", "b.raw"),
            "{extra:?}"
        );
        assert!(
            raw_of(d, "vdisk-top.qcow2", "a.raw") == raw_of(d, "qemu-top.qcow2", "b.raw"),
            "{extra:?}"
        );
        let map: Value =
            serde_json::from_str(&qemu_ok(d, &["map", "--output=json", "vdisk-top.qcow2"]))
                .unwrap();
        let own = map
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["depth"] == 0 && e["present"] == true);
        assert_eq!(own, keep, "{extra:?}: overlay emptied unless -d");
    }
    let o = vdisk(d, &["commit", "pat.raw"]);
    assert_eq!(o.status.code(), Some(1));
    let o = vdisk(d, &["commit", "vdisk-base.qcow2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("Image does not have a backing file"),
        "{}",
        err(&o)
    );
}

#[test]
fn convert_n_into_existing_qcow2() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-mut-convert-n");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    qemu_ok(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k",
            "t.qcow2",
            "64M",
        ],
    );
    qemu_io(d, "qcow2", "t.qcow2", &["write -P 0xcc 0 8M"]);
    qemu_ok(d, &["snapshot", "-c", "old", "t.qcow2"]);
    vdisk_ok(d, &["convert", "-n", "-O", "qcow2", "pat.raw", "t.qcow2"]);
    assert_qemu_check_clean(&d.join("t.qcow2"), "qcow2");
    assert_eq!(
        qemu(d, &["compare", "pat.raw", "t.qcow2"]).status.code(),
        Some(0)
    );
    // The snapshot still holds what it held.
    qemu_ok(
        d,
        &["convert", "-l", "old", "-O", "raw", "t.qcow2", "old.raw"],
    );
    let old = std::fs::read(d.join("old.raw")).unwrap();
    assert!(old[..8 << 20].iter().all(|b| *b == 0xcc) && old[8 << 20..].iter().all(|b| *b == 0));
}

fn be(d: &[u8], at: usize, n: usize) -> u64 {
    d[at..at + n]
        .iter()
        .fold(0u64, |a, x| (a << 8) | u64::from(*x))
}

/// Every persistent bitmap of a qcow2 file as (name, flags, set bit indices), read from the
/// file (qcow2.txt "Bitmaps extension", "Bitmap directory", "Bitmap table").
fn bitmap_bits(p: &Path) -> Vec<(String, u64, Vec<u64>)> {
    let d = std::fs::read(p).unwrap();
    let cs = 1usize << be(&d, 20, 4);
    let mut o = be(&d, 100, 4) as usize;
    let mut out = Vec::new();
    while o + 8 <= d.len() && be(&d, o, 4) != 0 {
        if be(&d, o, 4) == 0x2385_2875 {
            let mut e = be(&d, o + 24, 8) as usize;
            for _ in 0..be(&d, o + 8, 4) {
                let (to, ts) = (be(&d, e, 8) as usize, be(&d, e + 8, 4) as usize);
                let (ns, ex) = (be(&d, e + 18, 2) as usize, be(&d, e + 20, 4) as usize);
                let name = String::from_utf8_lossy(&d[e + 24 + ex..e + 24 + ex + ns]).into_owned();
                let mut set = Vec::new();
                for k in 0..ts {
                    let off = (be(&d, to + 8 * k, 8) & 0x00ff_ffff_ffff_fe00) as usize;
                    for i in (0..cs * 8).filter(|i| off != 0 && d[off + i / 8] >> (i % 8) & 1 == 1)
                    {
                        set.push((k * cs * 8 + i) as u64);
                    }
                }
                out.push((name, be(&d, e + 12, 4), set));
                e = (e + 24 + ex + ns).next_multiple_of(8);
            }
        }
        o += 8 + (be(&d, o + 4, 4) as usize).next_multiple_of(8);
    }
    out
}

#[test]
fn commit_and_rebase_record_in_bitmaps_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-mut-bitmaps");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    for tool in ["vdisk", "qemu"] {
        let base = format!("{tool}-base.qcow2");
        let top = format!("{tool}-top.qcow2");
        qemu_ok(d, &["convert", "-O", "qcow2", "pat.raw", &base]);
        qemu_ok(d, &["bitmap", "--add", &base, "b1"]);
        qemu_ok(d, &["bitmap", "--add", "--disable", &base, "b2"]);
        qemu_overlay(d, &base, "qcow2", &top, None);
        qemu_io(
            d,
            "qcow2",
            &top,
            &["write -P 0x91 0 128k", "write -P 0x92 30M 4k"],
        );
        qemu_ok(d, &["bitmap", "--add", "-g", "128k", &top, "t1"]);
        qemu_io(d, "qcow2", &top, &["write -P 0x93 20M 64k"]);
        // Commit into the base (its enabled bitmap records what is written), then a safe
        // rebase of the top onto nothing (the top's bitmap records the copied data).
        let commit = ["commit", "-d", top.as_str()];
        let rebase = ["rebase", "-b", "", top.as_str()];
        for a in [&commit[..], &rebase[..]] {
            if tool == "vdisk" {
                vdisk_ok(d, a);
            } else {
                qemu_ok(d, a);
            }
        }
    }
    for f in ["base.qcow2", "top.qcow2"] {
        let (ours, theirs) = (d.join(format!("vdisk-{f}")), d.join(format!("qemu-{f}")));
        assert_qemu_check_clean(&ours, "qcow2");
        assert_eq!(bitmap_bits(&ours), bitmap_bits(&theirs), "{f}");
        assert!(!bitmap_bits(&ours)[0].2.is_empty(), "{f}: bits were set");
        let info = |p: &Path| {
            let v: Value = serde_json::from_str(&qemu_ok(
                d,
                &["info", "--output=json", &p.to_string_lossy()],
            ))
            .unwrap();
            v["format-specific"]["data"]["bitmaps"].clone()
        };
        assert_eq!(info(&ours), info(&theirs), "{f}");
        assert!(
            raw_of(d, &format!("vdisk-{f}"), "o.raw") == raw_of(d, &format!("qemu-{f}"), "t.raw"),
            "{f}"
        );
    }
}

#[test]
fn commit_and_rebase_with_data_files_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-mut-datafile");
    let d = s.path();
    for t in ["vdisk", "qemu"] {
        let data = |n: &str| format!("data_file={}", d.join(format!("{t}-{n}.data")).display());
        let base = format!("{t}-base.raw");
        qemu_ok(d, &["create", "-q", "-f", "raw", &base, "4M"]);
        qemu_io(d, "raw", &base, &["write -P 7 0 4M"]);
        // An overlay with a data file over a raw base, committed into it.
        let ov = format!("{t}-ov.qcow2");
        qemu_ok(
            d,
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &data("ov"),
                "-b",
                &base,
                "-F",
                "raw",
                &ov,
            ],
        );
        qemu_io(d, "qcow2", &ov, &["write -P 1 1M 64k", "write -z 2M 64k"]);
        // A base with a data file, an overlay committed into it.
        let b2 = format!("{t}-b2.qcow2");
        qemu_ok(
            d,
            &["create", "-q", "-f", "qcow2", "-o", &data("b2"), &b2, "4M"],
        );
        qemu_io(d, "qcow2", &b2, &["write -P 3 0 1M"]);
        let top = format!("{t}-top.qcow2");
        qemu_overlay(d, &b2, "qcow2", &top, None);
        qemu_io(d, "qcow2", &top, &["write -P 4 512k 64k"]);
        // An overlay with a data file, rebased (safe mode) onto an empty base.
        let r = format!("{t}-r.qcow2");
        qemu_ok(
            d,
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &data("r"),
                "-b",
                &base,
                "-F",
                "raw",
                &r,
            ],
        );
        qemu_io(d, "qcow2", &r, &["write -P 9 100k 8k"]);
        let nb = format!("{t}-nb.raw");
        qemu_ok(d, &["create", "-q", "-f", "raw", &nb, "4M"]);
        for a in [
            vec!["commit", ov.as_str()],
            vec!["commit", top.as_str()],
            vec!["rebase", "-b", nb.as_str(), "-F", "raw", r.as_str()],
        ] {
            if t == "vdisk" {
                vdisk_ok(d, &a);
            } else {
                qemu_ok(d, &a);
            }
        }
    }
    for f in ["base.raw", "ov.qcow2", "b2.qcow2", "top.qcow2", "r.qcow2"] {
        let (ours, theirs) = (format!("vdisk-{f}"), format!("qemu-{f}"));
        if f.ends_with("qcow2") {
            assert_qemu_check_clean(&d.join(&ours), "qcow2");
            let map = |i: &str| qemu_ok(d, &["map", "--output=json", i]);
            assert_eq!(map(&ours), map(&theirs), "{f}");
        }
        assert!(
            raw_of(d, &ours, "o.raw") == raw_of(d, &theirs, "t.raw"),
            "{f}"
        );
    }
}

#[test]
fn snapshot_errors_read_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-mut-snap-err");
    let d = s.path();
    twins(d);
    let data = format!("data_file={}", d.join("df.data").display());
    qemu_ok(
        d,
        &["create", "-q", "-f", "qcow2", "-o", &data, "df.qcow2", "1M"],
    );
    for (args, img) in [
        (vec!["snapshot", "-a", "nosuch"], "ours.qcow2"),
        (vec!["snapshot", "-d", "nosuch"], "ours.qcow2"),
        (vec!["snapshot", "-c", "s"], "df.qcow2"),
    ] {
        let mut a = args.clone();
        a.push(img);
        let (o, t) = (vdisk(d, &a), qemu(d, &a));
        assert_eq!(o.status.code(), t.status.code(), "{a:?}");
        assert_eq!(
            err(&o).trim_start_matches("vdisk: "),
            err(&t).trim_start_matches("qemu-img: "),
            "{a:?}"
        );
    }
}
