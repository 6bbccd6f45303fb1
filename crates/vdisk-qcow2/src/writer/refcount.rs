//! Reference counts for a qcow2 file written front to back (qcow2.txt "Host cluster management").
//!
//! Host clusters are allocated in increasing order. As in QEMU's own images, the refcount block
//! for a range of clusters is reserved when the first cluster of that range is allocated (it then
//! counts itself), and written once the allocation frontier has left the range, so only one block
//! is held in memory, plus one table entry per block. The refcount table is reserved up front at
//! its largest possible size (holes in the file), so nothing needs to be appended at the end.
//! Blocks crossed by one contiguous run (a large L1 table, a preallocated image) are placed after
//! the run instead.

use crate::limits;
use std::collections::VecDeque;
use vdisk_core::{Error, Result};

/// A complete refcount block waiting to be written: its index, its content (`None` when every
/// entry is 1) and its reserved cluster, if it has one.
type Pending = VecDeque<(u64, Option<Vec<u8>>, Option<u64>)>;

/// Writes `bytes` at a file offset.
pub type Write<'a> = dyn FnMut(u64, &[u8]) -> Result<()> + 'a;

/// The reference counts of a file under construction.
#[derive(Debug)]
pub struct Refcounts {
    cluster_bits: u32,
    order: u32,
    per_block: u64,
    /// The next cluster to allocate.
    next: u64,
    /// The block whose entries `buf` holds.
    cur: u64,
    buf: Vec<u8>,
    /// Whether any cluster of `cur` was allocated.
    cur_used: bool,
    /// The cluster reserved for `cur`'s own refcount block.
    cur_home: Option<u64>,
    pending: Pending,
    /// Host offsets of placed refcount blocks, by block index.
    table: Vec<u64>,
    ones: Option<Vec<u8>>,
}

impl Refcounts {
    /// Counts for clusters of 2^`cluster_bits` bytes with 2^`order`-bit entries.
    pub fn new(cluster_bits: u32, order: u32) -> Self {
        let cs = 1usize << cluster_bits;
        Refcounts {
            cluster_bits,
            order,
            per_block: (cs as u64 * 8) >> order,
            next: 0,
            cur: 0,
            buf: vec![0; cs],
            cur_used: false,
            cur_home: None,
            pending: VecDeque::new(),
            table: Vec::new(),
            ones: None,
        }
    }

    /// Refcount table clusters enough for a file of at most `max_clusters` clusters plus its
    /// refcount blocks and the table itself, capped at QEMU's table limit.
    pub fn table_clusters_for(&self, max_clusters: u64) -> u64 {
        let cs = 1u64 << self.cluster_bits;
        let (mut t, mut b) = (1u64, 0u64);
        for _ in 0..64 {
            let nb = (max_clusters + t + b).div_ceil(self.per_block);
            let nt = (nb * 8).div_ceil(cs).max(1);
            if (nb, nt) == (b, t) {
                break;
            }
            (b, t) = (nb, nt);
        }
        t.min(limits::MAX_REFTABLE_BYTES / cs)
    }

    /// The next cluster index that [`Refcounts::alloc_run`] returns.
    pub fn next_cluster(&self) -> u64 {
        self.next
    }

    /// The cluster [`Refcounts::alloc_one`] would return now without reserving a refcount block
    /// first, if that is the case.
    pub fn peek_one(&self) -> Option<u64> {
        (self.next / self.per_block == self.cur && self.cur_home.is_some()).then_some(self.next)
    }

    /// The largest count an entry holds.
    pub fn max(&self) -> u64 {
        if self.order >= 6 {
            u64::MAX
        } else {
            (1u64 << (1u32 << self.order)) - 1
        }
    }

    /// Allocates `n` contiguous clusters with reference count 1; returns the first cluster index.
    /// Blocks the run fills are placed later by [`Refcounts::place_pending`].
    pub fn alloc_run(&mut self, n: u64) -> u64 {
        let start = self.next;
        let end = start + n;
        let mut c = start;
        while c < end {
            let b = c / self.per_block;
            if b != self.cur {
                self.leave_block(b);
            }
            if c % self.per_block == 0 && end - c >= self.per_block && !self.cur_used {
                // A whole block of ones: remember it without materialising it.
                self.pending.push_back((b, None, None));
                self.cur = b + 1;
                c += self.per_block;
                continue;
            }
            let stop = end.min((b + 1) * self.per_block);
            for i in c..stop {
                self.set_in_block(i % self.per_block, 1);
            }
            self.cur_used = true;
            c = stop;
        }
        self.next = end;
        start
    }

