//! The ESX Server sparse extent header (`COWD`, "ESX Server Sparse Extents" in VMware's Virtual Disk
//! Format 1.1), the extent of vmfsSparse delta disks, seen as an equivalent hosted sparse header so
//! that one reader serves both. Pure parsing, no I/O.

use crate::header::{u32_at, HeaderError, SparseHeader, COWD_MAGIC, HEADER_SIZE};
use crate::limits::{COWD_GTES_PER_GT, MAX_GRAIN_SECTORS, MIN_GRAIN_SECTORS, SECTOR};

/// The ESX Server sparse extent header (`COWD`, "ESX Server Sparse Extents" in Virtual Disk Format
/// 1.1): the extent of vmfsSparse delta disks. Its grain tables have a fixed 4096 entries, grain
/// directory and table entries are sector numbers as in hosted sparse extents, and there is no
/// redundant directory, compression or zeroed-grain entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CowdHeader {
    pub version: u32,
    pub flags: u32,
    /// Virtual size of the extent, in sectors.
    pub num_sectors: u32,
    /// Sectors per grain.
    pub grain_size: u32,
    /// Sector of the grain directory.
    pub gd_offset: u32,
    /// Entries in the grain directory.
    pub num_gd_entries: u32,
    /// Next free sector of the file.
    pub free_sector: u32,
}

impl CowdHeader {
    /// Parses and validates a `COWD` header sector.
    pub fn parse(b: &[u8; HEADER_SIZE]) -> Result<Self, HeaderError> {
        if &b[0..4] != COWD_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let h = CowdHeader {
            version: u32_at(b, 4),
            flags: u32_at(b, 8),
            num_sectors: u32_at(b, 12),
            grain_size: u32_at(b, 16),
            gd_offset: u32_at(b, 20),
            num_gd_entries: u32_at(b, 24),
            free_sector: u32_at(b, 28),
        };
        if !(MIN_GRAIN_SECTORS..=MAX_GRAIN_SECTORS).contains(&u64::from(h.grain_size)) {
            return Err(HeaderError::Invalid(format!(
                "COWD grain size of {} sectors (must be {MIN_GRAIN_SECTORS} to {MAX_GRAIN_SECTORS})",
                h.grain_size
            )));
        }
        if h.gd_offset == 0 {
            return Err(HeaderError::Invalid(
                "COWD grain directory at sector 0".into(),
            ));
        }
        let needed = h.to_sparse().gd_entries();
        if u64::from(h.num_gd_entries) < needed {
            return Err(HeaderError::Invalid(format!(
                "COWD grain directory of {} entries is too small for {} sectors (needs {needed})",
                h.num_gd_entries, h.num_sectors
            )));
        }
        Ok(h)
    }

    /// The same extent described as a hosted sparse header, so one reader serves both: 4096 entries
    /// per grain table, no descriptor, compression, zeroed grains or redundant directory; the
    /// "overhead" ends after the grain directory.
    pub fn to_sparse(&self) -> SparseHeader {
        let gd_sectors = (u64::from(self.num_gd_entries) * 4).div_ceil(SECTOR);
        SparseHeader {
            version: 1,
            flags: 0,
            capacity: u64::from(self.num_sectors),
            grain_size: u64::from(self.grain_size.max(1)),
            descriptor_offset: 0,
            descriptor_size: 0,
            num_gtes_per_gt: COWD_GTES_PER_GT,
            rgd_offset: 0,
            gd_offset: u64::from(self.gd_offset),
            overhead: u64::from(self.gd_offset) + gd_sectors,
            unclean_shutdown: false,
            compress_algorithm: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cowd_header() {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(b"COWD");
        for (at, v) in [
            (4usize, 1u32),
            (8, 3),
            (12, 8192),
            (16, 8),
            (20, 4),
            (24, 1),
        ] {
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        let h = CowdHeader::parse(&b).unwrap();
        let sp = h.to_sparse();
        assert_eq!(
            (
                sp.capacity,
                sp.grain_size,
                sp.num_gtes_per_gt,
                sp.gd_offset,
                sp.overhead
            ),
            (8192, 8, 4096, 4, 5)
        );
        assert_eq!(sp.gd_entries(), 1);
        let mut small = b;
        small[12..16].copy_from_slice(&(8 * 4096 + 1u32).to_le_bytes());
        assert!(CowdHeader::parse(&small).is_err(), "directory too small");
        let mut g0 = b;
        g0[16..20].copy_from_slice(&0u32.to_le_bytes());
        assert!(CowdHeader::parse(&g0).is_err());
        let mut d0 = b;
        d0[20..24].copy_from_slice(&0u32.to_le_bytes());
        assert!(CowdHeader::parse(&d0).is_err());
    }
}
