//! Writing guest data into an existing VHD image in place (`convert -n -O vpc`), following QEMU 10's
//! block/vpc.c: `vpc_co_pwritev` (a fixed disk is written straight into its file; a dynamic or
//! differencing disk block by block through the BAT), `get_image_offset` with `write` set (the sector
//! bitmap of a block written into is set to all ones), `alloc_block` (a new block goes at
//! `free_data_block_offset`: its bitmap all ones, then its data, the footer copy moved behind it by
//! `rewrite_footer`, then its BAT entry). The image is opened and validated by [`crate::reader`].
//!
//! What each write does:
//! - fixed disk: data and zeros go into the file at the guest offset (zeros as zero bytes, which is
//!   what qemu's generic zero-write fallback gives, vpc having no `bdrv_co_pwrite_zeroes`);
//! - data or zeros into an allocated block: in place; the block's bitmap becomes all ones if it was
//!   not already (as `get_image_offset` makes it), so that readers honouring the bitmap (Virtual PC,
//!   Hyper-V) see every sector qemu sees;
//! - data into an unallocated block: the block is allocated at the end of the file (see below) and
//!   the data written; the rest of the block reads as zeros (it lies past the old end of the file,
//!   and whatever old bytes it covers, the old footer at most, are overwritten with zeros: qemu
//!   leaves the old footer's bytes in the data of a block under 4 KiB, which has no bitmap);
//! - zeros into an unallocated block of a dynamic disk: nothing (it reads as zeros). qemu-img
//!   `convert -n` allocates such blocks and fills them with zeros, as it writes zeros through the
//!   fallback on a target it cannot assume zero; the guest bytes are the same. On a differencing
//!   disk an unallocated block is the parent's to Virtual PC and Hyper-V, so there zeros allocate as
//!   in qemu, which reads a differencing disk as a dynamic one without a parent.
//!
//! Where new blocks go. qemu's `free_data_block_offset` is the end of the BAT or of the last block,
//! whichever is further; for images qemu made the footer copy sits exactly there. vdisk takes the
//! further of that and the footer copy at the end of the file (or the end of the file when its last
//! sector holds no footer), so that nothing the BAT does not describe (a parent locator, blocks a
//! crashed writer left unreferenced) is overwritten; for qemu's images the place is the same.
//!
//! Crash ordering. New blocks lie past every block the image references, and the BAT entries that
//! reference them are written only by `finish`, each step made durable before the next: (1) the
//! bitmaps and data of the new blocks, the footer copy at the new end of the file (written at each
//! allocation, as `rewrite_footer` does) and the in-place writes; (2) the BAT entries. A crash before
//! (2) leaves the old image, only longer: qemu opens a dynamic disk by the footer at offset 0 and
//! finds its free offset from the BAT, and the file again ends with a footer once (1) is complete
//! (a crash inside (1) may leave the old footer copy overwritten by a new block's bitmap and the new
//! one not yet written, which qemu does not mind; Virtual PC looks for the copy at the end). After
//! (2) the image is the new one; a crash inside (2) leaves each new block either referenced or not.
//! qemu orders an allocation the other way round (bitmap, footer, BAT entry, each synced, then the
//! data), so that a crash after the entry leaves a block of zeros in place of the data. Writes into
//! allocated blocks happen in place at once, as in qemu: a crash in the middle of one can leave that
//! block part old, part new (a bitmap set to all ones without the data makes Virtual PC see the old
//! bytes the file held in sectors it had marked absent, which qemu sees anyway). With durable commits
//! off (`-t unsafe`) no step is flushed.
//!
//! A writer dropped without `finish` leaves the old BAT: the in-place writes are kept, the new
//! blocks are unreferenced and the file ends with a footer copy; the next writer puts its blocks
//! after them.

use crate::bat::Bat;
use crate::footer::DiskType;
use crate::limits::{
    qemu_file_length, BAT_ENTRY_SIZE, BAT_UNUSED, DYN_HEADER_SIZE, FOOTER_COOKIE, FOOTER_SIZE,
    SECTOR_SIZE,
};
use crate::reader::{self, FooterAt};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vdisk_core::writer::{check_write_range, durable_commit, for_each_block_piece, neighbour_runs};
use vdisk_core::{
    Error, FileStorage, ImageReader, ImageWriter, Payload, Result, Storage, WriterCaps,
};

/// Opens the existing VHD image at `path` for writing in place: [`open_writer_in`] on the file
/// opened read-write.
pub fn open_writer(path: &Path) -> Result<Box<dyn ImageWriter>> {
    open_writer_in(Arc::new(FileStorage::open_rw(path)?))
}

