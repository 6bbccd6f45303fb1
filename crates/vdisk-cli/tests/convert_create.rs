//! `vdisk create`, `convert`, `compare` and `resize` end to end, checked with qemu-img.

mod common;
use common::*;
use serde_json::Value;
use vdisk_testutil::{assert_qemu_check_clean, qemu_available, Scratch};

#[test]
fn create_raw_22g_is_sparse_and_exact() {
    let s = Scratch::new("cli-create");
    let o = vdisk_ok(s.path(), &["create", "-f", "raw", "x", "22G"]);
    assert_eq!(o, "Formatting 'x', fmt=raw size=23622320128\n");
    let m = std::fs::metadata(s.join("x")).unwrap();
    assert_eq!(m.len(), 22 << 30);
    assert!(
        allocated(&s.join("x")) < (1 << 20),
        "22G raw must be sparse"
    );
}

#[test]
fn create_rejects_bad_sizes_and_options_like_qemu() {
    let s = Scratch::new("cli-create-bad");
    for (args, msg) in [
        (
            vec!["create", "-f", "raw", "x", "12Q"],
            "Invalid image size specified: '12Q'.",
        ),
        (
            vec!["create", "-f", "raw", "x", "1.5"],
            "Invalid image size specified: '1.5'.",
        ),
        (
            vec!["create", "-f", "raw", "x"],
            "Image creation needs a size parameter",
        ),
        (
            vec!["create", "-f", "raw", "-o", "bogus=1", "x", "1M"],
            "Invalid parameter 'bogus'",
        ),
        (
            vec!["create", "-f", "nosuch", "x", "1M"],
            "Unknown file format 'nosuch'",
        ),
    ] {
        let o = vdisk(s.path(), &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(err(&o).contains(msg), "{args:?}: {}", err(&o));
        assert!(!s.join("x").exists(), "{args:?} left a file");
    }
    let help = vdisk_ok(s.path(), &["create", "-f", "raw", "-o", "help", "x"]);
    assert!(help.contains("preallocation"), "{help}");
}

#[test]
fn formatting_line_matches_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-fmtline");
    qemu_ok(s.path(), &["create", "-q", "-f", "vmdk", "base.vmdk", "1G"]);
    for args in [
        vec!["-f", "raw"],
        vec!["-f", "raw", "-o", "preallocation=falloc"],
        vec!["-f", "qcow2"],
        vec!["-f", "qcow2", "-o", "cluster_size=4k,lazy_refcounts=on"],
        vec!["-f", "qcow2", "-o", "compat=0.10"],
        vec!["-f", "vdi"],
        vec!["-f", "vdi", "-o", "static=on"],
        vec!["-f", "vmdk"],
        vec!["-f", "vmdk", "-o", "subformat=streamOptimized"],
        // Options given out of qemu's order are shown in it (session 24: vdisk kept the order
        // given after adapter_type and backing_file, and put backing_fmt last).
        vec![
            "-f",
            "vmdk",
            "-o",
            "zeroed_grain=on,subformat=monolithicSparse,toolsversion=2,adapter_type=lsilogic",
        ],
        vec![
            "-f",
            "vmdk",
            "-o",
            "backing_fmt=vmdk,backing_file=base.vmdk",
        ],
        vec!["-f", "vpc", "-o", "force_size=on,subformat=fixed"],
        // The file protocol's options, taken for every format and shown after its own, in
        // qemu's order and sizes in bytes (vdisk refused them but for raw, session 24).
        vec![
            "-f",
            "raw",
            "-o",
            "extent_size_hint=1M,nocow=on,preallocation=off",
        ],
        vec![
            "-f",
            "vdi",
            "-o",
            "extent_size_hint=1M,nocow=on,preallocation=off",
        ],
        vec![
            "-f",
            "qcow2",
            "-o",
            "extent_size_hint=1M,preallocation=metadata,nocow=on",
        ],
        vec!["-f", "vmdk", "-o", "nocow=on,subformat=monolithicFlat"],
        vec!["-f", "vhdx", "-o", "extent_size_hint=64k,subformat=fixed"],
        vec!["-f", "vpc", "-o", "preallocation=full"],
    ] {
        let mut a = vec!["create"];
        a.extend(args.iter().copied());
        a.extend(["img", "1G"]);
        let ours = vdisk_ok(s.path(), &a);
        std::fs::remove_file(s.join("img")).unwrap();
        let theirs = qemu_ok(s.path(), &a);
        std::fs::remove_file(s.join("img")).unwrap();
        assert_eq!(ours, theirs, "{args:?}");
    }
}

