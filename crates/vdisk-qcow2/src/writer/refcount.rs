//! Reference counts for a qcow2 file written front to back (qcow2.txt "Host cluster management").
//!
//! Host clusters are allocated in increasing order, so a refcount block is final as soon as the
//! allocation frontier leaves the clusters it covers: it is then written at the frontier (where it
//! counts itself in a later block). Only the block under the frontier is held in memory, plus one
//! table entry per block. At the end the refcount table and the last blocks are placed with the
//! usual self-referencing fixpoint (the table and blocks count themselves).

use crate::limits;
use std::collections::VecDeque;
use vdisk_core::{Error, Result};

/// Refcount blocks awaiting a host cluster: their content, or `None` when every entry is 1.
type Pending = VecDeque<(u64, Option<Vec<u8>>)>;

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
            pending: VecDeque::new(),
            table: Vec::new(),
            ones: None,
        }
    }

    /// The next cluster index that [`Refcounts::alloc`] returns.
    pub fn next_cluster(&self) -> u64 {
        self.next
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
    pub fn alloc(&mut self, n: u64) -> u64 {
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
                self.pending.push_back((b, None));
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
            self.pending.push_back((self.cur, Some(full)));
        }
        self.cur = to;
        self.cur_used = false;
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

    /// Writes every complete block not yet written at the frontier, through `write(offset, bytes)`.
    pub fn place_pending(&mut self, write: &mut dyn FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
        while let Some((block, content)) = self.pending.pop_front() {
            let c = self.alloc(1);
            let bytes = match content {
                Some(b) => b,
                None => self.ones_block(),
            };
            write(c << self.cluster_bits, &bytes)?;
            self.record(block, c << self.cluster_bits)?;
        }
        Ok(())
    }

    /// Places the refcount table and the remaining blocks after everything else; returns the table's
    /// offset and its size in clusters. Nothing may be allocated afterwards.
    pub fn finish(
        &mut self,
        write: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<(u64, u32)> {
        self.place_pending(write)?;
        let cs = 1u64 << self.cluster_bits;
        let first_unplaced = self.cur;
        let (mut t, mut u) = (1u64, 1u64);
        let mut settled = false;
        for _ in 0..64 {
            let end = self.next + t + u;
            let blocks = end.div_ceil(self.per_block);
            let (nt, nu) = ((blocks * 8).div_ceil(cs), blocks - first_unplaced);
            if (nt, nu) == (t, u) {
                settled = true;
                break;
            }
            (t, u) = (nt.max(t), nu.max(u));
        }
        if !settled || t * cs > limits::MAX_REFTABLE_BYTES {
            return Err(Error::invalid(
                "qcow2 image too large: the refcount table would exceed 8 MiB",
            ));
        }
        let table_at = self.alloc(t) << self.cluster_bits;
        let blocks_at = self.alloc(u);
        self.leave_block(self.cur + 1);
        let mut placed = 0u64;
        while let Some((block, content)) = self.pending.pop_front() {
            if placed >= u {
                return Err(Error::Other(
                    "qcow2 writer: refcount fixpoint miscounted blocks".into(),
                ));
            }
            let bytes = match content {
                Some(b) => b,
                None => self.ones_block(),
            };
            let at = (blocks_at + placed) << self.cluster_bits;
            write(at, &bytes)?;
            self.record(block, at)?;
            placed += 1;
        }
        let mut table = vec![0u8; (t * cs) as usize];
        for (i, off) in self.table.iter().enumerate() {
            table[i * 8..i * 8 + 8].copy_from_slice(&off.to_be_bytes());
        }
        write(table_at, &table)?;
        Ok((table_at, t as u32))
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
    /// the blocks themselves.
    #[test]
    fn fixpoint_counts_everything_for_every_width() {
        for order in 0..=6u32 {
            let mut r = Refcounts::new(9, order);
            let mut file: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            let mut w = |off: u64, b: &[u8]| -> Result<()> {
                file.insert(off, b.to_vec());
                Ok(())
            };
            r.alloc(1);
            let c = r.alloc(3);
            let bumped = order > 0 && r.bump(c + 2);
            r.alloc(5000);
            r.place_pending(&mut w).unwrap();
            r.alloc(7);
            let end_before = r.next_cluster();
            let (table_at, t) = r.finish(&mut w).unwrap();
            let table = &file[&table_at];
            assert_eq!(table.len(), t as usize * 512);
            let per_block = (512 * 8) >> order;
            let mut seen = 0u64;
            let last = file.keys().max().unwrap() / 512 + 1;
            assert!(last > end_before);
            for (bi, chunk) in table.chunks(8).enumerate() {
                let off = u64::from_be_bytes(chunk.try_into().unwrap());
                if off == 0 {
                    continue;
                }
                let block = &file[&off];
                for i in 0..per_block {
                    let cl = (bi * per_block + i) as u64;
                    let v = entry(block, order, i);
                    let want = if cl >= last {
                        0
                    } else if bumped && cl == c + 2 {
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
        let c = r.alloc(1);
        assert!(!r.bump(c), "1-bit refcounts cannot count two references");
        let mut r = Refcounts::new(9, 1);
        let c = r.alloc(1);
        assert!(r.bump(c) && r.bump(c) && !r.bump(c));
        assert!(!r.bump(c + 1), "unallocated");
    }
}