/// Opens the existing VHD image in `storage` for writing in place. The image is opened as
/// [`crate::reader::open`] opens it, then checked for what writing needs (no block overlapping
/// another or the metadata, a fixed disk's data area clear of its footer); nothing is written until
/// the first write.
pub fn open_writer_in(storage: Arc<dyn Storage>) -> Result<Box<dyn ImageWriter>> {
    Ok(Box::new(InplaceWriter::open_in(storage)?))
}

/// The state of a dynamic or differencing disk being written.
struct Dynamic {
    /// The BAT as it will be once `finish` has written it.
    bat: Vec<u32>,
    table_offset: u64,
    block_size: u64,
    bitmap_size: u64,
    /// Blocks allocated by this writer, whose entries are not on disk yet.
    allocated: Vec<usize>,
    /// Blocks whose bitmap is known to be all ones.
    full_bitmap: HashSet<usize>,
    /// Where the next block goes (and the footer copy sits once a block has been allocated).
    next: u64,
    /// The footer as read at offset 0, which `rewrite_footer` copies to the end of the file.
    footer: [u8; FOOTER_SIZE],
    /// Whether zeros over an unallocated block allocate it (differencing disks).
    zeros_allocate: bool,
}

struct InplaceWriter {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    size: u64,
    /// `None` for a fixed disk.
    dynamic: Option<Dynamic>,
}

fn overflow() -> Error {
    Error::Other("VHD writer: file offset overflows".into())
}

impl InplaceWriter {
    #[cfg(test)]
    fn open(path: &Path) -> Result<Self> {
        Self::open_in(Arc::new(FileStorage::open_rw(path)?))
    }

    fn open_in(storage: Arc<dyn Storage>) -> Result<Self> {
        let path = storage.path().to_path_buf();
        let r = reader::open(Arc::clone(&storage))?;
        let size = r.virtual_size();
        let ty = r.footer().disk_type;
        let dynamic = match (r.footer_at(), ty, r.dynamic()) {
            (FooterAt::End(at), DiskType::Fixed, _) => {
                // vpc_co_pwritev writes a fixed disk's guest offsets straight into the file: a
                // virtual size larger than the data area would write over the footer.
                if size > at {
                    return Err(Error::corrupt(
                        &path,
                        Some(at),
                        format!(
                            "the virtual size ({size} bytes) of the fixed disk extends over its \
                             footer at {at}; refusing to write into it"
                        ),
                    ));
                }
                None
            }
            (FooterAt::Start, DiskType::Dynamic | DiskType::Differencing, Some(d)) => {
                Some(dynamic_state(storage.as_ref(), &path, &d.bat, d.header_at)?)
            }
            (FooterAt::Start, DiskType::Dynamic | DiskType::Differencing, None) => {
                return Err(Error::Other("VHD writer: no dynamic header".into()))
            }
            (at, ty, _) => {
                // A fixed type with its footer at offset 0 (qemu would write guest data over it) or
                // a type the spec reserves (qemu would treat it as dynamic).
                let place = match at {
                    FooterAt::Start => "at offset 0".to_string(),
                    FooterAt::End(o) => format!("at {o}"),
                };
                return Err(Error::unsupported(
                    &path,
                    format!(
                        "writing into a VHD of disk type {} with its footer {place}",
                        ty.name()
                    ),
                ));
            }
        };
        let zeros_allocate = ty == DiskType::Differencing;
        let dynamic = dynamic.map(|d| Dynamic {
            zeros_allocate,
            ..d
        });
        Ok(InplaceWriter {
            storage,
            path,
            size,
            dynamic,
        })
    }

    /// Stores one piece of a write that lies inside `block` of a dynamic disk: `data`, or `len`
    /// zeros when `None`.
    fn write_in_block(
        &mut self,
        block: u64,
        in_block: u64,
        len: u64,
        data: Option<&[u8]>,
    ) -> Result<()> {
        let storage = Arc::clone(&self.storage);
        let Some(d) = self.dynamic.as_mut() else {
            return Err(Error::Other("VHD writer: not a dynamic disk".into()));
        };
        let index = usize::try_from(block)
            .ok()
            .filter(|i| *i < d.bat.len())
            .ok_or_else(|| Error::Other(format!("VHD block {block} outside the BAT")))?;
        let entry = d.bat[index];
        if entry == BAT_UNUSED {
            if data.is_none() && !d.zeros_allocate {
                return Ok(());
            }
            return d.allocate(storage.as_ref(), &self.path, index, in_block, data);
        }
        let start = u64::from(entry) * SECTOR_SIZE;
        d.fill_bitmap(storage.as_ref(), index, start)?;
        let at = start + d.bitmap_size + in_block;
        match data {
            Some(bytes) => storage.write_at(bytes, at),
            None => storage.write_zeros(at, len),
        }
    }

