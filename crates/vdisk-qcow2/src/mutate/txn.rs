//! A crash-safe change of a qcow2 image, by shadow paging: every table a change touches (L1, L2,
//! snapshot table, refcount blocks, refcount table) is written to clusters that the old state does
//! not use, and one final write of the header's fixed fields (bytes 0..104, within the first
//! sector) switches from the old state to the new one. Until then the old state is intact and the
//! new clusters have refcount 0 in it (qcow2.txt "Host cluster management": unreferenced clusters
//! with refcount 0 are free, not leaked); afterwards the new refcounts (computed here, including
//! the self-describing refcount blocks and table, by fixpoint) describe exactly the new state.
//!
//! Clusters past the end of the file hold nothing of the old state: unless the old state
//! references one (a finding of the check, which lists them), a refcount stored for it can only
//! be a leak, which QEMU's check does not see. They are free to use whatever refcount is stored
//! for them, so that a refcount block claiming every cluster cannot push new tables far past the
//! end of the file (a crash before the switch then leaves them as leaks, which `check -r leaks`
//! fixes).

use super::image::RwImage;
use crate::header::{Header, V2_HEADER_LEN};
use crate::limits;
use std::collections::{BTreeMap, BTreeSet};
use vdisk_core::writer::durable_commit;
use vdisk_core::{Error, Result, Storage};

/// One pending change.
pub(crate) struct Txn<'a> {
    pub img: &'a mut RwImage,
    /// New reference counts of the clusters the change touches.
    rc: BTreeMap<u64, i128>,
    /// Clusters allocated by this change.
    taken: BTreeSet<u64>,
    /// Data to write to allocated clusters, by offset.
    writes: BTreeMap<u64, Vec<u8>>,
    /// Where the search for free clusters continues.
    scan: u64,
    /// Whether the switch rewrites the whole header (version, length, extensions) rather than
    /// its fixed fields.
    whole_header: bool,
    /// The first cluster wholly past the end of the file: from there on a cluster the old state
    /// does not reference is free whatever its stored refcount (see the module comment).
    past_end: u64,
}

/// Writes entry `index` of a refcount block of width 2^`order` bits.
pub(crate) fn set_block_entry(block: &mut [u8], order: u32, index: u64, v: u64) {
    let bits = 1u64 << order;
    if bits < 8 {
        let per_byte = 8 / bits;
        let shift = (index % per_byte) * bits;
        let mask = (((1u64 << bits) - 1) << shift) as u8;
        if let Some(b) = block.get_mut((index / per_byte) as usize) {
            *b = (*b & !mask) | (((v << shift) as u8) & mask);
        }
        return;
    }
    let w = (bits / 8) as usize;
    let at = index as usize * w;
    if let Some(s) = block.get_mut(at..at + w) {
        for (k, b) in s.iter_mut().enumerate() {
            *b = (v >> (8 * (w - 1 - k))) as u8;
        }
    }
}

impl<'a> Txn<'a> {
    pub fn new(img: &'a mut RwImage) -> Self {
        let past_end = img.r.file_len.div_ceil(img.cs().max(1));
        Txn {
            past_end,
            img,
            rc: BTreeMap::new(),
            taken: BTreeSet::new(),
            writes: BTreeMap::new(),
            scan: 1,
            whole_header: false,
        }
    }

    fn bits(&self) -> u32 {
        self.img.cluster_bits()
    }

    /// The reference count of cluster `c` in the new state so far.
    pub fn get(&mut self, c: u64) -> Result<i128> {
        match self.rc.get(&c) {
            Some(v) => Ok(*v),
            None => Ok(i128::from(self.img.stored_refcount(c)?)),
        }
    }

    /// Adds `d` to the reference count of cluster `c`.
    pub fn add(&mut self, c: u64, d: i128) -> Result<()> {
        if c >= limits::MAX_CHECK_CLUSTERS {
            return Err(Error::limit(
                self.img.path(),
                "host cluster index",
                c,
                limits::MAX_CHECK_CLUSTERS,
            ));
        }
        let v = self.get(c)? + d;
        self.rc.insert(c, v);
        Ok(())
    }

    /// Sets the reference count of cluster `c`.
    pub fn set(&mut self, c: u64, v: u64) {
        self.rc.insert(c, i128::from(v));
    }

