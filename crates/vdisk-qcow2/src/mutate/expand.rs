//! Expanding zero clusters for a downgrade to version 2 (`qemu-img amend -o compat=0.10`; QEMU's
//! qcow2_expand_zero_clusters), which has no zero flag (qcow2.txt "Standard Cluster Descriptor",
//! bit 0 is version 3 only): in the active L1 table and in every snapshot's, a zero cluster
//! without a host cluster becomes unallocated when there is no backing file, and every other zero
//! cluster (one with a host cluster, or any over a backing file) becomes a data cluster of zeros.
//!
//! Shadow-paged like every change ([`Txn`]): the zero data clusters are new clusters past the end
//! of the file (holes, reading zeros), and the L2 tables, L1 tables and snapshot table that change
//! are written anew. QEMU instead writes zeros into the host cluster a zero entry keeps, in place:
//! when that cluster is still the data of a snapshot (a zero write without unmapping on a cluster
//! shared with a snapshot keeps it), QEMU 10 overwrites the snapshot's data and leaves the image
//! with an OFLAG_COPIED error; vdisk leaves that cluster to the snapshot. An L2 table shared by
//! several L1 tables is expanded once per active/snapshot side: the active state gets its own copy.

use super::refs::{add_l2_refs, replace_active_l1, rewrite_active, with_copied};
use super::snapshot::put_snapshot_table;
use super::txn::Txn;
use crate::header::Header;
use crate::tables::{L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO};
use std::collections::{BTreeMap, HashMap};
use vdisk_core::Result;

fn is_zero_entry(e: u64) -> bool {
    e & OFLAG_COMPRESSED == 0 && e & OFLAG_ZERO != 0
}

/// Whether entry `e` needs a new data cluster when expanded.
fn needs_cluster(e: u64, backing: bool) -> bool {
    is_zero_entry(e) && (backing || e & L2E_OFFSET_MASK != 0)
}

/// `table` with its zero entries expanded, taking new clusters from `next`.
fn expand(table: &[u64], backing: bool, next: &mut impl FnMut() -> u64) -> Vec<u64> {
    table
        .iter()
        .map(|&e| {
            if !is_zero_entry(e) {
                e
            } else if needs_cluster(e, backing) {
                next()
            } else {
                0
            }
        })
        .collect()
}

