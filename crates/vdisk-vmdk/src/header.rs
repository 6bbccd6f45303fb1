//! The hosted sparse extent header (`KDMV`, versions 1-3) and stream-optimized markers: pure parsing and
//! serialising of bytes, no I/O. Follows "Hosted Sparse Extent Header" and "Stream-Optimized Compressed
//! Sparse Extents" of VMware's Virtual Disk Format 1.1 / 5.0 technical notes. The other sparse
//! extents (ESX `COWD` vmfsSparse, seSparse) are recognised here by magic and parsed in `cowd` and
//! `sesparse`.

use crate::limits::{
    MAX_GRAIN_SECTORS, MAX_GTES_PER_GT, MAX_VIRTUAL_BYTES, MIN_GRAIN_SECTORS, SECTOR,
};

/// `KDMV` read as a little-endian u32 at offset 0.
pub const SPARSE_MAGIC: u32 = 0x564d_444b;
/// `COWD`: the ESX Server 2/3 vmfsSparse extent ("ESX Server Sparse Extents").
pub const COWD_MAGIC: &[u8; 4] = b"COWD";
/// seSparse extents start with this u64 (VMware's space-efficient sparse format).
pub const SESPARSE_MAGIC: u64 = 0x0000_0000_cafe_babe;
/// The size of the header on disk (one sector).
pub const HEADER_SIZE: usize = 512;
/// gdOffset value meaning "the grain directory is found through the footer" (stream-optimized).
pub const GD_AT_END: u64 = u64::MAX;

/// Flag bit 0: the newline-detection characters are valid.
pub const FLAG_NL_DETECT: u32 = 1 << 0;
/// Flag bit 1: a redundant grain directory is present at rgdOffset.
pub const FLAG_RGD: u32 = 1 << 1;
/// Flag bit 2: grain table entry 1 means "zeroed grain" (Virtual Disk Format 5.0).
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
/// Flag bit 16: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Flag bit 17: metadata and grains are preceded by markers.
pub const FLAG_MARKERS: u32 = 1 << 17;

/// compressAlgorithm value for deflate (RFC 1951 inside a zlib stream).
pub const COMPRESS_DEFLATE: u16 = 1;

/// Marker types ("Stream-Optimized Compressed Sparse Extents", Table: marker types).
pub const MARKER_EOS: u32 = 0;
pub const MARKER_GT: u32 = 1;
pub const MARKER_GD: u32 = 2;
pub const MARKER_FOOTER: u32 = 3;

/// What kind of sparse file the first bytes announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparseKind {
    /// A hosted sparse extent (`KDMV`).
    Hosted,
    /// An ESX vmfsSparse extent (`COWD`).
    Cowd,
    /// An seSparse extent.
    SeSparse,
    /// Anything else (a text descriptor, or not a VMDK).
    Other,
}

/// Recognises a sparse extent by its first 8 bytes.
pub fn sparse_kind(head: &[u8]) -> SparseKind {
    let b4 = head.get(..4);
    if b4 == Some(&SPARSE_MAGIC.to_le_bytes()[..]) {
        SparseKind::Hosted
    } else if b4 == Some(&COWD_MAGIC[..]) {
        SparseKind::Cowd
    } else if head.get(..8) == Some(&SESPARSE_MAGIC.to_le_bytes()[..]) {
        SparseKind::SeSparse
    } else {
        SparseKind::Other
    }
}

/// The hosted sparse extent header, fields as named in the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseHeader {
    pub version: u32,
    pub flags: u32,
    /// Virtual size of the extent, in sectors.
    pub capacity: u64,
    /// Sectors per grain.
    pub grain_size: u64,
    /// Sector of the embedded descriptor (0: none).
    pub descriptor_offset: u64,
    /// Sectors reserved for the embedded descriptor.
    pub descriptor_size: u64,
    pub num_gtes_per_gt: u32,
    /// Sector of the redundant grain directory.
    pub rgd_offset: u64,
    /// Sector of the grain directory, or [`GD_AT_END`].
    pub gd_offset: u64,
    /// Sectors of metadata before the first grain.
    pub overhead: u64,
    pub unclean_shutdown: bool,
    pub compress_algorithm: u16,
}

/// Why a header is not acceptable; turned into a [`vdisk_core::Error`] naming the file by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a hosted sparse header at all.
    BadMagic,
    /// A field is out of range; the text names it.
    Invalid(String),
    /// A feature we do not handle.
    Unsupported(String),
}