#[test]
fn option_help_matches_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-ohelp");
    qemu_ok(s.path(), &["create", "-q", "-f", "raw", "src.raw", "1M"]);
    // With a file named, the file protocol's options join the format's (session 24).
    for fmt in ["raw", "qcow2", "vdi", "vmdk", "vpc", "vhdx"] {
        for args in [
            vec!["create", "-f", fmt, "-o", "help"],
            vec!["create", "-f", fmt, "-o", "help", "new.img"],
            vec!["convert", "-O", fmt, "-o", "help", "new.img"],
            vec!["convert", "-O", fmt, "-o", "help", "src.raw", "new.img"],
        ] {
            assert_eq!(
                vdisk_ok(s.path(), &args),
                qemu_ok(s.path(), &args),
                "{args:?}"
            );
        }
    }
}

#[test]
fn convert_into_existing_raw_with_n() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-n");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    qemu_ok(d, &["convert", "-O", "qcow2", "pat.raw", "p.qcow2"]);
    std::fs::write(d.join("small.raw"), vec![1u8; 4096]).unwrap();
    let o = vdisk(d, &["convert", "-n", "-O", "raw", "p.qcow2", "small.raw"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("output file is smaller than input file"),
        "{}",
        err(&o)
    );
    // An existing target full of non-zero bytes: zero ranges of the source must be written too.
    std::fs::write(d.join("t.raw"), vec![0xeeu8; 64 << 20]).unwrap();
    vdisk_ok(
        d,
        &[
            "convert", "-n", "-t", "unsafe", "-O", "raw", "p.qcow2", "t.raw",
        ],
    );
    assert!(std::fs::read(d.join("t.raw")).unwrap() == std::fs::read(d.join("pat.raw")).unwrap());
}

#[test]
fn convert_raw_to_raw_keeps_content_and_sparseness() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-raw2raw");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    vdisk_ok(d, &["convert", "-O", "raw", "pat.raw", "ours.raw"]);
    qemu_ok(d, &["convert", "-O", "raw", "pat.raw", "theirs.raw"]);
    assert!(
        std::fs::read(d.join("ours.raw")).unwrap() == std::fs::read(d.join("pat.raw")).unwrap()
    );
    // Just as sparse: the same data and holes (SEEK_DATA/SEEK_HOLE) as qemu's own output, and no more
    // allocated than the source (whose explicitly zeroed range may be allocated, depending on the
    // file system, while both converters leave it a hole).
    let layout = |f: &str| qemu_ok(d, &["map", "-f", "raw", "--output=json", f]);
    assert_eq!(layout("ours.raw"), layout("theirs.raw"));
    assert!(allocated(&d.join("ours.raw")) <= allocated(&d.join("pat.raw")));
    assert!(
        allocated(&d.join("ours.raw")) < (8 << 20),
        "output must stay sparse"
    );
    let o = vdisk(d, &["compare", "pat.raw", "ours.raw"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(out(&o), "Images are identical.\n");
}

#[test]
fn convert_every_format_to_raw_matches_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-any2raw");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 7 * 512);
    let sources = [
        ("qcow2", vec!["-O", "qcow2"]),
        ("qcow2", vec!["-c", "-O", "qcow2"]),
        ("vmdk", vec!["-O", "vmdk"]),
        (
            "vmdk",
            vec!["-O", "vmdk", "-o", "subformat=streamOptimized"],
        ),
        ("vdi", vec!["-O", "vdi"]),
    ];
    for (i, (fmt, args)) in sources.iter().enumerate() {
        let src = format!("src{i}.{fmt}");
        let mut a = vec!["convert"];
        a.extend(args.iter().copied());
        a.extend(["pat.raw", src.as_str()]);
        qemu_ok(d, &a);
        for m in ["1", "4"] {
            vdisk_ok(d, &["convert", "-m", m, "-O", "raw", &src, "out.raw"]);
            qemu_ok(d, &["convert", "-O", "raw", &src, "q.raw"]);
            assert!(
                std::fs::read(d.join("out.raw")).unwrap()
                    == std::fs::read(d.join("q.raw")).unwrap(),
                "{src} -m {m}"
            );
        }
    }
}

#[test]
fn convert_to_vmdk_and_vdi_passes_qemu_check_and_compare() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-2any");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    for (fmt, opts) in [
        ("vdi", ""),
        ("vdi", "static=on"),
        ("vmdk", ""),
        ("vmdk", "subformat=streamOptimized"),
    ] {
        let dst = format!("o.{fmt}");
        let mut a = vec!["convert", "-O", fmt];
        if !opts.is_empty() {
            a.extend(["-o", opts]);
        }
        a.extend(["pat.raw", dst.as_str()]);
        vdisk_ok(d, &a);
        assert_qemu_check_clean(&d.join(&dst), fmt);
        let c = qemu(d, &["compare", "pat.raw", &dst]);
        assert_eq!(c.status.code(), Some(0), "{fmt} {opts}: {}", out(&c));
        std::fs::remove_file(d.join(&dst)).unwrap();
    }
}

