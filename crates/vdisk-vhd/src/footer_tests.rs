//! Footer parsing, checksum and the size rules of `vpc_open`.

use super::*;
use crate::testimg::footer;

/// The first 96 bytes of the footer `qemu-img create -f vpc x.vhd 10M` wrote (the rest is zeros).
const QEMU_10M: [u8; 96] = [
    0x63, 0x6f, 0x6e, 0x65, 0x63, 0x74, 0x69, 0x78, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x32, 0x97, 0x6c, 0x31, 0x71, 0x65, 0x6d, 0x75,
    0x00, 0x05, 0x00, 0x03, 0x57, 0x69, 0x32, 0x6b, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x70, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x70, 0x00, 0x01, 0x2e, 0x04, 0x11, 0x00, 0x00, 0x00, 0x03,
    0xff, 0xff, 0xef, 0x68, 0x8b, 0x97, 0x08, 0x60, 0x58, 0x2c, 0x44, 0x20, 0xa6, 0xa5, 0x88, 0x0f,
    0x45, 0xbd, 0xd0, 0x25, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

fn p() -> &'static Path {
    Path::new("t.vhd")
}

#[test]
fn parses_a_footer_qemu_wrote() {
    let mut b = [0u8; 512];
    b[..96].copy_from_slice(&QEMU_10M);
    let f = Footer::parse(&b);
    assert!(f.has_cookie());
    assert_eq!(f.features, 2);
    assert_eq!(f.format_version, 0x0001_0000);
    assert_eq!(f.data_offset, 512);
    assert_eq!(f.creator_app_text(), "qemu");
    assert_eq!(f.creator_os_text(), "Wi2k");
    assert_eq!(f.creator_version, 0x0005_0003);
    assert_eq!((f.original_size, f.current_size), (0xa07000, 0xa07000));
    let g = f.geometry;
    assert_eq!((g.cylinders, g.heads, g.sectors_per_track), (302, 4, 17));
    assert_eq!(g.to_string(), "302/4/17");
    assert_eq!(f.disk_type, DiskType::Dynamic);
    assert_eq!(f.checksum, 0xffff_ef68);
    assert_eq!(
        checksum(&b),
        f.checksum,
        "vpc_checksum of qemu's own footer"
    );
    assert!(f.sized_by_geometry());
    assert_eq!(f.total_sectors(p()).unwrap(), 302 * 4 * 17);
}

#[test]
fn checksum_ignores_its_own_field() {
    let mut b = footer(b"qemu", (10, 4, 17), 0, 3, 512);
    let c = checksum(&b);
    b[64..68].copy_from_slice(&[1, 2, 3, 4]);
    assert_eq!(checksum(&b), c);
    b[100] = 1;
    assert_eq!(checksum(&b), c.wrapping_sub(1));
    assert_eq!(checksum(&[0u8; 512]), u32::MAX);
}

#[test]
fn disk_types() {
    for (v, t) in [
        (2, DiskType::Fixed),
        (3, DiskType::Dynamic),
        (4, DiskType::Differencing),
        (6, DiskType::Other(6)),
    ] {
        assert_eq!(DiskType::from_raw(v), t);
        let f = Footer::parse(&footer(b"qemu", (1, 1, 1), 0, v, 0));
        assert_eq!(f.disk_type, t);
    }
    assert_eq!(DiskType::Other(0).name(), "unknown (0)");
}

#[test]
fn size_from_geometry_or_current_size_by_creator() {
    let chs = (1000, 16, 63);
    let current = 999 * 1024 * 1024 + 700; // not a whole number of sectors: rounded down
    let by_chs = 1000 * 16 * 63;
    let by_size = current / 512;
    for (app, want) in [
        (b"vpc ", by_chs),
        (b"qemu", by_chs),
        (b"qem2", by_size),
        (b"win ", by_size),
        (b"d2v ", by_size),
        (b"tap\0", by_size),
        (b"CTXS", by_size),
        (b"wa\0\0", by_size),
        (b"vpc\0", by_size),
        (b"QEMU", by_size),
    ] {
        let f = Footer::parse(&footer(app, chs, current, 3, 512));
        assert_eq!(f.total_sectors(p()).unwrap(), want, "creator {app:?}");
    }
}

#[test]
fn maximum_geometry_uses_current_size_even_for_qemu_and_vpc() {
    for app in [b"qemu", b"vpc "] {
        let f = Footer::parse(&footer(app, (65535, 16, 255), 200 << 30, 3, 512));
        assert_eq!(f.total_sectors(p()).unwrap(), (200 << 30) / 512);
        // One sector short of the maximum: the geometry again.
        let f = Footer::parse(&footer(app, (65535, 16, 254), 200 << 30, 3, 512));
        assert_eq!(f.total_sectors(p()).unwrap(), 65535 * 16 * 254);
    }
}

#[test]
fn more_than_2040_gib_is_refused() {
    let max = crate::limits::MAX_SECTORS * 512;
    let ok = Footer::parse(&footer(b"win ", (1, 1, 1), max + 511, 3, 512));
    assert_eq!(ok.total_sectors(p()).unwrap(), max / 512);
    for current in [max + 512, u64::MAX] {
        let f = Footer::parse(&footer(b"win ", (1, 1, 1), current, 3, 512));
        let e = f.total_sectors(p()).unwrap_err().to_string();
        assert!(e.contains("File too large"), "{e}");
    }
}

#[test]
fn to_bytes_reproduces_qemus_footer() {
    let mut b = [0u8; 512];
    b[..96].copy_from_slice(&QEMU_10M);
    let f = Footer::parse(&b);
    assert_eq!(f.to_bytes(), b, "fields and checksum as qemu wrote them");
    // The stored checksum field is not trusted: the bytes carry the one the fields give.
    let g = Footer { checksum: 0, ..f };
    assert_eq!(g.to_bytes(), b);
    for t in [
        DiskType::Fixed,
        DiskType::Dynamic,
        DiskType::Differencing,
        DiskType::Other(9),
    ] {
        assert_eq!(DiskType::from_raw(t.to_raw()), t);
    }
}
