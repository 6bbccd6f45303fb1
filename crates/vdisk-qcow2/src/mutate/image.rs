//! Opening an existing qcow2 image for modification: the parsed state (through the crate's reader)
//! plus the stored reference counts (qcow2.txt "Host cluster management"), and the conditions under
//! which vdisk refuses to touch an image at all.

use crate::header::incompat;
use crate::reader::{open, read_u64_table, OpenOptions, Qcow2Reader};
use crate::refcount::{block_entry, REFT_OFFSET_MASK};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use vdisk_core::storage::HostFiles;
use vdisk_core::{CheckReport, Error, ImageReader, Result, Storage};

/// What an operation tolerates in the image it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A normal modification: the image must be consistent (leaks are fine).
    Modify,
    /// `check -r`: dirty and corrupt images are what it is for.
    Repair,
}

/// An image opened for modification.
pub(crate) struct RwImage {
    pub storage: Arc<dyn Storage>,
    pub r: Qcow2Reader,
    /// The refcount table as stored.
    pub reftable: Vec<u64>,
    /// The check run when opening.
    pub report: CheckReport,
    /// Computed references per host cluster (from the check).
    pub refs: Vec<u32>,
    /// Host clusters referenced a cluster or more past the end of the file (from the check):
    /// sorted, disjoint (first, last) ranges.
    pub past_end: Vec<(u64, u64)>,
    blocks: HashMap<u64, Vec<u8>>,
}

impl RwImage {
    /// Whether the old state references host cluster `c` from past the end of the file.
    pub fn referenced_past_end(&self, c: u64) -> bool {
        let i = self.past_end.partition_point(|(_, last)| *last < c);
        self.past_end.get(i).is_some_and(|(first, _)| *first <= c)
    }
}

impl RwImage {
    /// Loads the image in `storage` and refuses what vdisk must not modify.
    pub fn open(storage: Arc<dyn Storage>, purpose: Purpose) -> Result<RwImage> {
        // An external data file is opened (read-only, by its stored name as QEMU does) to read
        // guest data; backing files never are. A repair opens the image as `check` does (tables
        // past the end of the file read as zeros, no refcount table needed), so that it repairs
        // what the check reported.
        let opts = OpenOptions {
            for_check: purpose == Purpose::Repair,
            ..OpenOptions::default()
        };
        let r = open(Arc::clone(&storage), Arc::new(HostFiles), &opts)?;
        // Changes need the data file that reading may do without.
        r.data_file_opened()?;
        r.header.check_data_file_raw(storage.path())?;
        let path = storage.path().to_path_buf();
        let h = &r.header;
        if h.crypt_method != 0 {
            return Err(Error::unsupported(
                &path,
                "encryption: cannot modify an encrypted image",
            ));
        }
        if purpose == Purpose::Modify {
            if h.incompatible_features & incompat::CORRUPT != 0 {
                return Err(Error::Other(format!(
                    "{}: qcow2: Image is corrupt; cannot be opened read/write",
                    path.display()
                )));
            }
            if h.incompatible_features & incompat::DIRTY != 0 {
                return Err(Error::Other(format!(
                    "{}: the image is dirty (lazy refcounts were not written back); repair it first \
                     with check -r all",
                    path.display()
                )));
            }
        }
        let cs = h.cluster_size();
        let count = (u64::from(h.refcount_table_clusters) * cs / 8) as usize;
        let reftable = r.read_table_words(h.refcount_table_offset, count, "refcount table")?;
        let crate::check::Counted {
            report,
            refs,
            past_end,
        } = crate::check::check_with_refs(&r)?;
        if purpose == Purpose::Modify && (report.corruptions > 0 || report.check_errors > 0) {
            return Err(Error::Other(format!(
                "{}: {} errors were found on the image; repair it with check -r all first",
                path.display(),
                report.corruptions + report.check_errors
            )));
        }
        Ok(RwImage {
            storage,
            r,
            reftable,
            report,
            refs,
            past_end,
            blocks: HashMap::new(),
        })
    }

