//! Compressed clusters written into an existing image (`rebase -c`), packed byte after byte into
//! host clusters past the end of the file as QEMU's `qcow2_alloc_bytes` packs them (qcow2.txt
//! "Compressed Clusters Descriptor": compressed data starts at any byte and may run on into the
//! next host cluster). The cluster being filled is kept in memory and written whole, so the file
//! always ends at a cluster boundary; the transaction counts a reference to every host cluster a
//! compressed entry reaches, so a cluster takes no more entries than its refcount can count (as
//! in `qcow2_alloc_bytes`, which starts a new cluster when the refcount is at its maximum).

use vdisk_core::Result;

/// The host cluster being filled with compressed data.
pub(super) struct Packer {
    /// Host cluster index.
    cluster: u64,
    buf: Vec<u8>,
    used: usize,
    /// Compressed entries that reach into this cluster (its refcount).
    refs: u64,
}

impl Packer {
    /// Stores `blob` (shorter than a cluster) after the data already packed in `slot`'s cluster,
    /// or at the start of a new one from `alloc`; a blob that does not fit runs on into the new
    /// cluster when `alloc` returns the next one. A cluster that `max_refs` entries reach already
    /// takes no more. Each cluster is handed to `write` (index, bytes) once it is full or left.
    /// Returns the byte offset of the blob in the file.
    pub(super) fn place(
        slot: &mut Option<Packer>,
        blob: &[u8],
        cluster_size: u64,
        max_refs: u64,
        mut alloc: impl FnMut() -> Result<u64>,
        mut write: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<u64> {
        let cs = cluster_size as usize;
        debug_assert!(!blob.is_empty() && blob.len() < cs);
        if let Some(p) = slot.as_mut() {
            if p.used + blob.len() <= cs && p.refs < max_refs {
                let at = p.cluster * cluster_size + p.used as u64;
                p.buf[p.used..p.used + blob.len()].copy_from_slice(blob);
                p.used += blob.len();
                p.refs += 1;
                return Ok(at);
            }
        }
        let next = alloc()?;
        let mut fresh = Packer {
            cluster: next,
            buf: vec![0u8; cs],
            used: 0,
            refs: 1,
        };
        let at = match slot.take() {
            Some(mut p) if next == p.cluster + 1 && p.refs < max_refs && p.used < cs => {
                // Run on: the blob's head fills this cluster, its tail starts the next one.
                let head = cs - p.used;
                let at = p.cluster * cluster_size + p.used as u64;
                p.buf[p.used..].copy_from_slice(&blob[..head]);
                write(p.cluster, &p.buf)?;
                fresh.buf[..blob.len() - head].copy_from_slice(&blob[head..]);
                fresh.used = blob.len() - head;
                at
            }
            left => {
                if let Some(p) = left {
                    write(p.cluster, &p.buf)?;
                }
                fresh.buf[..blob.len()].copy_from_slice(blob);
                fresh.used = blob.len();
                next * cluster_size
            }
        };
        *slot = Some(fresh);
        Ok(at)
    }

    /// Writes the cluster being filled (it stays the one being filled).
    pub(super) fn flush(&self, mut write: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
        write(self.cluster, &self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Places blobs of the given lengths with clusters from `free`, and returns the offsets and
    /// the clusters written (index -> bytes), after a final flush.
    fn pack(lens: &[usize], free: &[u64]) -> (Vec<u64>, BTreeMap<u64, Vec<u8>>) {
        pack_max(lens, free, u64::MAX)
    }

    fn pack_max(lens: &[usize], free: &[u64], max_refs: u64) -> (Vec<u64>, BTreeMap<u64, Vec<u8>>) {
        let mut slot = None;
        let mut free = free.iter().copied();
        let mut written = BTreeMap::new();
        let mut at = Vec::new();
        for (i, n) in lens.iter().enumerate() {
            let blob = vec![i as u8 + 1; *n];
            let off = Packer::place(
                &mut slot,
                &blob,
                1024,
                max_refs,
                || Ok(free.next().expect("test ran out of clusters")),
                |c, b| {
                    written.insert(c, b.to_vec());
                    Ok(())
                },
            )
            .unwrap();
            at.push(off);
        }
        if let Some(p) = &slot {
            p.flush(|c, b| {
                written.insert(c, b.to_vec());
                Ok(())
            })
            .unwrap();
        }
        (at, written)
    }

    #[test]
    fn blobs_follow_each_other_and_run_on_into_the_next_cluster() {
        let (at, w) = pack(&[600, 300, 500], &[5, 6]);
        assert_eq!(at, vec![5 * 1024, 5 * 1024 + 600, 5 * 1024 + 900]);
        assert_eq!(w.len(), 2);
        assert!(w[&5][..600].iter().all(|b| *b == 1));
        assert!(w[&5][600..900].iter().all(|b| *b == 2));
        assert!(w[&5][900..].iter().all(|b| *b == 3));
        assert!(w[&6][..376].iter().all(|b| *b == 3));
        assert!(w[&6][376..].iter().all(|b| *b == 0));
    }

    #[test]
    fn a_cluster_takes_no_more_entries_than_its_refcount_counts() {
        // refcount_bits=1: one entry per cluster, even a short one; refcount_bits=2: three, and
        // the one that runs on counts in both clusters.
        let (at, _) = pack_max(&[100, 100, 100], &[5, 6, 7], 1);
        assert_eq!(at, vec![5 * 1024, 6 * 1024, 7 * 1024]);
        let (at, _) = pack_max(&[400, 400, 400, 100, 100, 100], &[5, 6, 7], 3);
        assert_eq!(
            at,
            vec![
                5 * 1024,
                5 * 1024 + 400,
                5 * 1024 + 800,
                6 * 1024 + 176,
                6 * 1024 + 276,
                7 * 1024
            ]
        );
    }

    #[test]
    fn a_blob_that_does_not_fit_starts_a_cluster_that_is_not_the_next() {
        // Cluster 6 is taken (the allocator skipped it): no run-on across the gap.
        let (at, w) = pack(&[600, 500], &[5, 7]);
        assert_eq!(at, vec![5 * 1024, 7 * 1024]);
        assert!(w[&5][600..].iter().all(|b| *b == 0));
        assert!(w[&7][..500].iter().all(|b| *b == 2));
    }
}
