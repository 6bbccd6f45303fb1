//! Preallocation of the area a resize adds (`qemu-img resize --preallocation=metadata|falloc|full`,
//! QEMU's qcow2_co_truncate with PREALLOC_MODE_*): every guest cluster from the one holding the old
//! end up to the new end gets an L2 entry pointing at its own host cluster (qcow2.txt "Cluster
//! mapping", "Standard Cluster Descriptor"; with extended L2 entries the subcluster bitmap stays
//! 0, as QEMU leaves it). The data clusters are placed in one run past the end of the file, so they
//! read as zeros: `metadata` only extends the file over them (a hole), `falloc` reserves them with
//! `posix_fallocate`, `full` writes zeros. That happens before the transaction's header write, on
//! clusters the old state does not reference, so a crash leaves the old image (and a longer file).
//!
//! The cluster holding the old end (when the old size is not cluster-aligned) is kept in metadata
//! mode when the active state owns it alone as a plain data cluster, and otherwise moved into the
//! new run with its content copied, as QEMU's copy-on-write does. Over a backing file that reaches
//! into the new area, metadata mode marks the new clusters zero (allocated zero clusters, as
//! QEMU's zero write leaves them; with extended L2 the zero bits, while falloc and full make every
//! subcluster data) and the cluster holding the old end is always moved with zeros after the old
//! end; where it still read from the backing file, its head comes from the opened backing image.
//! (QEMU 10 leaves the subclusters of a compressed cluster holding the old end unallocated in
//! metadata mode, losing their data; vdisk keeps them.) With an external data file nothing is
//! allocated in the image: guest cluster `c` is mapped to offset `c * cluster_size` of the data
//! file ([`map_identity`]), which is extended as QEMU extends it. Where the layout differs from
//! QEMU's: the refcount structures are placed by the transaction, not right after the old end of
//! the file, so `qemu-img info`'s disk size and `map`'s host offsets differ.

use super::txn::Txn;
use crate::limits::MAX_PREALLOC_CLUSTERS;
use crate::tables::{L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_ZERO};
use crate::tables::{L2_BITMAP_ALL_ALLOC as ALL_ALLOC, L2_BITMAP_ALL_ZERO as ALL_ZERO};
use crate::writer::file::fallocate;
use crate::writer::Prealloc;
use std::collections::HashMap;
use std::fs::File;
use vdisk_core::{Error, ImageReader, Result};

/// Parses `--preallocation=MODE` as qemu-img does.
pub fn parse_prealloc(mode: &str) -> Result<Prealloc> {
    match mode {
        "off" => Ok(Prealloc::Off),
        "metadata" => Ok(Prealloc::Metadata),
        "falloc" => Ok(Prealloc::Falloc),
        "full" => Ok(Prealloc::Full),
        m => Err(Error::invalid(format!("Invalid preallocation mode '{m}'"))),
    }
}

/// What lies under the image: nothing, a backing file that ends before the old end, or one that
/// reaches past it (the added area must then read as zeros, not as the backing file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backing {
    None,
    Short,
    Zeroed,
}

/// The data run a preallocation allocated: host offset and length in bytes.
pub(crate) struct DataRun {
    pub offset: u64,
    pub len: u64,
}

