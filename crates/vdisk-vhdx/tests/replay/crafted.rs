//! Crafted logs written into a qemu-made image ([`crate::craft`]) that qemu replays, or finds
//! nothing to replay in, each replayed by `qemu-img check -r all` on one copy and by vdisk on
//! another: the same bytes but for the GUIDs.

use crate::common::*;
use crate::craft::*;
use crate::fixtures::*;
use vdisk_testutil::*;

#[test]
fn crafted_logs_replay_as_qemu_replays_them() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-replay-crafted");
    let (p, l) = base(&s);
    let base = std::fs::read(&p).unwrap();
    let before = qemu_raw_bytes(&p, Some("vhdx"));
    let (b0, b3) = (block_at(&base, &l, 0), block_at(&base, &l, 3));
    let len = l.len;
    let m = MIB as usize;

    // Data and zero descriptors in one entry; the third rewrites the BAT's first sector with block
    // 6 in state ZERO.
    let mut bat_sector = base[l.bat..l.bat + SECTOR].to_vec();
    put64(&mut bat_sector, 8 * 6, 2);
    let e = Entry::new(
        5,
        len,
        vec![
            Desc::Data {
                at: b0 + 8192,
                sector: sector(0x5a),
            },
            Desc::Zero {
                at: b3 + 16384,
                len: 8192,
            },
            Desc::Data {
                at: l.bat as u64,
                sector: bat_sector,
            },
        ],
    );
    let b = both(&s, "data-zero", &with_log(&base, &l, &[(0, e.encode())]));
    let g = assert_replayed_alike(&b, "data and zero descriptors");
    assert_eq!(&g[8192..12288], &sector(0x5a)[..]);
    assert!(g[3 * m + 16384..3 * m + 24576].iter().all(|x| *x == 0));
    assert_eq!(g[3 * m + 24576], 0x22);
    assert_eq!(le64(&b.our_file(), l.bat + 48), 2, "block 6 now ZERO");

    // Three entries; the second has 126 descriptors (all qemu can read, filling the header's
    // sector) with a zero descriptor of length 0, and overwrites what the first wrote.
    let e10 = Entry::new(
        10,
        len,
        vec![
            Desc::Data {
                at: b0,
                sector: sector(0xa1),
            },
            Desc::Zero {
                at: b3 + 4096,
                len: 4096,
            },
        ],
    );
    let mut d11: Vec<Desc> = (0..124)
        .map(|i| Desc::Zero {
            at: b3 + 65536 + 4096 * i,
            len: 4096,
        })
        .collect();
    d11.push(Desc::Zero { at: b3, len: 0 });
    d11.push(Desc::Data {
        at: b0,
        sector: sector(0xa2),
    });
    let e11 = Entry::new(11, len, d11);
    let e12 = Entry::new(
        12,
        len,
        vec![Desc::Data {
            at: b0 + 4096,
            sector: sector(0xa3),
        }],
    );
    let (x10, x11, x12) = (e10.encode(), e11.encode(), e12.encode());
    let (a11, a12) = (x10.len(), x10.len() + x11.len());
    let img = with_log(&base, &l, &[(0, x10), (a11, x11), (a12, x12)]);
    let b = both(&s, "three", &img);
    let g = assert_replayed_alike(&b, "three entries");
    assert_eq!(&g[..4096], &sector(0xa2)[..]);
    assert_eq!(&g[4096..8192], &sector(0xa3)[..]);
    assert!(g[3 * m + 4096..3 * m + 8192].iter().all(|x| *x == 0));
    assert!(g[3 * m + 65536..3 * m + 65536 + 124 * 4096]
        .iter()
        .all(|x| *x == 0));
    assert_eq!(g[3 * m + 65536 + 124 * 4096], 0x22);
    assert_eq!(
        g[3 * m],
        0x22,
        "a zero descriptor of length 0 writes nothing"
    );

    // An entry wrapping around the end of the circular log (its second data sector is the log's
    // first), and an older entry elsewhere that the search passes over.
    let stale = Entry::new(
        3,
        len,
        vec![Desc::Data {
            at: b0,
            sector: sector(0x01),
        }],
    );
    let wrapped = Entry::new(
        7,
        len,
        vec![
            Desc::Data {
                at: b0,
                sector: sector(0x71),
            },
            Desc::Data {
                at: b0 + 4096,
                sector: sector(0x72),
            },
        ],
    );
    let img = with_log(
        &base,
        &l,
        &[
            (65536, stale.encode()),
            (l.log_len - 2 * SECTOR, wrapped.encode()),
        ],
    );
    let b = both(&s, "wrapped", &img);
    let g = assert_replayed_alike(&b, "wrapped log");
    assert_eq!(&g[..4096], &sector(0x71)[..]);
    assert_eq!(&g[4096..8192], &sector(0x72)[..]);

    // Only the current header has the log GUID; the other keeps its own (zero) in the end.
    let e = Entry::new(
        5,
        len,
        vec![Desc::Data {
            at: b0,
            sector: sector(0x5b),
        }],
    );
    let mut img = base.clone();
    set_current_log_guid(&mut img);
    put_in_log(&mut img, l.log, l.log_len, 0, &e.encode());
    let b = both(&s, "stale", &img);
    let g = assert_replayed_alike(&b, "the other header without the log GUID");
    assert_eq!(&g[..4096], &sector(0x5b)[..]);

    // The other header invalid (version 2, resealed): qemu rewrites its own fields, version 2
    // and all, with the new sequence numbers and a valid checksum.
    let mut img = with_log(&base, &l, &[(0, e.encode())]);
    let other = header_offsets(&img).1;
    img[other + 66] = 2;
    reseal(&mut img, other, 4096);
    let b = both(&s, "version2", &img);
    assert_replayed_alike(&b, "the other header of version 2");
    assert_eq!(b.our_file()[other + 66], 2);

    // LastFileOffset past the end and not a multiple of 1 MiB: the file grows to the next MiB.
    let mut e = Entry::new(
        4,
        len,
        vec![Desc::Data {
            at: len + 4096,
            sector: sector(0x44),
        }],
    );
    e.last = len + 5000;
    let b = both(&s, "grow", &with_log(&base, &l, &[(0, e.encode())]));
    assert_replayed_alike(&b, "LastFileOffset past the end");
    assert_eq!(b.our_file().len() as u64, len + MIB);

    // LastFileOffset past the end and a multiple of 1 MiB: qemu does not grow the file (its
    // truncation sits inside `if (new_file_size % MiB)`); only the write past the end does.
    let mut e = Entry::new(
        4,
        len,
        vec![Desc::Data {
            at: len + 8192,
            sector: sector(0x45),
        }],
    );
    e.last = len + 2 * MIB;
    let b = both(&s, "aligned", &with_log(&base, &l, &[(0, e.encode())]));
    assert_replayed_alike(&b, "aligned LastFileOffset past the end");
    assert_eq!(b.our_file().len() as u64, len + 12288);

    // The guest bytes outside what the logs wrote never changed.
    assert_eq!(
        &before[12288..3 * m],
        &qemu_raw_bytes(&b.our_path, Some("vhdx"))[12288..3 * m]
    );
}

