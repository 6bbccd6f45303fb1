use super::*;

fn header(seq: u64, version: u16) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_SIZE];
    b[..4].copy_from_slice(b"head");
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b[66..68].copy_from_slice(&version.to_le_bytes());
    b[72..80].copy_from_slice(&(1u64 << 20).to_le_bytes());
    let sum = crate::crc32c::crc32c(&b);
    b[4..8].copy_from_slice(&sum.to_le_bytes());
    b
}

#[test]
fn higher_sequence_wins() {
    let (i, h) = choose(&header(5, 1), &header(6, 1)).unwrap();
    assert_eq!((i, h.sequence_number, h.log_offset), (1, 6, 1 << 20));
    assert_eq!(choose(&header(9, 1), &header(6, 1)).unwrap().0, 0);
}

#[test]
fn invalid_headers_do_not_count() {
    let mut bad = header(9, 1);
    bad[100] ^= 1;
    assert_eq!(choose(&bad, &header(6, 1)).unwrap().0, 1);
    assert_eq!(choose(&header(9, 2), &header(6, 1)).unwrap().0, 1);
    assert_eq!(choose(&header(6, 1), &[0u8; 10]).unwrap().0, 0);
    assert!(choose(&bad, &header(3, 0)).is_err());
}

#[test]
fn equal_sequence_numbers_need_identical_headers() {
    assert_eq!(choose(&header(4, 1), &header(4, 1)).unwrap().0, 0);
    let mut other = header(4, 1);
    other[20] = 1;
    let sum = crate::crc32c::crc32c(&{
        let mut c = other.clone();
        c[4..8].fill(0);
        c
    });
    other[4..8].copy_from_slice(&sum.to_le_bytes());
    assert!(choose(&header(4, 1), &other).is_err());
}

#[test]
fn creator_is_utf16_up_to_nul() {
    let mut b = vec![0u8; 600];
    b[..8].copy_from_slice(b"vhdxfile");
    for (i, c) in "QEMU v10".encode_utf16().enumerate() {
        b[8 + 2 * i..10 + 2 * i].copy_from_slice(&c.to_le_bytes());
    }
    assert_eq!(creator(&b), "QEMU v10");
    assert_eq!(creator(&b[..12]), "QE");
}