/// Maps the guest clusters of `old_size..new_size` (from the one holding `old_size`) to new host
/// clusters, in `l1` (grown already) and `fresh` (changed L2 tables by L1 index), as QEMU's
/// preallocation does for `mode`. Returns the run of new data clusters; the content of the
/// cluster holding the old end is queued for its new place, with the bytes it still reads from
/// the backing file read from `reader` (the opened backing image) where it becomes data.
pub(crate) fn map_new_area(
    t: &mut Txn,
    l1: &[u64],
    fresh: &mut HashMap<usize, Vec<u64>>,
    (old_size, new_size): (u64, u64),
    mode: Prealloc,
    backing: Backing,
    reader: Option<&dyn ImageReader>,
) -> Result<Option<DataRun>> {
    let g = t.img.r.geo;
    let bits = g.cluster_bits;
    let cs = 1u64 << bits;
    let per_l2 = g.l2_entries();
    let words = g.words_per_entry();
    let first = old_size >> bits;
    let end = new_size.div_ceil(cs);
    if backing == Backing::Zeroed && mode == Prealloc::Metadata && t.img.r.header.version < 3 {
        // The new clusters would have to be zero clusters, which version 2 does not have.
        return Err(Error::Other(
            "Failed to zero out new clusters: Operation not supported".into(),
        ));
    }
    // Guest clusters that need a host cluster, and the entries (and bitmaps) they replace.
    let mut wanted: Vec<(u64, [u64; 2])> = Vec::new();
    for c in first..end {
        let (table, j) = super::refs::table_of(t, l1, fresh, c)?;
        let mut e = [0u64; 2];
        if let Some(w) = table.get(j..j + words) {
            e[..words].copy_from_slice(w);
        }
        let entry = e[0];
        let host = entry & L2E_OFFSET_MASK;
        // QEMU keeps a cluster it owns alone (metadata mode); falloc/full move every cluster
        // into the new run, and any other entry (unallocated, zero, compressed, shared) is
        // replaced by a new cluster carrying its content.
        let keep = mode == Prealloc::Metadata
            && backing != Backing::Zeroed
            && host != 0
            && entry & OFLAG_COMPRESSED == 0
            && (words == 2 || entry & OFLAG_ZERO == 0)
            && t.get(host >> bits)? == 1;
        if !keep {
            wanted.push((c, e));
        }
        if wanted.len() as u64 > MAX_PREALLOC_CLUSTERS {
            return Err(Error::limit(
                t.img.path(),
                "preallocated clusters",
                end - first,
                MAX_PREALLOC_CLUSTERS,
            ));
        }
    }
    // Tables that do not change are not rewritten.
    let changed: std::collections::HashSet<usize> =
        wanted.iter().map(|(c, _)| (c / per_l2) as usize).collect();
    fresh.retain(|i, _| changed.contains(i));
    if wanted.is_empty() {
        return Ok(None);
    }
    let n = wanted.len() as u64;
    // Room before the run for the tables this change writes (L2 tables, L1, refcount blocks and
    // table), so that the run ends the file as QEMU's does; an overestimate leaves free clusters.
    let per_block = t.img.per_block();
    let l1_clusters = (l1.len() as u64 * 8).div_ceil(cs);
    let rt_clusters = (t.img.reftable.len() as u64 * 8).div_ceil(cs);
    let slack = fresh.len() as u64 + l1_clusters + n / per_block + 3 + rt_clusters + 1;
    let run = t.alloc_past_end(n, slack)?;
    let zeroed = backing == Backing::Zeroed;
    for (k, (c, e)) in wanted.iter().enumerate() {
        let host = run + ((k as u64) << bits);
        let start = c << bits;
        let compressed = e[0] & OFLAG_COMPRESSED != 0;
        // Over a backing file that reaches into the new area, QEMU's metadata preallocation
        // leaves allocated zero clusters (its zero write keeps the allocation); falloc and full
        // make every subcluster data (extended L2), hiding the backing file.
        let zero = zeroed && mode == Prealloc::Metadata;
        let mut new = match (words, zero) {
            (1, true) => [host | OFLAG_ZERO, 0],
            (1, false) => [host, 0],
            (_, true) => [host, ALL_ZERO],
            (_, false) if zeroed => [host, ALL_ALLOC],
            _ => [host, 0],
        };
        if start < old_size {
            // The cluster holding the old end carries its content over (QEMU's copy-on-write of
            // the head), with the backing file's bytes where it still reads them and becomes data.
            // As a plain grow leaves it: zero bits after the old end, the unit holding it data.
            // (QEMU 10 drops a compressed cluster's data here; vdisk keeps it.)
            let before = if compressed { ALL_ALLOC } else { e[1] };
            let (part, grown) = super::grow::old_end_units(g, start, old_size, before);
            new[0] = host;
            new[1] = match words {
                1 => 0,
                _ if zero => grown,
                _ if zeroed || compressed => ALL_ALLOC,
                _ => e[1],
            };
            let fill = |u: u32| words == 1 || (zeroed && (!zero || Some(u) == part));
            let head = super::grow::head_bytes(t, *e, *c, old_size, &fill, reader)?;
            if zeroed {
                // QEMU writes the zeros after the old end as guest data: the whole cluster.
                t.write(host, head);
            } else {
                t.write_bytes(host, head);
            }
        }
        if mode == Prealloc::Metadata && !zero && *c == end - 1 && new_size % cs != 0 {
            // QEMU also writes the zeros past the new end of a last partial cluster (the
            // copy-on-write of the tail), so that cluster is data in the file.
            let at = new_size % cs;
            t.write_bytes(host + at, vec![0u8; (cs - at) as usize]);
        }
        // Drop the reference the replaced entry held.
        super::refs::add_l2_refs(t, &e[..words], -1)?;
        let i = (c / per_l2) as usize;
        let j = (c % per_l2) as usize * words;
        if let Some(slot) = fresh.get_mut(&i).and_then(|tb| tb.get_mut(j..j + words)) {
            slot.copy_from_slice(&new[..words]);
        }
    }
    Ok(Some(DataRun {
        offset: run,
        len: n << bits,
    }))
}

