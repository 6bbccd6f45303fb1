//! vdisk-lvm against lvm2 itself: physical volumes, volume groups and logical volumes made by
//! pvcreate, vgcreate, lvcreate, lvextend, lvconvert and lvremove on loop devices over byte
//! ranges of scratch files (activation off: no device-mapper is needed), read back with
//! `read_pv` and `logical_volumes`. The oracle is lvm2's own report (`lvs`, `pvs`, `vgs`): the
//! names, UUIDs, sizes and sequence numbers it prints, and where it says each extent of each
//! volume lies (for striped segments, chunk k of the stripe size in stripe k % n at chunk k / n
//! of that stripe's area, as device-mapper's dm-stripe maps them). Each volume's bytes are
//! written at those places as words naming the volume and their offset in it, and must read
//! back through vdisk-lvm byte for byte. Covered: one PV with a volume in two segments and
//! names with `-`, `_`, `.` and `+`; a group over two PVs with a linear volume spanning both and
//! a striped one in two segments, read with one PV missing; mirror and cache-pool volumes
//! (listed, with an error naming their type); the newest metadata among two areas of one PV and
//! the areas of other PVs (one stale, one PV with no area and its label in sector 3); metadata
//! wrapped around the end of a small area's circular buffer. Damaged PVs: `lvm_damaged.rs`.

mod common;

use common::*;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use vdisk_core::ImageReader;
use vdisk_lvm::{LogicalVolume, PhysicalVolume};
use vdisk_testutil::tools::try_lvm;
use vdisk_testutil::Scratch;

