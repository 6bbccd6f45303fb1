//! Fields of on-disk structures, little-endian (ext2/3/4 and FAT) and big-endian (XFS),
//! read without panicking: a field that lies past the end of the buffer reads as 0. Callers
//! size their buffers to the structures they parse, so this only guards against slips.

/// The `u8` at `off`.
pub fn u8_at(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}

/// The little-endian `u16` at `off`.
pub fn u16_at(b: &[u8], off: usize) -> u16 {
    match off.checked_add(2).and_then(|end| b.get(off..end)) {
        Some(s) => u16::from_le_bytes([s[0], s[1]]),
        None => 0,
    }
}

/// The little-endian `u32` at `off`.
pub fn u32_at(b: &[u8], off: usize) -> u32 {
    match off.checked_add(4).and_then(|end| b.get(off..end)) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

/// The little-endian `u64` at `off`.
pub fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from(u32_at(b, off)) | (u64::from(u32_at(b, off.saturating_add(4))) << 32)
}

/// `len` bytes at `off`, or fewer if the buffer ends first.
pub fn bytes_at(b: &[u8], off: usize, len: usize) -> &[u8] {
    let start = off.min(b.len());
    let end = off.saturating_add(len).min(b.len());
    &b[start..end]
}

/// The big-endian `u16` at `off` (XFS is big-endian throughout).
pub fn be16_at(b: &[u8], off: usize) -> u16 {
    match off.checked_add(2).and_then(|end| b.get(off..end)) {
        Some(s) => u16::from_be_bytes([s[0], s[1]]),
        None => 0,
    }
}

/// The big-endian `u32` at `off`.
pub fn be32_at(b: &[u8], off: usize) -> u32 {
    match off.checked_add(4).and_then(|end| b.get(off..end)) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

/// The big-endian `u64` at `off`.
pub fn be64_at(b: &[u8], off: usize) -> u64 {
    (u64::from(be32_at(b, off)) << 32) | u64::from(be32_at(b, off.saturating_add(4)))
}

/// A label stored NUL-padded in a fixed field: the bytes before the first NUL, `None` when
/// empty.
pub fn padded_label(field: &[u8]) -> Option<Vec<u8>> {
    let len = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    (len > 0).then(|| field[..len].to_vec())
}

/// A UUID as blkid prints it (lowercase, 8-4-4-4-12), or `None` when it is all zeros.
pub fn uuid_text(u: &[u8; 16]) -> Option<String> {
    if u.iter().all(|b| *b == 0) {
        return None;
    }
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    ))
}
