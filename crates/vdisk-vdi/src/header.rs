//! Pure parse and serialize of the VDI pre-header and header (VirtualBox's `VDIPREHEADER`,
//! `VDIHEADER0`, `VDIHEADER1` and `VDIHEADER1PLUS` in `VDICore.h`; QEMU's `VdiHeader` in
//! block/vdi.c). All fields are little-endian. No I/O: callers hand in the first bytes of the file.

use crate::limits::*;
use std::path::Path;
use vdisk_core::{Error, Result};

pub use crate::uuid::Uuid;

/// The image signature (`VDI_IMAGE_SIGNATURE`).
pub const SIGNATURE: u32 = 0xbeda_107f;
/// Version 1.1, the one VirtualBox and QEMU write.
pub const VERSION_1_1: u32 = 0x0001_0001;
/// The old version-0 layout VirtualBox still opens (`vdiValidatePreHeader`).
pub const VERSION_0: u32 = 0x0000_0002;
/// The text VirtualBox puts at the start of new images (`VDI_IMAGE_FILE_INFO`).
pub const ORACLE_TEXT: &str = "<<< Oracle VM VirtualBox Disk Image >>>\n";

/// Image types (`VDIIMAGETYPE`).
pub const TYPE_DYNAMIC: u32 = 1;
pub const TYPE_STATIC: u32 = 2;
pub const TYPE_UNDO: u32 = 3;
pub const TYPE_DIFF: u32 = 4;

/// File offset of `cBlocksAllocated` in a version 1.x header: the one field an in-place writer
/// changes when it allocates blocks.
pub const BLOCKS_ALLOCATED_V1: usize = 0x184;

/// Bytes of the file needed to parse any header version.
pub const PARSE_LEN: usize = 0x200;

/// Disk geometry (`VDIDISKGEOMETRY`): cylinders, heads, sectors, bytes per sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Geometry {
    pub cylinders: u32,
    pub heads: u32,
    pub sectors: u32,
    pub sector_size: u32,
}

/// A parsed VDI header, version 0 or 1.x, with the offsets version 0 implies filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The informational text (`<<< ... >>>\n`), up to its first NUL.
    pub text: String,
    pub version: u32,
    /// `cbHeader` (version 1 only; 0 for version 0).
    pub header_size: u32,
    pub image_type: u32,
    pub flags: u32,
    pub description: String,
    pub offset_bmap: u64,
    pub offset_data: u64,
    pub legacy_geometry: Geometry,
    pub disk_size: u64,
    pub block_size: u32,
    pub block_extra: u32,
    pub blocks_in_image: u32,
    pub blocks_allocated: u32,
    /// The image's UUID (`uuidCreate`), the one VirtualBox registers the medium under.
    pub uuid_image: Uuid,
    /// Changed on every modification (`uuidModify`; QEMU calls it `uuid_last_snap`).
    pub uuid_modify: Uuid,
    /// Differencing images only: the parent image's UUID (`uuidLinkage`).
    pub uuid_link: Uuid,
    /// Differencing images only: the parent's modification UUID (`uuidParentModify`).
    pub uuid_parent_modify: Uuid,
    /// The logical geometry of `VDIHEADER1PLUS`, when the header is that large.
    pub lchs_geometry: Option<Geometry>,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn uuid_at(b: &[u8], off: usize) -> Uuid {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[off..off + 16]);
    Uuid(a)
}

