//! `convert -n` into qcow2 (registry::open_existing_writer), safe `rebase` and `commit`
//! (vdisk::ops), each compared with what qemu-img does on a copy of the same fixture.

use std::path::{Path, PathBuf};
use vdisk::ops::{commit, rebase_safe};
use vdisk::{open_existing_writer, open_image, Format, OpenRequest};
use vdisk_testutil::*;

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// base.qcow2 <- mid.qcow2 <- top.qcow2 in `dir`, relative backing names, patterned layers.
fn chain(dir: &Path, top_opts: &str) -> PathBuf {
    let base = dir.join("base.qcow2");
    qemu_create(&base, "qcow2", "", "3M");
    qemu_io(
        "qcow2",
        &base,
        &[
            "write -P 0x11 0 1M",
            "write -P 0x12 2M 512k",
            "write -z 1536k 64k",
        ],
    );
    let mid = dir.join("mid.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        &s(&mid),
    ]);
    qemu_io(
        "qcow2",
        &mid,
        &[
            "write -P 0x21 64k 128k",
            "write -z 512k 64k",
            "write -P 0x22 2560k 64k",
        ],
    );
    let top = dir.join("top.qcow2");
    let mut o = "backing_fmt=qcow2".to_string();
    if !top_opts.is_empty() {
        o = format!("{o},{top_opts}");
    }
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &o,
        "-b",
        "mid.qcow2",
        &s(&top),
    ]);
    qemu_io(
        "qcow2",
        &top,
        &[
            "write -P 0x31 128k 64k",
            "write -z 2M 64k",
            "write -P 0x32 3008k 64k",
        ],
    );
    top
}

/// Two copies of the same chain, one for qemu and one for vdisk.
fn twin(tag: &str, top_opts: &str) -> (Scratch, PathBuf, PathBuf) {
    let d = Scratch::new(tag);
    let q = d.join("q");
    let v = d.join("v");
    std::fs::create_dir_all(&q).unwrap();
    std::fs::create_dir_all(&v).unwrap();
    let tq = chain(&q, top_opts);
    for f in ["base.qcow2", "mid.qcow2", "top.qcow2"] {
        std::fs::copy(q.join(f), v.join(f)).unwrap();
    }
    (d, tq, v.join("top.qcow2"))
}

