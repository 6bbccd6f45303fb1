//! Writing guest data into an existing VMDK image in place (`convert -n`), following "Extent
//! Descriptions" and "Hosted Sparse Extent Header" / "Grain Directories and Grain Tables" of
//! VMware's Virtual Disk Format 1.1, and the allocation rule of QEMU's block/vmdk.c
//! (`get_cluster_offset`, `vmdk_L2update`): a new grain goes at the end of its extent file,
//! rounded up to a whole grain, is written whole (unwritten parts zero), and only then do the
//! grain table entries, redundant and primary, come to point at it.
//!
//! Subformats: monolithicSparse, twoGbMaxExtentSparse (hosted `KDMV` sparse extents, version 1 or
//! 2, no compression), monolithicFlat and twoGbMaxExtentFlat (FLAT extents). Everything else is
//! refused when opening, naming the subformat or extent type: streamOptimized (QEMU opens its
//! version 3 sparse files read-only, "VMDK version 3 must be read only"), vmfs, vmfsSparse,
//! seSparse, ZERO and read-only extents, and delta images with a parent (a grain written in part
//! would need its other bytes from the parent).
//!
//! What each write does:
//! - flat extent: the bytes (data or zeros) are written at their place in the extent file;
//! - data into an allocated grain: in place;
//! - data into an unallocated grain (entry 0, or 1 = zeroed grain with the flag on): a new grain
//!   at the end of the extent file, the bytes outside the write zero;
//! - zeros over an unallocated or zeroed grain: nothing (it reads as zeros already);
//! - zeros over an allocated grain: zeros written into it; the grain stays allocated. Marking it
//!   as a zeroed grain (entry 1) would need the flag, which qemu-img sets only with
//!   `zeroed_grain=on`, and would leak the grain (hosted sparse extents have no free list), so the
//!   grain table entries this writer changes only ever go from "unallocated" to a new grain.
//!
//! Grain tables must exist: QEMU and VMware create every table with the extent. An extent whose
//! grain directory has an empty entry is refused when opening.
//!
//! Crash ordering. Grain tables are cached (at most [`MAX_DIRTY_TABLES`] tables hold changed
//! entries) and written back by a commit, at `finish` and whenever the cache is full; each commit
//! runs these steps, each made durable before the next: (1) the data of every new grain (and of the
//! in-place writes); (2) the redundant grain tables; (3) the primary grain tables. New grains lie
//! past every grain and table the image references (new grains take the end of the file, and
//! opening checks that all tables lie apart below the first grain). A crash before (2) starts
//! leaves the old image plus unreferenced bytes at the end of the files: clean for `qemu-img check`
//! and vdisk's check. A crash during or after (2), before (3) starts, leaves every grain reading
//! its old content, since QEMU, VMware and vdisk read through the primary directory; `qemu-img
//! check` (which looks at the primary tables only) is clean, while vdisk's check reports the
//! redundant tables as not matching (and this writer refuses the image until they are made equal
//! again). A crash during (3) leaves each grain old or new: an entry either still says unallocated
//! or points at a grain whose data is durable, and in-sector 4-byte entries are not torn. After (3)
//! the image is the new one. Redundant first is deliberate: QEMU's `vmdk_L2update` writes the
//! primary first, so a crash in between leaves new content that only the primary describes; this
//! order makes the switch to new content the last write, and the redundant tables never describe
//! less than the primary ones. Writes into allocated grains and flat extents happen in place at
//! once, as in QEMU: a crash in the middle of one can leave that grain part old, part new. With
//! durable commits off (`-t unsafe`) no step is flushed.
//!
//! A writer dropped without `finish` leaves the grain tables of its last commit: the in-place
//! writes are kept, grains allocated since are unreferenced bytes at the end of the files.
//!
//! As QEMU does on the first write, the descriptor gets a new CID ("The Descriptor File": a
//! changed content ID tells child images that their parent changed): the hex digits of the `CID=`
//! line are rewritten in place with as many digits (embedded descriptor or descriptor file),
//! before any data, and made durable with step (1). A descriptor whose CID line is not a plain
//! `CID=` and hex digits keeps its CID.

use crate::limits::SECTOR;
use crate::reader::VmdkReader;
use crate::sparse::read_u32s;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vdisk_core::storage::FileOpener;
use vdisk_core::writer::{check_write_range, durable_commit};
use vdisk_core::{Error, ImageWriter, Payload, Result, Storage, WriterCaps};

/// Most grain tables held in memory (2 KiB each with 512 entries: 8 MiB); when a write needs one
/// more, the changed ones are committed and the cache emptied.
pub const MAX_DIRTY_TABLES: usize = 4096;

/// Opens the existing VMDK image at `path` for writing in place: [`open_writer_in`] on the file
/// opened read-write, with its extent files opened read-write from the host (regular files and
/// block devices only).
pub fn open_writer(path: &Path) -> Result<Box<dyn ImageWriter>> {
    let (storage, files) = open::host_rw(path)?;
    open_writer_in(storage, files)
}

