//! `vdisk info`, `map`, `check` and `snapshot -l` against qemu-img's own output on the same images.

mod common;
use common::*;
use vdisk_testutil::{qemu_available, Scratch};

/// Fixtures of every readable format, made from one patterned raw image.
fn fixtures(dir: &std::path::Path) -> Vec<(&'static str, &'static str)> {
    make_pattern_raw(dir, "pat.raw", 0);
    qemu_ok(dir, &["convert", "-O", "qcow2", "pat.raw", "p.qcow2"]);
    qemu_ok(
        dir,
        &[
            "convert",
            "-O",
            "qcow2",
            "-o",
            "compat=0.10",
            "pat.raw",
            "p-v2.qcow2",
        ],
    );
    qemu_ok(
        dir,
        &["convert", "-c", "-O", "qcow2", "pat.raw", "p-z.qcow2"],
    );
    qemu_ok(dir, &["convert", "-O", "vmdk", "pat.raw", "p.vmdk"]);
    qemu_ok(dir, &["convert", "-O", "vdi", "pat.raw", "p.vdi"]);
    qemu_ok(dir, &["convert", "-O", "vpc", "pat.raw", "p.vhd"]);
    // A fixed VHD has its footer at the end only: both tools probe it as raw.
    qemu_ok(
        dir,
        &[
            "convert",
            "-O",
            "vpc",
            "-o",
            "subformat=fixed",
            "pat.raw",
            "p-fixed.vhd",
        ],
    );
    vec![
        ("pat.raw", "raw"),
        ("p.qcow2", "qcow2"),
        ("p-v2.qcow2", "qcow2"),
        ("p-z.qcow2", "qcow2"),
        ("p.vmdk", "vmdk"),
        ("p.vdi", "vdi"),
        ("p.vhd", "vpc"),
        ("p-fixed.vhd", "raw"),
    ]
}

#[test]
fn info_json_matches_qemu_for_every_format() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-info");
    for (file, fmt) in fixtures(s.path()) {
        let ours = json(&vdisk_ok(s.path(), &["info", "--output=json", file]));
        let theirs = json(&qemu_ok(s.path(), &["info", "--output=json", file]));
        for key in [
            "filename",
            "format",
            "virtual-size",
            "actual-size",
            "dirty-flag",
            "cluster-size",
            "format-specific",
            "children",
        ] {
            assert_eq!(ours.get(key), theirs.get(key), "{file}: field {key}");
        }
        assert_eq!(ours["format"], fmt);
    }
}

#[test]
fn info_human_matches_qemu_line_for_line() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-info-human");
    for (file, _) in fixtures(s.path()) {
        let ours = vdisk_ok(s.path(), &["info", file]);
        let theirs = qemu_ok(s.path(), &["info", file]);
        assert_eq!(without_details(&ours), theirs, "{file}");
    }
}

#[test]
fn map_json_is_identical_to_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-map");
    for (file, _) in fixtures(s.path()) {
        let ours = vdisk_ok(s.path(), &["map", "--output=json", file]);
        let theirs = qemu_ok(s.path(), &["map", "--output=json", file]);
        assert_eq!(ours, theirs, "{file}");
    }
}

#[test]
fn map_human_is_identical_to_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-map-human");
    for (file, _) in fixtures(s.path()) {
        if file == "p-z.qcow2" {
            // Compressed clusters: both refuse the human map; checked below.
            let o = vdisk(s.path(), &["map", file]);
            assert_eq!(o.status.code(), Some(1));
            assert!(err(&o).contains("compressed"), "{}", err(&o));
            continue;
        }
        assert_eq!(
            vdisk_ok(s.path(), &["map", file]),
            qemu_ok(s.path(), &["map", file]),
            "{file}"
        );
    }
}