fn backing(p: &Path) -> Option<String> {
    qemu_info_json(p)["backing-filename"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn convert_n_into_qcow2() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("ops-convn");
    let src = d.join("src.raw");
    let mut data: Vec<u8> = (0..(3u32 << 20) - 4096).map(|i| (i % 253) as u8).collect();
    data[(1 << 20)..(1 << 20) + 200_000].fill(0);
    std::fs::write(&src, &data).unwrap();
    for (i, (opts, compressed)) in [
        ("cluster_size=4k", "write -c -P 0x33 2M 4k"),
        ("extended_l2=on", "write -c -P 0x33 2M 64k"),
        ("compat=0.10", "write -c -P 0x33 2M 64k"),
    ]
    .iter()
    .enumerate()
    {
        let dst = d.join(&format!("dst{i}.qcow2"));
        qemu_create(&dst, "qcow2", opts, "3068k");
        qemu_io(
            "qcow2",
            &dst,
            &[compressed, "write -P 0xee 0 2M", "write -P 0xef 2560k 508k"],
        );
        qemu_img(&["snapshot", "-c", "snap", &s(&dst)]);
        let before = qemu_raw_bytes(&dst, Some("qcow2"));
        let src_img = open_image(&src, &OpenRequest::default()).unwrap();
        let w = open_existing_writer(Format::Qcow2, &dst).unwrap();
        vdisk::convert::convert(
            src_img.image.as_ref(),
            w,
            &vdisk::convert::ConvertOptions::default(),
            &|_, _| {},
        )
        .unwrap();
        assert_qemu_check_clean(&dst, "qcow2");
        assert_qemu_compare_equal(&src, &dst);
        let snap = d.join("snap.raw");
        qemu_img(&[
            "convert",
            "-O",
            "raw",
            "-l",
            "snapshot.name=snap",
            &s(&dst),
            &s(&snap),
        ]);
        assert_same_bytes(&std::fs::read(&snap).unwrap(), &before, "snapshot kept");
    }
}

fn compare_rebase(tag: &str, top_opts: &str, new: &str) {
    let (_d, tq, tv) = twin(tag, top_opts);
    let mut args = vec!["rebase", "-b", new];
    if !new.is_empty() {
        args.extend(["-F", "qcow2"]);
    }
    let sq = s(&tq);
    args.push(&sq);
    let before = qemu_raw_bytes(&tv, Some("qcow2"));
    qemu_img(&args);
    let fmt = (!new.is_empty()).then_some(Format::Qcow2);
    rebase_safe(&tv, new, fmt).unwrap();
    assert_qemu_check_clean(&tv, "qcow2");
    assert_eq!(backing(&tv), backing(&tq));
    assert_same_bytes(&qemu_raw_bytes(&tv, Some("qcow2")), &before, "content kept");
    assert_same_bytes(
        &qemu_raw_bytes(&tv, Some("qcow2")),
        &qemu_raw_bytes(&tq, Some("qcow2")),
        "same as qemu",
    );
}

#[test]
fn rebase_matches_qemu() {
    if !qemu_available() {
        return;
    }
    compare_rebase("ops-reb1", "", "base.qcow2");
    compare_rebase("ops-reb2", "extended_l2=on", "base.qcow2");
    compare_rebase("ops-reb3", "compat=0.10", "base.qcow2");
    compare_rebase("ops-reb4", "", "");
    // Onto a smaller unrelated image: beyond its end it reads zeros.
    let (d, _tq, tv) = twin("ops-reb5", "cluster_size=4k");
    let other = d.join("v").join("other.qcow2");
    qemu_create(&other, "qcow2", "", "1M");
    qemu_io("qcow2", &other, &["write -P 0x44 0 1M"]);
    let before = qemu_raw_bytes(&tv, Some("qcow2"));
    rebase_safe(&tv, "other.qcow2", Some(Format::Qcow2)).unwrap();
    assert_qemu_check_clean(&tv, "qcow2");
    assert_eq!(backing(&tv).as_deref(), Some("other.qcow2"));
    assert_same_bytes(&qemu_raw_bytes(&tv, Some("qcow2")), &before, "content kept");
}

#[test]
fn rebase_errors_like_qemu() {
    if !qemu_available() {
        return;
    }
    let (_d, _tq, tv) = twin("ops-rebe", "");
    let before = std::fs::read(&tv).unwrap();
    let e = rebase_safe(&tv, "base.qcow2", None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Could not change the backing file to 'base.qcow2': backing format must be specified"
    );
    let e = rebase_safe(&tv, "nonexist.qcow2", Some(Format::Qcow2)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("Could not open new backing file 'nonexist.qcow2': "),
        "{e}"
    );
    assert_eq!(std::fs::read(&tv).unwrap(), before, "nothing written");
}

fn all_depth_at_least_one(p: &Path) {
    for e in qemu_map_json(p, Some("qcow2")).as_array().unwrap() {
        assert_ne!(
            e["depth"].as_u64(),
            Some(0),
            "still allocated in the overlay: {e}"
        );
    }
}

#[test]
fn commit_matches_qemu() {
    if !qemu_available() {
        return;
    }
    for (tag, top_opts, base, keep) in [
        ("ops-com1", "", None, false),
        ("ops-com2", "extended_l2=on", None, true),
        ("ops-com3", "", Some("base.qcow2"), false),
    ] {
        let (_d, tq, tv) = twin(tag, top_opts);
        let before = qemu_raw_bytes(&tv, Some("qcow2"));
        let sq = s(&tq);
        let mut args = vec!["commit", "-q"];
        if keep {
            args.push("-d");
        }
        let bq = base.map(|b| s(&tq.with_file_name(b)));
        if let Some(b) = &bq {
            args.extend(["-b", b.as_str()]);
        }
        args.push(&sq);
        qemu_img(&args);
        let bv = base.map(|b| tv.with_file_name(b));
        commit(&tv, bv.as_deref(), !keep).unwrap();
        for name in ["base.qcow2", "mid.qcow2", "top.qcow2"] {
            let (a, b) = (tv.with_file_name(name), tq.with_file_name(name));
            assert_qemu_check_clean(&a, "qcow2");
            assert_same_bytes(
                &qemu_raw_bytes(&a, Some("qcow2")),
                &qemu_raw_bytes(&b, Some("qcow2")),
                &format!("{tag}: {name} as qemu leaves it"),
            );
        }
        assert_same_bytes(
            &qemu_raw_bytes(&tv, Some("qcow2")),
            &before,
            "overlay reads the same",
        );
        if !keep && base.is_none() {
            all_depth_at_least_one(&tv);
            all_depth_at_least_one(&tq);
        }
    }
}

#[test]
fn commit_into_raw_base() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("ops-comraw");
    let base = d.join("base.raw");
    std::fs::write(&base, vec![0x5au8; 1 << 20]).unwrap();
    let top = d.join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        &s(&top),
        "2M",
    ]);
    qemu_io(
        "qcow2",
        &top,
        &[
            "write -P 0x66 4k 8k",
            "write -z 512k 64k",
            "write -P 1 1536k 4k",
        ],
    );
    let before = qemu_raw_bytes(&top, Some("qcow2"));
    commit(&top, None, true).unwrap();
    assert_qemu_check_clean(&top, "qcow2");
    assert_same_bytes(
        &std::fs::read(&base).unwrap(),
        &before,
        "base holds the data",
    );
    assert_same_bytes(&qemu_raw_bytes(&top, Some("qcow2")), &before, "overlay");
    all_depth_at_least_one(&top);
}