pub(crate) fn u32_at(b: &[u8; HEADER_SIZE], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8; HEADER_SIZE], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl SparseHeader {
    /// Parses and validates a header sector.
    pub fn parse(b: &[u8; HEADER_SIZE]) -> Result<Self, HeaderError> {
        if u32_at(b, 0) != SPARSE_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let h = SparseHeader {
            version: u32_at(b, 4),
            flags: u32_at(b, 8),
            capacity: u64_at(b, 12),
            grain_size: u64_at(b, 20),
            descriptor_offset: u64_at(b, 28),
            descriptor_size: u64_at(b, 36),
            num_gtes_per_gt: u32_at(b, 44),
            rgd_offset: u64_at(b, 48),
            gd_offset: u64_at(b, 56),
            overhead: u64_at(b, 64),
            unclean_shutdown: b[72] != 0,
            compress_algorithm: u16::from_le_bytes([b[77], b[78]]),
        };
        h.validate()?;
        Ok(h)
    }

    fn validate(&self) -> Result<(), HeaderError> {
        if !(1..=3).contains(&self.version) {
            return Err(HeaderError::Unsupported(format!(
                "VMDK version {}",
                self.version
            )));
        }
        if !(MIN_GRAIN_SECTORS..=MAX_GRAIN_SECTORS).contains(&self.grain_size)
            || !self.grain_size.is_power_of_two()
        {
            return Err(HeaderError::Invalid(format!(
                "grain size of {} sectors (must be a power of two from {MIN_GRAIN_SECTORS} to {MAX_GRAIN_SECTORS})",
                self.grain_size
            )));
        }
        if self.num_gtes_per_gt == 0 || self.num_gtes_per_gt > MAX_GTES_PER_GT {
            return Err(HeaderError::Invalid(format!(
                "{} grain table entries per grain table (must be 1 to {MAX_GTES_PER_GT})",
                self.num_gtes_per_gt
            )));
        }
        match self.capacity.checked_mul(SECTOR) {
            Some(b) if b <= MAX_VIRTUAL_BYTES => {}
            _ => {
                return Err(HeaderError::Invalid(format!(
                    "capacity of {} sectors is too large",
                    self.capacity
                )))
            }
        }
        if self.flags & FLAG_COMPRESSED != 0 && self.compress_algorithm > COMPRESS_DEFLATE {
            return Err(HeaderError::Unsupported(format!(
                "compression algorithm {}",
                self.compress_algorithm
            )));
        }
        Ok(())
    }

    /// Serialises the header into one sector (the newline-detection bytes always set).
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&SPARSE_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        b[20..28].copy_from_slice(&self.grain_size.to_le_bytes());
        b[28..36].copy_from_slice(&self.descriptor_offset.to_le_bytes());
        b[36..44].copy_from_slice(&self.descriptor_size.to_le_bytes());
        b[44..48].copy_from_slice(&self.num_gtes_per_gt.to_le_bytes());
        b[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        b[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        b[64..72].copy_from_slice(&self.overhead.to_le_bytes());
        b[72] = u8::from(self.unclean_shutdown);
        b[73] = b'\n';
        b[74] = b' ';
        b[75] = b'\r';
        b[76] = b'\n';
        b[77..79].copy_from_slice(&self.compress_algorithm.to_le_bytes());
        b
    }

    /// Grain size in bytes.
    pub fn grain_bytes(&self) -> u64 {
        self.grain_size * SECTOR
    }

    /// Virtual size in bytes (validated not to overflow).
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity * SECTOR
    }

    /// Grains are compressed. Like qemu, this follows compressAlgorithm (deflate), not flag bit 16.
    pub fn compressed(&self) -> bool {
        self.compress_algorithm == COMPRESS_DEFLATE
    }

    /// Grains and metadata carry markers.
    pub fn has_markers(&self) -> bool {
        self.flags & FLAG_MARKERS != 0
    }

    /// Grain table entry 1 means a zeroed grain.
    pub fn has_zero_grain(&self) -> bool {
        self.flags & FLAG_ZERO_GRAIN != 0
    }

    /// A redundant grain directory is present.
    pub fn has_rgd(&self) -> bool {
        self.flags & FLAG_RGD != 0 && self.rgd_offset != 0
    }

    /// Guest bytes covered by one grain table.
    pub fn gt_coverage_bytes(&self) -> u64 {
        self.grain_bytes() * u64::from(self.num_gtes_per_gt)
    }

    /// Number of grain directory entries needed to cover the capacity.
    pub fn gd_entries(&self) -> u64 {
        self.capacity_bytes().div_ceil(self.gt_coverage_bytes())
    }
}

