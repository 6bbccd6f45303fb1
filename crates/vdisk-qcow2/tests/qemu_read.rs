//! Oracle tests: fixtures made by qemu-img/qemu-io, read by vdisk-qcow2 and compared with qemu
//! (bytes, map, format-specific info, check statistics).

mod common;
use common::*;
use vdisk_core::ImageReader;
use vdisk_qcow2::{OpenOptions, SnapshotSel};
use vdisk_testutil::*;

#[test]
fn v2_and_v3_with_pattern() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-v");
    verify(&make(&s, "v2.qcow2", "compat=0.10", "3M", PATTERN));
    verify(&make(&s, "v3.qcow2", "compat=1.1", "3M", PATTERN));
    verify(&make(&s, "lazy.qcow2", "lazy_refcounts=on", "3M", PATTERN));
    verify(&make(&s, "empty.qcow2", "", "3M", &[]));
}

#[test]
fn cluster_sizes() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-cs");
    for cs in ["512", "4k", "64k", "2M"] {
        verify(&make(
            &s,
            &format!("c{cs}.qcow2"),
            &format!("cluster_size={cs}"),
            "5M",
            PATTERN,
        ));
    }
}

#[test]
fn refcount_widths() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-rc");
    for bits in ["1", "2", "4", "8", "16", "32", "64"] {
        verify(&make(
            &s,
            &format!("r{bits}.qcow2"),
            &format!("refcount_bits={bits}"),
            "3M",
            PATTERN,
        ));
    }
}

#[test]
fn extended_l2_subclusters() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-el2");
    let cmds = [
        "write -P 1 4k 4k",
        "write -P 2 64k 2k",
        "write -z 70k 2k",
        "write -P 3 200k 100k",
        "write -z 400k 64k",
    ];
    verify(&make(&s, "e64k.qcow2", "extended_l2=on", "2M", &cmds));
    verify(&make(
        &s,
        "e32k.qcow2",
        "extended_l2=on,cluster_size=32k",
        "2M",
        &cmds,
    ));
}

#[test]
fn compressed_zlib_and_zstd() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-comp");
    let src = make(&s, "src.qcow2", "", "3M", PATTERN);
    for (ct, cs) in [
        ("zlib", "64k"),
        ("zstd", "64k"),
        ("zlib", "4k"),
        ("zstd", "2M"),
    ] {
        let dst = s.join(&format!("c-{ct}-{cs}.qcow2"));
        let o = format!("compression_type={ct},cluster_size={cs}");
        qemu_img(&[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            &o,
            src.to_str().unwrap(),
            dst.to_str().unwrap(),
        ]);
        verify(&dst);
    }
}

#[test]
fn zero_clusters_and_preallocation() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-prealloc");
    verify(&make(
        &s,
        "z.qcow2",
        "",
        "2M",
        &[
            "write -P 5 0 1M",
            "write -z 64k 128k",
            "write -z -u 512k 64k",
        ],
    ));
    for p in ["metadata", "falloc", "full"] {
        verify(&make(
            &s,
            &format!("p-{p}.qcow2"),
            &format!("preallocation={p}"),
            "2M",
            &["write -P 9 100k 64k"],
        ));
    }
}

#[test]
fn odd_size_tail() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-odd");
    verify(&make(
        &s,
        "odd.qcow2",
        "",
        "1000001",
        &["write -P 0x5a 0 999936"],
    ));
    verify(&make(
        &s,
        "odd2.qcow2",
        "cluster_size=4k",
        "3333333",
        &["write -P 0x5a 3300000 33000"],
    ));
}

#[test]
fn backing_reference_is_reported_not_opened() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-back");
    let base = make(&s, "base.qcow2", "", "3M", &["write -P 1 0 3M"]);
    let top = s.join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    qemu_io("qcow2", &top, &["write -P 2 1M 64k", "write -z 2M 64k"]);
    let r = open_path(&top, &OpenOptions::default()).unwrap();
    verify_info(&r, &top);
    verify_check(&r, &top);
    let b = r.info().unwrap().backing.unwrap();
    assert_eq!(
        (b.filename.as_str(), b.format.as_deref()),
        ("base.qcow2", Some("qcow2"))
    );
    // The layer alone: unallocated ranges read as zeros; the chain reads the base.
    let base_r = std::sync::Arc::new(open_path(&base, &OpenOptions::default()).unwrap());
    let chain = vdisk_core::Chain::new(std::sync::Arc::new(r), base_r);
    assert_same_bytes(
        &read_all(&chain, 1 << 20),
        &qemu_raw_bytes(&top, Some("qcow2")),
        "chain",
    );
    assert_eq!(vdisk_map_json(&chain), qemu_map(&top), "chain map");
}