#[test]
fn convert_concatenates_sources_and_reads_snapshots() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-concat");
    let d = s.path();
    make_pattern_raw(d, "a.raw", 0);
    qemu_ok(d, &["convert", "-O", "qcow2", "a.raw", "b.qcow2"]);
    vdisk_ok(d, &["convert", "-O", "raw", "a.raw", "b.qcow2", "ours.raw"]);
    qemu_ok(
        d,
        &["convert", "-O", "raw", "a.raw", "b.qcow2", "theirs.raw"],
    );
    assert!(
        std::fs::read(d.join("ours.raw")).unwrap() == std::fs::read(d.join("theirs.raw")).unwrap()
    );
}

#[test]
fn convert_failure_leaves_no_output() {
    let s = Scratch::new("cli-fail");
    let d = s.path();
    std::fs::write(d.join("in.raw"), vec![7u8; 65536]).unwrap();
    let o = vdisk(
        d,
        &["convert", "-O", "raw", "in.raw", "missing-dir/out.raw"],
    );
    assert_eq!(o.status.code(), Some(1));
    let o = vdisk(d, &["convert", "-O", "raw", "nope.raw", "out.raw"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("Could not open 'nope.raw'"), "{}", err(&o));
    assert!(!d.join("out.raw").exists());
    let names: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "only the input remains: {names:?}");
}

#[test]
fn compare_exit_codes_match_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-compare");
    let d = s.path();
    make_pattern_raw(d, "a.raw", 0);
    qemu_ok(d, &["convert", "-O", "qcow2", "a.raw", "a.qcow2"]);
    qemu_ok(d, &["create", "-q", "-f", "raw", "z.raw", "64M"]);
    qemu_ok(d, &["create", "-q", "-f", "raw", "big.raw", "65M"]);
    qemu_ok(d, &["convert", "-O", "raw", "a.raw", "c.raw"]);
    qemu_io(d, "raw", "c.raw", &["write -P 0x99 40M 512"]);
    for (a, b, strict) in [
        ("a.raw", "a.qcow2", false),
        ("a.raw", "z.raw", false),
        ("a.raw", "c.raw", false),
        ("z.raw", "big.raw", false),
        ("z.raw", "big.raw", true),
        ("a.raw", "nothere", false),
    ] {
        let mut args = vec!["compare"];
        if strict {
            args.push("-s");
        }
        args.extend([a, b]);
        let ours = vdisk(d, &args);
        let theirs = qemu(d, &args);
        assert_eq!(
            ours.status.code(),
            theirs.status.code(),
            "{args:?}: {}{}",
            out(&ours),
            err(&ours)
        );
        assert_eq!(out(&ours), out(&theirs), "{args:?}");
    }
}

#[test]
fn resize_raw_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-resize");
    let d = s.path();
    make_pattern_raw(d, "r.raw", 0);
    assert_eq!(
        vdisk_ok(d, &["resize", "-f", "raw", "r.raw", "+10G"]),
        "Image resized.\n"
    );
    assert_eq!(
        std::fs::metadata(d.join("r.raw")).unwrap().len(),
        (64 << 20) + (10 << 30)
    );
    let o = vdisk(d, &["resize", "-f", "raw", "r.raw", "-5G"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("--shrink"), "{}", err(&o));
    vdisk_ok(d, &["resize", "-f", "raw", "--shrink", "r.raw", "64M"]);
    let info: Value =
        serde_json::from_str(&vdisk_ok(d, &["info", "--output=json", "r.raw"])).unwrap();
    assert_eq!(info["virtual-size"], 64u64 << 20);
}

#[test]
fn info_on_raw_agrees_with_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-info-raw");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    let ours: Value =
        serde_json::from_str(&vdisk_ok(d, &["info", "--output=json", "pat.raw"])).unwrap();
    let theirs: Value =
        serde_json::from_str(&qemu_ok(d, &["info", "--output=json", "pat.raw"])).unwrap();
    assert_eq!(ours, theirs);
}