    /// Adds `d` to every cluster overlapping `offset..offset+bytes` (as check counts them).
    pub fn add_range(&mut self, offset: u64, bytes: u64, d: i128) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        let last = offset
            .checked_add(bytes - 1)
            .ok_or_else(|| Error::corrupt(self.img.path(), Some(offset), "range overflows"))?;
        for c in (offset >> self.bits())..=(last >> self.bits()) {
            self.add(c, d)?;
        }
        Ok(())
    }

    fn is_free(&mut self, c: u64) -> Result<bool> {
        if c == 0 || self.taken.contains(&c) || self.rc.get(&c).is_some_and(|v| *v != 0) {
            return Ok(false);
        }
        if usize::try_from(c)
            .ok()
            .and_then(|i| self.img.refs.get(i))
            .is_some_and(|r| *r != 0)
        {
            return Ok(false);
        }
        // A region the check saw reach a cluster or more past the end of the file is not
        // counted, even its clusters inside the file: they are not free.
        if self.img.referenced_past_end(c) {
            return Ok(false);
        }
        if c >= self.past_end {
            return Ok(true);
        }
        // A cluster this change sets to 0 that the old state does not reference (a leak it
        // fixes) is free too: writing it before the switch cannot harm the old state. Reusing
        // it keeps a repair from growing the file (and so from bringing a region the check saw
        // past the end of the file inside it).
        Ok(self.rc.get(&c) == Some(&0) || self.img.stored_refcount(c)? == 0)
    }

    /// Allocates `n` contiguous clusters unused in both the old and the new state; returns the
    /// offset of the first.
    pub fn alloc(&mut self, n: u64) -> Result<u64> {
        let n = n.max(1);
        let mut start = self.scan;
        let mut c = start;
        while c - start < n {
            if c >= limits::MAX_CHECK_CLUSTERS {
                return Err(Error::limit(
                    self.img.path(),
                    "host cluster index",
                    c,
                    limits::MAX_CHECK_CLUSTERS,
                ));
            }
            if !self.is_free(c)? {
                start = c + 1;
            }
            c += 1;
        }
        if n == 1 || start == self.scan {
            self.scan = start + n;
        }
        for k in start..start + n {
            self.taken.insert(k);
            self.rc.insert(k, 1);
        }
        Ok(start << self.bits())
    }

    /// Allocates `n` contiguous clusters at least `gap` clusters past the end of the file (so
    /// that, never written, they read as zeros); returns the offset of the first.
    pub fn alloc_past_end(&mut self, n: u64, gap: u64) -> Result<u64> {
        let end = self.img.storage.len()?.div_ceil(self.img.cs()).max(1) + gap;
        let saved = self.scan;
        self.scan = self.scan.max(end);
        let r = self.alloc(n);
        self.scan = saved;
        r
    }

    /// Makes the switch write the whole new header (with its extensions and backing file name)
    /// in one write over the old one, as a version change needs.
    pub fn rewrite_whole_header(&mut self) {
        self.whole_header = true;
    }

    /// Gives back `n` clusters at `offset` taken by [`Txn::alloc`] and not written.
    pub fn unalloc(&mut self, offset: u64, n: u64) {
        let first = offset >> self.bits();
        for k in first..first + n.max(1) {
            self.taken.remove(&k);
            self.rc.remove(&k);
        }
        self.scan = self.scan.min(first);
    }

    /// Queues `data` for the clusters at `offset` (padded with zeros to whole clusters).
    pub fn write(&mut self, offset: u64, mut data: Vec<u8>) {
        let cs = self.img.cs() as usize;
        data.resize(data.len().next_multiple_of(cs).max(cs), 0);
        self.writes.insert(offset, data);
    }

    /// Queues `data` for `offset` as it is (no padding): part of an allocated cluster.
    pub fn write_bytes(&mut self, offset: u64, data: Vec<u8>) {
        self.writes.insert(offset, data);
    }

    /// Allocates clusters for a table of big-endian entries and queues it; returns its offset.
    pub fn put_table(&mut self, entries: &[u64]) -> Result<u64> {
        let bytes = entries.len() as u64 * 8;
        let off = self.alloc(bytes.div_ceil(self.img.cs()))?;
        self.write(off, entries.iter().flat_map(|e| e.to_be_bytes()).collect());
        Ok(off)
    }

    fn out_of_range(&self, c: u64, v: i128) -> Error {
        Error::Other(format!(
            "{}: reference count of cluster {c} would be {v} (the image allows 0 to {}): refcount overflow",
            self.img.path().display(),
            self.img.max_refcount()
        ))
    }

    /// Writes everything, then `header` (its fixed fields), with syncs in between. With
    /// `truncate`, the file is cut after the last used cluster once the new state is in place.
    pub fn commit(mut self, header: &Header, truncate: bool) -> Result<()> {
        let old = self.img.r.header.clone();
        let bits = self.bits();
        let cs = self.img.cs();
        let per = self.img.per_block();
        // The old refcount table is no longer referenced, unless the check did not count it
        // (a table reaching a cluster or more past the end of the file, which a repair meets).
        if !self
            .img
            .referenced_past_end(old.refcount_table_offset >> bits)
        {
            self.add_range(
                old.refcount_table_offset,
                u64::from(old.refcount_table_clusters) * cs,
                -1,
            )?;
        }
        let mut blocks: BTreeMap<u64, u64> = BTreeMap::new();
        let mut table: Option<(u64, u64)> = None;
        loop {
            let touched: BTreeSet<u64> = self
                .rc
                .keys()
                .map(|c| c / per)
                .filter(|b| !blocks.contains_key(b))
                .collect();
            if !touched.is_empty() {
                for bi in touched {
                    let oldb = self.img.block_offset(bi);
                    if oldb != 0 {
                        self.add(oldb >> bits, -1)?;
                    }
                    let off = self.alloc(1)?;
                    blocks.insert(bi, off);
                }
                continue;
            }
            let max_bi = blocks.keys().next_back().copied().unwrap_or(0);
            let entries = (self.img.reftable.len() as u64).max(max_bi + 1);
            let clusters = (entries * 8).div_ceil(cs);
            if clusters * cs > limits::MAX_REFTABLE_BYTES {
                return Err(Error::limit(
                    self.img.path(),
                    "refcount table size",
                    clusters * cs,
                    limits::MAX_REFTABLE_BYTES,
                ));
            }
            match table {
                Some((_, have)) if have >= clusters => break,
                Some((off, have)) => {
                    for k in 0..have {
                        self.rc.remove(&((off >> bits) + k));
                        self.taken.remove(&((off >> bits) + k));
                    }
                }
                None => {}
            }
            let off = self.alloc(clusters)?;
            table = Some((off, clusters));
        }
        let (rt_off, rt_clusters) =
            table.ok_or_else(|| Error::Other("no refcount table".into()))?;
        let max = self.img.max_refcount();
        let order = self.img.r.header.refcount_order;
        let mut reftable = self.img.reftable.clone();
        reftable.resize((rt_clusters * cs / 8) as usize, 0);
        for (&bi, &off) in &blocks {
            let mut b = self.img.block(bi)?.to_vec();
            let entries: Vec<(u64, i128)> = self
                .rc
                .range(bi * per..(bi + 1) * per)
                .map(|(c, v)| (*c, *v))
                .collect();
            for (c, v) in entries {
                if v < 0 || v > i128::from(max) {
                    return Err(self.out_of_range(c, v));
                }
                set_block_entry(&mut b, order, c % per, v as u64);
            }
            self.writes.insert(off, b);
            if let Some(e) = reftable.get_mut(bi as usize) {
                *e = off;
            }
        }
        self.write(
            rt_off,
            reftable.iter().flat_map(|e| e.to_be_bytes()).collect(),
        );

        let s = self.img.storage.clone();
        for (off, data) in &self.writes {
            s.write_at(data, *off)?;
        }
        // Without a durable commit (`-t unsafe`) the order is left to the page cache, as
        // qemu's cache=unsafe ignores flushes.
        let sync = |s: &dyn Storage| if durable_commit() { s.sync() } else { Ok(()) };
        sync(s.as_ref())?;
        let mut h = header.clone();
        h.refcount_table_offset = rt_off;
        h.refcount_table_clusters = rt_clusters as u32;
        if self.whole_header {
            super::amend::rewrite_header(s.as_ref(), &old, &h)?;
        } else {
            write_fixed_header(s.as_ref(), &h)?;
            sync(s.as_ref())?;
        }
        if truncate {
            let file_clusters = s.len()?.div_ceil(cs);
            let mut last = file_clusters;
            while last > 1 && self.get(last - 1)? == 0 {
                last -= 1;
            }
            if last < file_clusters {
                s.set_len(last << bits)?;
                sync(s.as_ref())?;
            }
        }
        Ok(())
    }
}