#[test]
fn internal_snapshots() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-snap");
    let p = make(&s, "snap.qcow2", "", "2M", &["write -P 1 0 1M"]);
    let ps = p.to_str().unwrap();
    qemu_img(&["snapshot", "-c", "first", ps]);
    qemu_io("qcow2", &p, &["write -P 2 512k 1M", "write -z 0 64k"]);
    qemu_img(&["snapshot", "-c", "second", ps]);
    qemu_img(&["resize", "-q", ps, "3M"]);
    qemu_io("qcow2", &p, &["write -P 3 2M 1M"]);
    verify(&p);
    let r = open_path(&p, &OpenOptions::default()).unwrap();
    let info = r.info().unwrap();
    let names: Vec<_> = info
        .snapshots
        .iter()
        .map(|x| (x.id.as_str(), x.name.as_str()))
        .collect();
    assert_eq!(names, vec![("1", "first"), ("2", "second")]);
    for (sel, qname) in [
        (SnapshotSel::Name("first".into()), "snapshot.name=first"),
        (SnapshotSel::Id("2".into()), "snapshot.id=2"),
        (
            SnapshotSel::NameOrId("second".into()),
            "snapshot.name=second",
        ),
        (SnapshotSel::NameOrId("1".into()), "snapshot.id=1"),
    ] {
        let sr = open_path(
            &p,
            &OpenOptions {
                snapshot: Some(sel.clone()),
                ..Default::default()
            },
        )
        .unwrap();
        let out = s.join("snap.raw");
        qemu_img(&[
            "convert",
            "-l",
            qname,
            "-O",
            "raw",
            ps,
            out.to_str().unwrap(),
        ]);
        let oracle = std::fs::read(&out).unwrap();
        assert_same_bytes(&read_all(&sr, 1 << 20), &oracle, &format!("{sel:?}"));
    }
    let e = open_path(
        &p,
        &OpenOptions {
            snapshot: Some(SnapshotSel::Name("nope".into())),
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("Can't find snapshot"), "{e}");
}

#[test]
fn many_threads_read_the_same_image() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-mt");
    let src = make(&s, "src.qcow2", "cluster_size=4k", "4M", PATTERN);
    let dst = s.join("mt-c.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=4k",
        src.to_str().unwrap(),
        dst.to_str().unwrap(),
    ]);
    let oracle = qemu_raw_bytes(&dst, Some("qcow2"));
    let r = open_path(&dst, &OpenOptions::default()).unwrap();
    std::thread::scope(|sc| {
        for t in 0..8usize {
            let (r, oracle) = (&r, &oracle);
            sc.spawn(move || {
                let mut buf = vec![0u8; 12_345];
                for i in 0..200usize {
                    let off = ((i * 7919 + t * 104_729) * 97) % (oracle.len() - buf.len());
                    r.read_at(&mut buf, off as u64).unwrap();
                    assert_eq!(&buf[..], &oracle[off..off + buf.len()]);
                }
            });
        }
    });
}