/// Opens the existing VMDK image in `storage` (a monolithic sparse file or a descriptor) for
/// writing in place; its extent files come from `files`, which must serve them writable, and the
/// same storage each time a path is asked for again. The descriptor, extents and grain directories
/// are parsed, validated and checked (`check`) by the crate's reading code; nothing is written
/// until the first write. Every write and sync goes through `storage` and the storages `files`
/// serves.
pub fn open_writer_in(
    storage: Arc<dyn Storage>,
    files: Arc<dyn FileOpener>,
) -> Result<Box<dyn ImageWriter>> {
    Ok(Box::new(InplaceWriter::open(storage, files)?))
}

/// Where one extent's bytes go.
enum Target {
    /// Bytes of file `file` from byte `offset` on.
    Flat { file: u32, offset: u64 },
    /// Sparse extent number `n` of [`InplaceWriter::sparse`].
    Sparse(usize),
}

struct Ext {
    start: u64,
    len: u64,
    target: Target,
}

/// What the writer keeps of one hosted sparse extent.
struct SparseMeta {
    file: u32,
    path: PathBuf,
    grain: u64,
    per: u64,
    zero_grain: bool,
    /// Primary and redundant grain directories: the sector of each grain table.
    gd: Vec<u32>,
    rgd: Option<Vec<u32>>,
    /// Byte offset the next new grain takes.
    next: u64,
}

/// One cached grain table and whether this writer changed it.
struct Table {
    entries: Vec<u32>,
    dirty: bool,
}

pub(crate) struct InplaceWriter {
    path: PathBuf,
    reader: VmdkReader,
    exts: Vec<Ext>,
    sparse: Vec<SparseMeta>,
    /// Grain tables by (sparse extent, directory index).
    tables: HashMap<(usize, usize), Table>,
    /// Files written to since the last commit.
    dirty_files: BTreeSet<u32>,
    /// The descriptor's file, the byte offset of the hex digits of its CID and their number,
    /// until the first write gives it a new one.
    cid: Option<(Arc<dyn Storage>, u64, usize)>,
    /// The descriptor's file when it was written since the last commit.
    cid_dirty: Option<Arc<dyn Storage>>,
    /// [`MAX_DIRTY_TABLES`], lowered by tests to exercise commits in the middle of a run.
    max_tables: usize,
}

impl InplaceWriter {
    /// Writes `len` zero bytes at byte `at` of file `file`.
    fn write_zeros(&mut self, file: u32, at: u64, len: u64) -> Result<()> {
        self.reader.files.with(file, |s| s.write_zeros(at, len))?;
        self.dirty_files.insert(file);
        Ok(())
    }

    fn write_bytes(&mut self, file: u32, at: u64, data: &[u8]) -> Result<()> {
        self.reader.files.with(file, |s| s.write_at(data, at))?;
        self.dirty_files.insert(file);
        Ok(())
    }

    /// Grain table `gd_idx` of sparse extent `n`, read from the primary table if not cached.
    fn table(&mut self, n: usize, gd_idx: usize) -> Result<&mut Table> {
        if !self.tables.contains_key(&(n, gd_idx)) {
            if self.tables.len() >= self.max_tables {
                self.commit(u32::MAX)?;
                self.tables.clear();
            }
            let sp = &self.sparse[n];
            let sector = sp.gd.get(gd_idx).copied().unwrap_or(0);
            let at = u64::from(sector) * SECTOR;
            let entries = self
                .reader
                .files
                .with(sp.file, |s| read_u32s(s, at, sp.per as usize))?;
            self.tables.insert(
                (n, gd_idx),
                Table {
                    entries,
                    dirty: false,
                },
            );
        }
        self.tables
            .get_mut(&(n, gd_idx))
            .ok_or_else(|| Error::Other("VMDK grain table cache lost an entry".into()))
    }

    /// Stores one piece of a write inside one grain of sparse extent `n` (`off`: byte in the
    /// extent), `data` or zeros when `None`.
    fn write_sparse(&mut self, n: usize, off: u64, len: u64, data: Option<&[u8]>) -> Result<()> {
        let (grain, per, zero_grain, file) = {
            let sp = &self.sparse[n];
            (sp.grain, sp.per, sp.zero_grain, sp.file)
        };
        let g = off / grain;
        let in_grain = off % grain;
        let (gd_idx, gt_idx) = ((g / per) as usize, (g % per) as usize);
        let gte = *self
            .table(n, gd_idx)?
            .entries
            .get(gt_idx)
            .ok_or_else(|| Error::Other("VMDK grain table index out of range".into()))?;
        let unallocated = gte == 0 || (gte == 1 && zero_grain);
        match (unallocated, data) {
            (true, None) => Ok(()),
            (false, d) => {
                let at = u64::from(gte) * SECTOR + in_grain;
                match d {
                    Some(d) => self.write_bytes(file, at, d),
                    None => self.write_zeros(file, at, len),
                }
            }
            (true, Some(d)) => {
                let sp = &mut self.sparse[n];
                let at = sp.next;
                let sector = u32::try_from(at / SECTOR).map_err(|_| {
                    Error::unsupported(
                        &sp.path,
                        "VMDK sparse extent full: a new grain would lie past sector 2^32",
                    )
                })?;
                sp.next = at
                    .checked_add(grain)
                    .ok_or_else(|| Error::invalid("VMDK grain offset overflows"))?;
                let end = in_grain + d.len() as u64;
                self.write_zeros(file, at, in_grain)?;
                self.write_bytes(file, at + in_grain, d)?;
                self.write_zeros(file, at + end, grain - end)?;
                let t = self.table(n, gd_idx)?;
                let e = t
                    .entries
                    .get_mut(gt_idx)
                    .ok_or_else(|| Error::Other("VMDK grain table index out of range".into()))?;
                *e = sector;
                t.dirty = true;
                Ok(())
            }
        }
    }