#[test]
fn backing_chain_info_and_map_match_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-chain");
    let d = s.path();
    make_pattern_raw(d, "base.raw", 0);
    qemu_overlay(d, "base.raw", "raw", "mid.qcow2", None);
    qemu_io(
        d,
        "qcow2",
        "mid.qcow2",
        &["write -P 0x77 1M 64k", "write -z 8M 64k"],
    );
    qemu_overlay(d, "mid.qcow2", "qcow2", "top.qcow2", Some("80M"));
    qemu_io(d, "qcow2", "top.qcow2", &["write -P 0x88 2M 128k"]);
    let ours = json(&vdisk_ok(
        d,
        &["info", "--backing-chain", "--output=json", "top.qcow2"],
    ));
    let theirs = json(&qemu_ok(
        d,
        &["info", "--backing-chain", "--output=json", "top.qcow2"],
    ));
    assert_eq!(ours, theirs);
    assert_eq!(
        vdisk_ok(d, &["map", "--output=json", "top.qcow2"]),
        qemu_ok(d, &["map", "--output=json", "top.qcow2"])
    );
    assert_eq!(
        without_details(&vdisk_ok(d, &["info", "--backing-chain", "top.qcow2"])),
        qemu_ok(d, &["info", "--backing-chain", "top.qcow2"])
    );
    // The whole chain reads as qemu reads it.
    vdisk_ok(d, &["convert", "-O", "raw", "top.qcow2", "ours.raw"]);
    qemu_ok(d, &["convert", "-O", "raw", "top.qcow2", "theirs.raw"]);
    assert!(
        std::fs::read(d.join("ours.raw")).unwrap() == std::fs::read(d.join("theirs.raw")).unwrap()
    );
}

#[test]
fn backing_loops_and_missing_files_are_clear_errors() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-loop");
    let d = s.path();
    qemu_ok(
        d,
        &[
            "create", "-q", "-f", "qcow2", "-u", "-b", "b.qcow2", "-F", "qcow2", "a.qcow2", "1M",
        ],
    );
    qemu_ok(
        d,
        &[
            "create", "-q", "-f", "qcow2", "-u", "-b", "a.qcow2", "-F", "qcow2", "b.qcow2", "1M",
        ],
    );
    let o = vdisk(d, &["map", "a.qcow2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("loop"), "{}", err(&o));
    qemu_ok(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            "gone.qcow2",
            "-F",
            "qcow2",
            "c.qcow2",
            "1M",
        ],
    );
    let o = vdisk(d, &["map", "c.qcow2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("gone.qcow2"), "{}", err(&o));
    // info without --backing-chain does not need the backing file, as in qemu.
    vdisk_ok(d, &["info", "c.qcow2"]);
    let o = vdisk(d, &["info", "missing.qcow2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("Could not open 'missing.qcow2': No such file or directory"),
        "{}",
        err(&o)
    );
}

#[test]
fn check_matches_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-check");
    let d = s.path();
    for (file, fmt) in fixtures(d) {
        let ours = vdisk(d, &["check", "--output=json", file]);
        let theirs = qemu(d, &["check", "--output=json", file]);
        assert_eq!(ours.status.code(), theirs.status.code(), "{file} exit code");
        if fmt == "qcow2" {
            assert_eq!(json(&out(&ours)), json(&out(&theirs)), "{file}");
            assert_eq!(
                vdisk_ok(d, &["check", file]),
                qemu_ok(d, &["check", file]),
                "{file}"
            );
        }
    }
}

#[test]
fn snapshot_list_matches_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-snap");
    let d = s.path();
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "s.qcow2", "4M"]);
    qemu_io(d, "qcow2", "s.qcow2", &["write -P 1 0 64k"]);
    qemu_ok(d, &["snapshot", "-c", "before", "s.qcow2"]);
    qemu_io(d, "qcow2", "s.qcow2", &["write -P 2 0 64k"]);
    qemu_ok(d, &["snapshot", "-c", "after", "s.qcow2"]);
    assert_eq!(
        vdisk_ok(d, &["snapshot", "-l", "s.qcow2"]),
        qemu_ok(d, &["snapshot", "-l", "s.qcow2"])
    );
    assert_eq!(
        without_details(&vdisk_ok(d, &["info", "s.qcow2"])),
        qemu_ok(d, &["info", "s.qcow2"])
    );
    let ours = json(&vdisk_ok(d, &["info", "--output=json", "s.qcow2"]));
    let theirs = json(&qemu_ok(d, &["info", "--output=json", "s.qcow2"]));
    assert_eq!(ours["snapshots"], theirs["snapshots"]);
    for sel in ["before", "snapshot.name=before", "snapshot.id=1"] {
        vdisk_ok(
            d,
            &["convert", "-l", sel, "-O", "raw", "s.qcow2", "ours.raw"],
        );
        qemu_ok(
            d,
            &["convert", "-l", sel, "-O", "raw", "s.qcow2", "theirs.raw"],
        );
        assert!(
            std::fs::read(d.join("ours.raw")).unwrap()
                == std::fs::read(d.join("theirs.raw")).unwrap(),
            "{sel}"
        );
    }
}

