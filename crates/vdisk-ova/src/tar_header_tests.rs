//! Tests of header block decoding (IEEE 1003.1 "ustar Interchange Format", GNU tar): type flags, checksums, numbers.

use super::*;

use crate::test_support::tarbuild::{header, set_checksum, set_signed_checksum, Magic};

fn parsed(b: &[u8]) -> Header {
    match parse_header(b) {
        Ok(Block::Header(h)) => h,
        other => panic!("not a header: {other:?}"),
    }
}

#[test]
fn ustar_name_joins_the_prefix() {
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
    let b = header(long.as_bytes(), 5, b'0', Magic::Ustar);
    assert_ne!(b[345], 0, "the builder used the prefix field");
    let h = parsed(&b);
    assert_eq!(h.name, long.as_bytes());
    assert_eq!(h.format, HeaderFormat::Ustar);
    assert_eq!((h.size, h.kind), (5, EntryKind::Regular(b'0')));
}

#[test]
fn gnu_and_v7_headers_have_no_prefix() {
    for magic in [Magic::Gnu, Magic::V7] {
        let mut b = header(b"disk.vmdk", 0, b'0', magic);
        // GNU keeps times in the prefix's place: they must not become part of the name.
        b[345..357].copy_from_slice(b"14700000000\0");
        set_checksum(&mut b);
        let h = parsed(&b);
        assert_eq!(h.name, b"disk.vmdk");
        let want = if magic == Magic::Gnu {
            HeaderFormat::Gnu
        } else {
            HeaderFormat::V7
        };
        assert_eq!(h.format, want);
    }
}

#[test]
fn every_typeflag_has_its_kind() {
    let cases: &[(u8, EntryKind, bool)] = &[
        (b'0', EntryKind::Regular(b'0'), true),
        (0, EntryKind::Regular(0), true),
        (b'7', EntryKind::Regular(b'7'), true),
        (b'Z', EntryKind::Regular(b'Z'), true),
        (b'1', EntryKind::HardLink, true),
        (b'2', EntryKind::Symlink, true),
        (b'3', EntryKind::CharDevice, true),
        (b'4', EntryKind::BlockDevice, true),
        (b'5', EntryKind::Directory, false),
        (b'6', EntryKind::Fifo, true),
        (b'x', EntryKind::PaxExtended, true),
        (b'X', EntryKind::PaxExtended, true),
        (b'g', EntryKind::PaxGlobal, true),
        (b'L', EntryKind::GnuLongName, true),
        (b'K', EntryKind::GnuLongLink, true),
        (b'S', EntryKind::GnuSparse, true),
        (b'D', EntryKind::GnuDumpDir, true),
        (b'M', EntryKind::GnuMultiVolume, true),
        (b'V', EntryKind::GnuVolumeLabel, true),
        (b'N', EntryKind::GnuOldNames, true),
    ];
    for &(flag, kind, data) in cases {
        let h = parsed(&header(b"n", 0, flag, Magic::Ustar));
        assert_eq!(h.kind, kind, "typeflag {:?}", flag as char);
        assert_eq!(h.kind.has_data(), data, "typeflag {:?}", flag as char);
        let ext = matches!(flag, b'x' | b'X' | b'g' | b'L' | b'K');
        assert_eq!(h.kind.is_extension(), ext, "typeflag {:?}", flag as char);
    }
    // A v7 regular-file header named like a directory is one.
    assert_eq!(
        parsed(&header(b"dir/", 0, 0, Magic::V7)).kind,
        EntryKind::Directory
    );
    assert_eq!(
        parsed(&header(b"dir/", 0, b'0', Magic::V7)).kind,
        EntryKind::Regular(b'0')
    );
}

