//! vdisk-lvm against damaged physical volumes that lvm2 made: a damaged metadata copy passed
//! over when another copy reads (as lvm2 passes it over), and damaged labels, metadata area
//! headers, metadata text and segments: errors (for the volume concerned only, where lvm2's
//! layout lets the others read), never a panic.

mod common;

use common::*;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use vdisk_core::ImageReader;
use vdisk_lvm::LogicalVolume;
use vdisk_testutil::Scratch;
/// A damaged metadata copy is passed over when the PV has an intact one, as lvm2 passes over
/// it (it warns of the copy's checksum error and reads the group from the other copy): PV A's first area holds garbled text, its second is intact. lvm2 (`lvs`) still
/// reports both volumes; so must vdisk-lvm, from A's second copy.
#[test]
fn a_damaged_metadata_copy_is_passed_over_as_lvm2_does() {
    if !tools_available() {
        return;
    }
    let s = Scratch::new("lvm-bad-copy");
    let file = s.join("disk.raw");
    sparse(&file, 80 * MIB);
    let a = Loop::new(&file, MIB, 36 * MIB);
    let b = Loop::new(&file, 40 * MIB, 36 * MIB);
    let d = [&a, &b];
    lvm("pvcreate", &d, &["-q", "--pvmetadatacopies", "2", &a.dev]);
    lvm("pvcreate", &d, &["-q", &b.dev]);
    lvm("vgcreate", &d, &["-q", "-s", "1M", "dmg", &a.dev, &b.dev]);
    lvm(
        "lvcreate",
        &d,
        &["-an", "-Zn", "-L", "4M", "-n", "x", "dmg", &a.dev],
    );
    lvm(
        "lvcreate",
        &d,
        &["-an", "-Zn", "-L", "3M", "-n", "y", "dmg", &b.dev],
    );
    let vg = facts(&d, "dmg");
    write_patterns(&file, &vg, &["x", "y"], &d);
    // A's first copy: "logical_volumes {" made "logical_volumes [" in place.
    let disk = reader(&file);
    let hdr_at = a.offset + 4096;
    let mut h = [0u8; 64];
    disk.read_at(&mut h, hdr_at).unwrap();
    let mut text = vec![0u8; u64_at(&h, 48) as usize];
    disk.read_at(&mut text, hdr_at + u64_at(&h, 40)).unwrap();
    let at = String::from_utf8_lossy(&text)
        .find("logical_volumes {")
        .unwrap() as u64;
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.write_all_at(b"[", hdr_at + u64_at(&h, 40) + at + 16)
        .unwrap();
    // lvm2 still reads the group, the same.
    let after = facts(&d, "dmg");
    assert_eq!(after.seqno, vg.seqno);
    for (name, lv) in &vg.lvs {
        assert_eq!(after.lvs[name].size, lv.size);
        assert_eq!(after.lvs[name].segs[0].ranges, lv.segs[0].ranges);
    }
    let pa = vdisk_lvm::read_pv(window(&disk, &a).as_ref());
    let pb = vdisk_lvm::read_pv(window(&disk, &b).as_ref());
    let (pa, pb) = match (pa, pb) {
        (Ok(Some(pa)), Ok(Some(pb))) => (pa, pb),
        (pa, pb) => panic!(
            "lvm2 reads the group from A's second copy; vdisk-lvm gives A: {:?} (B: {:?})",
            pa.map(|p| p.map(|p| p.vg.map(|g| g.seqno))),
            pb.map(|p| p.map(|p| p.vg.map(|g| g.seqno)))
        ),
    };
    assert_eq!(pa.vg.as_ref().map(|g| g.seqno), Some(vg.seqno));
    let lvs = vdisk_lvm::logical_volumes(&[(window(&disk, &a), pa), (window(&disk, &b), pb)]);
    assert_eq!(names(&lvs), ["x", "y"]);
    check_bytes(&lvs[0], 1, &vg.lvs["x"], vg.extent);
    check_bytes(&lvs[1], 2, &vg.lvs["y"], vg.extent);
}

/// Reads everything vdisk-lvm offers of `dev`: the PV, its volumes, and the first and last
/// 4 KiB of each readable one. Errors are fine; a panic is not.
fn read_everything(dev: &Arc<dyn ImageReader>) -> Result<Vec<LogicalVolume>, String> {
    let p = vdisk_lvm::read_pv(dev.as_ref())
        .map_err(|e| e.to_string())?
        .ok_or("no label")?;
    // A PV whose only metadata copy cannot be read: its group cannot be read from it.
    if let (None, Some(e)) = (&p.vg, &p.metadata_error) {
        return Err(e.clone());
    }
    let lvs = vdisk_lvm::logical_volumes(&[(dev.clone(), p)]);
    for lv in &lvs {
        if let Ok(r) = &lv.reader {
            let n = r.virtual_size().min(4096);
            let mut buf = vec![0u8; n as usize];
            let _ = r.read_at(&mut buf, 0);
            let _ = r.read_at(&mut buf, r.virtual_size() - n);
        }
    }
    Ok(lvs)
}

