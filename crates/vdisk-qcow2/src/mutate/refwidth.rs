//! `qemu-img amend -o refcount_bits=N` (QEMU's qcow2_change_refcount_order): the refcount table
//! and blocks written again with entries of another width (qcow2.txt "Header" refcount_order, and
//! "Host cluster management" for the table and blocks).
//!
//! Every stored refcount is copied, leaks included, as QEMU copies them; a refcount too large for
//! the new width is refused before anything is written, with QEMU's words. The new table and
//! blocks go at the end of the file, and describe themselves (refcount 1) and the old table and
//! blocks as free (refcount 0). They are written and made durable first; then one write of the
//! header's fixed fields (refcount_order, the table's offset and size, all within the first
//! sector) switches to them. A crash before that write leaves the old image, only longer (clusters
//! past its end with refcount 0 are free, not leaked); after it, the new one. QEMU allocates the
//! new structures through the old ones and frees the old ones afterwards, so a crash in between
//! leaks clusters there; here it cannot. The freed clusters stay in the file, as QEMU leaves them.

use super::image::RwImage;
use super::txn::set_block_entry;
use crate::limits;
use crate::refcount::{block_entry, read_block};
use std::collections::BTreeSet;
use vdisk_core::{Error, Result};

/// Where the new refcount structures are, for the header switch.
pub(crate) struct NewRefcounts {
    pub table_offset: u64,
    pub table_clusters: u32,
}

/// The stored refcounts of the image, one old refcount block at a time.
struct OldRefcounts {
    order: u32,
    per: u64,
    cached: Option<u64>,
    block: Vec<u8>,
}

impl OldRefcounts {
    fn get(&mut self, img: &RwImage, c: u64) -> Result<u64> {
        let bi = c / self.per;
        if self.cached != Some(bi) {
            self.block.fill(0);
            let off = img.block_offset(bi);
            if off != 0 {
                read_block(img.storage.as_ref(), &mut self.block, off, img.r.file_len)?;
            }
            self.cached = Some(bi);
        }
        Ok(block_entry(&self.block, self.order, c % self.per))
    }
}

/// Writes refcount structures of width 2^`new_order` bits for the image `img` and makes them
/// durable; the caller switches the header to them. Nothing is written when a refcount does not
/// fit the new width.
pub(crate) fn write_with_order(img: &RwImage, new_order: u32) -> Result<NewRefcounts> {
    let cs = img.cs();
    let bits = img.cluster_bits();
    let new_bits = 1u64 << new_order;
    let new_per = (cs * 8) >> new_order;
    let mut old = OldRefcounts {
        order: img.r.header.refcount_order,
        per: img.per_block(),
        cached: None,
        block: vec![0u8; cs as usize],
    };
    // The clusters of the old structures, which the new ones describe as free.
    let h = &img.r.header;
    let mut old_structs: BTreeSet<u64> = (0..u64::from(h.refcount_table_clusters))
        .map(|k| (h.refcount_table_offset >> bits) + k)
        .collect();
    old_structs.extend(
        (0..img.reftable.len() as u64)
            .map(|bi| img.block_offset(bi) >> bits)
            .filter(|c| *c != 0),
    );
    // First pass, in QEMU's order: the width check, and the new blocks needed for the clusters
    // in use. The new structures start at the end of the file: a cluster past it that has a
    // refcount is a leak (the image passed its check), which they may take over (see `txn`), and
    // the refcounts of the others are copied, as QEMU copies them.
    let covered = (img.reftable.len() as u64)
        .checked_mul(old.per)
        .ok_or_else(|| Error::corrupt(img.path(), None, "refcount table too large"))?;
    let mut needed: BTreeSet<u64> = BTreeSet::new();
    let end = img.r.file_len.div_ceil(cs);
    for bi in 0..img.reftable.len() as u64 {
        if img.block_offset(bi) == 0 {
            continue;
        }
        for c in bi * old.per..(bi + 1) * old.per {
            let v = old.get(img, c)?;
            if v == 0 {
                continue;
            }
            if new_bits < 64 && v >> new_bits != 0 {
                return Err(Error::invalid(format!(
                    "Cannot decrease refcount entry width to {new_bits} bits: Cluster at offset \
                     {:#x} has a refcount of {v}",
                    c << bits
                )));
            }
            if !old_structs.contains(&c) {
                needed.insert(c / new_per);
            }
        }
    }
    // The new structures at `end`: `span` clusters, the table first, then the blocks; the blocks
    // describing the span itself are needed too (the least fixed point).
    let mut span = 0u64;
    let (blocks, table_clusters) = loop {
        let mut blocks = needed.clone();
        blocks.extend((end..end + span).map(|c| c / new_per));
        let entries = blocks.last().map_or(1, |b| b + 1);
        let table_bytes = entries
            .checked_mul(8)
            .ok_or_else(|| Error::invalid("refcount table too large"))?;
        let table_clusters = table_bytes.div_ceil(cs);
        if table_clusters * cs > limits::MAX_REFTABLE_BYTES {
            return Err(Error::limit(
                img.path(),
                "refcount table size",
                table_clusters * cs,
                limits::MAX_REFTABLE_BYTES,
            ));
        }
        let want = table_clusters + blocks.len() as u64;
        if want <= span {
            break (blocks, table_clusters);
        }
        span = want;
    };
    if end + span > limits::MAX_CHECK_CLUSTERS {
        return Err(Error::limit(
            img.path(),
            "host cluster index",
            end + span,
            limits::MAX_CHECK_CLUSTERS,
        ));
    }
    let table_at = end;
    let mut table = vec![0u64; (table_clusters * cs / 8) as usize];
    let s = img.storage.as_ref();
    let mut block = vec![0u8; cs as usize];
    for (k, nb) in blocks.iter().enumerate() {
        let at = table_at + table_clusters + k as u64;
        block.fill(0);
        for c in nb * new_per..(nb + 1) * new_per {
            let v = if (end..end + span).contains(&c) {
                1
            } else if old_structs.contains(&c) || c >= covered {
                0
            } else {
                old.get(img, c)?
            };
            if v != 0 {
                set_block_entry(&mut block, new_order, c % new_per, v);
            }
        }
        s.write_at(&block, at << bits)?;
        if let Some(e) = table.get_mut(*nb as usize) {
            *e = at << bits;
        }
    }
    let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
    s.write_at(&bytes, table_at << bits)?;
    s.sync()?;
    Ok(NewRefcounts {
        table_offset: table_at << bits,
        table_clusters: u32::try_from(table_clusters)
            .map_err(|_| Error::invalid("refcount table too large"))?,
    })
}