/// A PV on a whole file (the default 4 MiB extents) holding `root` in two segments (created,
/// then extended after `swap` took the extents that followed it), `swap`, and `my-data`.
#[test]
fn one_pv_linear_volumes_in_two_segments() {
    if !tools_available() {
        return;
    }
    let s = Scratch::new("lvm-one-pv");
    let file = s.join("disk.raw");
    sparse(&file, 96 * MIB);
    let l = Loop::new(&file, 0, 96 * MIB);
    let d = [&l];
    lvm("pvcreate", &d, &["-q", &l.dev]);
    lvm("vgcreate", &d, &["-q", "rl", &l.dev]);
    for args in [
        &["-an", "-Zn", "-L", "16M", "-n", "root", "rl"][..],
        &["-an", "-Zn", "-L", "8M", "-n", "swap", "rl"],
    ] {
        lvm("lvcreate", &d, args);
    }
    lvm("lvextend", &d, &["-L", "40M", "rl/root"]);
    lvm(
        "lvcreate",
        &d,
        &["-an", "-Zn", "-L", "12M", "-n", "my-data", "rl"],
    );
    // Every character lvm2 allows in a name.
    lvm(
        "lvcreate",
        &d,
        &["-an", "-Zn", "-L", "4M", "-n", "db_v1.2+x", "rl"],
    );
    let vg = facts(&d, "rl");
    assert_eq!(vg.extent, 4 * MIB);
    assert_eq!(vg.lvs["root"].segs.len(), 2, "{:?}", vg.lvs["root"]);
    assert_ne!(
        vg.lvs["root"].segs[1].ranges[0].1,
        vg.lvs["root"].segs[0].ranges[0].2 + 1,
        "root's segments must not be contiguous"
    );
    assert_eq!(
        vg.lvs.keys().map(String::as_str).collect::<Vec<_>>(),
        ["db_v1.2+x", "my-data", "root", "swap"]
    );
    let order = ["root", "swap", "my-data", "db_v1.2+x"];
    write_patterns(&file, &vg, &order, &d);

    let disk = reader(&file);
    let (dev, p) = pv(&disk);
    let (pv_uuid, pe_start) = &vg.pvs[&l.dev];
    assert_eq!(&p.label.uuid, pv_uuid);
    assert_eq!(p.label.sector, 1, "pvcreate writes the label in sector 1");
    assert_eq!(p.label.device_size, 96 * MIB);
    let g = p.vg.as_ref().expect("a volume group");
    assert_eq!(
        (g.name.as_str(), g.id.as_str(), g.seqno, g.extent_bytes),
        ("rl", vg.uuid.as_str(), vg.seqno, vg.extent)
    );
    assert_eq!(g.pvs.len(), 1);
    assert_eq!(g.pvs[0].pe_start * 512, *pe_start);
    assert_eq!(&g.pvs[0].uuid, pv_uuid);
    assert_eq!(
        vdisk_lvm::probe(disk.as_ref()).unwrap(),
        Some(p.label.clone())
    );

    let lvs = vdisk_lvm::logical_volumes(&[(dev, p)]);
    // The metadata's order: the order they were created in.
    assert_eq!(names(&lvs), order);
    let vg_hex = vg.uuid.replace('-', "");
    for (i, lv) in lvs.iter().enumerate() {
        let f = &vg.lvs[&lv.name];
        assert_eq!(
            (lv.vg_name.as_str(), lv.vg_id.as_str()),
            ("rl", vg.uuid.as_str())
        );
        assert_eq!(lv.id, f.uuid);
        assert_eq!(lv.size, f.size, "{}", lv.name);
        assert_eq!(lv.device(), format!("/dev/rl/{}", lv.name));
        check_bytes(lv, i as u64 + 1, f, vg.extent);
    }
    assert_eq!(by_name(&lvs, "root").size, 40 * MIB);
    let data = by_name(&lvs, "my-data");
    assert_eq!(data.size, 12 * MIB);
    assert_eq!(
        data.aliases(),
        [
            "/dev/mapper/rl-my--data".to_string(),
            "/dev/disk/by-id/dm-name-rl-my--data".to_string(),
            format!(
                "/dev/disk/by-id/dm-uuid-LVM-{vg_hex}{}",
                vg.lvs["my-data"].uuid.replace('-', "")
            ),
        ]
    );
    assert_eq!(by_name(&lvs, "root").aliases()[0], "/dev/mapper/rl-root");
    assert_eq!(
        by_name(&lvs, "db_v1.2+x").aliases()[..2],
        [
            "/dev/mapper/rl-db_v1.2+x",
            "/dev/disk/by-id/dm-name-rl-db_v1.2+x"
        ]
    );
    // dm-uuid names are "LVM-" and 64 characters: both UUIDs, 32 each.
    assert_eq!(
        data.aliases()[2].len(),
        "/dev/disk/by-id/dm-uuid-LVM-".len() + 64
    );
}

