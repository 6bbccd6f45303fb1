//! Unit tests of the header parser and serializer with hand-built bytes, including malformed input.

use super::*;

const P: &str = "t.vdi";

fn path() -> &'static Path {
    Path::new(P)
}

/// A valid dynamic 1.1 header of 4 MiB, qemu layout (map at 0x200, data at 0x400).
pub(crate) fn sample_v1() -> Vec<u8> {
    let mut h = crate::writer::new_header(4 << 20, false).unwrap();
    h.offset_bmap = 0x200;
    h.offset_data = 0x400;
    let mut b = vec![0u8; PARSE_LEN];
    h.write_v1(&mut b).unwrap();
    b
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn round_trip_v1() {
    let b = sample_v1();
    let h = Header::parse(&b, path()).unwrap();
    assert_eq!(h.version, VERSION_1_1);
    assert_eq!(h.header_size, HEADER_SIZE_V1_PLUS);
    assert_eq!(
        (h.offset_bmap, h.offset_data, h.disk_size),
        (0x200, 0x400, 4 << 20)
    );
    assert_eq!(
        (h.block_size, h.blocks_in_image, h.blocks_allocated),
        (1 << 20, 4, 0)
    );
    assert_eq!(h.text, ORACLE_TEXT);
    assert_eq!(h.legacy_geometry.sector_size, 512);
    assert!(!h.uuid_image.is_null() && h.uuid_link.is_null());
    h.validate(path(), 0x400).unwrap();
    let mut again = vec![0u8; PARSE_LEN];
    h.write_v1(&mut again).unwrap();
    assert_eq!(again, b);
}

#[test]
fn uuid_prints_like_virtualbox() {
    // Bytes as qemu-img wrote them into a header (little-endian first three fields).
    let bytes = [
        0xac, 0x00, 0xae, 0xa0, 0xa3, 0xec, 0x54, 0x4d, 0x81, 0xa5, 0x54, 0x90, 0x36, 0xff, 0x57,
        0xbc,
    ];
    assert_eq!(
        Uuid(bytes).to_string(),
        "a0ae00ac-eca3-4d54-81a5-549036ff57bc"
    );
    let r = Uuid::random().unwrap().to_string();
    assert_eq!(r.len(), 36);
    assert_eq!(&r[14..15], "4", "version 4 in {r}");
    assert!("89ab".contains(&r[19..20]), "RFC 4122 variant in {r}");
}

#[test]
fn bad_signature_and_versions() {
    let mut b = sample_v1();
    put32(&mut b, 0x40, 0x1234_5678);
    let e = Header::parse(&b, path()).unwrap_err().to_string();
    assert!(e.contains("bad signature 12345678"), "{e}");
    let mut b = sample_v1();
    put32(&mut b, 0x44, 0x0003_0000);
    let e = Header::parse(&b, path()).unwrap_err().to_string();
    assert!(e.contains("unsupported VDI image version 3.0"), "{e}");
}

#[test]
fn truncated_input_is_an_error_at_every_length() {
    let b = sample_v1();
    for n in 0..0x1c8 {
        assert!(Header::parse(&b[..n], path()).is_err(), "length {n}");
    }
}

#[test]
fn validate_rejects_bad_fields() {
    let cases: &[(usize, u32, &str)] = &[
        (0x178, 0, "block size 0"),
        (0x178, 0x8000_0000, "block size 2147483648"),
        (0x178, 3 << 20, "not a power of two"),
        (0x17c, 100, "block extra"),
        (0x180, 0x4000_0000, "blocks in image"),
        (0x180, 1, "larger than the block map"),
        (0x4c, 4, "differencing"),
        (0x4c, 9, "unknown VDI image type 9"),
        (0x154, 0x1f0, "unaligned"),
        (0x154, 0x0, "overlaps the header"),
        (0x158, 0x200, "overlaps the block map"),
        (0x168, 4096, "sector size 4096"),
        (0x48, 0x100, "header size"),
    ];
    for (off, v, want) in cases {
        let mut b = sample_v1();
        put32(&mut b, *off, *v);
        let err = Header::parse(&b, path()).and_then(|h| h.validate(path(), 1 << 30));
        let e = err.expect_err(want).to_string();
        assert!(e.contains(want), "field {off:#x}={v:#x}: {e}");
    }
    let mut b = sample_v1();
    b[0x1b8] = 1;
    let e = Header::parse(&b, path())
        .unwrap()
        .validate(path(), 1 << 30)
        .unwrap_err()
        .to_string();
    assert!(e.contains("parent UUID"), "{e}");
    // The block map must lie inside the file.
    let h = Header::parse(&sample_v1(), path()).unwrap();
    let e = h.validate(path(), 0x20f).unwrap_err().to_string();
    assert!(e.contains("past the end of the file"), "{e}");
}

#[test]
fn huge_disk_size_does_not_overflow() {
    let mut b = sample_v1();
    b[0x170..0x178].copy_from_slice(&u64::MAX.to_le_bytes());
    put32(&mut b, 0x180, 0x3fff_ffff);
    let h = Header::parse(&b, path()).unwrap();
    assert!(h.validate(path(), u64::MAX).is_err());
    let _ = h.virtual_size();
}

#[test]
fn sizes_beyond_qemus_limits_are_refused_before_the_block_map_is_read() {
    // A block map of 4 GiB (sparse on disk) behind a 512-byte header: refused like QEMU does,
    // without reading or allocating the map.
    let mut b = sample_v1();
    let blocks = 0x3fff_0000u32;
    put32(&mut b, 0x180, blocks);
    b[0x170..0x178].copy_from_slice(&(u64::from(blocks) << 20).to_le_bytes());
    let data = 0x200 + u64::from(blocks) * 4;
    put32(&mut b, 0x158, data as u32);
    let h = Header::parse(&b, path()).unwrap();
    let e = h.validate(path(), data).unwrap_err().to_string();
    assert!(
        e.contains("Unsupported VDI image size") || e.contains("unsupported VDI image size"),
        "{e}"
    );
    assert!(e.contains("max supported is 0x1fffff8000000"), "{e}");
    // The block count alone beyond QEMU's VDI_BLOCKS_IN_IMAGE_MAX, with a small disk size.
    b[0x170..0x178].copy_from_slice(&(1u64 << 20).to_le_bytes());
    let h = Header::parse(&b, path()).unwrap();
    let e = h.validate(path(), data).unwrap_err().to_string();
    assert!(e.contains("VDI blocks in image"), "{e}");
    // Exactly at the limits is accepted.
    put32(&mut b, 0x180, MAX_BLOCKS as u32);
    b[0x170..0x178].copy_from_slice(&MAX_DISK_SIZE.to_le_bytes());
    let data = 0x200 + MAX_BLOCKS * 4;
    put32(&mut b, 0x158, data as u32);
    let h = Header::parse(&b, path()).unwrap();
    h.validate(path(), data).unwrap();
}

/// A version-0 image: 3 blocks of 512 bytes, block 1 in slot 0, block 2 zero, block 0 free.
pub(crate) fn sample_v0_image() -> Vec<u8> {
    let mut b = vec![0u8; 0x1a4];
    b[..ORACLE_TEXT.len()].copy_from_slice(ORACLE_TEXT.as_bytes());
    put32(&mut b, 0x40, SIGNATURE);
    put32(&mut b, 0x44, VERSION_0);
    put32(&mut b, 0x48, TYPE_DYNAMIC);
    b[0x160..0x168].copy_from_slice(&1536u64.to_le_bytes());
    put32(&mut b, 0x168, 512);
    put32(&mut b, 0x16c, 3);
    put32(&mut b, 0x170, 1);
    b[0x174] = 7;
    for e in [BLOCK_FREE, 0, BLOCK_ZERO] {
        b.extend_from_slice(&e.to_le_bytes());
    }
    b.extend(std::iter::repeat_n(0x5a, 512));
    b
}

#[test]
fn parses_version_0() {
    let b = sample_v0_image();
    let h = Header::parse(&b, path()).unwrap();
    assert!(h.is_v0());
    assert_eq!((h.offset_bmap, h.offset_data), (0x1a4, 0x1b0));
    assert_eq!(
        (
            h.disk_size,
            h.block_size,
            h.blocks_in_image,
            h.blocks_allocated
        ),
        (1536, 512, 3, 1)
    );
    h.validate(path(), b.len() as u64).unwrap();
    assert!(h.write_v1(&mut [0u8; PARSE_LEN]).is_err());
}

#[test]
fn reads_version_0_image() {
    use vdisk_core::{ExtentKind, ImageReader, MemStorage};
    let r = crate::open(MemStorage::new(P, sample_v0_image()).shared()).unwrap();
    assert_eq!(r.virtual_size(), 1536);
    let mut buf = vec![1u8; 1536];
    r.read_at(&mut buf, 0).unwrap();
    assert!(buf[..512].iter().all(|b| *b == 0));
    assert!(buf[512..1024].iter().all(|b| *b == 0x5a));
    assert!(buf[1024..].iter().all(|b| *b == 0));
    assert_eq!(r.block_status(0, 1536).unwrap().kind, ExtentKind::Zero);
    let e = r.block_status(512, 1024).unwrap();
    assert_eq!(
        (e.kind, e.length, e.host.map(|h| h.offset)),
        (ExtentKind::Data, 512, Some(0x1b0))
    );
    assert_eq!(r.check().unwrap().corruptions, 0);
}
