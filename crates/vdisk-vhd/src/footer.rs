//! The 512-byte hard disk footer (spec "Hard Disk Footer Format"; vpc.c `VHDFooter`): a pure parse
//! with no I/O, its checksum (`vpc_checksum`), the CHS geometry, and the virtual size qemu derives
//! from them (`vpc_open` and `vpc_ignore_current_size`).

use crate::limits::{FOOTER_COOKIE, FOOTER_SIZE, MAX_GEOMETRY_SECTORS, MAX_SECTORS, SECTOR_SIZE};
use std::fmt;
use std::path::Path;
use vdisk_core::{Error, Result};

/// Byte offset of the checksum field, excluded from the checksum itself.
const CHECKSUM_AT: usize = 64;

/// The footer's disk type field (spec "Disk Type"; vpc.c `enum vhd_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// 2: the data is the file, the footer follows it.
    Fixed,
    /// 3: a dynamic header and a block allocation table.
    Dynamic,
    /// 4: a dynamic disk whose unallocated blocks come from a parent. QEMU 10 reads it as a dynamic
    /// disk of its own, with no backing file: unallocated blocks read as zeros.
    Differencing,
    /// Any other value (the spec reserves 0, 1, 5 and 6).
    Other(u32),
}

impl DiskType {
    /// The type from its field value.
    pub fn from_raw(v: u32) -> Self {
        match v {
            2 => DiskType::Fixed,
            3 => DiskType::Dynamic,
            4 => DiskType::Differencing,
            n => DiskType::Other(n),
        }
    }

    /// The field value.
    pub fn to_raw(self) -> u32 {
        match self {
            DiskType::Fixed => 2,
            DiskType::Dynamic => 3,
            DiskType::Differencing => 4,
            DiskType::Other(n) => n,
        }
    }

    /// A short name for messages and `info` details.
    pub fn name(self) -> String {
        match self {
            DiskType::Fixed => "fixed".into(),
            DiskType::Dynamic => "dynamic".into(),
            DiskType::Differencing => "differencing".into(),
            DiskType::Other(n) => format!("unknown ({n})"),
        }
    }
}

/// The disk geometry stored in the footer (spec "Disk Geometry").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub cylinders: u16,
    pub heads: u8,
    pub sectors_per_track: u8,
}

impl Geometry {
    /// Cylinders x heads x sectors: the size Virtual PC shows, in sectors.
    pub fn total_sectors(self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track)
    }
}

impl fmt::Display for Geometry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.cylinders, self.heads, self.sectors_per_track
        )
    }
}

/// The parsed footer. All fields are as stored (big-endian on disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    pub cookie: [u8; 8],
    pub features: u32,
    pub format_version: u32,
    /// Offset of the dynamic disk header (`0xFFFFFFFF...` for fixed disks).
    pub data_offset: u64,
    /// Seconds since 2000-01-01 00:00:00 UTC.
    pub timestamp: u32,
    /// The application that created the image: `vpc `, `qemu`, `qem2`, `win `, `d2v `, ...
    pub creator_app: [u8; 4],
    pub creator_version: u32,
    pub creator_os: [u8; 4],
    pub original_size: u64,
    pub current_size: u64,
    pub geometry: Geometry,
    pub disk_type: DiskType,
    pub checksum: u32,
    pub uuid: [u8; 16],
    pub saved_state: u8,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

impl Footer {
    /// Parses a footer. Never fails: the caller decides what a wrong cookie or checksum means
    /// ([`Footer::has_cookie`], [`checksum`]).
    pub fn parse(b: &[u8; FOOTER_SIZE]) -> Footer {
        Footer {
            cookie: array(b, 0),
            features: be32(b, 8),
            format_version: be32(b, 12),
            data_offset: be64(b, 16),
            timestamp: be32(b, 24),
            creator_app: array(b, 28),
            creator_version: be32(b, 32),
            creator_os: array(b, 36),
            original_size: be64(b, 40),
            current_size: be64(b, 48),
            geometry: Geometry {
                cylinders: be16(b, 56),
                heads: b[58],
                sectors_per_track: b[59],
            },
            disk_type: DiskType::from_raw(be32(b, 60)),
            checksum: be32(b, CHECKSUM_AT),
            uuid: array(b, 68),
            saved_state: b[84],
        }
    }