/// A group over two PVs in two ranges of one file (1 MiB extents): `st` striped over both in
/// 64 KiB chunks, in two segments; `onlya` on the first PV only; `span`, linear, running from
/// the first PV onto the second. Then the group with one PV left out.
#[test]
fn two_pvs_striped_and_spanning_volumes_and_a_missing_pv() {
    if !tools_available() {
        return;
    }
    let s = Scratch::new("lvm-two-pvs");
    let file = s.join("disk.raw");
    sparse(&file, 100 * MIB);
    let a = Loop::new(&file, MIB, 40 * MIB);
    let b = Loop::new(&file, 50 * MIB, 40 * MIB);
    let d = [&a, &b];
    lvm("pvcreate", &d, &["-q", &a.dev, &b.dev]);
    lvm("vgcreate", &d, &["-q", "-s", "1M", "duo", &a.dev, &b.dev]);
    lvm(
        "lvcreate",
        &d,
        &[
            "-an", "-Zn", "-i", "2", "-I", "64k", "-L", "6M", "-n", "st", "duo",
        ],
    );
    lvm(
        "lvcreate",
        &d,
        &["-an", "-Zn", "-L", "4M", "-n", "onlya", "duo", &a.dev],
    );
    lvm("lvextend", &d, &["-l", "+4", "duo/st"]);
    lvm(
        "lvcreate",
        &d,
        &["-an", "-Zn", "-L", "50M", "-n", "span", "duo"],
    );
    let vg = facts(&d, "duo");
    let st = &vg.lvs["st"];
    assert_eq!(st.segs.len(), 2, "{st:?}");
    for sg in &st.segs {
        assert_eq!(sg.segtype, "striped");
        assert_eq!(sg.ranges.len(), 2);
        assert_ne!(sg.ranges[0].0, sg.ranges[1].0, "stripes on two PVs");
        assert_eq!(sg.stripe_size, 64 << 10);
    }
    let span = &vg.lvs["span"];
    assert_eq!(span.segs.len(), 2, "{span:?}");
    assert_ne!(
        span.segs[0].ranges[0].0, span.segs[1].ranges[0].0,
        "span runs from one PV onto the other"
    );
    assert!(vg.lvs["onlya"].segs.iter().all(|s| s.ranges[0].0 == a.dev));
    let order = ["st", "onlya", "span"];
    write_patterns(&file, &vg, &order, &d);

    let disk = reader(&file);
    let pa = pv(&window(&disk, &a));
    let pb = pv(&window(&disk, &b));
    let (ua, ub) = (vg.pvs[&a.dev].0.clone(), vg.pvs[&b.dev].0.clone());
    assert_eq!(
        (pa.1.label.uuid.as_str(), pb.1.label.uuid.as_str()),
        (ua.as_str(), ub.as_str())
    );
    for both in [[pa.clone(), pb.clone()], [pb.clone(), pa.clone()]] {
        let lvs = vdisk_lvm::logical_volumes(&both);
        assert_eq!(names(&lvs), order);
        for (i, lv) in lvs.iter().enumerate() {
            assert_eq!(lv.size, vg.lvs[&lv.name].size);
            check_bytes(lv, i as u64 + 1, &vg.lvs[&lv.name], vg.extent);
        }
    }
    // One PV: the volumes with extents on the other name it; the rest still read.
    let only_a = vdisk_lvm::logical_volumes(std::slice::from_ref(&pa));
    assert_eq!(names(&only_a), order);
    check_bytes(by_name(&only_a, "onlya"), 2, &vg.lvs["onlya"], vg.extent);
    for name in ["st", "span"] {
        let lv = by_name(&only_a, name);
        assert_eq!(
            lv.size, vg.lvs[name].size,
            "the size is known without the PV"
        );
        let e = lv.reader.as_ref().err().expect("a volume on a missing PV");
        assert!(e.contains(&ub) && e.contains("missing"), "{name}: {e}");
    }
    let only_b = vdisk_lvm::logical_volumes(&[pb]);
    assert_eq!(names(&only_b), order);
    for name in order {
        let e = by_name(&only_b, name).reader.as_ref().err().expect("on A");
        assert!(e.contains(&ua) && e.contains("missing"), "{name}: {e}");
    }
}