#[test]
fn checksums_signed_and_unsigned_are_accepted_others_refused() {
    // A name with bytes >= 0x80 makes the two sums differ.
    let mut b = header("é.ovf".as_bytes(), 0, b'0', Magic::Ustar);
    assert!(parse_header(&b).is_ok());
    set_signed_checksum(&mut b);
    let signed_field = b[148..156].to_vec();
    assert!(parse_header(&b).is_ok(), "signed sum accepted");
    set_checksum(&mut b);
    assert_ne!(
        b[148..156],
        signed_field[..],
        "the sums differ for this name"
    );
    b[0] ^= 1;
    assert!(matches!(
        parse_header(&b),
        Err(HeaderError::Checksum { .. })
    ));
    let mut c = header(b"a", 0, b'0', Magic::Ustar);
    c[148..156].copy_from_slice(b"12x4567 ");
    assert_eq!(parse_header(&c), Err(HeaderError::ChecksumField));
    c[148..156].copy_from_slice(b"        ");
    assert_eq!(parse_header(&c), Err(HeaderError::ChecksumField));
    // Random text is not a header.
    let text = [b'A'; 512];
    assert!(parse_header(&text).is_err());
}

#[test]
fn zero_and_short_blocks() {
    assert_eq!(parse_header(&[0u8; 512]), Ok(Block::Zero));
    assert_eq!(parse_header(&[0u8; 100]), Err(HeaderError::Short(100)));
    // Only the first 512 bytes count.
    let mut long = header(b"a", 0, b'0', Magic::Ustar).to_vec();
    long.extend_from_slice(&[7u8; 100]);
    assert!(matches!(parse_header(&long), Ok(Block::Header(_))));
}

#[test]
fn sizes_in_octal_and_base_256() {
    let nine_gib = 9u64 << 30;
    let mut b = header(b"big", nine_gib, b'0', Magic::Gnu);
    assert_eq!(b[124], 0x80, "the builder wrote base-256");
    assert_eq!(parsed(&b).size, nine_gib);
    // The largest 64-bit value in base-256, and one more.
    b[124..136].copy_from_slice(&[
        0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ]);
    set_checksum(&mut b);
    assert_eq!(parsed(&b).size, u64::MAX);
    b[127] = 1;
    set_checksum(&mut b);
    assert_eq!(parse_header(&b), Err(HeaderError::Number("size")));
    // Negative base-256: the sign bit with a small magnitude (and -1, all ones).
    b[124..136].copy_from_slice(&[0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    set_checksum(&mut b);
    assert_eq!(parse_header(&b), Err(HeaderError::Number("size")));
    b[124..136].copy_from_slice(&[0xff; 12]);
    set_checksum(&mut b);
    assert_eq!(parse_header(&b), Err(HeaderError::Number("size")));
    // Octal with a bad digit.
    b[124..136].copy_from_slice(b"0000000008\0\0");
    set_checksum(&mut b);
    assert_eq!(parse_header(&b), Err(HeaderError::Number("size")));
}

#[test]
fn octal_fields_as_gnu_tar_reads_them() {
    assert_eq!(parse_octal(b"00000000017\0"), Some(15));
    assert_eq!(parse_octal(b"   17 \0\0\0\0\0\0"), Some(15));
    assert_eq!(parse_octal(b"777777777777"), Some(0o777777777777));
    assert_eq!(parse_octal(b"\0\0\0\0"), Some(0));
    assert_eq!(parse_octal(b"    "), None);
    assert_eq!(parse_octal(b"12a\0"), None);
    assert_eq!(parse_octal(b"-1\0"), None);
    // 22 sevens overflow 64 bits.
    assert_eq!(parse_octal(&[b'7'; 22]), None);
    assert_eq!(parse_number(&[]), None);
    assert_eq!(parse_number(&[0x80, 1, 0]), Some(256));
}

#[test]
fn gnu_sparse_extension_flag() {
    let mut b = header(b"s", 0, b'S', Magic::Gnu);
    assert!(!parsed(&b).gnu_sparse_extended);
    b[482] = 1;
    set_checksum(&mut b);
    assert!(parsed(&b).gnu_sparse_extended);
    // The flag means nothing on other types.
    let mut r = header(b"r", 0, b'0', Magic::Gnu);
    r[482] = 1;
    set_checksum(&mut r);
    assert!(!parsed(&r).gnu_sparse_extended);
}