#[test]
fn errors_never_panic_on_garbage_input() {
    let s = Scratch::new("cli-garbage");
    let d = s.path();
    let mut junk = b"QFI\xfb".to_vec();
    junk.extend((0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    std::fs::write(d.join("junk.qcow2"), &junk).unwrap();
    let mut vmdk = b"KDMV".to_vec();
    vmdk.extend(std::iter::repeat_n(0xffu8, 2048));
    std::fs::write(d.join("junk.vmdk"), &vmdk).unwrap();
    for f in ["junk.qcow2", "junk.vmdk"] {
        for cmd in [
            vec!["info", f],
            vec!["map", f],
            vec!["check", f],
            vec!["convert", "-O", "raw", f, "o.raw"],
        ] {
            let o = vdisk(d, &cmd);
            let code = o.status.code();
            assert!(
                code == Some(1) || (cmd[0] == "check" && code == Some(2)),
                "{cmd:?}: {code:?} {}",
                err(&o)
            );
            assert!(
                !err(&o).contains("panicked"),
                "{cmd:?} panicked: {}",
                err(&o)
            );
        }
    }
    assert!(!d.join("o.raw").exists());
}

/// Flat VMDK subformats refuse `zeroed_grain=on` and `-c` with qemu-img's messages and exit
/// codes, leaving no file behind (qemu-img's failed convert leaves one; vdisk never does).
#[test]
fn flat_vmdk_refuses_zeroed_grain_and_compression_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-flat-refusals");
    make_pattern_raw(s.path(), "src.raw", 0);
    for sub in ["monolithicFlat", "twoGbMaxExtentFlat"] {
        let zg = format!("subformat={sub},zeroed_grain=on");
        let so = format!("subformat={sub}");
        for args in [
            vec!["create", "-f", "vmdk", "-o", zg.as_str(), "x.vmdk", "1M"],
            vec![
                "convert",
                "-c",
                "-O",
                "vmdk",
                "-o",
                so.as_str(),
                "src.raw",
                "x.vmdk",
            ],
        ] {
            let q = qemu(s.path(), &args);
            let _ = std::fs::remove_file(s.join("x.vmdk"));
            let _ = std::fs::remove_file(s.join("x-flat.vmdk"));
            let _ = std::fs::remove_file(s.join("x-f001.vmdk"));
            let v = vdisk(s.path(), &args);
            assert_eq!(v.status.code(), q.status.code(), "{args:?}");
            assert_eq!(v.status.code(), Some(1), "{args:?}");
            let qmsg = err(&q);
            let qmsg = qmsg.trim().trim_start_matches("qemu-img: ");
            assert!(
                err(&v).contains(qmsg),
                "{args:?}: vdisk {:?} qemu {qmsg:?}",
                err(&v)
            );
            assert!(!s.join("x.vmdk").exists(), "{args:?} left a file");
        }
    }
}

/// With `-S 0` every block a conversion hands over as data is allocated, zeros or not: sparse
/// VMDK and dynamic VDI outputs map like qemu-img's.
#[test]
fn sparse_zero_zero_allocates_vmdk_and_vdi_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-s0");
    // 3 MiB with one byte of data at the start: the rest is zeros (a hole in the file).
    let f = std::fs::File::create(s.join("src.raw")).unwrap();
    f.set_len(3 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[1], 0).unwrap();
    for (fmt, opts) in [
        ("vmdk", "subformat=monolithicSparse"),
        ("vmdk", "subformat=twoGbMaxExtentSparse"),
        ("vdi", "static=off"),
    ] {
        assert_allocates_like_qemu(&s, fmt, &["-S", "0", "-o", opts]);
    }
}

/// `convert -c` into a VMDK that stores clusters uncompressed (monolithicSparse) judges zeros per
/// whole grain, whatever `-S` says, as qemu-img does: an all-zero grain after a hole stays out.
#[test]
fn compressed_convert_into_sparse_vmdk_allocates_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-c-vmdk");
    // One data byte, then explicit zeros (the same data extent) up to one byte into the second
    // grain, then a hole.
    let f = std::fs::File::create(s.join("src.raw")).unwrap();
    f.set_len(0x4b000).unwrap();
    let mut head = vec![0u8; 0x10001];
    head[0] = 7;
    std::os::unix::fs::FileExt::write_all_at(&f, &head, 0).unwrap();
    for sparse in ["4k", "64k", "1M"] {
        assert_allocates_like_qemu(&s, "vmdk", &["-c", "-S", sparse]);
    }
}

