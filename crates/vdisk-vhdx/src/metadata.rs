//! The metadata region (spec 2.6): its table, parsed from the 64 KiB block qemu reads (no I/O), and
//! the system items read from the file, as QEMU's `vhdx_parse_metadata` does: "metadata"
//! signature, at most 2047 entries, each known item at most once, unknown required items refused
//! (ENOTSUP), all five required items present and no parent locator (ENOTSUP), `has_parent`
//! refused, block size a power of two from 1 MiB to 256 MiB, logical sector size 512 only.
//! Item offsets and lengths are not checked against the region: qemu reads each item's first
//! bytes wherever its offset points (zeros past the end of the file).

use crate::guid::{self, Guid};
use crate::header::{le16, le32, le64};
use crate::limits::{
    LOGICAL_SECTOR_SIZE, MAX_BLOCK_SIZE, MAX_METADATA_ENTRIES, METADATA_ENTRY_SIZE,
    METADATA_REQUIRED, METADATA_SIGNATURE, METADATA_TABLE_SIZE, MIN_BLOCK_SIZE, PARAMS_HAS_PARENT,
    PARAMS_LEAVE_BLOCKS_ALLOCATED, SECTORS_PER_CHUNK,
};
use crate::pread::pread;
use crate::Refusal;
use vdisk_core::{Result, Storage};

/// One metadata table entry (spec 2.6.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetadataEntry {
    pub guid: Guid,
    /// Offset of the item from the start of the metadata region.
    pub offset: u32,
    pub length: u32,
    /// IsUser (1), IsVirtualDisk (2), IsRequired (4).
    pub flags: u32,
}

/// The entries of the items qemu reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataTable {
    pub file_parameters: MetadataEntry,
    pub virtual_disk_size: MetadataEntry,
    pub page83: MetadataEntry,
    pub logical_sector_size: MetadataEntry,
    pub physical_sector_size: MetadataEntry,
    /// How many entries the table has.
    pub entry_count: u16,
}

/// Parses the metadata table from the 64 KiB at the start of the metadata region.
pub fn parse_table(block: &[u8]) -> Result<MetadataTable, Refusal> {
    let bad = |m: String| Refusal::Invalid(format!("metadata table: {m}"));
    if block.get(..8) != Some(&METADATA_SIGNATURE[..]) {
        return Err(bad("no \"metadata\" signature".into()));
    }
    let count = le16(block, 10);
    if u64::from(count) > MAX_METADATA_ENTRIES {
        return Err(bad(format!(
            "{count} entries, more than the limit of {MAX_METADATA_ENTRIES}"
        )));
    }
    let mut t = MetadataTable {
        entry_count: count,
        ..Default::default()
    };
    let known = [
        guid::FILE_PARAMETERS,
        guid::VIRTUAL_DISK_SIZE,
        guid::PAGE83,
        guid::LOGICAL_SECTOR_SIZE,
        guid::PHYSICAL_SECTOR_SIZE,
        guid::PARENT_LOCATOR,
    ];
    let mut seen = [false; 6];
    for i in 0..usize::from(count) {
        let at = METADATA_ENTRY_SIZE * (i + 1);
        let e = MetadataEntry {
            guid: Guid::read(block, at),
            offset: le32(block, at + 16),
            length: le32(block, at + 20),
            flags: le32(block, at + 24),
        };
        let Some(k) = known.iter().position(|g| *g == e.guid) else {
            if e.flags & METADATA_REQUIRED != 0 {
                return Err(Refusal::Unsupported(format!(
                    "required metadata item {} (metadata table entry {i})",
                    e.guid
                )));
            }
            continue;
        };
        if std::mem::replace(&mut seen[k], true) {
            return Err(bad(format!("item {} appears twice", e.guid)));
        }
        match k {
            0 => t.file_parameters = e,
            1 => t.virtual_disk_size = e,
            2 => t.page83 = e,
            3 => t.logical_sector_size = e,
            4 => t.physical_sector_size = e,
            _ => {}
        }
    }
    let names = [
        "File Parameters",
        "Virtual Disk Size",
        "Page 83 Data",
        "Logical Sector Size",
        "Physical Sector Size",
    ];
    if let Some(k) = seen[..5].iter().position(|s| !s) {
        return Err(Refusal::Unsupported(format!(
            "metadata without the required {} item",
            names[k]
        )));
    }
    if seen[5] {
        return Err(Refusal::Unsupported(
            "parent locator metadata item (differencing VHDX images are not supported by qemu)"
                .into(),
        ));
    }
    Ok(t)
}

/// The system metadata of an image qemu opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub table: MetadataTable,
    /// Bytes of guest data per payload block.
    pub block_size: u32,
    /// The File Parameters flags word (bit 0 LeaveBlocksAllocated, bit 1 HasParent).
    pub parameter_flags: u32,
    /// The Virtual Disk Size item as stored (qemu uses it rounded down to 512-byte sectors).
    pub virtual_disk_size: u64,
    pub logical_sector_size: u32,
    /// Stored for the guest's benefit; qemu does not check or use it.
    pub physical_sector_size: u32,
    /// The Page 83 item (the disk's SCSI identity), when it could be read.
    pub page83: Option<Guid>,
    /// Payload blocks per sector bitmap block (spec 2.5: 2^23 * 512 / block size).
    pub chunk_ratio: u64,
}