    /// Reserves the refcount block of the block under the frontier, if it has none yet.
    pub fn reserve_home(&mut self) {
        loop {
            let b = self.next / self.per_block;
            if b != self.cur {
                self.leave_block(b);
            }
            if self.cur_home.is_some() {
                return;
            }
            let c = self.alloc_run(1);
            self.cur_home = Some(c);
        }
    }

    /// Allocates one cluster with reference count 1, reserving its refcount block first when it
    /// is the first cluster of its block.
    pub fn alloc_one(&mut self) -> u64 {
        self.reserve_home();
        self.alloc_run(1)
    }

    /// Adds one reference to `cluster` (compressed clusters sharing a host cluster). Returns false,
    /// changing nothing, when the cluster's block is no longer in memory or its count is at the
    /// maximum; the caller then uses a fresh cluster, as qemu does.
    pub fn bump(&mut self, cluster: u64) -> bool {
        if cluster >= self.next || cluster / self.per_block != self.cur {
            return false;
        }
        let i = cluster % self.per_block;
        let v = self.get_in_block(i);
        if v == 0 || v >= self.max() {
            return false;
        }
        self.set_in_block(i, v + 1);
        true
    }

    fn leave_block(&mut self, to: u64) {
        let cs = self.buf.len();
        if self.cur_used {
            let full = std::mem::replace(&mut self.buf, vec![0; cs]);
            self.pending
                .push_back((self.cur, Some(full), self.cur_home));
        }
        self.cur = to;
        self.cur_used = false;
        self.cur_home = None;
    }
    fn get_in_block(&self, i: u64) -> u64 {
        let i = i as usize;
        let b = &self.buf;
        match self.order {
            0..=2 => {
                let bits = 1usize << self.order;
                let per_byte = 8 / bits;
                let shift = (i % per_byte) * bits;
                u64::from((b[i / per_byte] >> shift) & ((1u8 << bits) - 1))
            }
            _ => {
                let w = 1usize << (self.order - 3);
                b[i * w..(i + 1) * w]
                    .iter()
                    .fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
            }
        }
    }

    fn set_in_block(&mut self, i: u64, v: u64) {
        let i = i as usize;
        match self.order {
            0..=2 => {
                let bits = 1usize << self.order;
                let per_byte = 8 / bits;
                let shift = (i % per_byte) * bits;
                let mask = ((1u8 << bits) - 1) << shift;
                let byte = &mut self.buf[i / per_byte];
                *byte = (*byte & !mask) | (((v as u8) << shift) & mask);
            }
            _ => {
                let w = 1usize << (self.order - 3);
                let be = v.to_be_bytes();
                self.buf[i * w..(i + 1) * w].copy_from_slice(&be[8 - w..]);
            }
        }
    }

    fn ones_block(&mut self) -> Vec<u8> {
        if let Some(o) = &self.ones {
            return o.clone();
        }
        let saved = std::mem::replace(&mut self.buf, vec![0; 1 << self.cluster_bits]);
        for i in 0..self.per_block {
            self.set_in_block(i, 1);
        }
        let ones = std::mem::replace(&mut self.buf, saved);
        self.ones = Some(ones.clone());
        ones
    }

    fn record(&mut self, block: u64, offset: u64) -> Result<()> {
        let idx =
            usize::try_from(block).map_err(|_| Error::Other("refcount table too large".into()))?;
        if self.table.len() <= idx {
            if (idx as u64 + 1) * 8 > limits::MAX_REFTABLE_BYTES {
                return Err(Error::invalid(
                    "qcow2 image too large: the refcount table would exceed 8 MiB",
                ));
            }
            self.table.resize(idx + 1, 0);
        }
        self.table[idx] = offset;
        Ok(())
    }

