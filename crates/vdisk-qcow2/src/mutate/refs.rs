//! What an L1 table references and keeping the COPIED flags true (qcow2.txt "Cluster mapping":
//! bit 63 of L1/L2 entries is set exactly when the refcount is 1). References are counted the way
//! `check` (and QEMU's qcow2_check_refcounts) counts them: once per path from an L1 table, so an
//! L2 table shared by a snapshot and the active L1 holds 2, and so do the data clusters it maps.

use super::txn::Txn;
use crate::tables::{L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED};
use std::collections::HashMap;
use vdisk_core::Result;

/// Adds `sign` to the L2 tables and data clusters reachable from `l1` (not the L1 itself).
pub(crate) fn add_l1_refs(t: &mut Txn, l1: &[u64], sign: i128) -> Result<()> {
    let bits = t.img.cluster_bits();
    for e in l1 {
        let l2 = e & L1E_OFFSET_MASK;
        if l2 == 0 {
            continue;
        }
        t.add(l2 >> bits, sign)?;
        let table = t.img.read_l2(l2)?;
        add_l2_refs(t, &table, sign)?;
    }
    Ok(())
}

/// Adds `sign` to the data clusters mapped by the entries of one L2 table.
pub(crate) fn add_l2_refs(t: &mut Txn, table: &[u64], sign: i128) -> Result<()> {
    let g = t.img.r.geo;
    if g.data_file {
        // Data clusters live in the external data file, which has no reference counts.
        return Ok(());
    }
    let bits = g.cluster_bits;
    for e in table.chunks_exact(g.words_per_entry()) {
        let entry = e[0];
        if entry & OFLAG_COMPRESSED != 0 {
            let (c, size) = g.compressed(entry & !OFLAG_COPIED);
            t.add_range(c, size, sign)?;
        } else if entry & L2E_OFFSET_MASK != 0 {
            t.add((entry & L2E_OFFSET_MASK) >> bits, sign)?;
        }
    }
    Ok(())
}

/// `table` with every COPIED flag matching the new refcounts.
pub(crate) fn with_copied(t: &mut Txn, table: &[u64]) -> Result<Vec<u64>> {
    let g = t.img.r.geo;
    if g.data_file {
        // With an external data file COPIED marks an allocated entry (even at host offset 0).
        return Ok(table.to_vec());
    }
    let mut out = table.to_vec();
    for e in out.chunks_exact_mut(g.words_per_entry()) {
        let entry = e[0];
        if entry & OFLAG_COMPRESSED != 0 {
            e[0] = entry & !OFLAG_COPIED;
            continue;
        }
        let host = entry & L2E_OFFSET_MASK;
        if host == 0 {
            continue;
        }
        let one = t.get(host >> g.cluster_bits)? == 1;
        e[0] = if one {
            entry | OFLAG_COPIED
        } else {
            entry & !OFLAG_COPIED
        };
    }
    Ok(out)
}

/// The active L1 and L2 entries whose COPIED flag the refcounts in `t` say is wrong, as QEMU's
/// check_oflag_copied lists them after the refcounts were fixed (without its "ERROR " or
/// "Repairing " prefix; the refcount is the new one), and how many compressed entries carry the
/// flag they must never have (a finding QEMU's check makes apart, and fixes only with `-r all`;
/// [`with_copied`] clears it).
pub(crate) fn copied_mismatches(t: &mut Txn, l1: &[u64]) -> Result<(Vec<String>, u64)> {
    let bits = t.img.cluster_bits();
    let mut lines = Vec::new();
    let mut compressed = 0u64;
    for (i, e) in l1.iter().enumerate() {
        let l2 = e & L1E_OFFSET_MASK;
        if l2 == 0 {
            continue;
        }
        let rc = t.get(l2 >> bits)?;
        if (rc == 1) != (e & OFLAG_COPIED != 0) {
            lines.push(format!(
                "OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={e:x} refcount={rc}"
            ));
        }
        let table = t.img.read_l2(l2)?;
        let want = with_copied(t, &table)?;
        let g = t.img.r.geo;
        for (old, new) in table
            .chunks_exact(g.words_per_entry())
            .zip(want.chunks_exact(g.words_per_entry()))
        {
            let entry = old[0];
            if entry == new[0] {
                continue;
            }
            if entry & OFLAG_COMPRESSED != 0 {
                compressed += 1;
            } else {
                let rc = t.get((entry & L2E_OFFSET_MASK) >> bits)?;
                lines.push(format!(
                    "OFLAG_COPIED data cluster: l2_entry={entry:x} refcount={rc}"
                ));
            }
        }
    }
    Ok((lines, compressed))
}

/// The active L1 entries after making every COPIED flag true: an L2 table whose entries change is
/// copied to a new cluster (never rewritten in place); `fresh` holds L2 tables already changed in
/// memory (by L1 index), which are always written anew. Call after every other refcount change.
pub(crate) fn rewrite_active(
    t: &mut Txn,
    l1: &[u64],
    fresh: &HashMap<usize, Vec<u64>>,
) -> Result<Vec<u64>> {
    let bits = t.img.cluster_bits();
    let mut out = l1.to_vec();
    for (i, e) in l1.iter().enumerate() {
        let l2 = e & L1E_OFFSET_MASK;
        let (cur, is_fresh) = match fresh.get(&i) {
            Some(tbl) => (tbl.clone(), true),
            None if l2 == 0 => continue,
            None => (t.img.read_l2(l2)?, false),
        };
        let want = with_copied(t, &cur)?;
        if is_fresh || want != cur {
            if l2 != 0 {
                t.add(l2 >> bits, -1)?;
            }
            out[i] = if want.iter().all(|w| *w == 0) {
                0
            } else {
                t.put_table(&want)? | OFLAG_COPIED
            };
        } else {
            let one = t.get(l2 >> bits)? == 1;
            out[i] = if one { l2 | OFLAG_COPIED } else { l2 };
        }
    }
    Ok(out)
}

/// Makes `new` the active L1 table: written to new clusters (and the old one's freed) when it
/// differs from the stored one. Returns its offset.
pub(crate) fn replace_active_l1(t: &mut Txn, new: &[u64]) -> Result<u64> {
    let h = t.img.r.header.clone();
    if new == t.img.r.l1.as_slice() && new.len() == h.l1_size as usize {
        return Ok(h.l1_table_offset);
    }
    t.add_range(h.l1_table_offset, u64::from(h.l1_size) * 8, -1)?;
    if new.is_empty() {
        return Ok(h.l1_table_offset);
    }
    t.put_table(new)
}

/// The L2 table of guest cluster `c` as it is being changed, in `fresh` (by L1 index): loaded from
/// the image (`l1` is the active L1 as stored) or started empty on first use; and where `c`'s entry
/// starts in it.
pub(crate) fn table_of<'a>(
    t: &Txn,
    l1: &[u64],
    fresh: &'a mut HashMap<usize, Vec<u64>>,
    c: u64,
) -> Result<(&'a mut Vec<u64>, usize)> {
    let g = t.img.r.geo;
    let (per_l2, words) = (g.l2_entries(), g.words_per_entry());
    let i = (c / per_l2) as usize;
    let j = (c % per_l2) as usize * words;
    let l2 = l1.get(i).map_or(0, |e| e & L1E_OFFSET_MASK);
    let table = match fresh.entry(i) {
        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) if l2 == 0 => {
            v.insert(vec![0u64; (per_l2 as usize) * words])
        }
        std::collections::hash_map::Entry::Vacant(v) => v.insert(t.img.read_l2(l2)?),
    };
    Ok((table, j))
}