    pub fn path(&self) -> &Path {
        self.storage.path()
    }

    pub fn cluster_bits(&self) -> u32 {
        self.r.header.cluster_bits
    }

    pub fn cs(&self) -> u64 {
        self.r.header.cluster_size()
    }

    /// Host clusters described by one refcount block.
    pub fn per_block(&self) -> u64 {
        (self.cs() * 8) >> self.r.header.refcount_order
    }

    /// The largest value a refcount entry holds.
    pub fn max_refcount(&self) -> u64 {
        match self.r.header.refcount_order {
            6 => u64::MAX,
            o => (1u64 << (1u32 << o)) - 1,
        }
    }

    /// The stored offset of refcount block `bi` (0: none).
    pub fn block_offset(&self, bi: u64) -> u64 {
        usize::try_from(bi)
            .ok()
            .and_then(|i| self.reftable.get(i))
            .map_or(0, |e| e & REFT_OFFSET_MASK)
    }

    /// Drops refcount table entry `bi` from this view of the image (for `check -r all`): its
    /// block reads as zeros, and the new refcount table has no entry there unless a change puts
    /// a new block in its place.
    pub fn forget_block(&mut self, bi: u64) {
        if let Some(e) = usize::try_from(bi)
            .ok()
            .and_then(|i| self.reftable.get_mut(i))
        {
            *e = 0;
        }
        self.blocks.remove(&bi);
    }

    /// The stored refcount block `bi` as bytes (zeros when it does not exist).
    pub fn block(&mut self, bi: u64) -> Result<&[u8]> {
        if !self.blocks.contains_key(&bi) {
            let off = self.block_offset(bi);
            let mut b = vec![0u8; self.cs() as usize];
            if off != 0 {
                crate::refcount::read_block(self.storage.as_ref(), &mut b, off, self.r.file_len)?;
            }
            self.blocks.insert(bi, b);
        }
        Ok(self.blocks.get(&bi).map(|b| b.as_slice()).unwrap_or(&[]))
    }

    /// The stored reference count of host cluster `c`.
    pub fn stored_refcount(&mut self, c: u64) -> Result<u64> {
        let per = self.per_block();
        let order = self.r.header.refcount_order;
        let b = self.block(c / per)?;
        Ok(block_entry(b, order, c % per))
    }

    /// Reads one L2 table; what lies past the end of the file reads as zeros, as QEMU reads it
    /// (only a repair meets such a table: other changes refuse an image whose check finds one).
    pub fn read_l2(&self, offset: u64) -> Result<Vec<u64>> {
        crate::reader::read_u64_table_padded(
            self.storage.as_ref(),
            offset,
            (self.cs() / 8) as usize,
            self.storage.len()?,
        )
    }

    /// Reads an L1 table of `entries` entries.
    pub fn read_l1(&self, offset: u64, entries: u32) -> Result<Vec<u64>> {
        if u64::from(entries) * 8 > crate::limits::MAX_L1_BYTES {
            return Err(Error::limit(
                self.path(),
                "L1 table size",
                u64::from(entries) * 8,
                crate::limits::MAX_L1_BYTES,
            ));
        }
        read_u64_table(self.storage.as_ref(), offset, entries as usize, "L1 table")
    }
}

/// Copy-on-write from the backing image: fills `buf` with the bytes of `backing` at guest offset
/// `at`, leaving the part past its end as it is (zeros, as QEMU reads a shorter backing file).
pub(crate) fn read_backing(backing: &dyn ImageReader, buf: &mut [u8], at: u64) -> Result<()> {
    let n = backing
        .virtual_size()
        .saturating_sub(at)
        .min(buf.len() as u64) as usize;
    if n > 0 {
        backing.read_at(&mut buf[..n], at)?;
    }
    Ok(())
}