#[test]
fn three_deep_chains_of_mixed_formats_read_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-mixed-chain");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    for (base, fmt, conv) in [
        ("base.vmdk", "vmdk", vec!["-O", "vmdk"]),
        (
            "base-stream.vmdk",
            "vmdk",
            vec!["-O", "vmdk", "-o", "subformat=streamOptimized"],
        ),
        ("base.vdi", "vdi", vec!["-O", "vdi"]),
        ("base.vhd", "vpc", vec!["-O", "vpc"]),
        ("base.qcow2", "qcow2", vec!["-c", "-O", "qcow2"]),
    ] {
        let mut a = vec!["convert"];
        a.extend(conv.iter().copied());
        a.extend(["pat.raw", base]);
        qemu_ok(d, &a);
        qemu_overlay(d, base, fmt, "mid.qcow2", None);
        qemu_io(
            d,
            "qcow2",
            "mid.qcow2",
            &[
                "write -P 0x71 0 128k",
                "write -z 1M 64k",
                "write -P 0x72 40M 4k",
            ],
        );
        // The top is larger than the chain below it: reads past the shorter backing image are zeros.
        qemu_overlay(d, "mid.qcow2", "qcow2", "top.qcow2", Some("70M"));
        qemu_io(
            d,
            "qcow2",
            "top.qcow2",
            &["write -P 0x73 64k 64k", "write -P 0x74 66M 64k"],
        );
        vdisk_ok(d, &["convert", "-O", "raw", "top.qcow2", "ours.raw"]);
        qemu_ok(d, &["convert", "-O", "raw", "top.qcow2", "theirs.raw"]);
        assert!(
            std::fs::read(d.join("ours.raw")).unwrap()
                == std::fs::read(d.join("theirs.raw")).unwrap(),
            "chain over {base}"
        );
        assert_eq!(
            vdisk_ok(d, &["map", "--output=json", "top.qcow2"]),
            qemu_ok(d, &["map", "--output=json", "top.qcow2"]),
            "map of chain over {base}"
        );
        assert_eq!(
            vdisk(d, &["compare", "top.qcow2", "theirs.raw"])
                .status
                .code(),
            Some(0)
        );
        for f in ["mid.qcow2", "top.qcow2", "ours.raw", "theirs.raw"] {
            std::fs::remove_file(d.join(f)).unwrap();
        }
    }
}

#[test]
fn map_of_a_qcow2_file_extended_far_past_its_data_matches_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-map-long-file");
    let d = s.path();
    for (name, opts) in [
        ("plain.qcow2", "cluster_size=64k"),
        ("meta.qcow2", "preallocation=metadata"),
    ] {
        qemu_ok(d, &["create", "-q", "-f", "qcow2", "-o", opts, name, "1G"]);
        qemu_io(d, "qcow2", name, &["write -P 1 0 1M"]);
        // The file's length, not its data, decides how far qemu's preallocation heuristic looks.
        std::fs::OpenOptions::new()
            .write(true)
            .open(d.join(name))
            .unwrap()
            .set_len(8 << 40)
            .unwrap();
        assert_eq!(
            vdisk_ok(d, &["map", "--output=json", name]),
            qemu_ok(d, &["map", "--output=json", name]),
            "{name}"
        );
    }
}

