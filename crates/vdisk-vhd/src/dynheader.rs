//! The 1024-byte dynamic disk header (spec "Dynamic Disk Header Format"; vpc.c `VHDDynDiskHeader`):
//! a pure parse with no I/O, and the block-size checks of `vpc_open`. qemu does not verify the
//! header's checksum, and neither does vdisk.

use crate::footer::checksum_skipping;
use crate::limits::{
    bitmap_size, DYN_HEADER_COOKIE, DYN_HEADER_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE,
};
use std::path::Path;
use vdisk_core::{Error, Result};

/// Where the parent's name starts and how long it is (UTF-16 big-endian, spec "Parent Unicode Name").
const PARENT_NAME_AT: usize = 64;
const PARENT_NAME_LEN: usize = 512;

/// Byte offset of the checksum field.
const CHECKSUM_AT: usize = 36;

/// The parsed dynamic disk header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynHeader {
    pub cookie: [u8; 8],
    /// Unused by the spec (all ones).
    pub data_offset: u64,
    /// Offset of the block allocation table.
    pub table_offset: u64,
    pub header_version: u32,
    /// Entries in the BAT.
    pub max_table_entries: u32,
    /// Bytes of guest data per block (2 MiB by default).
    pub block_size: u32,
    pub checksum: u32,
    pub parent_uuid: [u8; 16],
    pub parent_timestamp: u32,
    /// The parent's name of a differencing disk, UTF-16 big-endian up to the first NUL.
    pub parent_name: String,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

impl DynHeader {
    /// Parses the header; only the cookie is checked here ("Invalid header magic" in `vpc_open`).
    pub fn parse(b: &[u8; DYN_HEADER_SIZE], path: &Path, at: u64) -> Result<DynHeader> {
        let mut cookie = [0u8; 8];
        cookie.copy_from_slice(&b[..8]);
        if &cookie != DYN_HEADER_COOKIE {
            return Err(Error::corrupt(
                path,
                Some(at),
                "Invalid header magic (the dynamic disk header does not start with \"cxsparse\")",
            ));
        }
        let mut parent_uuid = [0u8; 16];
        parent_uuid.copy_from_slice(&b[40..56]);
        let units: Vec<u16> = b[PARENT_NAME_AT..PARENT_NAME_AT + PARENT_NAME_LEN]
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        Ok(DynHeader {
            cookie,
            data_offset: be64(b, 8),
            table_offset: be64(b, 16),
            header_version: be32(b, 24),
            max_table_entries: be32(b, 28),
            block_size: be32(b, 32),
            checksum: be32(b, 36),
            parent_uuid,
            parent_timestamp: be32(b, 56),
            parent_name: String::from_utf16_lossy(&units),
        })
    }

    /// The 1024 bytes of this header with the checksum its fields give (`vpc_checksum`, as
    /// `create_dynamic_disk` seals it); the `checksum` field is ignored. Parent locators and reserved
    /// bytes are zero; a parent name longer than its 256 UTF-16 units is cut.
    pub fn to_bytes(&self) -> [u8; DYN_HEADER_SIZE] {
        let mut b = [0u8; DYN_HEADER_SIZE];
        b[..8].copy_from_slice(&self.cookie);
        b[8..16].copy_from_slice(&self.data_offset.to_be_bytes());
        b[16..24].copy_from_slice(&self.table_offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.header_version.to_be_bytes());
        b[28..32].copy_from_slice(&self.max_table_entries.to_be_bytes());
        b[32..36].copy_from_slice(&self.block_size.to_be_bytes());
        b[40..56].copy_from_slice(&self.parent_uuid);
        b[56..60].copy_from_slice(&self.parent_timestamp.to_be_bytes());
        let name = &mut b[PARENT_NAME_AT..PARENT_NAME_AT + PARENT_NAME_LEN];
        for (slot, unit) in name
            .chunks_exact_mut(2)
            .zip(self.parent_name.encode_utf16())
        {
            slot.copy_from_slice(&unit.to_be_bytes());
        }
        let sum = checksum_skipping(&b, CHECKSUM_AT);
        b[CHECKSUM_AT..CHECKSUM_AT + 4].copy_from_slice(&sum.to_be_bytes());
        b
    }

