//! Writing guest data into an existing VDI image in place (`convert -n`), following the block map
//! and data-slot layout of VirtualBox's VDICore.h (see [`crate::bmap`]) and the allocation rule of
//! QEMU's block/vdi.c `vdi_co_pwritev`: a new block takes slot `blocks_allocated` at the end of the
//! data area and is written whole (unwritten parts zero) before the header count and its map entry
//! come to reference it.
//!
//! What each write does:
//! - data into an allocated block (static images, or dynamic blocks already written): in place, at
//!   the block's slot, whatever part of the block it covers;
//! - data into an unallocated block (free or discarded entry): the block gets the next slot, whose
//!   extra data and bytes outside the write are written as zeros; later writes into it go there;
//! - zeros over an unallocated block: nothing (it reads as zeros already);
//! - zeros over an allocated block: zeros are written into its slot, and the block stays allocated
//!   even when it becomes all zero. VDI has no free list: slots are numbered densely from 0 to
//!   `blocks_allocated - 1` and the next one is always `blocks_allocated`, so a slot given up in the
//!   middle could never be reused, and marking the entry zero while keeping the count would make
//!   `qemu-img check` report a mismatch.
//!
//! Crash ordering. New slots lie past every slot the image references, and the map entries and the
//! header count that reference them are written only by `finish`, in this order, each step made
//! durable before the next: (1) the data of every new slot; (2) the header's `blocks_allocated`
//! (one 4-byte field in the first sector); (3) the map entries. A crash before (2) leaves the old
//! image, which passes `qemu-img check` (the file is only longer, which check does not mind).
//! A crash between (2) and (3) leaves every block reading its old content, but a count higher than
//! the entries using slots: `qemu-img check` reports "allocated blocks mismatch" and the new slots
//! are leaked. No order avoids that window, as the count and the entries lie in different sectors;
//! this one is QEMU's, and it is the safe one: the other (entries first) leaves a count lower than
//! the slots in use, and the next block QEMU allocates would then take a slot another block holds.
//! After (3) the image is the new one. Writes into blocks that were already allocated happen in
//! place at once, as in QEMU and the raw writer: a crash in the middle of one can leave that block
//! part old, part new. With durable commits off (`-t unsafe`) no step is flushed.
//!
//! A writer dropped without `finish` leaves the old map and count: the in-place writes are kept,
//! the new slots are unreferenced (and reused by the next allocation).

use crate::bmap::{self, Entry};
use crate::check::check_map;
use crate::header::{Header, BLOCKS_ALLOCATED_V1, PARSE_LEN};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vdisk_core::writer::{check_write_range, durable_commit, for_each_block_piece, neighbour_runs};
use vdisk_core::{Error, FileStorage, ImageWriter, Payload, Result, Storage, WriterCaps};

/// Opens the existing VDI image at `path` for writing in place: [`open_writer_in`] on the file
/// opened read-write.
pub fn open_writer(path: &Path) -> Result<Box<dyn ImageWriter>> {
    open_writer_in(Arc::new(FileStorage::open_rw(path)?))
}

/// Opens the existing VDI image in `storage` for writing in place. The header and block map are
/// parsed, validated and checked as `qemu-img check` would; nothing is written until the first
/// write.
pub fn open_writer_in(storage: Arc<dyn Storage>) -> Result<Box<dyn ImageWriter>> {
    Ok(Box::new(InplaceWriter::open_in(storage)?))
}

struct InplaceWriter {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    header: Header,
    /// The block map as it will be once `finish` has written it.
    map: Vec<u32>,
    /// Blocks given a new slot by this writer, whose entries are not on disk yet.
    allocated: Vec<usize>,
    /// The slot the next allocated block takes.
    next_slot: u32,
}

impl InplaceWriter {
    #[cfg(test)]
    fn open(path: &Path) -> Result<Self> {
        Self::open_in(Arc::new(FileStorage::open_rw(path)?))
    }

    fn open_in(storage: Arc<dyn Storage>) -> Result<Self> {
        let owned = storage.path().to_path_buf();
        let path = owned.as_path();
        let file_len = storage.len()?;
        let mut sector = vec![0u8; PARSE_LEN.min(usize::try_from(file_len).unwrap_or(PARSE_LEN))];
        storage.read_exact_at(&mut sector, 0)?;
        let header = Header::parse(&sector, path)?;
        header.validate(path, file_len)?;
        if header.is_v0() {
            return Err(Error::unsupported(
                path,
                "writing into a version 0 VDI image",
            ));
        }
        let map = bmap::read(storage.as_ref(), &header)?;
        let report = check_map(&header, &map, file_len);
        if report.corruptions > 0 {
            return Err(Error::corrupt(
                path,
                None,
                format!(
                    "{} errors found by check ({}); refusing to write into it",
                    report.corruptions,
                    report.messages.join("; ")
                ),
            ));
        }
        // The next slot is `blocks_allocated`: it must be free, i.e. the slots in use must be
        // exactly 0..blocks_allocated (check has ruled out duplicates and a wrong count).
        let count = header.blocks_allocated;
        if let Some((block, slot)) = map
            .iter()
            .enumerate()
            .find(|(_, e)| matches!(Entry::decode(**e), Entry::Slot(s) if s >= count))
        {
            return Err(Error::unsupported(
                path,
                format!(
                    "VDI block {block} uses data slot {slot}, not below the {count} allocated \
                     blocks (slots not numbered densely); refusing to write into it"
                ),
            ));
        }
        Ok(InplaceWriter {
            path: owned,
            storage,
            header,
            map,
            allocated: Vec::new(),
            next_slot: count,
        })
    }