/// Writes the fixed fields of `h` that a change may alter (size, L1, refcount table and width,
/// snapshot table, feature bits) into the header as stored, in one write of the fixed part.
pub(crate) fn write_fixed_header(s: &dyn Storage, h: &Header) -> Result<()> {
    let len = if h.version >= 3 {
        104
    } else {
        V2_HEADER_LEN as usize
    };
    let mut b = vec![0u8; len];
    s.read_exact_at(&mut b, 0)?;
    let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(24, &h.size.to_be_bytes());
    put(36, &h.l1_size.to_be_bytes());
    put(40, &h.l1_table_offset.to_be_bytes());
    put(48, &h.refcount_table_offset.to_be_bytes());
    put(56, &h.refcount_table_clusters.to_be_bytes());
    put(60, &h.nb_snapshots.to_be_bytes());
    put(64, &h.snapshots_offset.to_be_bytes());
    if h.version >= 3 {
        put(72, &h.incompatible_features.to_be_bytes());
        put(80, &h.compatible_features.to_be_bytes());
        put(88, &h.autoclear_features.to_be_bytes());
        put(96, &h.refcount_order.to_be_bytes());
    }
    s.write_at(&b, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refcount::block_entry;

    #[test]
    fn block_entries_round_trip_at_every_width() {
        for order in 0..=6u32 {
            let mut b = vec![0u8; 64];
            let max = if order == 6 {
                u64::MAX
            } else {
                (1u64 << (1 << order)) - 1
            };
            for i in 0..8u64 {
                set_block_entry(&mut b, order, i, max.min(i * 3 + 1));
            }
            set_block_entry(&mut b, order, 3, 0);
            for i in 0..8u64 {
                let want = if i == 3 { 0 } else { max.min(i * 3 + 1) };
                assert_eq!(block_entry(&b, order, i), want, "order {order} entry {i}");
            }
            // Past the block: ignored, no panic.
            set_block_entry(&mut b, order, 1 << 20, 1);
        }
    }
}