    /// The block size, checked as `vpc_open` does: a power of two of at least one sector.
    pub fn checked_block_size(&self, path: &Path, at: u64) -> Result<u32> {
        let bs = self.block_size;
        let ok = bs.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&u64::from(bs));
        if !ok {
            return Err(Error::corrupt(
                path,
                Some(at + 32),
                format!(
                    "Invalid block size {bs} (a power of two of at least 512 bytes is required)"
                ),
            ));
        }
        Ok(bs)
    }

    /// Bytes of sector bitmap in front of each block (see [`bitmap_size`]).
    pub fn bitmap_size(&self) -> u64 {
        bitmap_size(self.block_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(block_size: u32, entries: u32) -> [u8; DYN_HEADER_SIZE] {
        let mut b = [0u8; DYN_HEADER_SIZE];
        b[..8].copy_from_slice(b"cxsparse");
        b[8..16].fill(0xff);
        b[16..24].copy_from_slice(&1536u64.to_be_bytes());
        b[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        b[28..32].copy_from_slice(&entries.to_be_bytes());
        b[32..36].copy_from_slice(&block_size.to_be_bytes());
        for (i, c) in "base.vhd".encode_utf16().enumerate() {
            b[64 + 2 * i..66 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
        b
    }

    #[test]
    fn parses_fields() {
        let p = Path::new("x.vhd");
        let h = DynHeader::parse(&header(2 << 20, 6), p, 512).unwrap();
        assert_eq!(h.table_offset, 1536);
        assert_eq!(h.data_offset, u64::MAX);
        assert_eq!((h.max_table_entries, h.block_size), (6, 2 << 20));
        assert_eq!(h.header_version, 0x0001_0000);
        assert_eq!(h.parent_name, "base.vhd");
        assert_eq!(h.checked_block_size(p, 512).unwrap(), 2 << 20);
        assert_eq!(h.bitmap_size(), 512);
    }

    #[test]
    fn to_bytes_round_trips_with_a_checksum() {
        let p = Path::new("x.vhd");
        let raw = header(2 << 20, 6);
        let h = DynHeader::parse(&raw, p, 512).unwrap();
        let b = h.to_bytes();
        let sum = checksum_skipping(&b, 36);
        assert_eq!(b[36..40], sum.to_be_bytes());
        let mut unsealed = b;
        unsealed[36..40].fill(0);
        assert_eq!(unsealed[..], raw[..]);
        let back = DynHeader::parse(&b, p, 512).unwrap();
        assert_eq!(back.checksum, sum);
        assert_eq!(
            DynHeader {
                checksum: 0,
                ..back
            },
            h
        );
    }

    #[test]
    fn bad_cookie_and_block_sizes() {
        let p = Path::new("x.vhd");
        let mut b = header(4096, 1);
        b[0] = b'X';
        let e = DynHeader::parse(&b, p, 512).unwrap_err().to_string();
        assert!(e.contains("Invalid header magic"), "{e}");
        for bs in [0, 1, 256, 511, 513, 3 << 20, u32::MAX] {
            let h = DynHeader::parse(&header(bs, 1), p, 512).unwrap();
            let e = h.checked_block_size(p, 512).unwrap_err().to_string();
            assert!(e.contains(&format!("Invalid block size {bs}")), "{e}");
        }
        for bs in [512u32, 4096, 1 << 31] {
            let h = DynHeader::parse(&header(bs, 1), p, 512).unwrap();
            assert_eq!(h.checked_block_size(p, 512).unwrap(), bs);
        }
    }

    #[test]
    fn bitmap_sizes_follow_vpc_c() {
        // qemu: ((block_size / 4096) + 511) & ~511, so blocks under 4 KiB get no bitmap at all.
        for (bs, want) in [
            (512u32, 0u64),
            (2048, 0),
            (4096, 512),
            (2 << 20, 512),
            (4 << 20, 1024),
            (1 << 31, 512 << 10),
        ] {
            assert_eq!(bitmap_size(bs), want, "block size {bs}");
        }
    }
}
