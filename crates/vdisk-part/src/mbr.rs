//! The MBR partition table (sfdisk's "dos" label): the disk signature at byte 440, four primary
//! entries at 446 (boot flag, type byte, first sector and sector count, little-endian), the
//! 0x55AA signature at 510; an extended partition (type 0x05, 0x0F or 0x85) holds a chain of
//! extended boot records, each describing one logical partition (relative to that record) and a
//! link to the next (relative to the extended partition's start).

use crate::limits::{MAX_PARTITION_NUMBER, SECTOR_SIZE};
use crate::{Partition, PartitionTable, Scheme};
use vdisk_core::{Error, ImageReader, Result};

/// One 16-byte entry of a partition table sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Whether any of its 16 bytes is set (libfdisk lists such an entry even of type 0).
    pub cleared: bool,
    pub boot: u8,
    pub kind: u8,
    pub start: u32,
    pub sectors: u32,
}

impl Entry {
    /// An entry of zeros (libfdisk's `clear_partition`).
    fn zeroed() -> Entry {
        Entry {
            cleared: true,
            boot: 0,
            kind: 0,
            start: 0,
            sectors: 0,
        }
    }

    fn parse(b: &[u8]) -> Entry {
        let le32 = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        Entry {
            cleared: b[..16].iter().all(|x| *x == 0),
            boot: b[0],
            kind: b[4],
            start: le32(8),
            sectors: le32(12),
        }
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
    /// The entry that makes this the protective MBR of a GPT disk, as libfdisk's `valid_pmbr`
    /// finds it: the first of type 0xEE that starts at sector 1.
    pub fn protective_entry(&self) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.kind == 0xee && e.start == 1)
    }

    /// A hybrid MBR: besides the protective entry, one of another type.
    pub fn is_hybrid(&self) -> bool {
        self.entries.iter().any(|e| e.kind != 0xee && e.kind != 0)
    }

    /// What libfdisk's `valid_pmbr` does to a purely protective MBR whose entry does not cover the
    /// disk of `disk_sectors` (as its `uint32_t` arithmetic computes it): it "corrects" the
    /// entry's size in memory, so that a disk whose GPT then proves invalid lists it so.
    pub fn fix_protective_size(&mut self, disk_sectors: u64) {
        let Some(i) = self.protective_entry() else {
            return;
        };
        if self.is_hybrid() {
            return;
        }
        let e = &mut self.entries[i];
        let last = u64::from(disk_sectors as u32).wrapping_sub(1);
        if u64::from(e.sectors) != last && e.sectors != u32::MAX {
            e.sectors = disk_sectors.saturating_sub(1).min(u64::from(u32::MAX)) as u32;
        }
    }
}

/// The entries of a partition table sector, or `None` without the 0x55AA signature.
pub fn parse_sector(b: &[u8; 512]) -> Option<Sector> {
    if b[510] != 0x55 || b[511] != 0xaa {
        return None;
    }
    Some(entries_of(b))
}

/// The entries of a sector whatever its signature (libfdisk reads an extended boot record
/// without one, and only warns).
fn entries_of(b: &[u8; 512]) -> Sector {
    let e = |i: usize| Entry::parse(&b[446 + 16 * i..446 + 16 * (i + 1)]);
    Sector {
        disk_id: u32::from_le_bytes([b[440], b[441], b[442], b[443]]),
        entries: [e(0), e(1), e(2), e(3)],
    }
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
        // sfdisk lists every primary entry that is not all zeros, even one of type 0.
        if e.cleared {
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

/// Follows the chain of extended boot records from the extended partition at sector `base` as
/// libfdisk's `read_extended` does: in each record the first entry with sectors that is not an
/// extended one is the logical partition and the first extended one the link (else entries 0
/// and 1, whichever the other is not); the link is followed while it is of an extended type, up
/// to partition number [`MAX_PARTITION_NUMBER`] (a chain that loops lists its partitions again
/// until then, as sfdisk lists them) or a record past the end of the disk; a record without the
/// 0x55AA signature is read all the same. When the chain ended by itself (not at the limit or
/// the disk's end), a last record holding nothing is dropped, and partitions of no sectors are
/// removed (numbers closing up) when there is more than one logical partition or the first has a
/// type.
fn logical(r: &dyn ImageReader, base: u64, parts: &mut Vec<Partition>) -> Result<()> {
    let disk_sectors = r.virtual_size() / SECTOR_SIZE;
    let mut at = base;
    // (absolute start, data entry, link entry's type) of each logical partition.
    let mut found: Vec<(u64, Entry, u8)> = Vec::new();
    let mut last_empty = false;
    // Whether the chain ended early, at the partition limit or at a record libfdisk cannot read:
    // its `read_extended` then returns before tidying up.
    let mut early = true;
    while 4 + (found.len() as u32) < MAX_PARTITION_NUMBER {
        if at >= disk_sectors {
            // An extended boot record past the end of the disk: the chain ends there.
            break;
        }
        let mut b = [0u8; 512];
        r.read_at(&mut b, at * SECTOR_SIZE)?;
        let e = entries_of(&b).entries;
        let (mut data, mut link) = (None, None);
        for (i, x) in e.iter().enumerate() {
            if x.sectors == 0 {
                continue;
            }
            if x.is_extended() {
                link = link.or(Some(i));
            } else if x.kind != 0 {
                data = data.or(Some(i));
            }
        }
        let data = data.unwrap_or(if link == Some(0) { 1 } else { 0 });
        let link = link.unwrap_or(if data != 0 { 0 } else { 1 });
        let start = at
            .checked_add(u64::from(e[data].start))
            .ok_or_else(|| Error::invalid("a logical partition's start overflows"))?;
        found.push((start, e[data], e[link].kind));
        last_empty = e[data].cleared && e[link].cleared;
        if !e[link].is_extended() {
            early = false;
            break;
        }
        at = base
            .checked_add(u64::from(e[link].start))
            .ok_or_else(|| Error::invalid("an extended boot record's link overflows"))?;
    }
    if !early {
        if last_empty {
            found.pop();
        }
        // libfdisk's "omitting empty partition": its dos_delete_partition on each in turn.
        while let Some(i) = found.iter().position(|(_, e, _)| e.sectors == 0) {
            let first_has_type = found.first().is_some_and(|(_, e, _)| e.kind != 0);
            if !(found.len() > 1 || first_has_type) {
                break;
            }
            if found.len() == 1 {
                // The only logical partition: its entry cleared, not removed.
                found[0].1 = Entry::zeroed();
                continue;
            }
            if i == 0 {
                // The next one moves into the first record: its start is rewritten relative to
                // the extended partition (its place on the disk stays).
                let (abs, e, _) = &mut found[1];
                e.start = abs.wrapping_sub(base) as u32;
                e.cleared = e.cleared && e.start == 0;
            }
            found.remove(i);
        }
    }
    // Listed unless its entry is all zeros, as sfdisk lists them.
    for (k, (start, e, _)) in found.iter().enumerate() {
        if !e.cleared {
            parts.push(partition(5 + k as u32, *start, e));
        }
    }
    Ok(())
}