    /// Makes the new blocks part of the image, in the durable steps the module comment lists,
    /// stopping after `max_steps` of them: tests use it to look at what a crash there leaves.
    fn commit(&self, max_steps: u32) -> Result<()> {
        // (1) the new blocks, the footer copy at the end, the in-place writes.
        self.sync()?;
        let Some(d) = &self.dynamic else {
            return Ok(());
        };
        if d.allocated.is_empty() || max_steps <= 1 {
            return Ok(());
        }
        // (2) the BAT entries, in runs of neighbouring blocks.
        for (first, last) in neighbour_runs(&d.allocated) {
            let run = d
                .bat
                .get(first..=last)
                .ok_or_else(|| Error::Other("VHD BAT run out of range".into()))?;
            let bytes: Vec<u8> = run.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.storage
                .write_at(&bytes, d.table_offset + first as u64 * BAT_ENTRY_SIZE)?;
        }
        self.sync()
    }

    fn sync(&self) -> Result<()> {
        if durable_commit() {
            self.storage.sync()?;
        }
        Ok(())
    }
}

/// Checks a dynamic disk's layout for writing and finds where new blocks go.
fn dynamic_state(storage: &dyn Storage, path: &Path, bat: &Bat, header_at: u64) -> Result<Dynamic> {
    let block_size = u64::from(bat.block_size());
    let bitmap_size = bat.bitmap_size();
    let table_offset = bat.table_offset();
    let table_end = (bat.entries().len() as u64)
        .checked_mul(BAT_ENTRY_SIZE)
        .and_then(|n| n.checked_add(table_offset))
        .ok_or_else(overflow)?;
    let header_end = header_at
        .checked_add(DYN_HEADER_SIZE as u64)
        .ok_or_else(overflow)?;
    // The structures vdisk leaves alone but must not write over: the footer copy at 0, the
    // dynamic header, the BAT (written by `finish`).
    let meta: [(&str, u64, u64); 3] = [
        ("the footer at offset 0", 0, FOOTER_SIZE as u64),
        ("the dynamic disk header", header_at, header_end),
        ("the BAT", table_offset, table_end),
    ];
    let overlaps = |a: (u64, u64), b: (u64, u64)| a.0 < b.1 && b.0 < a.1;
    for (name, s, e) in &meta[..2] {
        if overlaps((table_offset, table_end), (*s, *e)) {
            return Err(refuse(
                path,
                table_offset,
                format!("the BAT overlaps {name}"),
            ));
        }
    }
    // Every allocated block: bitmap and data, sector-aligned (Bat::read has checked that each lies
    // inside the file, so there are at most file length / 512 of them).
    let mut blocks: Vec<(u64, u64, usize)> = Vec::with_capacity(bat.allocated());
    for (i, e) in bat.entries().iter().enumerate() {
        if *e == BAT_UNUSED {
            continue;
        }
        let start = u64::from(*e) * SECTOR_SIZE;
        let end = start + bitmap_size + block_size;
        let at = table_offset + i as u64 * BAT_ENTRY_SIZE;
        for (name, s, e) in &meta {
            if overlaps((start, end), (*s, *e)) {
                return Err(refuse(path, at, format!("block {i} overlaps {name}")));
            }
        }
        blocks.push((start, end, i));
    }
    blocks.sort_unstable();
    for w in blocks.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(refuse(
                path,
                table_offset + w[1].2 as u64 * BAT_ENTRY_SIZE,
                format!("block {} overlaps block {}", w[1].2, w[0].2),
            ));
        }
    }
    let mut footer = [0u8; FOOTER_SIZE];
    storage.read_zero_padded(&mut footer, 0)?;
    // The end of the file as qemu counts it; a footer copy in its last sector is overwritten by the
    // first new block.
    let file_len = qemu_file_length(storage.len()?);
    let mut last = [0u8; FOOTER_SIZE];
    let mut file_end = file_len;
    if let Some(at) = file_len.checked_sub(FOOTER_SIZE as u64) {
        storage.read_zero_padded(&mut last, at)?;
        if &last[..8] == FOOTER_COOKIE {
            file_end = at;
        }
    }
    let next = bat
        .end_offset()
        .max(file_end)
        .max(header_end)
        .checked_next_multiple_of(SECTOR_SIZE)
        .ok_or_else(overflow)?;
    Ok(Dynamic {
        bat: bat.entries().to_vec(),
        table_offset,
        block_size,
        bitmap_size,
        allocated: Vec::new(),
        full_bitmap: HashSet::new(),
        next,
        footer,
        zeros_allocate: false,
    })
}