    /// Makes the new grains part of the image in the durable steps of the module comment,
    /// stopping after `max_steps` of them (tests look at what a crash there leaves).
    pub(crate) fn commit(&mut self, max_steps: u32) -> Result<()> {
        // (1) grain data and in-place writes.
        self.sync()?;
        let mut dirty: Vec<(usize, usize)> = self
            .tables
            .iter()
            .filter(|(_, t)| t.dirty)
            .map(|(k, _)| *k)
            .collect();
        if dirty.is_empty() || max_steps <= 1 {
            return Ok(());
        }
        dirty.sort_unstable();
        // (2) redundant tables, then (3) primary tables.
        for (step, redundant) in [(2u32, true), (3, false)] {
            for &(n, gd_idx) in &dirty {
                let sp = &self.sparse[n];
                let dir = if redundant {
                    sp.rgd.as_ref()
                } else {
                    Some(&sp.gd)
                };
                let Some(sector) = dir.and_then(|d| d.get(gd_idx)).copied() else {
                    continue;
                };
                let bytes: Vec<u8> = self.tables[&(n, gd_idx)]
                    .entries
                    .iter()
                    .flat_map(|e| e.to_le_bytes())
                    .collect();
                let at = u64::from(sector) * SECTOR;
                self.reader
                    .files
                    .with(sp.file, |s| s.write_at(&bytes, at))?;
                self.dirty_files.insert(sp.file);
            }
            self.sync()?;
            if max_steps <= step {
                return Ok(());
            }
        }
        for t in self.tables.values_mut() {
            t.dirty = false;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        if let Some(f) = self.cid_dirty.take() {
            if durable_commit() {
                f.sync()?;
            }
        }
        if durable_commit() {
            for &f in &self.dirty_files {
                self.reader.files.with(f, |s| s.sync())?;
            }
        }
        self.dirty_files.clear();
        Ok(())
    }
}

impl ImageWriter for InplaceWriter {
    fn caps(&self) -> WriterCaps {
        // The largest grain: a grain a write allocates then gets its data in one piece. Flat
        // extents take any granularity; 64 KiB (qemu-img's grain) keeps chunks moderate.
        let g = self
            .sparse
            .iter()
            .map(|s| s.grain)
            .max()
            .unwrap_or(64 << 10)
            .max(SECTOR);
        WriterCaps {
            granularity: if g.is_power_of_two() { g } else { SECTOR },
            // Every write looks its grain up and allocates at the end of its extent file, so the
            // order of writes only changes where a new grain lies.
            out_of_order: true,
            // The image holds data: zero runs must be written.
            zero_initialized: false,
            copy_range: false,
        }
    }

    fn write(&mut self, offset: u64, payload: Payload) -> Result<()> {
        let len = payload.len();
        check_write_range(&self.path, offset, len, self.reader.size)?;
        let data = payload.plain("VMDK in-place writer")?;
        if len > 0 {
            self.new_cid()?;
        }
        let mut done = 0u64;
        while done < len {
            let pos = offset + done;
            let i = self.exts.partition_point(|e| e.start <= pos);
            let (start, elen, target) = match i.checked_sub(1).and_then(|i| self.exts.get(i)) {
                Some(e) if pos - e.start < e.len => (
                    e.start,
                    e.len,
                    match e.target {
                        Target::Flat { file, offset } => Target::Flat { file, offset },
                        Target::Sparse(n) => Target::Sparse(n),
                    },
                ),
                _ => {
                    return Err(Error::invalid(format!(
                        "offset {pos} is outside the extents"
                    )))
                }
            };
            let in_ext = pos - start;
            let mut n = (elen - in_ext).min(len - done);
            match target {
                Target::Flat { file, offset } => {
                    let at = offset
                        .checked_add(in_ext)
                        .ok_or_else(|| Error::invalid("flat extent offset overflows"))?;
                    match data {
                        Some(d) => {
                            self.write_bytes(file, at, &d[done as usize..(done + n) as usize])?
                        }
                        None => self.write_zeros(file, at, n)?,
                    }
                }
                Target::Sparse(k) => {
                    let g = self.sparse[k].grain;
                    n = n.min(g - in_ext % g);
                    let piece = data.map(|d| &d[done as usize..(done + n) as usize]);
                    self.write_sparse(k, in_ext, n, piece)?;
                }
            }
            done += n;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.commit(u32::MAX)
    }
}

#[path = "inplace_open.rs"]
mod open;

#[cfg(test)]
#[path = "inplace_tests.rs"]
mod tests;
