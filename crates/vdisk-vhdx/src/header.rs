//! The header section (spec 2.2): the file type identifier at offset 0 and the two 4 KiB headers at
//! 64 KiB and 128 KiB, parsed from bytes (no I/O), and the choice of the current header as QEMU's
//! `vhdx_parse_header` makes it: a header counts only with a valid CRC-32C, the "head" signature and
//! version 1; of two valid ones the higher sequence number wins, and equal numbers are accepted only
//! when the two headers are identical (as Disk2VHD writes them).

use crate::crc32c;
use crate::guid::Guid;
use crate::limits::{HEADER_FIELDS_SIZE, HEADER_SIGNATURE, HEADER_SIZE, HEADER_VERSION};

/// The little-endian u16 at `at` of `b`, 0 where `b` is too short.
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

/// The little-endian u32 at `at` of `b`, 0 where `b` is too short.
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The little-endian u64 at `at` of `b`, 0 where `b` is too short.
pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        v.copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

/// The creator named by the file type identifier (spec 2.2.1: up to 256 UTF-16 code units after
/// the signature, "diagnostic only"), up to its first NUL; qemu ignores it.
pub fn creator(file_identifier: &[u8]) -> String {
    let units: Vec<u16> = (0..256)
        .map(|i| le16(file_identifier, 8 + 2 * i))
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// One header's fields (spec 2.2.2, `VHDXHeader`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub signature: [u8; 4],
    pub checksum: u32,
    pub sequence_number: u64,
    pub file_write_guid: Guid,
    pub data_write_guid: Guid,
    /// Zero when the log is empty; otherwise log entries carrying it are valid.
    pub log_guid: Guid,
    pub log_version: u16,
    pub version: u16,
    pub log_length: u32,
    pub log_offset: u64,
    /// The 80 bytes of fields as stored: qemu compares them when sequence numbers tie.
    pub fields: [u8; HEADER_FIELDS_SIZE],
}

impl Header {
    /// The fields of the header at the start of `b` (zeros for what `b` lacks).
    pub fn parse(b: &[u8]) -> Header {
        let mut fields = [0u8; HEADER_FIELDS_SIZE];
        let n = b.len().min(HEADER_FIELDS_SIZE);
        fields[..n].copy_from_slice(&b[..n]);
        let f = &fields;
        Header {
            signature: [f[0], f[1], f[2], f[3]],
            checksum: le32(f, 4),
            sequence_number: le64(f, 8),
            file_write_guid: Guid::read(f, 16),
            data_write_guid: Guid::read(f, 32),
            log_guid: Guid::read(f, 48),
            log_version: le16(f, 64),
            version: le16(f, 66),
            log_length: le32(f, 68),
            log_offset: le64(f, 72),
            fields,
        }
    }
}

/// Why a header does not count, as `vhdx_parse_header` tests it (`None`: it counts).
pub fn invalid_reason(block: &[u8]) -> Option<&'static str> {
    if block.len() < HEADER_SIZE || !crc32c::is_valid(&block[..HEADER_SIZE], 4) {
        return Some("bad CRC-32C");
    }
    let h = Header::parse(block);
    if &h.signature != HEADER_SIGNATURE {
        Some("no \"head\" signature")
    } else if h.version != HEADER_VERSION {
        Some("version is not 1")
    } else {
        None
    }
}

/// The header qemu uses: its index (0 for the one at 64 KiB, 1 for 128 KiB) and fields, or why
/// there is none (qemu then fails with "No valid VHDX header found").
pub fn choose(h1: &[u8], h2: &[u8]) -> Result<(usize, Header), String> {
    let (r1, r2) = (invalid_reason(h1), invalid_reason(h2));
    let (a, b) = (Header::parse(h1), Header::parse(h2));
    match (r1, r2) {
        (None, Some(_)) => Ok((0, a)),
        (Some(_), None) => Ok((1, b)),
        (Some(x), Some(y)) => Err(format!("header 1: {x}, header 2: {y}")),
        (None, None) => {
            if a.sequence_number > b.sequence_number {
                Ok((0, a))
            } else if b.sequence_number > a.sequence_number {
                Ok((1, b))
            } else if a.fields == b.fields {
                Ok((0, a))
            } else {
                Err(format!(
                    "both headers have sequence number {} but differ",
                    a.sequence_number
                ))
            }
        }
    }
}

#[cfg(test)]
#[path = "header_tests.rs"]
mod tests;