    /// Writes every complete block: at its reserved cluster, or at the frontier.
    pub fn place_pending(&mut self, write: &mut Write) -> Result<()> {
        while let Some((block, content, home)) = self.pending.pop_front() {
            let c = match home {
                Some(c) => c,
                None => self.alloc_one(),
            };
            let bytes = match content {
                Some(b) => b,
                None => self.ones_block(),
            };
            write(c << self.cluster_bits, &bytes)?;
            self.record(block, c << self.cluster_bits)?;
        }
        Ok(())
    }

    /// Writes the remaining blocks and the refcount table into its `clusters` reserved clusters at
    /// `table_at`. Nothing may be allocated afterwards.
    pub fn finish(&mut self, write: &mut Write, table_at: u64, clusters: u64) -> Result<()> {
        self.reserve_home();
        self.place_pending(write)?;
        let Some(home) = self.cur_home else {
            return Err(Error::Other(
                "qcow2 writer: last refcount block has no place".into(),
            ));
        };
        let at = home << self.cluster_bits;
        write(at, &self.buf)?;
        self.record(self.cur, at)?;
        let cs = 1u64 << self.cluster_bits;
        if self.table.len() as u64 * 8 > clusters * cs {
            return Err(Error::invalid(
                "qcow2 image too large: the refcount table would exceed 8 MiB",
            ));
        }
        let mut table = Vec::with_capacity(self.table.len() * 8);
        for off in &self.table {
            table.extend_from_slice(&off.to_be_bytes());
        }
        write(table_at, &table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn entry(buf: &[u8], order: u32, i: usize) -> u64 {
        let mut r = Refcounts::new(buf.len().trailing_zeros(), order);
        r.buf = buf.to_vec();
        r.get_in_block(i as u64)
    }

    /// Every cluster up to the end is counted once (twice where bumped), including the table and
    /// the blocks themselves, whether allocated one by one or in runs crossing blocks.
    #[test]
    fn every_cluster_is_counted_for_every_width() {
        for order in 0..=6u32 {
            let mut r = Refcounts::new(9, order);
            let mut file: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            let mut w = |off: u64, b: &[u8]| -> Result<()> {
                file.insert(off, b.to_vec());
                Ok(())
            };
            r.alloc_run(1);
            let t = r.table_clusters_for(20000);
            let table_at = r.alloc_run(t) << 9;
            r.reserve_home();
            let c = r.alloc_one();
            let bumped = order > 0 && r.bump(c);
            for _ in 0..5000 {
                r.alloc_one();
            }
            r.place_pending(&mut w).unwrap();
            r.alloc_run(700);
            r.place_pending(&mut w).unwrap();
            for _ in 0..7 {
                r.alloc_one();
            }
            r.finish(&mut w, table_at, t).unwrap();
            let last = r.next_cluster();
            assert!(
                file.keys().all(|o| o / 512 < last),
                "order {order}: write past the end"
            );
            let table = &file[&table_at];
            let per_block = (512 * 8) >> order;
            let mut seen = 0u64;
            for (bi, chunk) in table.chunks(8).enumerate() {
                let off = u64::from_be_bytes(chunk.try_into().unwrap());
                assert_ne!(off, 0, "order {order}: block {bi} missing");
                let block = &file[&off];
                for i in 0..per_block {
                    let cl = (bi * per_block + i) as u64;
                    let v = entry(block, order, i);
                    let want = if cl >= last {
                        0
                    } else if bumped && cl == c {
                        2
                    } else {
                        1
                    };
                    assert_eq!(v, want, "order {order} cluster {cl}");
                    seen += v.min(1);
                }
            }
            assert_eq!(seen, last, "order {order}");
        }
    }

    #[test]
    fn bump_respects_the_maximum() {
        let mut r = Refcounts::new(9, 0);
        let c = r.alloc_one();
        assert!(!r.bump(c), "1-bit refcounts cannot count two references");
        let mut r = Refcounts::new(9, 1);
        let c = r.alloc_one();
        assert!(r.bump(c) && r.bump(c) && !r.bump(c));
        assert!(!r.bump(c + 1), "unallocated");
    }
}
