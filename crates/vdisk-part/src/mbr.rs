//! The MBR partition table (sfdisk's "dos" label): the disk signature at byte 440, four primary
//! entries at 446 (boot flag, type byte, first sector and sector count, little-endian), the
//! 0x55AA signature at 510; an extended partition (type 0x05, 0x0F or 0x85) holds a chain of
//! extended boot records, each describing one logical partition (relative to that record) and a
//! link to the next (relative to the extended partition's start).

use crate::limits::{MAX_LOGICAL_PARTITIONS, SECTOR_SIZE};
use crate::{Partition, PartitionTable, Scheme};
use std::collections::HashSet;
use vdisk_core::{Error, ImageReader, Result};

/// One 16-byte entry of a partition table sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub boot: u8,
    pub kind: u8,
    pub start: u32,
    pub sectors: u32,
}

impl Entry {
    fn parse(b: &[u8]) -> Entry {
        let le32 = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        Entry {
            boot: b[0],
            kind: b[4],
            start: le32(8),
            sectors: le32(12),
        }
    }

    fn is_used(&self) -> bool {
        self.kind != 0
    }

    /// An extended partition's type byte (DOS, Windows LBA, Linux).
    pub fn is_extended(&self) -> bool {
        matches!(self.kind, 0x05 | 0x0f | 0x85)
    }
}

/// A sector holding a partition table: its signature and four entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sector {
    pub disk_id: u32,
    pub entries: [Entry; 4],
}

impl Sector {
    /// Whether this is the protective MBR of a GPT disk: an entry of type 0xEE.
    pub fn is_protective(&self) -> bool {
        self.entries.iter().any(|e| e.kind == 0xee)
    }
}

/// The entries of a partition table sector, or `None` without the 0x55AA signature.
pub fn parse_sector(b: &[u8; 512]) -> Option<Sector> {
    if b[510] != 0x55 || b[511] != 0xaa {
        return None;
    }
    let e = |i: usize| Entry::parse(&b[446 + 16 * i..446 + 16 * (i + 1)]);
    Some(Sector {
        disk_id: u32::from_le_bytes([b[440], b[441], b[442], b[443]]),
        entries: [e(0), e(1), e(2), e(3)],
    })
}

fn partition(number: u32, start: u64, e: &Entry) -> Partition {
    Partition {
        number,
        start,
        sectors: u64::from(e.sectors),
        type_id: format!("{:x}", e.kind),
        uuid: None,
        name: None,
        bootable: e.boot == 0x80,
        attrs: None,
    }
}

/// The primary partitions of `m`, then the logical ones of its (first) extended partition.
pub fn read(r: &dyn ImageReader, m: &Sector) -> Result<PartitionTable> {
    let mut parts = Vec::new();
    let mut extended = None;
    for (i, e) in m.entries.iter().enumerate() {
        if !e.is_used() {
            continue;
        }
        parts.push(partition(i as u32 + 1, u64::from(e.start), e));
        if e.is_extended() && extended.is_none() && e.start != 0 {
            extended = Some(u64::from(e.start));
        }
    }
    if let Some(base) = extended {
        logical(r, base, &mut parts)?;
    }
    Ok(PartitionTable {
        scheme: Scheme::Dos,
        id: format!("0x{:08x}", m.disk_id),
        first_lba: None,
        last_lba: None,
        header_lba: None,
        alternate_lba: None,
        used_backup: false,
        entries: None,
        partitions: parts,
    })
}

/// Follows the chain of extended boot records from the extended partition at sector `base`.
fn logical(r: &dyn ImageReader, base: u64, parts: &mut Vec<Partition>) -> Result<()> {
    let disk_sectors = r.virtual_size() / SECTOR_SIZE;
    let mut at = base;
    let mut seen = HashSet::new();
    let mut number = 5u32;
    while seen.insert(at) {
        if seen.len() > MAX_LOGICAL_PARTITIONS {
            return Err(Error::invalid(format!(
                "the extended partition's chain holds more than {MAX_LOGICAL_PARTITIONS} \
                 logical partitions"
            )));
        }
        if at >= disk_sectors {
            // An extended boot record past the end of the disk: the chain ends there.
            break;
        }
        let mut b = [0u8; 512];
        r.read_at(&mut b, at * SECTOR_SIZE)?;
        let Some(ebr) = parse_sector(&b) else {
            break;
        };
        let [data, link, ..] = ebr.entries;
        if data.is_used() && data.sectors != 0 {
            let start = at.checked_add(u64::from(data.start)).ok_or_else(|| {
                Error::invalid("a logical partition's start overflows".to_string())
            })?;
            parts.push(partition(number, start, &data));
            number += 1;
        }
        if !link.is_extended() || link.start == 0 {
            break;
        }
        at = base
            .checked_add(u64::from(link.start))
            .ok_or_else(|| Error::invalid("an extended boot record's link overflows"))?;
    }
    Ok(())
}