    /// The 512 bytes of this footer, reserved bytes zero, with the checksum the fields give
    /// (`vpc_checksum`, as `vpc_co_create` seals it); the `checksum` field is ignored.
    pub fn to_bytes(&self) -> [u8; FOOTER_SIZE] {
        let mut b = [0u8; FOOTER_SIZE];
        b[..8].copy_from_slice(&self.cookie);
        b[8..12].copy_from_slice(&self.features.to_be_bytes());
        b[12..16].copy_from_slice(&self.format_version.to_be_bytes());
        b[16..24].copy_from_slice(&self.data_offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.timestamp.to_be_bytes());
        b[28..32].copy_from_slice(&self.creator_app);
        b[32..36].copy_from_slice(&self.creator_version.to_be_bytes());
        b[36..40].copy_from_slice(&self.creator_os);
        b[40..48].copy_from_slice(&self.original_size.to_be_bytes());
        b[48..56].copy_from_slice(&self.current_size.to_be_bytes());
        b[56..58].copy_from_slice(&self.geometry.cylinders.to_be_bytes());
        b[58] = self.geometry.heads;
        b[59] = self.geometry.sectors_per_track;
        b[60..64].copy_from_slice(&self.disk_type.to_raw().to_be_bytes());
        b[68..84].copy_from_slice(&self.uuid);
        b[84] = self.saved_state;
        let sum = checksum(&b);
        b[CHECKSUM_AT..CHECKSUM_AT + 4].copy_from_slice(&sum.to_be_bytes());
        b
    }

    /// Whether the cookie is "conectix" (vpc.c compares all 8 bytes).
    pub fn has_cookie(&self) -> bool {
        &self.cookie == FOOTER_COOKIE
    }

    /// Whether the creator application is one whose images Virtual PC sizes by their CHS geometry
    /// (`vpc_ignore_current_size`: "vpc " and "qemu"); every other creator's images (Hyper-V's
    /// "win ", disk2vhd's "d2v ", qemu's `force_size` "qem2", XenServer, Azure, ...) use the
    /// footer's current size.
    pub fn sized_by_geometry(&self) -> bool {
        &self.creator_app == b"vpc " || &self.creator_app == b"qemu"
    }

    /// The virtual size in sectors, as `vpc_open` computes it: the CHS product for "vpc " and "qemu"
    /// images, the current size (in whole sectors) for any other creator and for any image whose
    /// geometry is the maximum 65535/16/255. More than [`MAX_SECTORS`] is refused (EFBIG).
    pub fn total_sectors(&self, path: &Path) -> Result<u64> {
        let chs = self.geometry.total_sectors();
        let sectors = if !self.sized_by_geometry() || chs == MAX_GEOMETRY_SECTORS {
            self.current_size / SECTOR_SIZE
        } else {
            chs
        };
        if sectors > MAX_SECTORS {
            return Err(Error::limit(
                path,
                "virtual size in sectors (File too large)",
                sectors,
                MAX_SECTORS,
            ));
        }
        Ok(sectors)
    }

    /// The creator application as text (non-printable bytes shown as `.`).
    pub fn creator_app_text(&self) -> String {
        printable(&self.creator_app)
    }

    /// The creator host OS as text (`Wi2k`, `Mac `, ...).
    pub fn creator_os_text(&self) -> String {
        printable(&self.creator_os)
    }
}

fn printable(b: &[u8]) -> String {
    b.iter()
        .map(|c| {
            if c.is_ascii_graphic() || *c == b' ' {
                char::from(*c)
            } else {
                '.'
            }
        })
        .collect()
}

/// The checksum the footer should carry (`vpc_checksum`): the one's complement of the sum of all its
/// bytes, the checksum field counted as zeros.
pub fn checksum(b: &[u8; FOOTER_SIZE]) -> u32 {
    checksum_skipping(b, CHECKSUM_AT)
}

/// `vpc_checksum` of any structure whose 4-byte checksum field starts at `at` (the footer's at 64,
/// the dynamic header's at 36): the one's complement of the byte sum, that field counted as zeros.
pub fn checksum_skipping(b: &[u8], at: usize) -> u32 {
    let sum = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(at..at.saturating_add(4)).contains(i))
        .fold(0u32, |s, (_, v)| s.wrapping_add(u32::from(*v)));
    !sum
}

#[cfg(test)]
#[path = "footer_tests.rs"]
mod tests;