/// Expands every zero cluster of the image in `t`, updating `nh` (active L1, snapshot table).
/// Returns false (and changes nothing) when there is none.
pub(crate) fn expand_zero_clusters(t: &mut Txn, nh: &mut Header) -> Result<bool> {
    let bits = t.img.cluster_bits();
    let backing = t.img.r.header.backing_file.is_some();
    let l1 = t.img.r.l1.clone();
    let mut snaps = t.img.r.snapshots.clone();
    let mut sn_l1s = Vec::with_capacity(snaps.len());
    for sn in &snaps {
        sn_l1s.push(t.img.read_l1(sn.l1_table_offset, sn.l1_size)?);
    }
    // The L2 tables with zero entries, and how many new clusters each side needs.
    let mut tables: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut seen: BTreeMap<u64, bool> = BTreeMap::new();
    for e in l1.iter().chain(sn_l1s.iter().flatten()) {
        let off = e & L1E_OFFSET_MASK;
        if off == 0 || seen.contains_key(&off) {
            continue;
        }
        let table = t.img.read_l2(off)?;
        let has = table.iter().any(|e| is_zero_entry(*e));
        seen.insert(off, has);
        if has {
            tables.insert(off, table);
        }
    }
    if tables.is_empty() {
        return Ok(false);
    }
    let count = |off: u64| {
        tables.get(&off).map_or(0, |tb| {
            tb.iter().filter(|e| needs_cluster(**e, backing)).count() as u64
        })
    };
    let active_needs: u64 = l1.iter().map(|e| count(e & L1E_OFFSET_MASK)).sum();
    let mut sn_offs: Vec<u64> = sn_l1s
        .iter()
        .flatten()
        .map(|e| e & L1E_OFFSET_MASK)
        .filter(|o| tables.contains_key(o))
        .collect();
    sn_offs.sort_unstable();
    sn_offs.dedup();
    let total = active_needs + sn_offs.iter().map(|o| count(*o)).sum::<u64>();
    // The zero clusters: one run past the end of the file, counted per reference below.
    let mut next_cluster = 0u64;
    let mut run_end = 0u64;
    if total > 0 {
        let run = t.alloc_past_end(total, 0)?;
        for k in 0..total {
            t.set((run >> bits) + k, 0);
        }
        next_cluster = run;
        run_end = run + (total << bits);
    }
    let mut next = || {
        let c = next_cluster;
        next_cluster += 1 << bits;
        c
    };

    // The active side: changed tables go through rewrite_active (new clusters, COPIED flags).
    let mut fresh: HashMap<usize, Vec<u64>> = HashMap::new();
    let mut expanded: Vec<(usize, Vec<u64>, Vec<u64>)> = Vec::new();
    for (i, e) in l1.iter().enumerate() {
        if let Some(old) = tables.get(&(e & L1E_OFFSET_MASK)) {
            expanded.push((i, old.clone(), expand(old, backing, &mut next)));
        }
    }
    // Snapshot sides: one new table per old one, shared by the snapshots that shared it.
    let mut sn_new: BTreeMap<u64, (Vec<u64>, u64)> = BTreeMap::new();
    for off in &sn_offs {
        if let Some(old) = tables.get(off) {
            let new = expand(old, backing, &mut next);
            sn_new.insert(*off, (new, 0));
        }
    }
    for (i, old, new) in expanded {
        add_l2_refs(t, &old, -1)?;
        add_l2_refs(t, &new, 1)?;
        fresh.insert(i, new);
    }
    let mut new_sn_l1s = sn_l1s.clone();
    for sl1 in new_sn_l1s.iter_mut() {
        for e in sl1.iter_mut() {
            let off = *e & L1E_OFFSET_MASK;
            let Some((new, new_off)) = sn_new.get_mut(&off) else {
                continue;
            };
            let old = tables.get(&off).cloned().unwrap_or_default();
            t.add(off >> bits, -1)?;
            add_l2_refs(t, &old, -1)?;
            let new = new.clone();
            add_l2_refs(t, &new, 1)?;
            if *new_off == 0 {
                *new_off = t.alloc(1)?;
            } else {
                t.add(*new_off >> bits, 1)?;
            }
            *e = *new_off;
        }
    }
    if run_end > t.img.storage.len()? {
        t.img.storage.set_len(run_end)?;
    }
    let active = rewrite_active(t, &l1, &fresh)?;
    nh.l1_table_offset = replace_active_l1(t, &active)?;
    for (new, new_off) in sn_new.values() {
        if *new_off != 0 {
            let table = with_copied(t, new)?;
            t.write(
                *new_off,
                table.iter().flat_map(|x| x.to_be_bytes()).collect(),
            );
        }
    }
    for (k, sl1) in new_sn_l1s.iter_mut().enumerate() {
        if *sl1 == sn_l1s[k] {
            continue;
        }
        for e in sl1.iter_mut() {
            let off = *e & L1E_OFFSET_MASK;
            if off != 0 {
                let one = t.get(off >> bits)? == 1;
                *e = if one { off | OFLAG_COPIED } else { off };
            }
        }
        let sn = &mut snaps[k];
        t.add_range(sn.l1_table_offset, u64::from(sn.l1_size) * 8, -1)?;
        sn.l1_table_offset = t.put_table(sl1)?;
    }
    if snaps != t.img.r.snapshots {
        let (off, nb) = put_snapshot_table(t, &snaps)?;
        nh.snapshots_offset = off;
        nh.nb_snapshots = nb;
    }
    Ok(true)
}
