//! The region table (spec 2.2.3), parsed from its 64 KiB block (no I/O) as QEMU's
//! `vhdx_open_region_tables` does: CRC-32C over the whole block, "regi" signature, at most 2047
//! entries, no entry overlapping the log or an earlier entry (`vhdx_region_check`), exactly one
//! BAT and one metadata region, and no unknown region marked required. Also the list of occupied
//! file ranges that qemu later checks payload blocks against.

use crate::crc32c;
use crate::guid::{self, Guid};
use crate::header::{le32, le64};
use crate::limits::{
    MAX_REGION_ENTRIES, REGION_ENTRY_SIZE, REGION_HEADER_SIZE, REGION_REQUIRED, REGION_SIGNATURE,
    REGION_TABLE_SIZE,
};
use crate::Refusal;

/// One region table entry (spec 2.2.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionEntry {
    pub guid: Guid,
    pub file_offset: u64,
    pub length: u32,
    pub required: bool,
}

/// The regions qemu found: the BAT, the metadata region, and every entry in table order.
#[derive(Debug, Clone)]
pub struct RegionTable {
    pub bat: RegionEntry,
    pub metadata: RegionEntry,
    pub entries: Vec<RegionEntry>,
}

/// File ranges that structures occupy (`s->regions` in qemu): the log, then each region. Ends are
/// computed with wrapping arithmetic, as qemu's `uint64_t` sums are.
#[derive(Debug, Clone, Default)]
pub struct Regions(Vec<(u64, u64)>);

impl Regions {
    /// Adds `start..start+length` (`vhdx_region_register`).
    pub fn register(&mut self, start: u64, length: u64) {
        self.0.push((start, start.wrapping_add(length)));
    }

    /// The first registered range (newest first, as qemu's list is walked) that
    /// `start..start+length` overlaps (`vhdx_region_check`), as its message.
    pub fn overlap(&self, start: u64, length: u64) -> Option<String> {
        let end = start.wrapping_add(length);
        self.0
            .iter()
            .rev()
            .find(|(s, e)| !(start >= *e || end <= *s))
            .map(|(s, e)| format!("VHDX region {start}-{end} overlaps with region {s}-{e}"))
    }

    /// The registered ranges, oldest first.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }
}

/// Parses the 64 KiB region table block, registering each entry in `regions`.
pub fn parse(block: &[u8], regions: &mut Regions) -> Result<RegionTable, Refusal> {
    let bad = |m: String| Refusal::Invalid(format!("region table: {m}"));
    if block.len() < REGION_TABLE_SIZE || !crc32c::is_valid(&block[..REGION_TABLE_SIZE], 4) {
        return Err(bad("bad CRC-32C".into()));
    }
    if block.get(..4) != Some(&REGION_SIGNATURE[..]) {
        return Err(bad("no \"regi\" signature".into()));
    }
    let count = le32(block, 8);
    if count > MAX_REGION_ENTRIES {
        return Err(bad(format!(
            "{count} entries, more than the limit of {MAX_REGION_ENTRIES}"
        )));
    }
    let (mut bat, mut metadata) = (None, None);
    let mut entries = Vec::new();
    for i in 0..count as usize {
        let at = REGION_HEADER_SIZE + i * REGION_ENTRY_SIZE;
        let e = RegionEntry {
            guid: Guid::read(block, at),
            file_offset: le64(block, at + 16),
            length: le32(block, at + 24),
            required: le32(block, at + 28) & REGION_REQUIRED != 0,
        };
        if let Some(m) = regions.overlap(e.file_offset, u64::from(e.length)) {
            return Err(bad(format!("entry {i}: {m}")));
        }
        regions.register(e.file_offset, u64::from(e.length));
        entries.push(e);
        let slot = if e.guid == guid::BAT {
            &mut bat
        } else if e.guid == guid::METADATA {
            &mut metadata
        } else {
            if e.required {
                return Err(Refusal::Unsupported(format!(
                    "required region {} (region table entry {i})",
                    e.guid
                )));
            }
            continue;
        };
        if slot.replace(e).is_some() {
            return Err(bad(format!("region {} appears twice", e.guid)));
        }
    }
    match (bat, metadata) {
        (Some(bat), Some(metadata)) => Ok(RegionTable {
            bat,
            metadata,
            entries,
        }),
        (None, _) => Err(bad("no BAT region".into())),
        (_, None) => Err(bad("no metadata region".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_follows_qemu_formula() {
        let mut r = Regions::default();
        r.register(1 << 20, 1 << 20);
        assert!(r.overlap(0, 1 << 20).is_none());
        assert!(r.overlap(2 << 20, 1 << 20).is_none());
        assert!(r.overlap((2 << 20) - 1, 10).is_some());
        // A zero-length range inside another overlaps it, as in qemu.
        let mut z = Regions::default();
        z.register(1 << 20, 0);
        assert!(z.overlap(0, 2 << 20).is_some());
        assert!(z.overlap(0, 1 << 20).is_none());
    }

    #[test]
    fn short_or_unsealed_table_is_refused() {
        let mut r = Regions::default();
        assert!(matches!(
            parse(&[0u8; 100], &mut r),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            parse(&vec![0u8; REGION_TABLE_SIZE], &mut r),
            Err(Refusal::Invalid(_))
        ));
    }
}