/// Makes the data run read as zeros in the file before the switch: extends the file over it
/// (`metadata`), reserves it (`falloc`, through `file` when given, else by writing zeros) or
/// writes zeros (`full`).
pub(crate) fn fill_run(t: &Txn, run: &DataRun, mode: Prealloc, file: Option<&File>) -> Result<()> {
    let s = t.img.storage.clone();
    let end = run.offset + run.len;
    match (mode, file) {
        (Prealloc::Falloc, Some(f)) => fallocate(f, t.img.path(), run.offset, run.len)?,
        (Prealloc::Falloc | Prealloc::Full, _) => {
            const CHUNK: u64 = 1 << 20;
            let zeros = vec![0u8; CHUNK.min(run.len) as usize];
            let mut at = run.offset;
            while at < end {
                let n = CHUNK.min(end - at) as usize;
                s.write_at(&zeros[..n], at)?;
                at += n as u64;
            }
        }
        _ => {}
    }
    if s.len()? < end {
        s.set_len(end)?;
    }
    Ok(())
}

/// With an external data file, guest cluster `c` lives at offset `c * cluster_size` of the data
/// file (qcow2.txt "External data file"): maps every guest cluster of `old_size..new_size` (from
/// the one holding `old_size`) that is not allocated yet to its place there, as QEMU's
/// preallocate_co does for such images. Nothing is allocated in the image file but L2 tables.
pub(crate) fn map_identity(
    t: &mut Txn,
    l1: &[u64],
    fresh: &mut HashMap<usize, Vec<u64>>,
    old_size: u64,
    new_size: u64,
) -> Result<()> {
    let g = t.img.r.geo;
    let bits = g.cluster_bits;
    let per_l2 = g.l2_entries();
    let words = g.words_per_entry();
    let first = old_size >> bits;
    let end = new_size.div_ceil(1 << bits);
    let tables = (end - first).div_ceil(per_l2) + 1;
    if tables > crate::limits::MAX_ZEROED_L2_TABLES {
        return Err(Error::limit(
            t.img.path(),
            "L2 tables mapped by a resize",
            tables,
            crate::limits::MAX_ZEROED_L2_TABLES,
        ));
    }
    for c in first..end {
        let (table, j) = super::refs::table_of(t, l1, fresh, c)?;
        if let Some(e) = table.get_mut(j) {
            let zero = words == 1 && *e & OFLAG_ZERO != 0;
            let allocated = *e & L2E_OFFSET_MASK != 0 || *e & crate::tables::OFLAG_COPIED != 0;
            if !allocated {
                // A zero cluster (a grow over a longer backing file made it) stays zero.
                *e = (c << bits) | crate::tables::OFLAG_COPIED | (*e & OFLAG_ZERO);
            } else if zero {
                *e = (c << bits) | crate::tables::OFLAG_COPIED;
            }
        }
    }
    Ok(())
}

/// Sets the external data file's length for a resize to `new_size`, as QEMU truncates it: to
/// exactly `new_size` for a plain resize (`exact`); with preallocation only when it is shorter,
/// to the end of the last cluster (`cs`), reserving or writing zeros over the added range in
/// `falloc` and `full` modes.
pub(crate) fn resize_data_file(
    data: &vdisk_core::FileStorage,
    new_size: u64,
    cs: u64,
    mode: Prealloc,
    exact: bool,
) -> Result<()> {
    use vdisk_core::Storage;
    let new_size = if exact {
        new_size
    } else {
        new_size.next_multiple_of(cs)
    };
    let len = data.len()?;
    if len < new_size {
        match mode {
            Prealloc::Falloc => fallocate(data.file(), data.path(), len, new_size - len)?,
            Prealloc::Full => {
                const CHUNK: u64 = 1 << 20;
                let zeros = vec![0u8; CHUNK.min(new_size - len) as usize];
                let mut at = len;
                while at < new_size {
                    let n = CHUNK.min(new_size - at) as usize;
                    data.write_at(&zeros[..n], at)?;
                    at += n as u64;
                }
            }
            _ => {}
        }
    }
    let len = data.len()?;
    if len < new_size || (exact && len != new_size) {
        data.set_len(new_size)?;
    }
    data.sync()
}