/// A marker: `val` (u64), `size` (u32), and for metadata markers (size 0) a `type` (u32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// For a grain: its first guest sector (LBA). For metadata: sectors of metadata that follow.
    pub val: u64,
    /// For a grain: compressed bytes following the 12-byte marker. 0 for metadata markers.
    pub size: u32,
    /// Marker type for metadata markers.
    pub kind: u32,
}

/// Bytes of a grain marker before the compressed data.
pub const GRAIN_MARKER_SIZE: usize = 12;

impl Marker {
    /// Parses the first 16 bytes of a marker.
    pub fn parse(b: &[u8; 16]) -> Marker {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[0..8]);
        let mut s = [0u8; 4];
        s.copy_from_slice(&b[8..12]);
        let mut t = [0u8; 4];
        t.copy_from_slice(&b[12..16]);
        Marker {
            val: u64::from_le_bytes(v),
            size: u32::from_le_bytes(s),
            kind: u32::from_le_bytes(t),
        }
    }

    /// A metadata marker sector (val = sectors that follow, size 0, type).
    pub fn metadata_sector(sectors: u64, kind: u32) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..8].copy_from_slice(&sectors.to_le_bytes());
        b[12..16].copy_from_slice(&kind.to_le_bytes());
        b
    }

    /// The 12-byte header of a compressed grain at guest sector `lba` holding `size` bytes.
    pub fn grain_header(lba: u64, size: u32) -> [u8; GRAIN_MARKER_SIZE] {
        let mut b = [0u8; GRAIN_MARKER_SIZE];
        b[0..8].copy_from_slice(&lba.to_le_bytes());
        b[8..12].copy_from_slice(&size.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SparseHeader {
        SparseHeader {
            version: 1,
            flags: FLAG_NL_DETECT | FLAG_RGD,
            capacity: 10241,
            grain_size: 128,
            descriptor_offset: 1,
            descriptor_size: 20,
            num_gtes_per_gt: 512,
            rgd_offset: 21,
            gd_offset: 26,
            overhead: 128,
            unclean_shutdown: false,
            compress_algorithm: 0,
        }
    }

    #[test]
    fn round_trips() {
        let h = sample();
        let b = h.to_bytes();
        assert_eq!(&b[0..4], b"KDMV");
        assert_eq!(SparseHeader::parse(&b).unwrap(), h);
        assert_eq!(h.gd_entries(), 1);
        assert_eq!(sparse_kind(&b), SparseKind::Hosted);
    }

    #[test]
    fn rejects_bad_fields() {
        let mut b = sample().to_bytes();
        b[0] = b'X';
        assert_eq!(SparseHeader::parse(&b), Err(HeaderError::BadMagic));
        for (field, bad) in [
            ("grain", 0u64),
            ("grain", 3),
            ("grain", 1 << 40),
            ("cap", u64::MAX),
            ("gtes", 0),
            ("gtes", 4096),
            ("ver", 9),
        ] {
            let mut h = sample();
            match field {
                "grain" => h.grain_size = bad,
                "cap" => h.capacity = bad,
                "gtes" => h.num_gtes_per_gt = bad as u32,
                _ => h.version = bad as u32,
            }
            assert!(SparseHeader::parse(&h.to_bytes()).is_err(), "{field}={bad}");
        }
        let mut h = sample();
        h.flags |= FLAG_COMPRESSED;
        h.compress_algorithm = 7;
        assert!(matches!(
            SparseHeader::parse(&h.to_bytes()),
            Err(HeaderError::Unsupported(_))
        ));
    }

    #[test]
    fn recognises_other_sparse_magics() {
        assert_eq!(sparse_kind(b"COWD\x01\0\0\0"), SparseKind::Cowd);
        assert_eq!(
            sparse_kind(&SESPARSE_MAGIC.to_le_bytes()),
            SparseKind::SeSparse
        );
        assert_eq!(sparse_kind(b"# Disk"), SparseKind::Other);
        assert_eq!(sparse_kind(b""), SparseKind::Other);
    }

    #[test]
    fn markers() {
        let m = Marker::metadata_sector(4, MARKER_GT);
        let mut h = [0u8; 16];
        h.copy_from_slice(&m[..16]);
        assert_eq!(
            Marker::parse(&h),
            Marker {
                val: 4,
                size: 0,
                kind: MARKER_GT
            }
        );
        let g = Marker::grain_header(128, 77);
        h[..12].copy_from_slice(&g);
        assert_eq!(Marker::parse(&h).val, 128);
        assert_eq!(Marker::parse(&h).size, 77);
    }
}