/// A qcow2 header naming a backing file of zero bytes: QEMU opens no backing file, and `info`
/// shows none (vdisk tried to open '' and failed `check`, `map` and `convert`; `info` printed an
/// empty "backing file:" line). Found comparing `check` exit codes on the fuzz corpora.
#[test]
fn an_empty_backing_file_name_is_no_backing_file() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-empty-backing");
    let d = s.path();
    qemu_ok(d, &["create", "-q", "-f", "raw", "base.raw", "1M"]);
    qemu_ok(
        d,
        &[
            "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "e.qcow2",
        ],
    );
    qemu_io(d, "qcow2", "e.qcow2", &["write -P 0x5a 64k 4k"]);
    {
        use std::os::unix::fs::FileExt;
        // backing_file_size (header bytes 16..20) to 0; the offset stays.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(d.join("e.qcow2"))
            .unwrap();
        f.write_all_at(&0u32.to_be_bytes(), 16).unwrap();
    }
    std::fs::remove_file(d.join("base.raw")).unwrap();
    assert_eq!(
        without_details(&vdisk_ok(d, &["info", "e.qcow2"])),
        qemu_ok(d, &["info", "e.qcow2"])
    );
    assert_eq!(
        json(&vdisk_ok(d, &["info", "--output=json", "e.qcow2"])),
        json(&qemu_ok(d, &["info", "--output=json", "e.qcow2"]))
    );
    for args in [
        &["check", "e.qcow2"][..],
        &["map", "--output=json", "e.qcow2"],
    ] {
        let (o, t) = (vdisk(d, args), qemu(d, args));
        assert_eq!(o.status.code(), t.status.code(), "{args:?}: {}", err(&o));
        assert_eq!(out(&o), out(&t), "{args:?}");
    }
    vdisk_ok(d, &["convert", "-O", "raw", "e.qcow2", "v.raw"]);
    qemu_ok(d, &["convert", "-O", "raw", "e.qcow2", "q.raw"]);
    assert!(std::fs::read(d.join("v.raw")).unwrap() == std::fs::read(d.join("q.raw")).unwrap());
}

/// Which text files are VMDK descriptors when no `-f` is given: QEMU's `vmdk_probe` looks at
/// bytes (a descriptor naming a Latin-1 file is still one) and wants `version=N` as the first line
/// after comments and lines of spaces (a descriptor that starts with `createType=` or has an empty
/// line first is raw to it). Before, vdisk wanted UTF-8 and took any `createType=` line, so it
/// read the Latin-1 descriptor as raw data and the other two as VMDK.
#[test]
fn text_descriptors_probe_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-probe-descriptors");
    let d = s.path();
    qemu_ok(d, &["create", "-q", "-f", "raw", "x-flat.vmdk", "1M"]);
    let body = "CID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"x-flat.vmdk\" 0\n";
    let files: [(&str, Vec<u8>); 5] = [
        (
            "plain.vmdk",
            format!("# Disk DescriptorFile\nversion=1\n{body}").into_bytes(),
        ),
        (
            "latin1.vmdk",
            [
                &b"# Disk DescriptorFile\nversion=1\nddb.comment = \"caf\xe9\"\n"[..],
                body.as_bytes(),
            ]
            .concat(),
        ),
        (
            "spaces.vmdk",
            format!("# Disk DescriptorFile\n   \nversion=1\n{body}").into_bytes(),
        ),
        (
            "type-first.vmdk",
            format!("createType=\"monolithicFlat\"\nversion=1\n{body}").into_bytes(),
        ),
        (
            "empty-line.vmdk",
            format!("# Disk DescriptorFile\n\nversion=1\n{body}").into_bytes(),
        ),
    ];
    for (name, bytes) in &files {
        std::fs::write(d.join(name), bytes).expect("write");
        let theirs = json(&qemu_ok(d, &["info", "--output=json", name]));
        let ours = json(&vdisk_ok(d, &["info", "--output=json", name]));
        assert_eq!(ours["format"], theirs["format"], "{name}");
        assert_eq!(ours["virtual-size"], theirs["virtual-size"], "{name}");
    }
    let formats: Vec<String> = files
        .iter()
        .map(|(n, _)| json(&qemu_ok(d, &["info", "--output=json", n]))["format"].to_string())
        .collect();
    assert_eq!(
        formats,
        ["\"vmdk\"", "\"vmdk\"", "\"vmdk\"", "\"raw\"", "\"raw\""]
    );
}

