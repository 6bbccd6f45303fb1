//! Tests of pax records (IEEE 1003.1 "pax Extended Header") and GNU long names applied to entries.

use super::*;
use crate::tar_header::HeaderFormat;

use crate::test_support::tarbuild::pax_data;

fn hdr(name: &str, size: u64) -> Header {
    Header {
        name: name.as_bytes().to_vec(),
        size,
        kind: EntryKind::Regular(b'0'),
        format: HeaderFormat::Ustar,
        gnu_sparse_extended: false,
    }
}

#[test]
fn pax_records_path_and_size() {
    let data = pax_data(&[
        ("mtime", "1795489221.614128869"),
        ("path", "a very long name/disk1.vmdk"),
        ("size", "9663676416"),
        ("SCHILY.xattr.user.x", "v=w"),
    ]);
    let r = parse_pax(&data).unwrap();
    assert_eq!(r.path, Some(Some(b"a very long name/disk1.vmdk".to_vec())));
    assert_eq!(r.size, Some(Some(9663676416)));
    assert!(!r.gnu_sparse);
    // A value may hold '=' and newlines: the length decides where the record ends.
    let r = parse_pax(&pax_data(&[("path", "x=y\nz")])).unwrap();
    assert_eq!(r.path, Some(Some(b"x=y\nz".to_vec())));
    // Later records win; an empty value deletes.
    let r = parse_pax(&pax_data(&[("path", "a"), ("path", "")])).unwrap();
    assert_eq!(r.path, Some(None));
    // NUL padding after the records ends them.
    let mut padded = pax_data(&[("path", "p")]);
    padded.extend_from_slice(&[0; 20]);
    assert_eq!(parse_pax(&padded).unwrap().path, Some(Some(b"p".to_vec())));
    assert_eq!(parse_pax(b"").unwrap(), PaxRecords::default());
}

#[test]
fn malformed_pax_records_are_refused() {
    let bad: &[(&[u8], &str)] = &[
        (b"path=x\n", "no length"),
        (b"12path=x\n", "no length"),
        (b"8 path=xy\n", "newline"),
        (b"10 pathx\n\n", "no '='"),
        (b"6 =ab\n", "empty keyword"),
        // A record claiming 100 MiB in a header of a few bytes.
        (b"104857600 path=x\n", "runs past"),
        (b"99999999999999999999999 path=x\n", "no length"),
        (b"3 \n", "no '='"),
        (b"2 \n", "too small"),
        (b"0 \n", "too small"),
    ];
    for (data, want) in bad {
        let e = parse_pax(data).expect_err(&String::from_utf8_lossy(data));
        assert!(e.contains(want), "{:?}: {e}", String::from_utf8_lossy(data));
    }
    for size in ["12a", "-123", "99999999999999999999", " 1"] {
        let e = parse_pax(&pax_data(&[("size", size)])).expect_err(size);
        assert!(e.contains("decimal"), "{size}: {e}");
    }
}

#[test]
fn gnu_sparse_records_mark_the_entry() {
    let data = pax_data(&[
        ("GNU.sparse.major", "1"),
        ("GNU.sparse.minor", "0"),
        ("GNU.sparse.name", "disk.raw"),
        ("GNU.sparse.realsize", "1048576"),
        ("path", "./GNUSparseFile.1234/disk.raw"),
    ]);
    let mut p = Pending::default();
    p.absorb(EntryKind::PaxExtended, &data).unwrap();
    let e = p.apply(hdr("./GNUSparseFile.1234/disk.raw", 1536));
    assert!(e.sparse);
    assert_eq!(e.name, b"disk.raw");
    // A GNU 'S' header is sparse by itself.
    let mut s = hdr("old.raw", 512);
    s.kind = EntryKind::GnuSparse;
    assert!(Pending::default().apply(s).sparse);
}

#[test]
fn long_names_and_precedence() {
    let mut p = Pending::default();
    assert!(!p.is_waiting());
    p.absorb(EntryKind::GnuLongName, b"gnu/long/name.vmdk\0")
        .unwrap();
    assert!(p.is_waiting());
    let e = p.apply(hdr("gnu/long/na", 7));
    assert_eq!((e.name.as_slice(), e.size), (&b"gnu/long/name.vmdk"[..], 7));
    assert!(!p.is_waiting(), "applied headers are forgotten");
    assert_eq!(p.apply(hdr("next", 1)).name, b"next");

    // pax path wins over a GNU long name; pax size over the header's.
    p.absorb(EntryKind::GnuLongName, b"from-L\0").unwrap();
    p.absorb(
        EntryKind::PaxExtended,
        &pax_data(&[("path", "from-pax"), ("size", "99")]),
    )
    .unwrap();
    let e = p.apply(hdr("hdr", 1));
    assert_eq!((e.name.as_slice(), e.size), (&b"from-pax"[..], 99));

    // Two consecutive x headers are merged.
    p.absorb(EntryKind::PaxExtended, &pax_data(&[("path", "one")]))
        .unwrap();
    p.absorb(EntryKind::PaxExtended, &pax_data(&[("size", "5")]))
        .unwrap();
    let e = p.apply(hdr("hdr", 1));
    assert_eq!((e.name.as_slice(), e.size), (&b"one"[..], 5));

    // A K (long link) header changes no name.
    p.absorb(EntryKind::GnuLongLink, b"target\0").unwrap();
    assert_eq!(p.apply(hdr("plain", 0)).name, b"plain");
}

#[test]
fn global_records_apply_until_changed() {
    let mut p = Pending::default();
    p.absorb(EntryKind::PaxGlobal, &pax_data(&[("size", "42")]))
        .unwrap();
    assert!(!p.is_waiting(), "a global header waits for no entry");
    assert_eq!(p.apply(hdr("a", 1)).size, 42);
    assert_eq!(p.apply(hdr("b", 2)).size, 42);
    // A local record beats it, for one entry.
    p.absorb(EntryKind::PaxExtended, &pax_data(&[("size", "7")]))
        .unwrap();
    assert_eq!(p.apply(hdr("c", 3)).size, 7);
    assert_eq!(p.apply(hdr("d", 3)).size, 42);
    // An empty global value removes it.
    p.absorb(EntryKind::PaxGlobal, &pax_data(&[("size", "")]))
        .unwrap();
    assert_eq!(p.apply(hdr("e", 3)).size, 3);
    // A global path names every entry; a GNU long name is the entry's own.
    p.absorb(EntryKind::PaxGlobal, &pax_data(&[("path", "g")]))
        .unwrap();
    assert_eq!(p.apply(hdr("f", 0)).name, b"g");
    p.absorb(EntryKind::GnuLongName, b"own\0").unwrap();
    assert_eq!(p.apply(hdr("f", 0)).name, b"own");
    // An empty local path restores the header's name under a global one.
    p.absorb(EntryKind::PaxExtended, &pax_data(&[("path", "")]))
        .unwrap();
    assert_eq!(p.apply(hdr("h", 0)).name, b"h");
}

#[test]
fn decimal_numbers() {
    assert_eq!(decimal(b"0"), Some(0));
    assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
    assert_eq!(decimal(b"18446744073709551616"), None);
    assert_eq!(decimal(b""), None);
    assert_eq!(decimal(b"+1"), None);
    assert_eq!(decimal(b"1 "), None);
}
