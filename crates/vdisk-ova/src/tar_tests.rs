//! Tests of the archive walk: member ranges, ends, truncation, bounds.

use super::*;
use std::path::{Path, PathBuf};
use vdisk_core::MemStorage;

use crate::test_support::tarbuild::*;

fn idx(bytes: Vec<u8>) -> Result<TarIndex> {
    index(&MemStorage::new("t.ova", bytes))
}

fn names(i: &TarIndex) -> Vec<&str> {
    i.members.iter().map(|m| m.name.as_str()).collect()
}

/// A store that is one block repeated to `len` bytes, without holding them.
struct Repeat {
    block: [u8; 512],
    len: u64,
    path: PathBuf,
}

impl Storage for Repeat {
    fn path(&self) -> &Path {
        &self.path
    }
    fn len(&self) -> Result<u64> {
        Ok(self.len)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = buf.len().min(self.len.saturating_sub(offset) as usize);
        let mut done = 0;
        while done < n {
            let at = ((offset + done as u64) % 512) as usize;
            let k = (512 - at).min(n - done);
            buf[done..done + k].copy_from_slice(&self.block[at..at + k]);
            done += k;
        }
        Ok(n)
    }
}

#[test]
fn lists_regular_files_with_their_data_ranges() {
    let mut t = Vec::new();
    push_member(&mut t, "dir/", b"", b'5', Magic::Ustar);
    push_file(&mut t, "dir/a.ovf", b"<xml/>");
    push_member(&mut t, "link", b"", b'2', Magic::Ustar);
    push_member(&mut t, "fifo", b"", b'6', Magic::Ustar);
    push_member(&mut t, "gnu.bin", &[7u8; 700], b'0', Magic::Gnu);
    push_member(&mut t, "v7.bin", b"v7", 0, Magic::V7);
    push_member(&mut t, "cont.bin", b"c", b'7', Magic::Ustar);
    push_end(&mut t);
    let i = idx(t.clone()).unwrap();
    assert_eq!(
        names(&i),
        ["dir/a.ovf", "gnu.bin", "v7.bin", "cont.bin"],
        "directories, links and FIFOs are not members"
    );
    let m = &i.members;
    assert_eq!((m[0].header_offset, m[0].offset, m[0].size), (512, 1024, 6));
    assert_eq!(
        (m[1].header_offset, m[1].offset, m[1].size),
        (5 * 512, 6 * 512, 700)
    );
    assert_eq!(m[2].offset, 9 * 512, "700 bytes take two blocks");
    assert_eq!(&t[m[1].offset as usize..][..700], &[7u8; 700][..]);
    assert_eq!(i.end, ArchiveEnd::Marker);
    assert_eq!(i.end_offset, 12 * 512);
    assert!(m.iter().all(|m| !m.sparse));
}

#[test]
fn extension_headers_name_and_size_the_next_member() {
    let mut t = Vec::new();
    let long = format!("{}/disk1.vmdk", "x".repeat(300));
    push_member(
        &mut t,
        "././@LongLink",
        format!("{long}\0").as_bytes(),
        b'L',
        Magic::Gnu,
    );
    push_member(&mut t, &long[..100], b"abc", b'0', Magic::Gnu);
    push_pax(&mut t, &[("path", "pax name.mf"), ("size", "4")]);
    // The header says 1000 bytes; the pax size (4) is what follows.
    let mut h = header(b"short", 1000, b'0', Magic::Ustar);
    set_checksum(&mut h);
    t.extend_from_slice(&h);
    push_data(&mut t, b"1234");
    push_member(
        &mut t,
        "pax_global_header",
        &pax_data(&[("comment", "x")]),
        b'g',
        Magic::Ustar,
    );
    push_file(&mut t, "after-global", b"z");
    push_end(&mut t);
    let i = idx(t).unwrap();
    assert_eq!(names(&i), [long.as_str(), "pax name.mf", "after-global"]);
    assert_eq!(
        i.members[0].header_offset, 0,
        "a member starts at its first extension header"
    );
    assert_eq!(i.members[1].size, 4);
    assert_eq!(i.members[1].header_offset, 4 * 512);
}