#[test]
fn commit_errors_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("ops-come");
    let a = d.join("a.qcow2");
    qemu_create(&a, "qcow2", "", "1M");
    let e = commit(&a, None, true).unwrap_err();
    assert_eq!(e.to_string(), "Image does not have a backing file");
    let b = d.join("b.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "a.qcow2",
        "-F",
        "qcow2",
        &s(&b),
    ]);
    let x = d.join("x.qcow2");
    let e = commit(&b, Some(&x), true).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "Did not find '{}' in the backing chain of '{}'",
            s(&x),
            s(&b)
        )
    );
}

#[test]
fn commit_into_big_clusters_over_a_backing_file() {
    if !qemu_available() {
        return;
    }
    // The base has 2 MiB clusters and a backing file of its own: whole base clusters are copied
    // (reads of the overlay's chain), never part of one.
    let d = Scratch::new("ops-combig");
    let b0 = d.join("b0.qcow2");
    qemu_create(&b0, "qcow2", "", "5M");
    qemu_io("qcow2", &b0, &["write -P 0x10 0 5M"]);
    let base = d.join("base.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=2M",
        "-b",
        "b0.qcow2",
        "-F",
        "qcow2",
        &s(&base),
    ]);
    qemu_io("qcow2", &base, &["write -P 0x20 2M 4k"]);
    let top = d.join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        &s(&top),
    ]);
    qemu_io(
        "qcow2",
        &top,
        &[
            "write -P 0x30 64k 64k",
            "write -z 3M 64k",
            "write -P 0x31 4M 1k",
        ],
    );
    let before = qemu_raw_bytes(&top, Some("qcow2"));
    commit(&top, None, true).unwrap();
    assert_qemu_check_clean(&top, "qcow2");
    assert_qemu_check_clean(&base, "qcow2");
    assert_same_bytes(
        &qemu_raw_bytes(&base, Some("qcow2")),
        &before,
        "base holds the data",
    );
    assert_same_bytes(&qemu_raw_bytes(&top, Some("qcow2")), &before, "overlay");
    all_depth_at_least_one(&top);
}

/// A backing file name that is not UTF-8 (a Latin-1 "café.raw") is opened byte for byte, as qemu
/// opens it: before, vdisk looked for "caf\u{fffd}.raw" and failed. `commit` and `resize` go
/// through the same chain, and the header keeps the name's bytes when it is written again.
#[test]
fn backing_file_name_that_is_not_utf8_is_opened_like_qemu() {
    use std::os::unix::ffi::OsStrExt;
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("ops-latin1-backing");
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.raw");
    let base = d.path().join(name);
    qemu_create(&base, "raw", "", "2M");
    qemu_io(
        "raw",
        &base,
        &["write -P 0x21 0 1M", "write -P 0x22 1536k 64k"],
    );
    let top = d.join("top.qcow2");
    run(std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(name)
        .arg(&top));
    qemu_io("qcow2", &top, &["write -P 0x33 512k 64k"]);
    let req = OpenRequest {
        follow_backing: true,
        ..Default::default()
    };
    let opened = open_image(&top, &req).expect("open the chain");
    assert_eq!(opened.layers.len(), 2);
    let want = qemu_raw_bytes(&top, Some("qcow2"));
    assert_same_bytes(&read_all(opened.image.as_ref(), 1 << 20), &want, "chain");

    // A resize (through the registry's chain) keeps the name's bytes.
    vdisk::registry::resize_qcow2(&top, 3 << 20, false, vdisk_qcow2::mutate::Prealloc::Off)
        .expect("resize");
    assert_qemu_check_clean(&top, "qcow2");
    let info = run(std::process::Command::new("qemu-img")
        .args(["info", "-U"])
        .arg(&top));
    assert!(
        info.stdout
            .windows(b"backing file: caf\xe9.raw ".len())
            .any(|w| w == b"backing file: caf\xe9.raw "),
        "{}",
        String::from_utf8_lossy(&info.stdout)
    );
    let mut want = want;
    want.resize(3 << 20, 0);
    let opened = open_image(&top, &req).expect("open the chain");
    assert_same_bytes(
        &read_all(opened.image.as_ref(), 1 << 20),
        &want,
        "after resize",
    );
}