impl Metadata {
    /// LeaveBlocksAllocated: the image was made fixed (spec 2.6.2.1).
    pub fn leave_blocks_allocated(&self) -> bool {
        self.parameter_flags & PARAMS_LEAVE_BLOCKS_ALLOCATED != 0
    }
}

/// Reads `n` bytes of an item at `offset` from the start of the region at `region_offset`.
fn item<const N: usize>(storage: &dyn Storage, region_offset: u64, offset: u32) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    // qemu adds the two in uint64_t; an impossible sum fails its read as an overflow fails ours.
    pread(
        storage,
        &mut b,
        region_offset.wrapping_add(u64::from(offset)),
    )?;
    Ok(b)
}

/// Reads the metadata table and the items at `region_offset`. The outer `Result` carries I/O
/// errors, the inner one qemu's refusals.
pub fn read(storage: &dyn Storage, region_offset: u64) -> Result<Result<Metadata, Refusal>> {
    let mut block = vec![0u8; METADATA_TABLE_SIZE];
    pread(storage, &mut block, region_offset)?;
    let table = match parse_table(&block) {
        Ok(t) => t,
        Err(r) => return Ok(Err(r)),
    };
    let params: [u8; 8] = item(storage, region_offset, table.file_parameters.offset)?;
    let (block_size, parameter_flags) = (le32(&params, 0), le32(&params, 4));
    if parameter_flags & PARAMS_HAS_PARENT != 0 {
        // Without a parent locator (its presence was refused above) qemu calls this invalid.
        return Ok(Err(Refusal::Invalid(
            "File Parameters say the image has a parent, but there is no parent locator".into(),
        )));
    }
    let size: [u8; 8] = item(storage, region_offset, table.virtual_disk_size.offset)?;
    let logical: [u8; 4] = item(storage, region_offset, table.logical_sector_size.offset)?;
    let physical: [u8; 4] = item(storage, region_offset, table.physical_sector_size.offset)?;
    let page83 = item::<16>(storage, region_offset, table.page83.offset)
        .ok()
        .map(Guid);
    let logical_sector_size = le32(&logical, 0);
    if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Ok(Err(Refusal::Invalid(format!(
            "block size {block_size} is outside {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}"
        ))));
    }
    if logical_sector_size != LOGICAL_SECTOR_SIZE {
        return Ok(Err(Refusal::Unsupported(format!(
            "logical sector size {logical_sector_size} (qemu reads only 512)"
        ))));
    }
    if !block_size.is_power_of_two() {
        return Ok(Err(Refusal::Invalid(format!(
            "block size {block_size} is not a power of two"
        ))));
    }
    Ok(Ok(Metadata {
        table,
        block_size,
        parameter_flags,
        virtual_disk_size: le64(&size, 0),
        logical_sector_size,
        physical_sector_size: le32(&physical, 0),
        page83,
        chunk_ratio: SECTORS_PER_CHUNK * u64::from(LOGICAL_SECTOR_SIZE) / u64::from(block_size),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(items: &[(Guid, u32)]) -> Vec<u8> {
        let mut b = vec![0u8; METADATA_TABLE_SIZE];
        b[..8].copy_from_slice(METADATA_SIGNATURE);
        b[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
        for (i, (g, flags)) in items.iter().enumerate() {
            let at = 32 * (i + 1);
            b[at..at + 16].copy_from_slice(&g.0);
            b[at + 24..at + 28].copy_from_slice(&flags.to_le_bytes());
        }
        b
    }

    const ALL: [(Guid, u32); 5] = [
        (guid::FILE_PARAMETERS, 4),
        (guid::VIRTUAL_DISK_SIZE, 6),
        (guid::PAGE83, 6),
        (guid::LOGICAL_SECTOR_SIZE, 6),
        (guid::PHYSICAL_SECTOR_SIZE, 6),
    ];

    #[test]
    fn all_five_items_are_needed() {
        assert!(parse_table(&table(&ALL)).is_ok());
        assert!(matches!(
            parse_table(&table(&ALL[..4])),
            Err(Refusal::Unsupported(_))
        ));
        let mut dup = ALL.to_vec();
        dup.push(ALL[2]);
        assert!(matches!(
            parse_table(&table(&dup)),
            Err(Refusal::Invalid(_))
        ));
    }

    #[test]
    fn unknown_items_refused_only_when_required() {
        let odd = Guid([9; 16]);
        let mut v = ALL.to_vec();
        v.push((odd, 2));
        assert!(parse_table(&table(&v)).is_ok());
        v.push((odd, 4));
        assert!(matches!(
            parse_table(&table(&v)),
            Err(Refusal::Unsupported(_))
        ));
        let mut p = ALL.to_vec();
        p.push((guid::PARENT_LOCATOR, 6));
        assert!(matches!(
            parse_table(&table(&p)),
            Err(Refusal::Unsupported(_))
        ));
    }

    #[test]
    fn entry_count_is_bounded() {
        let mut b = table(&ALL);
        b[10..12].copy_from_slice(&2048u16.to_le_bytes());
        assert!(matches!(parse_table(&b), Err(Refusal::Invalid(_))));
        assert!(parse_table(&b[..8]).is_err());
    }
}