#[test]
fn archive_ends() {
    let mut t = Vec::new();
    push_file(&mut t, "a.ovf", b"x");
    let bare = t.clone();
    let i = idx(bare.clone()).unwrap();
    assert_eq!(
        (i.end, i.end_offset, i.members.len()),
        (ArchiveEnd::Eof, 1024, 1)
    );
    let mut lone = bare.clone();
    lone.extend_from_slice(&[0u8; 512]);
    assert_eq!(idx(lone.clone()).unwrap().end, ArchiveEnd::LoneZeroBlock);
    // One zero block then more headers: the walk stops there, as GNU tar's does.
    push_file(&mut lone, "b.vmdk", b"y");
    let i = idx(lone).unwrap();
    assert_eq!(
        (i.end, names(&i)),
        (ArchiveEnd::LoneZeroBlock, vec!["a.ovf"])
    );
    // GNU tar pads archives to 10 KiB records: zeros after the marker are ignored.
    let mut padded = bare;
    padded.resize(10240, 0);
    assert_eq!(idx(padded).unwrap().end, ArchiveEnd::Marker);
    assert_eq!(idx(Vec::new()).unwrap().members.len(), 0);
}

#[test]
fn truncation_inside_headers_data_and_after_extension_headers() {
    let mut t = Vec::new();
    push_pax(&mut t, &[("path", "a.ovf")]);
    push_file(&mut t, "a", &[1u8; 600]);
    push_end(&mut t);
    for cut in 1..t.len() {
        let r = idx(t[..cut].to_vec());
        // The member's data and padding end at 5 blocks; the end blocks are zeros after it.
        let whole_member = cut >= 5 * 512;
        match r {
            Ok(i) => assert!(
                whole_member && i.members.len() == 1,
                "cut at {cut}: accepted without its member"
            ),
            Err(e) => {
                assert!(!whole_member, "cut at {cut}: {e}");
                let s = e.to_string();
                assert!(
                    s.contains("truncated") || s.contains("ends"),
                    "cut at {cut}: {s}"
                );
            }
        }
    }
}

#[test]
fn bad_headers_are_errors_naming_their_offset() {
    let mut t = Vec::new();
    push_file(&mut t, "a.ovf", b"x");
    let mut bad = header(b"b", 1, b'0', Magic::Ustar);
    bad[0] = b'c';
    t.extend_from_slice(&bad);
    let e = idx(t).unwrap_err().to_string();
    assert!(e.contains("offset 0x400") && e.contains("checksum"), "{e}");
}

#[test]
fn member_past_the_end_of_the_archive() {
    let mut t = Vec::new();
    t.extend_from_slice(&header(b"huge.vmdk", 1 << 40, b'0', Magic::Gnu));
    t.extend_from_slice(&[0u8; 4096]);
    let e = idx(t).unwrap_err().to_string();
    assert!(
        e.contains("huge.vmdk") && e.contains("run past the end"),
        "{e}"
    );
    // A pax size of 2^60.
    let mut t = Vec::new();
    push_pax(&mut t, &[("size", &(1u64 << 60).to_string())]);
    push_file(&mut t, "x", b"");
    let e = idx(t).unwrap_err().to_string();
    assert!(e.contains("run past the end"), "{e}");
    // A base-256 size near 2^64: rounding to a block must not overflow.
    let mut t = Vec::new();
    t.extend_from_slice(&header(b"max", u64::MAX, b'0', Magic::Gnu));
    let e = idx(t).unwrap_err().to_string();
    assert!(e.contains("overflows"), "{e}");
}

#[test]
fn extension_headers_are_bounded_before_they_are_read() {
    let mut t = Vec::new();
    t.extend_from_slice(&header(b"./PaxHeaders/x", 1 << 60, b'x', Magic::Ustar));
    let e = idx(t).unwrap_err();
    assert!(matches!(e, Error::Limit { .. }), "{e}");
    // Over the limit for one header, with its data all there.
    let over = crate::limits::MAX_EXTENSION_BYTES + 512;
    let mut t = Vec::new();
    t.extend_from_slice(&header(b"./PaxHeaders/x", over, b'x', Magic::Ustar));
    t.resize(t.len() + over as usize + 1024, 0);
    let e = idx(t).unwrap_err();
    assert!(
        matches!(e, Error::Limit { what, value, .. } if what.starts_with("size of a tar extension header") && value == over),
        "{e}"
    );
    // Many headers, each under the limit, but too many bytes in all.
    let one = (crate::limits::MAX_EXTENSION_BYTES / 512) as usize * 512;
    let count = (crate::limits::MAX_TOTAL_EXTENSION_BYTES / one as u64) as usize + 1;
    let mut t = Vec::new();
    let mut h = header(b"./PaxHeaders/x", one as u64, b'x', Magic::Ustar);
    set_checksum(&mut h);
    for _ in 0..count {
        t.extend_from_slice(&h);
        t.resize(t.len() + one, 0);
    }
    let e = idx(t).unwrap_err();
    assert!(
        matches!(e, Error::Limit { what, .. } if what.contains("bytes of tar extension")),
        "{e}"
    );
}

