//! vdisk-part: the partition table inside a disk image, read through any vdisk reader (so a
//! qcow2, VMDK, VDI, VHD or VHDX image needs no conversion): the MBR ("dos" label) with its
//! extended partition's chain of logical partitions, and the GUID Partition Table (UEFI 2.10
//! chapter 5) with its protective MBR, header and entry checksums, and backup header. What it
//! finds is what `sfdisk --json` reports for the same disk as a raw file.

pub mod crc32;
pub mod gpt;
pub mod limits;
pub mod mbr;
pub mod names;
pub mod report;

use vdisk_core::{ImageReader, Result};

/// The kind of partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// The MBR partition table (sfdisk's "dos" label).
    Dos,
    /// The GUID Partition Table.
    Gpt,
}

impl Scheme {
    /// sfdisk's label name.
    pub fn label(self) -> &'static str {
        match self {
            Scheme::Dos => "dos",
            Scheme::Gpt => "gpt",
        }
    }
}

/// One partition, in 512-byte sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Its number: the GPT entry's index from 1; MBR primary slots 1-4, logical partitions from 5.
    pub number: u32,
    pub start: u64,
    pub sectors: u64,
    /// The type: an MBR type byte as sfdisk prints it ("83"), or a GPT type GUID in capitals.
    pub type_id: String,
    /// GPT: the partition's unique GUID.
    pub uuid: Option<String>,
    /// GPT: its name (UTF-16 in the entry).
    pub name: Option<String>,
    /// MBR: the boot flag (0x80).
    pub bootable: bool,
    /// GPT: the attribute bits sfdisk names ("RequiredPartition LegacyBIOSBootable GUID:60").
    pub attrs: Option<String>,
}

/// What the first sectors of a disk hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    pub scheme: Scheme,
    /// The disk identifier: the MBR's 32-bit signature as `0x%08x`, or the GPT disk GUID.
    pub id: String,
    /// GPT: the first and last sector partitions may use.
    pub first_lba: Option<u64>,
    pub last_lba: Option<u64>,
    /// GPT: where the header used was read (1 for the primary) and where its other copy is.
    pub header_lba: Option<u64>,
    pub alternate_lba: Option<u64>,
    /// GPT: whether the primary header or its entries were damaged and the backup was used.
    pub used_backup: bool,
    /// GPT: how many entries the array has room for (128 as most tools make it).
    pub entries: Option<u32>,
    pub partitions: Vec<Partition>,
}

/// Reads the partition table of the disk `r` presents (its first sectors, and for GPT the
/// entries and possibly the backup header at the end). `Ok(None)` when there is none: no MBR
/// signature. A GPT whose headers are both damaged is an error, as is an extended partition's
/// chain that leaves the disk.
pub fn read(r: &dyn ImageReader) -> Result<Option<PartitionTable>> {
    let size = r.virtual_size();
    if size < 2 * limits::SECTOR_SIZE {
        return Ok(None);
    }
    let mut sector0 = [0u8; 512];
    r.read_at(&mut sector0, 0)?;
    let Some(mut m) = mbr::parse_sector(&sector0) else {
        return Ok(None);
    };
    if m.protective_entry().is_some() {
        m.fix_protective_size(size / limits::SECTOR_SIZE);
        if let Some(t) = gpt::read(r, &m)? {
            return Ok(Some(t));
        }
    }
    mbr::read(r, &m).map(Some)
}