/// A backing path of `len` bytes naming `base.vmdk` in the same directory (`./` repeated).
fn long_path_to_base(len: usize) -> String {
    let pad = len - "base.vmdk".len();
    let p = format!("{}{}base.vmdk", "./".repeat(pad / 2), "/".repeat(pad % 2));
    assert_eq!(p.len(), len);
    p
}

/// VMDK overlays whose `parentFileNameHint` line is longer than 4096 bytes. QEMU reads a hint
/// of up to 4095 bytes; `vdisk create -b` writes one that long whole, but vdisk refused to open
/// it ("descriptor line 6 is longer than 4096 bytes", session 24). `qemu-img create -b` cuts
/// the line at 4095 bytes (a 4096-byte buffer), so past a 4074-byte path its hint loses the
/// closing quote and neither tool opens the image.
#[test]
fn vmdk_backing_paths_as_long_as_qemu_reads_open() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-long-hint");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    qemu_ok(d, &["convert", "-O", "vmdk", "pat.raw", "base.vmdk"]);
    let create = |tool: fn(&std::path::Path, &[&str]) -> String, len: usize, top: &str| {
        let path = long_path_to_base(len);
        tool(
            d,
            &["create", "-q", "-f", "vmdk", "-b", &path, "-F", "vmdk", top],
        );
        path
    };
    let made = [
        (create(vdisk_ok, 4095, "ours.vmdk"), "ours.vmdk"),
        (create(qemu_ok, 4074, "theirs.vmdk"), "theirs.vmdk"),
    ];
    for (path, top) in &made {
        // By its name in `d`: the directory and the path together are past PATH_MAX.
        sh(
            d,
            &format!("qemu-io -f vmdk -c 'write -P 0x6c 1M 64k' {top}"),
        );
        let info = |tool: fn(&std::path::Path, &[&str]) -> String| {
            let mut v = json(&tool(d, &["info", "--output=json", top]));
            let o = v.as_object_mut().unwrap();
            for volatile in ["actual-size", "format-specific"] {
                o.remove(volatile);
            }
            v
        };
        let ours = info(vdisk_ok);
        assert_eq!(ours, info(qemu_ok), "{top}");
        assert_eq!(ours["backing-filename"], path.as_str(), "{top}");
        vdisk_ok(d, &["convert", "-O", "raw", top, "ours.raw"]);
        qemu_ok(d, &["convert", "-O", "raw", top, "theirs.raw"]);
        assert!(
            std::fs::read(d.join("ours.raw")).unwrap()
                == std::fs::read(d.join("theirs.raw")).unwrap(),
            "{top}"
        );
        assert_eq!(vdisk(d, &["check", top]).status.code(), Some(0), "{top}");
    }
    // One byte more and qemu-img's own image has a hint with no closing quote: both refuse it.
    create(qemu_ok, 4075, "cut.vmdk");
    let (o, t) = (
        vdisk(d, &["info", "cut.vmdk"]),
        qemu(d, &["info", "cut.vmdk"]),
    );
    assert_eq!((o.status.code(), t.status.code()), (Some(1), Some(1)));
    assert!(err(&o).contains("parentFileNameHint"), "{}", err(&o));
}