#[test]
fn names_and_members_are_bounded() {
    let mut t = Vec::new();
    let long = "n".repeat(crate::limits::MAX_NAME_BYTES + 1);
    push_member(&mut t, "././@LongLink", long.as_bytes(), b'L', Magic::Gnu);
    push_member(&mut t, "short", b"", b'0', Magic::Gnu);
    let e = idx(t).unwrap_err();
    assert!(
        matches!(e, Error::Limit { what, .. } if what.contains("name")),
        "{e}"
    );

    // An archive of a terabyte of empty members: stopped at the limit, having read 64 K headers.
    let r = Repeat {
        block: header(b"empty", 0, b'0', Magic::Ustar),
        len: 1 << 40,
        path: "many.ova".into(),
    };
    let start = std::time::Instant::now();
    let e = index(&r).unwrap_err();
    assert!(
        matches!(e, Error::Limit { what, limit, .. } if what == "number of tar members" && limit == crate::limits::MAX_MEMBERS as u64),
        "{e}"
    );
    assert!(start.elapsed().as_secs() < 20);
    // Directories are not members, but headers are counted all the same.
    let r = Repeat {
        block: header(b"d/", 0, b'5', Magic::Ustar),
        len: 1 << 40,
        path: "dirs.ova".into(),
    };
    let e = index(&r).unwrap_err();
    assert!(
        matches!(e, Error::Limit { what, .. } if what == "number of tar headers"),
        "{e}"
    );
}

#[test]
fn gnu_sparse_members_are_marked_and_their_maps_skipped() {
    let mut t = Vec::new();
    let mut h = header(b"sparse.raw", 512, b'S', Magic::Gnu);
    h[482] = 1;
    set_checksum(&mut h);
    t.extend_from_slice(&h);
    // Two extension blocks of sparse map, the last with its flag clear.
    let mut ext = [0u8; 512];
    ext[504] = 1;
    t.extend_from_slice(&ext);
    t.extend_from_slice(&[0u8; 512]);
    push_data(&mut t, &[5u8; 512]);
    push_file(&mut t, "next", b"n");
    push_end(&mut t);
    let i = idx(t.clone()).unwrap();
    assert_eq!(names(&i), ["sparse.raw", "next"]);
    assert!(i.members[0].sparse && !i.members[1].sparse);
    assert_eq!(
        i.members[0].offset,
        3 * 512,
        "data after the two map blocks"
    );
    // Cut inside the map.
    let e = idx(t[..1024].to_vec()).unwrap_err().to_string();
    assert!(e.contains("sparse map"), "{e}");
    // pax sparse files are marked too.
    let mut p = Vec::new();
    push_pax(
        &mut p,
        &[("GNU.sparse.major", "1"), ("GNU.sparse.name", "d.raw")],
    );
    push_file(&mut p, "./GNUSparseFile.0/d.raw", b"1\n0\n0\n");
    let i = idx(p).unwrap();
    assert_eq!((names(&i), i.members[0].sparse), (vec!["d.raw"], true));
}

#[test]
fn multi_volume_continuations_are_refused() {
    let mut t = Vec::new();
    push_member(&mut t, "part", b"x", b'M', Magic::Gnu);
    let e = idx(t).unwrap_err().to_string();
    assert!(e.contains("multi-volume"), "{e}");
}

#[test]
fn a_zero_block_right_after_an_extension_header_is_an_error() {
    let mut t = Vec::new();
    push_pax(&mut t, &[("path", "a")]);
    push_end(&mut t);
    assert!(idx(t).unwrap_err().to_string().contains("extension header"));
}
