use super::*;
use vdisk_core::MemStorage;

const GUID: Guid = Guid([7; 16]);
const LOG_AT: u64 = 1 << 20;

fn header(guid: Guid) -> Header {
    let mut b = vec![0u8; 80];
    b[48..64].copy_from_slice(&guid.0);
    b[68..72].copy_from_slice(&(1u32 << 20).to_le_bytes());
    b[72..80].copy_from_slice(&LOG_AT.to_le_bytes());
    Header::parse(&b)
}

/// An entry of `len` bytes with `descs` zero descriptors, sealed unless `bad_crc`.
fn entry(len: usize, seq: u64, descs: u32, bad_crc: bool) -> Vec<u8> {
    let mut e = vec![0u8; len];
    e[..4].copy_from_slice(b"loge");
    e[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    e[16..24].copy_from_slice(&seq.to_le_bytes());
    e[24..28].copy_from_slice(&descs.to_le_bytes());
    e[32..48].copy_from_slice(&GUID.0);
    for k in 0..descs as usize {
        let d = 64 + 32 * k;
        e[d..d + 4].copy_from_slice(b"zero");
        e[d + 8..d + 16].copy_from_slice(&4096u64.to_le_bytes());
        e[d + 24..d + 32].copy_from_slice(&seq.to_le_bytes());
    }
    let sum = crate::crc32c::crc32c(&e) ^ u32::from(bad_crc);
    e[4..8].copy_from_slice(&sum.to_le_bytes());
    e
}

fn detect_with(log: &[u8], guid: Guid) -> Result<LogState, Refusal> {
    let mut file = vec![0u8; 2 << 20];
    file[LOG_AT as usize..LOG_AT as usize + log.len()].copy_from_slice(log);
    detect(&MemStorage::new("l", file), &header(guid)).unwrap()
}

#[test]
fn zero_guid_means_no_log() {
    let e = entry(4096, 1, 0, false);
    assert!(matches!(
        detect_with(&e, Guid::default()),
        Ok(LogState::Empty(_))
    ));
}

#[test]
fn a_valid_entry_needs_replay() {
    assert_eq!(
        detect_with(&entry(8192, 5, 3, false), GUID),
        Ok(LogState::NeedsReplay {
            sequence: 5,
            entries: 1,
            start: 0,
            end: 8192
        })
    );
    let mut two = entry(4096, 5, 0, false);
    two.extend(entry(4096, 6, 0, false));
    assert_eq!(
        detect_with(&two, GUID),
        Ok(LogState::NeedsReplay {
            sequence: 5,
            entries: 2,
            start: 0,
            end: 8192
        })
    );
}

#[test]
fn bad_checksum_or_other_guid_is_no_entry() {
    assert!(matches!(
        detect_with(&entry(4096, 1, 0, true), GUID),
        Ok(LogState::Empty(_))
    ));
    assert!(matches!(
        detect_with(&entry(4096, 1, 0, false), Guid([8; 16])),
        Ok(LogState::Empty(_))
    ));
}

#[test]
fn invalid_descriptor_fails_the_open() {
    let mut e = entry(4096, 1, 1, false);
    e[64..68].copy_from_slice(b"junk");
    assert!(matches!(detect_with(&e, GUID), Err(Refusal::Invalid(_))));
}

#[test]
fn an_entry_as_long_as_the_log_with_a_bad_checksum_never_ends_in_qemu() {
    let e = entry(1 << 20, 1, 0, true);
    let r = detect_with(&e, GUID);
    assert!(
        matches!(&r, Err(Refusal::Invalid(m)) if m.contains("never ends")),
        "{r:?}"
    );
}

#[test]
fn misplaced_log_is_refused() {
    let mut h = header(Guid::default());
    h.log_offset = 4096;
    let s = MemStorage::new("l", vec![0u8; 4096]);
    assert!(matches!(detect(&s, &h).unwrap(), Err(Refusal::Invalid(_))));
}

#[test]
fn more_descriptors_than_qemu_can_read_fail_the_open() {
    assert!(matches!(
        detect_with(&entry(8192, 5, 126, false), GUID),
        Ok(LogState::NeedsReplay { entries: 1, .. })
    ));
    let r = detect_with(&entry(8192, 5, 127, false), GUID);
    assert!(
        matches!(&r, Err(Refusal::Invalid(m)) if m.contains("127 descriptors")),
        "{r:?}"
    );
}