/// Volumes of segment types vdisk-lvm does not read, as far as lvm2 makes them without
/// device-mapper: a mirror (`lvconvert --type mirror` of an inactive volume) and a cache pool;
/// thin pools and RAID are tried too, and checked when lvm2 makes them.
#[test]
fn mirror_and_cache_pool_volumes_are_listed_with_an_error() {
    if !tools_available() {
        return;
    }
    let s = Scratch::new("lvm-other-types");
    let file = s.join("disk.raw");
    sparse(&file, 64 * MIB);
    let a = Loop::new(&file, MIB, 30 * MIB);
    let b = Loop::new(&file, 32 * MIB, 30 * MIB);
    let d = [&a, &b];
    lvm("pvcreate", &d, &["-q", &a.dev, &b.dev]);
    lvm("vgcreate", &d, &["-q", "-s", "1M", "kinds", &a.dev, &b.dev]);
    lvm(
        "lvcreate",
        &d,
        &["-an", "-Zn", "-L", "4M", "-n", "lin", "kinds"],
    );
    lvm(
        "lvcreate",
        &d,
        &["-an", "-Zn", "-L", "4M", "-n", "mir", "kinds"],
    );
    lvm(
        "lvconvert",
        &d,
        &["-y", "--type", "mirror", "-m", "1", "kinds/mir"],
    );
    lvm(
        "lvcreate",
        &d,
        &[
            "-an",
            "--type",
            "cache-pool",
            "-L",
            "4M",
            "-n",
            "cpool",
            "kinds",
        ],
    );
    let mut want: Vec<(&str, &str)> = vec![("mir", "mirror"), ("cpool", "cache-pool")];
    // Without device-mapper lvm2 2.03 refuses these ("Can't create thin-pool without using
    // device-mapper kernel driver"); where it makes them they must be listed the same way.
    if try_lvm(
        "lvcreate",
        &d,
        &[
            "-an",
            "--type",
            "thin-pool",
            "-L",
            "4M",
            "-n",
            "tpool",
            "kinds",
        ],
    )
    .is_ok()
    {
        want.push(("tpool", "thin-pool"));
        if try_lvm(
            "lvcreate",
            &d,
            &["-an", "-V", "8M", "--thinpool", "kinds/tpool", "-n", "thin"],
        )
        .is_ok()
        {
            want.push(("thin", "thin"));
        }
    } else {
        eprintln!("note: lvm2 makes no thin pool without device-mapper here");
    }
    if try_lvm(
        "lvcreate",
        &d,
        &[
            "-an", "--type", "raid1", "-m", "1", "-L", "4M", "-n", "r1", "kinds",
        ],
    )
    .is_ok()
    {
        want.push(("r1", "raid1"));
    } else {
        eprintln!("note: lvm2 makes no raid1 volume without device-mapper here");
    }
    let vg = facts(&d, "kinds");
    let types = report("lvs", &d, "lv_name,segtype", &["-a", "kinds"]);
    for (name, t) in &want {
        assert!(
            types.iter().any(|r| r[0] == *name && r[1] == *t),
            "{name} {t}: {types:?}"
        );
    }
    // Hidden volumes (mirror images and log, cache data and metadata, the spare) exist.
    assert!(types.len() > vg.lvs.len() + 3, "{types:?}");
    let disk = reader(&file);
    let pvs = [pv(&window(&disk, &a)), pv(&window(&disk, &b))];
    let lvs = vdisk_lvm::logical_volumes(&pvs);
    // Exactly the volumes lvs lists without -a, in creation order.
    let mut listed = names(&lvs);
    assert_eq!(listed[..3], ["lin", "mir", "cpool"]);
    listed.sort();
    assert_eq!(
        listed,
        vg.lvs.keys().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(lvs.iter().all(|l| l.vg_name == "kinds"));
    let lin = by_name(&lvs, "lin");
    assert_eq!(lin.size, 4 * MIB);
    assert!(lin.reader.is_ok());
    for (name, t) in &want {
        let lv = by_name(&lvs, name);
        assert_eq!(lv.size, vg.lvs[*name].size, "{name}");
        let e = lv
            .reader
            .as_ref()
            .err()
            .unwrap_or_else(|| panic!("{name} read"));
        assert!(e.contains(&format!("a {t} segment")), "{name}: {e}");
    }
}

/// The newest metadata wins: a PV with two metadata areas (`--pvmetadatacopies 2`), a second
/// PV, and a third with none (and its label in sector 3) holding a volume, after several
/// changes; then with the second PV's area and the first PV's second area put back as they
/// were before the changes (stale copies), in any order of the PVs.
#[test]
fn the_newest_metadata_is_read() {
    if !tools_available() {
        return;
    }
    let s = Scratch::new("lvm-seqno");
    let file = s.join("disk.raw");
    sparse(&file, 120 * MIB);
    let a = Loop::new(&file, MIB, 36 * MIB);
    let b = Loop::new(&file, 40 * MIB, 36 * MIB);
    let c = Loop::new(&file, 80 * MIB, 36 * MIB);
    let d = [&a, &b, &c];
    lvm("pvcreate", &d, &["-q", "--pvmetadatacopies", "2", &a.dev]);
    lvm("pvcreate", &d, &["-q", &b.dev]);
    let no_mda = [
        "-q",
        "--pvmetadatacopies",
        "0",
        "--labelsector",
        "3",
        &c.dev,
    ];
    lvm("pvcreate", &d, &no_mda);
    lvm(
        "vgcreate",
        &d,
        &["-q", "-s", "1M", "upd", &a.dev, &b.dev, &c.dev],
    );
    let first = ["-an", "-Zn", "-L", "4M", "-n", "first", "upd", &a.dev];
    lvm("lvcreate", &d, &first);
    let old = facts(&d, "upd");
    let disk = reader(&file);
    let (_, la) = pv(&window(&disk, &a));
    let (_, lb) = pv(&window(&disk, &b));
    let (_, lc) = pv(&window(&disk, &c));
    assert_eq!(la.label.metadata_areas.len(), 2, "{:?}", la.label);
    assert_eq!(lb.label.metadata_areas.len(), 1, "{:?}", lb.label);
    assert_eq!((lc.label.sector, lc.label.metadata_areas.len()), (3, 0));
    assert!(lc.vg.is_none(), "no metadata on C");
    assert_eq!(la.vg.as_ref().unwrap().seqno, old.seqno);
    let area = |l: &Loop, ar: vdisk_lvm::label::Area| {
        let size = if ar.size == 0 {
            l.size - ar.offset
        } else {
            ar.size
        };
        (l.offset + ar.offset, size)
    };
    let stale: Vec<(u64, Vec<u8>)> = [
        area(&a, la.label.metadata_areas[1]),
        area(&b, lb.label.metadata_areas[0]),
    ]
    .into_iter()
    .map(|(at, len)| {
        let mut v = vec![0u8; len as usize];
        disk.read_at(&mut v, at).unwrap();
        (at, v)
    })
    .collect();

    lvm("lvextend", &d, &["-L", "10M", "upd/first"]);
    lvm(
        "lvcreate",
        &d,
        &["-an", "-Zn", "-L", "3M", "-n", "second", "upd"],
    );
    lvm(
        "lvcreate",
        &d,
        &["-an", "-Zn", "-L", "2M", "-n", "gone", "upd"],
    );
    lvm("lvextend", &d, &["-l", "+2", "upd/first"]);
    lvm("lvremove", &d, &["-y", "upd/gone"]);
    let third = ["-an", "-Zn", "-L", "5M", "-n", "third", "upd", &c.dev];
    lvm("lvcreate", &d, &third);
    let new = facts(&d, "upd");
    assert!(
        new.seqno >= old.seqno + 6,
        "{} then {}",
        old.seqno,
        new.seqno
    );
    assert_eq!(new.lvs.len(), 3);
    assert!(new.lvs["third"].segs.iter().all(|s| s.ranges[0].0 == c.dev));
    let order = ["first", "second", "third"];
    write_patterns(&file, &new, &order, &d);
    let check_new = |lvs: &[LogicalVolume]| {
        assert_eq!(names(lvs), order);
        for (i, lv) in lvs.iter().enumerate() {
            assert_eq!(lv.size, new.lvs[&lv.name].size, "{}", lv.name);
            check_bytes(lv, i as u64 + 1, &new.lvs[&lv.name], new.extent);
        }
        assert_eq!(by_name(lvs, "first").size, 12 * MIB);
    };
    let pa = pv(&window(&disk, &a));
    let pb = pv(&window(&disk, &b));
    let pc = pv(&window(&disk, &c));
    assert_eq!(pa.1.vg.as_ref().unwrap().seqno, new.seqno);
    assert_eq!(pb.1.vg.as_ref().unwrap().seqno, new.seqno);
    assert!(pc.1.vg.is_none());
    check_new(&vdisk_lvm::logical_volumes(&[pa, pb, pc.clone()]));

    // Stale copies: B's only area and A's second one as they were.
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    for (at, v) in &stale {
        f.write_all_at(v, *at).unwrap();
    }
    let pa = pv(&window(&disk, &a));
    let pb = pv(&window(&disk, &b));
    let seqno = |p: &(Arc<dyn ImageReader>, PhysicalVolume)| p.1.vg.as_ref().unwrap().seqno;
    assert_eq!(seqno(&pa), new.seqno, "A's first area is newest");
    assert_eq!(seqno(&pb), old.seqno, "B's area is stale");
    for pvs in [
        [pa.clone(), pb.clone(), pc.clone()],
        [pb.clone(), pa.clone(), pc.clone()],
        [pc.clone(), pb.clone(), pa.clone()],
    ] {
        check_new(&vdisk_lvm::logical_volumes(&pvs));
    }
    // The stale B alone (and with C): the old group, whose one volume lies on A.
    let lvs = vdisk_lvm::logical_volumes(&[pb.clone(), pc.clone()]);
    assert_eq!(names(&lvs), ["first"]);
    assert_eq!(lvs[0].size, old.lvs["first"].size);
    assert!(lvs[0].reader.is_err());
    // C alone holds no metadata: no volumes at all.
    assert!(vdisk_lvm::logical_volumes(&[pc]).is_empty());
    // A with its first area marked ignored (raw_locn flags): the second, stale, one is read.
    let a_dev = window(&disk, &a);
    let first_area = pa.1.label.metadata_areas[0];
    let ignored = sealed(
        &a_dev,
        &[(first_area.offset + 60, vec![1, 0, 0, 0])],
        first_area,
    );
    let (_, p) = pv(&ignored);
    assert_eq!(p.vg.as_ref().unwrap().seqno, old.seqno);
}

/// Metadata written around the end of a small metadata area's circular buffer (32 KiB asked,
/// a hundred long tags making each copy some 13 KiB): each copy lvm2 writes, wrapped or not,
/// reads back as what `vgs` and `lvs` say.
#[test]
fn metadata_wrapping_around_its_circular_buffer() {
    if !tools_available() {
        return;
    }
    let s = Scratch::new("lvm-wrap");
    let file = s.join("disk.raw");
    sparse(&file, 40 * MIB);
    let l = Loop::new(&file, 0, 40 * MIB);
    let d = [&l];
    let small = [
        "-q",
        "--metadatasize",
        "32k",
        "--dataalignment",
        "64k",
        &l.dev,
    ];
    lvm("pvcreate", &d, &small);
    let tags: Vec<String> = (0..100).map(|i| format!("t{i:03}-{:0>110}", i)).collect();
    let mut args = vec!["-q", "-s", "1M"];
    for t in &tags {
        args.extend(["--addtag", t.as_str()]);
    }
    args.extend(["wrap", &l.dev]);
    lvm("vgcreate", &d, &args);
    let disk = reader(&file);
    let mut wrapped = 0;
    for i in 1..=6 {
        let name = format!("lv{i}");
        lvm(
            "lvcreate",
            &d,
            &["-an", "-Zn", "-L", "1M", "-n", &name, "wrap"],
        );
        let vg = facts(&d, "wrap");
        let (dev, p) = pv(&disk);
        let area = p.label.metadata_areas[0];
        let mut h = [0u8; 64];
        disk.read_at(&mut h, area.offset).unwrap();
        if u64_at(&h, 40) + u64_at(&h, 48) > area.size {
            wrapped += 1;
        }
        let g = p.vg.as_ref().unwrap();
        assert_eq!(g.seqno, vg.seqno, "after {name}");
        assert_eq!(g.pvs[0].pe_start * 512, 64 << 10);
        let lvs = vdisk_lvm::logical_volumes(&[(dev, p)]);
        let mut got: Vec<&str> = names(&lvs);
        got.sort();
        assert_eq!(got, vg.lvs.keys().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(lvs.len(), i);
        assert!(lvs.iter().all(|l| l.reader.is_ok() && l.size == MIB));
    }
    assert!(wrapped > 0, "lvm2 never wrapped the metadata around");
}