#[test]
fn logs_without_a_valid_entry_are_left_alone_by_both() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-replay-none");
    let (p, l) = base(&s);
    let base = std::fs::read(&p).unwrap();
    let b0 = block_at(&base, &l, 0);
    let mut bad_crc = Entry::new(
        5,
        l.len,
        vec![Desc::Data {
            at: b0,
            sector: sector(9),
        }],
    )
    .encode();
    bad_crc[100] ^= 1;
    let b = both(&s, "crc", &with_log(&base, &l, &[(0, bad_crc)]));
    assert_nothing_alike(&b, "bad checksum");
    // A descriptor count whose descriptors would not fit the entry: not a valid entry header.
    let mut big = Entry::new(5, l.len, vec![Desc::Zero { at: b0, len: 4096 }]).encode();
    put32(&mut big, 24, 0x8000_0000);
    reseal(&mut big, 0, SECTOR);
    let b = both(&s, "count", &with_log(&base, &l, &[(0, big)]));
    assert_nothing_alike(&b, "hostile descriptor count");
}

/// A log replayed on an image whose BAT is damaged: qemu reports the replay as fixed and the
/// damage as left (exit 2), printing the BAT finding once per check; vdisk's outcome counts the same.
#[test]
fn a_replay_on_a_damaged_image_reports_both() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-replay-damaged");
    let (p, l) = base(&s);
    let mut image = std::fs::read(&p).unwrap();
    put64(&mut image, l.bat + 8 * 5, (100 * MIB) | 6);
    let b0 = block_at(&image, &l, 0);
    let e = Entry::new(5, l.len, vec![Desc::Zero { at: b0, len: 4096 }]);
    let image = with_log(&image, &l, &[(0, e.encode())]);
    let b = both(&s, "damaged", &image);
    assert_eq!(b.qemu_rc, 2);
    let finding = "VHDX BAT entry 5 start offset 104857600 points after end of file";
    assert_eq!(b.qemu_err.matches(finding).count(), 2, "{}", b.qemu_err);
    assert!(b.qemu_out.starts_with(
        "The following inconsistencies were found and repaired:\n\n    0 leaked clusters\n    \
         1 corruptions\n\nDouble checking the fixed image now...\n\n1 errors were found on the \
         image.\n"
    ));
    let ours = b.ours.as_ref().unwrap();
    assert!(ours.replayed);
    assert_eq!(
        (ours.report.corruptions, ours.report.corruptions_fixed),
        (1, 1)
    );
    assert!(
        ours.report.messages.len() == 1 && ours.report.messages[0].contains(finding),
        "{:?}",
        ours.report.messages
    );
    assert_same_but_guids(&b.our_file(), &b.qemu_file(), "damaged BAT");
    std::fs::write(&b.qemu_path, &image).unwrap();
    let (rc, out, _) = qemu_check(&b.qemu_path, &["-r", "all", "--output=json"]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rc, 2);
    assert_eq!(
        (j["corruptions"].as_u64(), j["corruptions-fixed"].as_u64()),
        (Some(1), Some(1))
    );
}