fn refuse(path: &Path, at: u64, what: String) -> Error {
    Error::corrupt(path, Some(at), format!("{what}; refusing to write into it"))
}

impl Dynamic {
    /// Makes the bitmap of allocated block `index` (at file offset `start`) all ones, as
    /// `get_image_offset` does before a write; read first, so that a full bitmap is not rewritten.
    fn fill_bitmap(&mut self, storage: &dyn Storage, index: usize, start: u64) -> Result<()> {
        if self.bitmap_size == 0 || self.full_bitmap.contains(&index) {
            return Ok(());
        }
        // At most 512 KiB (a 2 GiB block), inside the file (checked at open).
        let mut bitmap = vec![0u8; self.bitmap_size as usize];
        storage.read_zero_padded(&mut bitmap, start)?;
        if bitmap.iter().any(|b| *b != 0xff) {
            bitmap.fill(0xff);
            storage.write_at(&bitmap, start)?;
        }
        self.full_bitmap.insert(index);
        Ok(())
    }

    /// Allocates block `index` at `next` as `alloc_block` does (bitmap all ones, footer copy moved
    /// behind the block) and writes `data` at `in_block` in it (`None`: zeros, which it reads as
    /// already). Only the in-memory BAT references the block until `finish`.
    fn allocate(
        &mut self,
        storage: &dyn Storage,
        path: &Path,
        index: usize,
        in_block: u64,
        data: Option<&[u8]>,
    ) -> Result<()> {
        let at = self.next;
        let sector = u32::try_from(at / SECTOR_SIZE)
            .ok()
            .filter(|s| *s != BAT_UNUSED)
            .ok_or_else(|| {
                Error::limit(
                    path,
                    "new block's offset in sectors (a BAT entry is 32 bits)",
                    at / SECTOR_SIZE,
                    u64::from(BAT_UNUSED) - 1,
                )
            })?;
        let data_at = at.checked_add(self.bitmap_size).ok_or_else(overflow)?;
        let end = data_at.checked_add(self.block_size).ok_or_else(overflow)?;
        // Old bytes the block's data area covers (the footer copy, when blocks have no bitmap) must
        // read as zeros; past the old end the file reads as zeros already.
        let old_len = storage.len()?;
        if old_len > data_at {
            storage.write_zeros(data_at, old_len.min(end) - data_at)?;
        }
        if self.bitmap_size > 0 {
            // At most 512 KiB.
            storage.write_at(&vec![0xffu8; self.bitmap_size as usize], at)?;
        }
        // Zeros (a differencing disk's) need no write: the block reads as zeros already.
        if let Some(bytes) = data {
            let piece_at = data_at.checked_add(in_block).ok_or_else(overflow)?;
            storage.write_at(bytes, piece_at)?;
        }
        // rewrite_footer: the footer copy at the new end of the file.
        storage.write_at(&self.footer, end)?;
        self.bat[index] = sector;
        self.allocated.push(index);
        self.full_bitmap.insert(index);
        self.next = end;
        Ok(())
    }
}

impl ImageWriter for InplaceWriter {
    fn caps(&self) -> WriterCaps {
        WriterCaps {
            // Data goes to the file as it comes, whatever its alignment within a block.
            granularity: SECTOR_SIZE,
            // Every write looks its block up in the BAT and allocates at the end of the file, so
            // the order of writes only changes where a new block goes.
            out_of_order: true,
            // The image holds data: zero runs must be written.
            zero_initialized: false,
            copy_range: false,
        }
    }

    fn write(&mut self, offset: u64, payload: Payload) -> Result<()> {
        let len = payload.len();
        check_write_range(&self.path, offset, len, self.size)?;
        let data = payload.plain("VHD writer")?;
        let Some(bs) = self.dynamic.as_ref().map(|d| d.block_size) else {
            // vpc_co_pwritev on a fixed disk: straight into the file.
            return match data {
                Some(bytes) => self.storage.write_at(bytes, offset),
                None => self.storage.write_zeros(offset, len),
            };
        };
        for_each_block_piece(offset, len, data, bs, |block, in_block, n, piece| {
            self.write_in_block(block, in_block, n, piece)
        })
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.commit(u32::MAX)
    }
}

#[cfg(test)]
#[path = "inplace_tests.rs"]
mod tests;