fn geometry_at(b: &[u8], off: usize) -> Geometry {
    Geometry {
        cylinders: u32_at(b, off),
        heads: u32_at(b, off + 4),
        sectors: u32_at(b, off + 8),
        sector_size: u32_at(b, off + 12),
    }
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl Header {
    /// Parses the header from the first bytes of the file (`buf` may be shorter than
    /// [`PARSE_LEN`] only if the file is). Checks the signature, version and that the fields fit;
    /// [`Header::validate`] checks their values.
    pub fn parse(buf: &[u8], path: &Path) -> Result<Header> {
        if buf.len() < PRE_HEADER_SIZE as usize {
            return Err(Error::corrupt(
                path,
                None,
                format!("file of {} bytes is too short for a VDI header", buf.len()),
            ));
        }
        let signature = u32_at(buf, 0x40);
        if signature != SIGNATURE {
            return Err(Error::corrupt(
                path,
                Some(0x40),
                format!("Image not in VDI format (bad signature {signature:08x})"),
            ));
        }
        let version = u32_at(buf, 0x44);
        let text = c_string(&buf[..TEXT_SIZE]);
        if version == VERSION_0 {
            return Self::parse_v0(buf, path, text);
        }
        if version >> 16 != 1 {
            return Err(Error::unsupported(
                path,
                format!("VDI image version {}.{}", version >> 16, version & 0xffff),
            ));
        }
        let need = (PRE_HEADER_SIZE + u64::from(MIN_HEADER_SIZE_V1)) as usize;
        if buf.len() < need {
            return Err(Error::corrupt(
                path,
                None,
                format!("VDI header truncated: {} of {need} bytes", buf.len()),
            ));
        }
        let header_size = u32_at(buf, 0x48);
        if header_size < MIN_HEADER_SIZE_V1 {
            return Err(Error::corrupt(
                path,
                Some(0x48),
                format!("VDI header size {header_size:#x} is smaller than {MIN_HEADER_SIZE_V1:#x}"),
            ));
        }
        let plus_len = (PRE_HEADER_SIZE + u64::from(HEADER_SIZE_V1_PLUS)) as usize;
        let lchs = (header_size >= HEADER_SIZE_V1_PLUS && buf.len() >= plus_len)
            .then(|| geometry_at(buf, 0x1c8));
        Ok(Header {
            text,
            version,
            header_size,
            image_type: u32_at(buf, 0x4c),
            flags: u32_at(buf, 0x50),
            description: c_string(&buf[0x54..0x54 + COMMENT_SIZE]),
            offset_bmap: u64::from(u32_at(buf, 0x154)),
            offset_data: u64::from(u32_at(buf, 0x158)),
            legacy_geometry: geometry_at(buf, 0x15c),
            disk_size: u64_at(buf, 0x170),
            block_size: u32_at(buf, 0x178),
            block_extra: u32_at(buf, 0x17c),
            blocks_in_image: u32_at(buf, 0x180),
            blocks_allocated: u32_at(buf, BLOCKS_ALLOCATED_V1),
            uuid_image: uuid_at(buf, 0x188),
            uuid_modify: uuid_at(buf, 0x198),
            uuid_link: uuid_at(buf, 0x1a8),
            uuid_parent_modify: uuid_at(buf, 0x1b8),
            lchs_geometry: lchs,
        })
    }

    fn parse_v0(buf: &[u8], path: &Path, text: String) -> Result<Header> {
        let end = PRE_HEADER_SIZE + HEADER_SIZE_V0;
        if (buf.len() as u64) < end {
            return Err(Error::corrupt(
                path,
                None,
                format!("VDI 0 header truncated: {} of {end} bytes", buf.len()),
            ));
        }
        let blocks = u32_at(buf, 0x16c);
        Ok(Header {
            text,
            version: VERSION_0,
            header_size: 0,
            image_type: u32_at(buf, 0x48),
            flags: u32_at(buf, 0x4c),
            description: c_string(&buf[0x50..0x50 + COMMENT_SIZE]),
            offset_bmap: end,
            // Cannot overflow: a u32 count times 4 plus a small constant.
            offset_data: end + u64::from(blocks) * 4,
            legacy_geometry: geometry_at(buf, 0x150),
            disk_size: u64_at(buf, 0x160),
            block_size: u32_at(buf, 0x168),
            block_extra: 0,
            blocks_in_image: blocks,
            blocks_allocated: u32_at(buf, 0x170),
            uuid_image: uuid_at(buf, 0x174),
            uuid_modify: uuid_at(buf, 0x184),
            uuid_link: uuid_at(buf, 0x194),
            uuid_parent_modify: Uuid::default(),
            lchs_geometry: None,
        })
    }

    /// Whether this is the version-0 layout.
    pub fn is_v0(&self) -> bool {
        self.version == VERSION_0
    }

    /// Bytes each allocated block occupies in the file: extra data then the block.
    pub fn slot_size(&self) -> u64 {
        u64::from(self.block_size) + u64::from(self.block_extra)
    }

    /// Guest size as QEMU sees it: `disk_size` rounded up to a sector (`vdi_open`).
    pub fn virtual_size(&self) -> u64 {
        // Saturates for an unvalidated header; validation bounds disk_size far below 2^64.
        self.disk_size
            .checked_next_multiple_of(SECTOR_SIZE)
            .unwrap_or(u64::MAX - (SECTOR_SIZE - 1))
    }

    /// Checks every field against the format's rules and vdisk's limits, given the file length.
    pub fn validate(&self, path: &Path, file_len: u64) -> Result<()> {
        let bad = |off: u64, what: String| Err(Error::corrupt(path, Some(off), what));
        match self.image_type {
            TYPE_DYNAMIC | TYPE_STATIC => {}
            TYPE_UNDO | TYPE_DIFF => {
                return Err(Error::unsupported(
                    path,
                    format!(
                        "differencing VDI image (type {}); vdisk reads base images only",
                        self.image_type
                    ),
                ))
            }
            t => return bad(0x4c, format!("unknown VDI image type {t}")),
        }
        if !self.uuid_link.is_null() || !self.uuid_parent_modify.is_null() {
            return Err(Error::unsupported(
                path,
                "VDI image with a non-NULL link or parent UUID (differencing image)",
            ));
        }
        let bs = u64::from(self.block_size);
        if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
            return bad(
                0x178,
                format!("VDI block size {bs} is not a power of two between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE}"),
            );
        }
        let extra = u64::from(self.block_extra);
        if extra != 0 && (!extra.is_power_of_two() || extra > MAX_BLOCK_EXTRA) {
            return bad(
                0x17c,
                format!(
                    "VDI block extra size {extra} is not a power of two up to {MAX_BLOCK_EXTRA}"
                ),
            );
        }
        if self.disk_size > MAX_DISK_SIZE {
            // QEMU's vdi_open, with its message.
            return Err(Error::unsupported(
                path,
                format!(
                    "VDI image size (size is {:#x}, max supported is {MAX_DISK_SIZE:#x})",
                    self.disk_size
                ),
            ));
        }
        if u64::from(self.blocks_in_image) > MAX_BLOCKS {
            return Err(Error::limit(
                path,
                "VDI blocks in image",
                self.blocks_in_image.into(),
                MAX_BLOCKS,
            ));
        }
        let room = u64::from(self.blocks_in_image) * bs;
        if self.disk_size > room {
            return bad(
                0x170,
                format!(
                    "VDI disk size {} is larger than the block map covers ({room} bytes)",
                    self.disk_size
                ),
            );
        }
        if !self.is_v0() {
            if self.legacy_geometry.sector_size as u64 != SECTOR_SIZE {
                return Err(Error::unsupported(
                    path,
                    format!(
                        "VDI sector size {} (only {SECTOR_SIZE} is supported)",
                        self.legacy_geometry.sector_size
                    ),
                ));
            }
            if self.offset_bmap % SECTOR_SIZE != 0 || self.offset_data % SECTOR_SIZE != 0 {
                return Err(Error::unsupported(
                    path,
                    format!(
                        "VDI image with unaligned block map offset {:#x} or data offset {:#x}",
                        self.offset_bmap, self.offset_data
                    ),
                ));
            }
            let header_end = PRE_HEADER_SIZE + u64::from(self.header_size);
            if self.offset_bmap < header_end {
                return bad(
                    0x154,
                    format!(
                        "VDI block map offset {:#x} overlaps the header (ends at {header_end:#x})",
                        self.offset_bmap
                    ),
                );
            }
        }
        let bmap_end = self.offset_bmap + u64::from(self.blocks_in_image) * 4;
        if self.offset_data < bmap_end {
            return bad(
                0x158,
                format!(
                    "VDI data offset {:#x} overlaps the block map (ends at {bmap_end:#x})",
                    self.offset_data
                ),
            );
        }
        if bmap_end > file_len {
            return bad(
                self.offset_bmap,
                format!("VDI block map ends at {bmap_end:#x}, past the end of the file ({file_len:#x} bytes)"),
            );
        }
        Ok(())
    }

    /// Writes this header's version-1.1 fields into `buf` (at least [`PARSE_LEN`] bytes), leaving the
    /// bytes no field covers untouched, so that an existing header can be updated in place.
    pub fn write_v1(&self, buf: &mut [u8]) -> Result<()> {
        if buf.len() < PARSE_LEN || self.is_v0() {
            return Err(Error::Other(
                "VDI header serialization needs a version 1 header and 512 bytes".into(),
            ));
        }
        let off32 = |v: u64, what: &str| {
            u32::try_from(v)
                .map_err(|_| Error::invalid(format!("VDI {what} {v:#x} does not fit in 32 bits")))
        };
        let mut text = [0u8; TEXT_SIZE];
        let t = self.text.as_bytes();
        let n = t.len().min(TEXT_SIZE - 1);
        text[..n].copy_from_slice(&t[..n]);
        buf[..TEXT_SIZE].copy_from_slice(&text);
        let mut put32 = |off: usize, v: u32| buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
        put32(0x40, SIGNATURE);
        put32(0x44, self.version);
        put32(0x48, self.header_size);
        put32(0x4c, self.image_type);
        put32(0x50, self.flags);
        put32(0x154, off32(self.offset_bmap, "block map offset")?);
        put32(0x158, off32(self.offset_data, "data offset")?);
        put32(0x15c, self.legacy_geometry.cylinders);
        put32(0x160, self.legacy_geometry.heads);
        put32(0x164, self.legacy_geometry.sectors);
        put32(0x168, self.legacy_geometry.sector_size);
        put32(0x178, self.block_size);
        put32(0x17c, self.block_extra);
        put32(0x180, self.blocks_in_image);
        put32(BLOCKS_ALLOCATED_V1, self.blocks_allocated);
        if let Some(g) = self.lchs_geometry {
            put32(0x1c8, g.cylinders);
            put32(0x1cc, g.heads);
            put32(0x1d0, g.sectors);
            put32(0x1d4, g.sector_size);
        }
        let mut desc = [0u8; COMMENT_SIZE];
        let d = self.description.as_bytes();
        let n = d.len().min(COMMENT_SIZE - 1);
        desc[..n].copy_from_slice(&d[..n]);
        buf[0x54..0x54 + COMMENT_SIZE].copy_from_slice(&desc);
        buf[0x170..0x178].copy_from_slice(&self.disk_size.to_le_bytes());
        buf[0x188..0x198].copy_from_slice(&self.uuid_image.0);
        buf[0x198..0x1a8].copy_from_slice(&self.uuid_modify.0);
        buf[0x1a8..0x1b8].copy_from_slice(&self.uuid_link.0);
        buf[0x1b8..0x1c8].copy_from_slice(&self.uuid_parent_modify.0);
        Ok(())
    }
}

#[cfg(test)]
#[path = "header_tests.rs"]
mod tests;
