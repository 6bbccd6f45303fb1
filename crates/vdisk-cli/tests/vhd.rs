//! VHD (qemu's "vpc") through the CLI: a fixed VHD read with `-f vpc` (probing calls it raw, as
//! qemu-img does), the learner's details in `info`, and images made by `create` and `convert -O
//! vpc` as qemu-img makes them.

mod common;
use common::*;
use serde_json::Value;
use vdisk_testutil::{qemu_available, Scratch};

#[test]
fn fixed_vhd_named_with_f_vpc_reads_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-vhd-fixed");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    let o = ["-O", "vpc", "-o", "subformat=fixed"];
    qemu_ok(d, &[&["convert"][..], &o, &["pat.raw", "f.vhd"]].concat());
    for args in [
        &["info", "--output=json", "-f", "vpc", "f.vhd"][..],
        &["map", "--output=json", "-f", "vpc", "f.vhd"],
        &["map", "-f", "vpc", "f.vhd"],
    ] {
        let ours = vdisk_ok(d, args);
        let theirs = qemu_ok(d, args);
        if args[0] == "info" {
            let (mut a, b): (Value, Value) = (
                serde_json::from_str(&ours).unwrap(),
                serde_json::from_str(&theirs).unwrap(),
            );
            let det = a.as_object_mut().unwrap().remove("vdisk-details").unwrap();
            assert_eq!(det["disk-type"], "fixed");
            assert_eq!(det["size-from"], "chs");
            assert_eq!(a, b);
        } else {
            assert_eq!(ours, theirs, "{args:?}");
        }
    }
    vdisk_ok(
        d,
        &["convert", "-f", "vpc", "-O", "raw", "f.vhd", "ours.raw"],
    );
    qemu_ok(
        d,
        &["convert", "-f", "vpc", "-O", "raw", "f.vhd", "theirs.raw"],
    );
    assert!(
        std::fs::read(d.join("ours.raw")).unwrap() == std::fs::read(d.join("theirs.raw")).unwrap()
    );
}

#[test]
fn dynamic_vhd_info_explains_the_layout() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-vhd-info");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    qemu_ok(d, &["convert", "-O", "vpc", "pat.raw", "p.vhd"]);
    let human = vdisk_ok(d, &["info", "p.vhd"]);
    for key in [
        "file format: vpc",
        "cluster_size: 2097152",
        "disk type: dynamic",
        "footer at: start",
        "creator app: qemu",
        "size from: chs",
        "block size: 2097152",
        "bat entries:",
        "allocated blocks:",
    ] {
        assert!(human.contains(key), "missing {key} in:\n{human}");
    }
}

#[test]
fn vhd_is_created_and_converted_to_as_qemu_does() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-vhd-write");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 3 * 512);
    for opts in [
        "subformat=dynamic",
        "subformat=fixed",
        "force_size=on",
        "subformat=fixed,force_size=on",
    ] {
        let fixed = opts.contains("fixed");
        let f = if fixed { &["-f", "vpc"][..] } else { &[][..] };
        // create: the same Formatting line, size and layout.
        let c = |out: &str| -> Vec<String> {
            ["create", "-f", "vpc", "-o", opts, out, "100M"]
                .iter()
                .map(|x| x.to_string())
                .collect()
        };
        let (v, q) = (c("ours-new.vhd"), c("theirs-new.vhd"));
        let vo = vdisk_ok(d, &v.iter().map(String::as_str).collect::<Vec<_>>());
        let qo = qemu_ok(d, &q.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            vo.replace("ours-new", "X"),
            qo.replace("theirs-new", "X"),
            "{opts}"
        );
        // convert: the same map (host offsets included), bytes and size.
        let conv = |out: &str| -> Vec<String> {
            ["convert", "-O", "vpc", "-o", opts, "pat.raw", out]
                .iter()
                .map(|x| x.to_string())
                .collect()
        };
        let (v, q) = (conv("ours.vhd"), conv("theirs.vhd"));
        vdisk_ok(d, &v.iter().map(String::as_str).collect::<Vec<_>>());
        qemu_ok(d, &q.iter().map(String::as_str).collect::<Vec<_>>());
        for (o, t) in [
            ("ours-new.vhd", "theirs-new.vhd"),
            ("ours.vhd", "theirs.vhd"),
        ] {
            for args in [&["info", "--output=json"][..], &["map", "--output=json"]] {
                let (ov, tv) = (
                    json(&qemu_ok(d, &[args, f, &[o]].concat())),
                    json(&qemu_ok(d, &[args, f, &[t]].concat())),
                );
                let strip = |mut v: Value| {
                    if let Some(m) = v.as_object_mut() {
                        for k in ["filename", "actual-size", "children"] {
                            m.remove(k);
                        }
                    }
                    v
                };
                assert_eq!(strip(ov), strip(tv), "{opts} {args:?} {o}");
            }
            let len = |x: &str| std::fs::metadata(d.join(x)).unwrap().len();
            assert_eq!(len(o), len(t), "{opts} {o}: file length");
        }
        qemu_ok(
            d,
            &[&["compare"][..], f, &["-F", "raw", "ours.vhd", "pat.raw"]].concat(),
        );
        for x in ["ours-new.vhd", "theirs-new.vhd", "ours.vhd", "theirs.vhd"] {
            std::fs::remove_file(d.join(x)).unwrap();
        }
    }
    // Refused as qemu-img refuses them, after the file's name, leaving no file.
    for (args, msg) in [
        (
            vec!["create", "-f", "vpc", "big.vhd", "3T"],
            "big.vhd: The image size is too large for file format 'vpc'",
        ),
        (
            vec!["create", "-f", "vpc", "-o", "subformat=x", "bad.vhd", "1M"],
            "bad.vhd: Parameter 'subformat' does not accept value 'x'",
        ),
    ] {
        let v = vdisk(d, &args);
        assert!(
            !d.join(args[args.len() - 2]).exists(),
            "{args:?} left a file"
        );
        let q = qemu(d, &args);
        assert_eq!(
            (v.status.code(), q.status.code()),
            (Some(1), Some(1)),
            "{args:?}"
        );
        assert!(err(&v).contains(msg), "{}", err(&v));
        assert!(err(&q).contains(msg), "{}", err(&q));
    }
    // Neither tool resizes a VHD (nor a VMDK): the same words.
    qemu_ok(d, &["convert", "-O", "vpc", "pat.raw", "p.vhd"]);
    qemu_ok(d, &["convert", "-O", "vmdk", "pat.raw", "p.vmdk"]);
    for f in ["p.vhd", "p.vmdk"] {
        let (v, q) = (
            vdisk(d, &["resize", f, "+1M"]),
            qemu(d, &["resize", f, "+1M"]),
        );
        assert_eq!((v.status.code(), q.status.code()), (Some(1), Some(1)));
        assert_eq!(
            unprefixed_lines(&err(&v)),
            unprefixed_lines(&err(&q)),
            "{f}"
        );
    }
}
