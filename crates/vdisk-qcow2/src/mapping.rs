//! Guest offset -> host mapping for the reader: the L1 entry, the (cached) L2 table, and runs of
//! (sub)clusters of one kind with contiguous host offsets within one L2 table (qcow2.txt "Cluster
//! mapping", "Extended L2 Entries"), with QEMU's checks on alignment and pre-v3 zero flags.

use super::{read_u64_table, Qcow2Reader};
use crate::tables::{continues, L2Table, SubType, L1E_OFFSET_MASK, L2E_OFFSET_MASK};
use std::sync::Arc;
use vdisk_core::{Error, Result};

impl Qcow2Reader {
    pub(crate) fn l2_table(&self, off: u64) -> Result<L2Table> {
        if let Some(t) = self.cache.get(off) {
            return Ok(t);
        }
        if off >= self.file_len {
            return Err(Error::corrupt(
                &self.path,
                Some(off),
                "L2 table is past the end of the file",
            ));
        }
        let words = (self.header.cluster_size() / 8) as usize;
        let t: L2Table = Arc::from(read_u64_table(
            self.storage.as_ref(),
            off,
            words,
            "L2 table",
        )?);
        self.cache.insert(off, Arc::clone(&t));
        Ok(t)
    }

    /// The mapping of guest `pos`: its type (host offsets at `pos` itself) and how many bytes from
    /// `pos` (at most `max`, within one L2 table) share it contiguously.
    pub(crate) fn lookup(&self, pos: u64, max: u64) -> Result<(SubType, u64)> {
        let g = self.geo;
        let cs = 1u64 << g.cluster_bits;
        let entries = g.l2_entries();
        let cluster = pos >> g.cluster_bits;
        let (l1_idx, mut l2_idx) = (cluster / entries, cluster % entries);
        let table_end = (l1_idx + 1) * entries * cs;
        self.l1_entry_in_file(l1_idx)?;
        let l1e = usize::try_from(l1_idx)
            .ok()
            .and_then(|i| self.l1.get(i))
            .copied()
            .unwrap_or(0);
        let l2_off = l1e & L1E_OFFSET_MASK;
        if l2_off == 0 {
            // Unallocated up to the next L1 entry that has an L2 table (or the end of the L1).
            let span = entries * cs;
            let mut end = table_end;
            let mut i = l1_idx as usize + 1;
            while end - pos < max {
                match self.l1.get(i) {
                    Some(e) if e & L1E_OFFSET_MASK != 0 => break,
                    // An entry past the end of the file is refused when it is reached.
                    Some(_) if self.l1_entry_in_file(i as u64).is_err() => break,
                    Some(_) => end = end.saturating_add(span),
                    None => end = u64::MAX,
                }
                i += 1;
            }
            return Ok((SubType::UnallocPlain, (end - pos).min(max)));
        }
        if l2_off % cs != 0 {
            return Err(Error::corrupt(
                &self.path,
                Some(l2_off),
                format!("L2 table offset {l2_off:#x} unaligned (L1 index: {l1_idx:#x})"),
            ));
        }
        let table = self.l2_table(l2_off)?;
        let ub = g.unit_bits();
        let unit = 1u64 << ub;
        let mut sc = ((pos & (cs - 1)) >> ub) as u32;
        let first = self.unit_type(&table, l2_off, l2_idx, sc)?;
        let in_unit = pos & (unit - 1);
        if let SubType::Compressed { .. } = first {
            return Ok((first, (cs - (pos & (cs - 1))).min(max)));
        }
        let mut run = unit;
        while run - in_unit < max {
            sc += 1;
            if sc == 1 << (g.cluster_bits - ub) {
                sc = 0;
                l2_idx += 1;
                if l2_idx >= entries {
                    break;
                }
            }
            let next = self.unit_type(&table, l2_off, l2_idx, sc)?;
            if !continues(first, run, next) {
                break;
            }
            run += unit;
        }
        let shifted = match first {
            SubType::Normal(h) => SubType::Normal(h + in_unit),
            SubType::ZeroAlloc(h) => SubType::ZeroAlloc(h + in_unit),
            SubType::UnallocAlloc(h) => SubType::UnallocAlloc(h + in_unit),
            other => other,
        };
        Ok((shifted, (run - in_unit).min(max)))
    }

    pub(crate) fn unit_type(
        &self,
        table: &L2Table,
        l2_off: u64,
        idx: u64,
        sc: u32,
    ) -> Result<SubType> {
        let w = self.geo.words_per_entry();
        let i = idx as usize * w;
        let entry = table.get(i).copied().unwrap_or(0);
        let bitmap = if w == 2 {
            table.get(i + 1).copied().unwrap_or(0)
        } else {
            0
        };
        let t = self.geo.classify(entry, bitmap, sc);
        let at = Some(l2_off + i as u64 * 8);
        match t {
            SubType::Invalid => Err(Error::corrupt(
                &self.path,
                at,
                format!("Invalid cluster entry found (L2 index: {idx:#x})"),
            )),
            SubType::Compressed { .. } => Ok(t),
            SubType::ZeroPlain | SubType::ZeroAlloc(_) if self.header.version < 3 => Err(
                Error::corrupt(&self.path, at, "Zero cluster entry found in pre-v3 image"),
            ),
            _ if entry & L2E_OFFSET_MASK & ((1u64 << self.geo.cluster_bits) - 1) != 0 => {
                Err(Error::corrupt(
                    &self.path,
                    at,
                    format!(
                        "Cluster allocation offset {:#x} unaligned (L2 index: {idx:#x})",
                        entry & L2E_OFFSET_MASK
                    ),
                ))
            }
            _ => Ok(t),
        }
    }
}