/// `-S` decisions from sources that are not raw files: a qemu-made qcow2 with data, explicit zeros,
/// zero clusters, a compressed cluster and holes, and its VMDK and VDI copies, into every writable
/// format: vdisk allocates what qemu-img allocates.
#[test]
fn sparse_conversions_from_images_allocate_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-s-images");
    let d = s.path();
    let opts = "cluster_size=4k";
    qemu_ok(
        d,
        &["create", "-q", "-f", "qcow2", "-o", opts, "s.qcow2", "4M"],
    );
    let cmds = [
        "write -P 1 0 1",
        "write -z 4k 60k",
        "write -P 0 64k 100k",
        "write -P 3 200k 3k",
        "write -c -P 4 1M 64k",
        "write -P 0 2M 1M",
        "write -P 5 3M 512",
    ];
    qemu_io(d, "qcow2", "s.qcow2", &cmds);
    qemu_ok(d, &["convert", "-O", "vmdk", "s.qcow2", "s.vmdk"]);
    qemu_ok(d, &["convert", "-O", "vdi", "s.qcow2", "s.vdi"]);
    for src in ["s.qcow2", "s.vmdk", "s.vdi"] {
        for fmt in ["qcow2", "vmdk", "vdi", "raw"] {
            for sparse in ["4k", "64k", "1M"] {
                assert_converts_like_qemu(&s, src, fmt, &["-S", sparse]);
            }
        }
    }
}

/// Converts `src.raw` in `s` to `fmt` with `args` by vdisk and by qemu-img: `qemu-img map` of the
/// two outputs must agree on every range's data and zero flags (host offsets aside).
fn assert_allocates_like_qemu(s: &Scratch, fmt: &str, args: &[&str]) {
    assert_converts_like_qemu(s, "src.raw", fmt, args);
}

/// As [`assert_allocates_like_qemu`], from the image `src` in `s` (its format probed).
fn assert_converts_like_qemu(s: &Scratch, src: &str, fmt: &str, args: &[&str]) {
    let what = format!("{src} -> {fmt} {args:?}");
    let (ours, theirs) = (format!("v-{fmt}"), format!("q-{fmt}"));
    for (tool, out) in [("v", &ours), ("q", &theirs)] {
        let mut all = vec!["convert", "-O", fmt];
        all.extend_from_slice(args);
        all.extend([src, out.as_str()]);
        if tool == "v" {
            vdisk_ok(s.path(), &all);
        } else {
            qemu_ok(s.path(), &all);
        }
    }
    let map = |f: &str| qemu_map_kinds(s.path(), fmt, f);
    assert_eq!(map(&ours), map(&theirs), "{what}");
}

/// `convert -n` into a qcow2 overlay whose last cluster is written in part where it is unallocated
/// over the backing file: the rest of the cluster comes from the backing file (copy-on-write), as
/// in qemu-img, instead of failing (found by the round-trip properties).
#[test]
fn convert_n_into_an_overlay_writes_a_partial_last_cluster_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-convert-n-cow");
    let backing: Vec<u8> = (0..307_200u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(s.join("backing.raw"), &backing).unwrap();
    let f = std::fs::File::create(s.join("src.raw")).unwrap();
    f.set_len(788_992).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x42; 3000], 785_000).unwrap();
    for img in ["v.qcow2", "q.qcow2"] {
        qemu_ok(
            s.path(),
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "backing.raw",
                "-F",
                "raw",
                img,
                "789504",
            ],
        );
    }
    vdisk_ok(
        s.path(),
        &["convert", "-n", "-O", "qcow2", "src.raw", "v.qcow2"],
    );
    qemu_ok(
        s.path(),
        &["convert", "-n", "-O", "qcow2", "src.raw", "q.qcow2"],
    );
    assert_qemu_check_clean(&s.join("v.qcow2"), "qcow2");
    let cmp = qemu(s.path(), &["compare", "v.qcow2", "q.qcow2"]);
    assert_eq!(cmp.status.code(), Some(0), "{}", out(&cmp));
}

/// What goes wrong once the size is read is reported after the file's name, as qemu-img's
/// bdrv_img_create reports it; a bad size is not.
#[test]
fn create_errors_name_the_file_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-create-errors");
    let d = s.path();
    for args in [
        &["create", "-f", "qcow2", "a.qcow2"][..],
        &["create", "-f", "qcow2", "-o", "bogus=1", "b.qcow2", "1M"],
        &["create", "-f", "nosuch", "c", "1M"],
        &["create", "-f", "raw", "d", "12Q"],
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=3",
            "e.qcow2",
            "1M",
        ],
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "nope.qcow2",
            "-F",
            "qcow2",
            "f.qcow2",
        ],
        &["create", "-f", "vdi", "-o", "static=maybe", "g.vdi", "1M"],
    ] {
        let (v, q) = (vdisk(d, args), qemu(d, args));
        assert_eq!(v.status.code(), q.status.code(), "{args:?}");
        assert_eq!(first_message(&err(&v)), first_message(&err(&q)), "{args:?}");
    }
}