/// `text` with `from` (which must occur once) replaced by `to`, padded with spaces to the same
/// length: the metadata text is edited in place.
fn edit(text: &[u8], from: &str, to: &str) -> Vec<u8> {
    let t = String::from_utf8_lossy(text);
    assert_eq!(t.matches(from).count(), 1, "{from:?} in\n{t}");
    assert!(to.len() <= from.len(), "{to:?} is longer than {from:?}");
    let to = format!("{to:<width$}", width = from.len());
    t.replace(from, &to).into_bytes()
}

/// Damaged labels, metadata area headers and metadata text, on a PV made by lvm2: with their
/// checksums wrong, passed over or refused as lvm2 does; sealed again, read_pv and
/// logical_volumes give errors, and no damage (every byte of the label sector and the area
/// header, and many of the text, changed) makes them panic.
#[test]
fn damaged_labels_headers_and_metadata_are_errors() {
    if !tools_available() {
        return;
    }
    let s = Scratch::new("lvm-hostile");
    let file = s.join("disk.raw");
    sparse(&file, 24 * MIB);
    let l = Loop::new(&file, 0, 24 * MIB);
    let d = [&l];
    lvm("pvcreate", &d, &["-q", &l.dev]);
    lvm("vgcreate", &d, &["-q", "-s", "1M", "bad", &l.dev]);
    lvm(
        "lvcreate",
        &d,
        &["-an", "-Zn", "-L", "4M", "-n", "a", "bad"],
    );
    lvm(
        "lvcreate",
        &d,
        &["-an", "-Zn", "-L", "2M", "-n", "b", "bad"],
    );
    lvm("lvextend", &d, &["-L", "8M", "bad/a"]);
    let vg = facts(&d, "bad");
    assert_eq!(vg.lvs["a"].segs.len(), 2);
    write_patterns(&file, &vg, &["a", "b"], &d);
    let dev = reader(&file);
    let ok = read_everything(&dev).unwrap();
    assert_eq!(names(&ok), ["a", "b"]);
    check_bytes(&ok[1], 2, &vg.lvs["b"], vg.extent);

    // Where lvm2 put things: the label in sector 1, the metadata area at 4096 (its header's
    // first raw_locn at bytes 40..64: offset in the area, size, checksum, flags).
    let mut label = vec![0u8; 512];
    dev.read_at(&mut label, 512).unwrap();
    assert_eq!(&label[..8], b"LABELONE");
    let p = vdisk_lvm::read_pv(dev.as_ref()).unwrap().unwrap();
    let area = p.label.metadata_areas[0];
    assert_eq!(area.offset, 4096);
    let mut hdr = vec![0u8; 512];
    dev.read_at(&mut hdr, area.offset).unwrap();
    let (loc, len) = (u64_at(&hdr, 40), u64_at(&hdr, 48));
    assert!(loc >= 512 && loc + len <= area.size, "{loc} {len} {area:?}");
    let text_at = area.offset + loc;
    let mut text = vec![0u8; len as usize];
    dev.read_at(&mut text, text_at).unwrap();
    let t = String::from_utf8_lossy(&text).into_owned();
    assert!(t.starts_with("bad {"), "{t}");
    assert!(t.contains(&format!("seqno = {}", vg.seqno)), "{t}");

    // The checksums, as lvm2 checks them: a label that fails its own is no label (lvm2 passes
    // over it), a header or text that fails its own is not read.
    assert!(
        vdisk_lvm::read_pv(patched(&dev, &[(512 + 100, vec![0x55])]).as_ref())
            .unwrap()
            .is_none(),
        "a label with a wrong checksum"
    );
    for (what, at, want) in [
        ("header", area.offset + 100, "wrong checksum"),
        ("text", text_at + 10, "checksum error in the metadata text"),
    ] {
        let Err(e) = read_everything(&patched(&dev, &[(at, vec![b'@'])])) else {
            panic!("{what} with a wrong checksum: read");
        };
        assert!(e.contains(want), "{what} with a wrong checksum: {e}");
    }
    // Everything below is sealed again after damage, so that the parsers behind the
    // checksums see it.
    let fails = |what: &str, patches: &[(u64, Vec<u8>)]| match read_everything(&sealed(
        &dev, patches, area,
    )) {
        Ok(l) => panic!("{what}: read {:?}", names(&l)),
        Err(e) => e,
    };
    let with_text = |what: &str, new: Vec<u8>| {
        assert_eq!(new.len(), text.len(), "{what}");
        sealed(&dev, &[(text_at, new)], area)
    };
    // The label's PV header offset (bytes 20..24 of the label sector).
    for off in [0u32, 31, 480, 500, 512, 0xffff_ffff] {
        fails(
            &format!("PV header at {off}"),
            &[(512 + 20, off.to_le_bytes().to_vec())],
        );
    }
    // The PV UUID, and the metadata area list running past the sector.
    fails("a UUID with a NUL", &[(512 + 40, vec![0])]);
    fails("no list terminators", &[(512 + 72, vec![0xaa; 440])]);
    // A metadata area outside the PV (its offset in the PV header's second list).
    let mda_entry: u64 = 512 + 32 + 40 + 16 + 16;
    assert_eq!(
        u64_at(&label, mda_entry as usize - 512),
        4096,
        "the metadata area entry"
    );
    fails(
        "metadata area past the end",
        &[(mda_entry, (30 * MIB).to_le_bytes().to_vec())],
    );
    fails(
        "metadata area size overflowing",
        &[(mda_entry + 8, u64::MAX.to_le_bytes().to_vec())],
    );
    // The area header: magic, version, its own position, and raw_locn.
    fails("magic", &[(area.offset + 4, b"x".to_vec())]);
    fails("version 2", &[(area.offset + 20, vec![2])]);
    fails(
        "area header at another offset",
        &[(area.offset + 24, 8192u64.to_le_bytes().to_vec())],
    );
    let raw = area.offset + 40;
    for (what, off, size) in [
        ("text truncated to half", loc, len / 2),
        ("text truncated to 10 bytes", loc, 10),
        ("size the whole area", loc, area.size),
        ("size past the area", loc, area.size - loc + 512),
        ("size of 2^64 - 1", loc, u64::MAX),
        ("size of 1 GiB", loc, 1 << 30),
        ("offset past the area", area.size + 512, len),
        ("offset inside the header", 100, len),
        ("offset 2^64 - 1", u64::MAX, len),
        // Wrapping around the end of the buffer onto its start: zeros, then old text.
        ("wrapping onto old text", area.size - 100, len),
    ] {
        let mut p = off.to_le_bytes().to_vec();
        p.extend_from_slice(&size.to_le_bytes());
        let e = fails(what, &[(raw, p)]);
        if size == u64::MAX || size == 1 << 30 {
            // Refused before anything that large is allocated.
            assert!(!e.is_empty());
        }
    }
    // raw_locn offset 0 (or the ignored flag): no metadata here; the PV is in no group.
    let none = sealed(&dev, &[(raw, vec![0; 8])], area);
    let p0 = vdisk_lvm::read_pv(none.as_ref()).unwrap().unwrap();
    assert!(p0.vg.is_none());
    assert!(vdisk_lvm::logical_volumes(&[(none, p0)]).is_empty());

    // The text, garbled in place (and sealed again).
    for (what, from, to) in [
        (
            "an array for a section",
            "logical_volumes {",
            "logical_volumes [",
        ),
        ("no =", "extent_size = ", "extent_size   "),
        (
            "extent_size 0",
            &format!("extent_size = {}", vg.extent / 512),
            "extent_size = 0",
        ),
        (
            "extent_size -8",
            &format!("extent_size = {}", vg.extent / 512),
            "extent_size = -8",
        ),
        (
            "seqno a string",
            &format!("seqno = {}", vg.seqno),
            "seqno=\"\"",
        ),
        (
            "a string not closed",
            "format = \"lvm2\"",
            "format = \"lvm2 ",
        ),
        ("PV without an id", "id = \"", "idx= \""),
    ] {
        // "id = \"" occurs more than once: edit the first PV's.
        let new = if what == "PV without an id" {
            let pv0 = t.find("pv0 {").unwrap();
            let mut n = text.clone();
            let at = pv0 + t[pv0..].find(from).unwrap();
            n[at..at + to.len()].copy_from_slice(to.as_bytes());
            n
        } else {
            edit(&text, from, to)
        };
        let r = read_everything(&with_text(what, new));
        assert!(r.is_err(), "{what}: {:?}", r.map(|l| names(&l).join(",")));
    }
    let mut nul = text.clone();
    let pvs_at = t.find("physical_volumes").unwrap();
    nul[pvs_at..pvs_at + 8].fill(0);
    assert!(read_everything(&with_text("NULs", nul)).is_err());

    // Segments: volume b rewritten with one segment (in the space of lvm2's layout of it).
    let b_at = t.find("\nb {").expect("volume b") + 1;
    let seg = b_at + t[b_at..].find("segment1 {").unwrap();
    let seg_close = seg + t[seg..].find('}').unwrap();
    let b_end = seg_close + 1 + t[seg_close + 1..].find('}').unwrap() + 1;
    assert!(
        t[seg..seg_close].contains("stripes = ["),
        "{}",
        &t[b_at..b_end]
    );
    let b_seg = |seg: &str| -> Result<Vec<LogicalVolume>, String> {
        let lv = format!("b{{status=[\"VISIBLE\"] segment_count=1 segment1{{{seg}}}}}");
        let w = b_end - b_at;
        assert!(lv.len() <= w, "{lv} in {w} bytes");
        let mut n = text.clone();
        n[b_at..b_end].copy_from_slice(format!("{lv:<w$}").as_bytes());
        read_everything(&with_text(seg, n))
    };
    // The same segment written compactly reads the same.
    let pe = vg.lvs["b"].segs[0].ranges[0].1;
    let lvs = b_seg(&format!(
        " start_extent=0 extent_count=2 type=\"striped\" stripe_count=1 stripes=[\"pv0\",{pe}] "
    ))
    .unwrap();
    check_bytes(by_name(&lvs, "b"), 2, &vg.lvs["b"], vg.extent);
    // Extents past the PV (or overflowing): b cannot be read, a still can.
    for (what, seg_text) in [
        ("past the PV", format!("start_extent=0 extent_count=2 type=\"striped\" stripe_count=1 stripes=[\"pv0\",{}]", 22)),
        ("far past the PV", "start_extent=0 extent_count=2 type=\"striped\" stripe_count=1 stripes=[\"pv0\",99999999]".to_string()),
        ("count overflowing", "start_extent=0 extent_count=9223372036854775807 type=\"striped\" stripe_count=1 stripes=[\"pv0\",0]".to_string()),
        ("extent overflowing", "start_extent=0 extent_count=2 type=\"striped\" stripe_count=1 stripes=[\"pv0\",9223372036854775807]".to_string()),
        ("a gap before", format!("start_extent=1 extent_count=2 type=\"striped\" stripe_count=1 stripes=[\"pv0\",{pe}]")),
        ("3 extents on 2 stripes", "start_extent=0 extent_count=3 type=\"striped\" stripe_count=2 stripe_size=128 stripes=[\"pv0\",0,\"pv0\",10]".to_string()),
        ("striped past the PV", "start_extent=0 extent_count=4 type=\"striped\" stripe_count=2 stripe_size=128 stripes=[\"pv0\",0,\"pv0\",22]".to_string()),
        ("chunk size overflowing", "start_extent=0 extent_count=4 type=\"striped\" stripe_count=2 stripe_size=36028797018963968 stripes=[\"pv0\",0,\"pv0\",10]".to_string()),
        ("a thin segment", "start_extent=0 extent_count=2 type=\"thin\"".to_string()),
    ] {
        let lvs = b_seg(&seg_text).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(by_name(&lvs, "b").reader.is_err(), "{what}");
        check_bytes(by_name(&lvs, "a"), 1, &vg.lvs["a"], vg.extent);
    }
    // Errors in the metadata itself.
    for (what, seg_text) in [
        ("unknown PV", "start_extent=0 extent_count=2 type=\"striped\" stripe_count=1 stripes=[\"pv7\",0]"),
        ("stripe_count wrong", "start_extent=0 extent_count=2 type=\"striped\" stripe_count=2 stripes=[\"pv0\",0]"),
        ("odd stripes", "start_extent=0 extent_count=2 type=\"striped\" stripe_count=1 stripes=[\"pv0\"]"),
        ("negative count", "start_extent=0 extent_count=-2 type=\"striped\" stripe_count=1 stripes=[\"pv0\",0]"),
        ("negative extent", "start_extent=0 extent_count=2 type=\"striped\" stripe_count=1 stripes=[\"pv0\",-5]"),
        ("no type", "start_extent=0 extent_count=2 stripe_count=1 stripes=[\"pv0\",0]"),
        ("no stripe size", "start_extent=0 extent_count=2 type=\"striped\" stripe_count=2 stripes=[\"pv0\",0,\"pv0\",4]"),
    ] {
        assert!(b_seg(seg_text).is_err(), "{what}");
    }
    // Any byte of the label sector or the area header, and bytes all over the text, changed
    // and sealed again: no panic (most are errors, some still read).
    for at in (512..1024).chain(area.offset..area.offset + 512) {
        for v in [0u8, 0xff, 0x7f] {
            let _ = read_everything(&sealed(&dev, &[(at, vec![v])], area));
        }
    }
    for at in (0..text.len()).step_by(3) {
        for c in *b"{}[]=\"#0-9\n\0 x" {
            let mut n = text.clone();
            n[at] = c;
            let _ = read_everything(&with_text("fuzz", n));
        }
    }
}