#[test]
fn option_combinations() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-combo");
    let sub = ["write -P 1 4k 4k", "write -z 100k 8k", "write -P 2 1M 200k"];
    verify(&make(
        &s,
        "el2-meta.qcow2",
        "extended_l2=on,preallocation=metadata",
        "2M",
        &sub,
    ));
    verify(&make(
        &s,
        "el2-falloc.qcow2",
        "extended_l2=on,preallocation=falloc",
        "2M",
        &sub,
    ));
    verify(&make(
        &s,
        "meta-4k.qcow2",
        "preallocation=metadata,cluster_size=4k",
        "2M",
        &sub,
    ));
    verify(&make(
        &s,
        "v2-lazy-meta.qcow2",
        "compat=0.10,preallocation=metadata",
        "2M",
        &sub,
    ));
    let src = make(&s, "src.qcow2", "", "2M", PATTERN);
    for (name, o) in [
        ("c-v2.qcow2", "compat=0.10"),
        ("c-el2.qcow2", "extended_l2=on"),
        ("c-512.qcow2", "cluster_size=512"),
    ] {
        let dst = s.join(name);
        qemu_img(&[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            o,
            src.to_str().unwrap(),
            dst.to_str().unwrap(),
        ]);
        verify(&dst);
    }
    // A partly compressed image: later writes land as normal clusters next to compressed ones.
    let mixed = s.join("mixed.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        src.to_str().unwrap(),
        mixed.to_str().unwrap(),
    ]);
    qemu_io("qcow2", &mixed, &["write -P 9 32k 64k", "write -z 320k 8k"]);
    verify(&mixed);
}

#[test]
fn extended_l2_overlay_on_backing() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-el2-back");
    let base = make(&s, "el2-base.qcow2", "", "2M", &["write -P 1 0 2M"]);
    let top = s.join("el2-top.qcow2");
    let b = base.to_str().unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on",
        "-b",
        b,
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    qemu_io(
        "qcow2",
        &top,
        &["write -P 2 4k 4k", "write -z 70k 2k", "write -P 3 1M 100k"],
    );
    let r = std::sync::Arc::new(open_path(&top, &OpenOptions::default()).unwrap());
    verify_check(&r, &top);
    let base_r = std::sync::Arc::new(open_path(&base, &OpenOptions::default()).unwrap());
    let chain = vdisk_core::Chain::new(r, base_r);
    assert_same_bytes(
        &read_all(&chain, 100_000),
        &qemu_raw_bytes(&top, Some("qcow2")),
        "chain",
    );
    assert_eq!(vdisk_map_json(&chain), qemu_map(&top), "chain map");
}

#[test]
fn snapshot_lifecycle_on_compressed_and_v2_images() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-snaplife");
    let src = make(&s, "src.qcow2", "", "2M", PATTERN);
    for (name, o) in [
        ("sl-c.qcow2", "compat=1.1"),
        ("sl-v2.qcow2", "compat=0.10"),
        ("sl-e.qcow2", "extended_l2=on"),
    ] {
        let p = s.join(name);
        let ps = p.to_str().unwrap();
        qemu_img(&[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            o,
            src.to_str().unwrap(),
            ps,
        ]);
        qemu_img(&["snapshot", "-c", "one", ps]);
        qemu_io(
            "qcow2",
            &p,
            &["write -P 0x61 0 80k", "write -P 0x62 1500k 4k"],
        );
        qemu_img(&["snapshot", "-c", "two", ps]);
        qemu_io("qcow2", &p, &["write -P 0x63 40k 8k"]);
        qemu_img(&["snapshot", "-d", "one", ps]);
        verify(&p);
        let sr = open_path(
            &p,
            &OpenOptions {
                snapshot: Some(SnapshotSel::Name("two".into())),
                ..Default::default()
            },
        )
        .unwrap();
        let out = s.join("two.raw");
        qemu_img(&[
            "convert",
            "-l",
            "snapshot.name=two",
            "-O",
            "raw",
            ps,
            out.to_str().unwrap(),
        ]);
        assert_same_bytes(&read_all(&sr, 1 << 20), &std::fs::read(&out).unwrap(), name);
    }
}

#[test]
fn large_sparse_image_maps_quickly() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-big");
    let p = make(
        &s,
        "big.qcow2",
        "cluster_size=512",
        "4G",
        &["write -P 1 3G 4k", "write -z 1G 512"],
    );
    let r = open_path(&p, &OpenOptions::default()).unwrap();
    let t = std::time::Instant::now();
    assert_eq!(vdisk_map_json(&r), qemu_map(&p));
    assert!(t.elapsed().as_secs() < 10, "map took {:?}", t.elapsed());
    let mut buf = vec![0u8; 8192];
    r.read_at(&mut buf, (3 << 30) - 4096).unwrap();
    assert!(buf[..4096].iter().all(|b| *b == 0) && buf[4096..].iter().all(|b| *b == 1));
}