    fn bs(&self) -> u64 {
        u64::from(self.header.block_size)
    }

    /// Writes `len` zero bytes at file offset `at`.
    fn write_zeros(&self, at: u64, len: u64) -> Result<()> {
        self.storage.write_zeros(at, len)
    }

    /// Gives `block` the next free slot and writes `piece` at `in_block` in it, zeros around it
    /// (extra data included). Only the in-memory map references the slot until `finish`.
    fn allocate(&mut self, block: u64, in_block: u64, piece: &[u8]) -> Result<()> {
        let h = &self.header;
        let slot = self.next_slot;
        // One past the last slot is the count of allocated entries, which an image passing check
        // keeps below the number of entries as long as one of them is unallocated.
        if slot >= h.blocks_in_image {
            return Err(Error::corrupt(
                &self.path,
                None,
                format!(
                    "no free VDI data slot for block {block} ({} of {} allocated)",
                    slot, h.blocks_in_image
                ),
            ));
        }
        let data_at = bmap::slot_offset(h, &self.path, block, slot)?;
        let slot_at = data_at - u64::from(h.block_extra);
        let bs = self.bs();
        let piece_end = in_block + piece.len() as u64;
        self.write_zeros(slot_at, u64::from(self.header.block_extra) + in_block)?;
        self.storage.write_at(piece, data_at + in_block)?;
        self.write_zeros(data_at + piece_end, bs - piece_end)?;
        let index = usize::try_from(block)
            .ok()
            .filter(|i| *i < self.map.len())
            .ok_or_else(|| Error::Other(format!("VDI block {block} outside the block map")))?;
        self.map[index] = slot;
        self.allocated.push(index);
        self.next_slot = slot + 1;
        Ok(())
    }

    /// The block map entry of `block` (in the map as this writer left it).
    fn entry(&self, block: u64) -> Result<Entry> {
        usize::try_from(block)
            .ok()
            .and_then(|i| self.map.get(i))
            .map(|e| Entry::decode(*e))
            .ok_or_else(|| Error::Other(format!("VDI block {block} outside the block map")))
    }

    /// Stores one piece of a write that lies inside `block`: `data` bytes, or zeros when `None`.
    fn write_in_block(
        &mut self,
        block: u64,
        in_block: u64,
        len: u64,
        data: Option<&[u8]>,
    ) -> Result<()> {
        match (self.entry(block)?, data) {
            (Entry::Slot(slot), data) => {
                let at = bmap::slot_offset(&self.header, &self.path, block, slot)? + in_block;
                match data {
                    Some(d) => self.storage.write_at(d, at),
                    None => self.write_zeros(at, len),
                }
            }
            (Entry::Free | Entry::Zero, None) => Ok(()),
            (Entry::Free | Entry::Zero, Some(d)) => self.allocate(block, in_block, d),
        }
    }

    /// Makes the new slots part of the image, in the durable steps the module comment lists,
    /// stopping after `max_steps` of them: tests use it to look at what a crash there leaves.
    fn commit(&self, max_steps: u32) -> Result<()> {
        // (1) the data of the new slots (and the in-place writes).
        self.sync()?;
        if self.allocated.is_empty() || max_steps <= 1 {
            return Ok(());
        }
        // (2) the count, one field of the first sector.
        self.storage
            .write_at(&self.next_slot.to_le_bytes(), BLOCKS_ALLOCATED_V1 as u64)?;
        self.sync()?;
        if max_steps <= 2 {
            return Ok(());
        }
        // (3) the entries, in runs of neighbouring blocks.
        for (first, last) in neighbour_runs(&self.allocated) {
            let run = self
                .map
                .get(first..=last)
                .ok_or_else(|| Error::Other("VDI block map run out of range".into()))?;
            bmap::write(
                self.storage.as_ref(),
                self.header.offset_bmap + first as u64 * 4,
                run,
            )?;
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

impl ImageWriter for InplaceWriter {
    fn caps(&self) -> WriterCaps {
        WriterCaps {
            // Whole blocks, as the creating writer: a block allocated by a write then gets its
            // data in one piece rather than zeros first and data after.
            granularity: self.bs(),
            // Every write looks its block up in the map and allocates at the end of the data area,
            // so the order of writes only changes which slot a new block takes.
            out_of_order: true,
            // The image holds data: zero runs must be written.
            zero_initialized: false,
            copy_range: false,
        }
    }

    fn write(&mut self, offset: u64, payload: Payload) -> Result<()> {
        let len = payload.len();
        check_write_range(&self.path, offset, len, self.header.virtual_size())?;
        let data = payload.plain("VDI writer")?;
        let bs = self.bs();
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
