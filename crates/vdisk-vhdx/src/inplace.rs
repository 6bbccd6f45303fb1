//! Writing guest data into an existing VHDX image in place (`convert -n -O vhdx`), following QEMU 10's
//! block/vhdx.c: `vhdx_co_writev` (per payload block, by the state of its BAT entry),
//! `vhdx_allocate_block` (a new block at the end of the file rounded up to 1 MiB, the file extended
//! over it), `vhdx_update_bat_table_entry` (the entry becomes the offset | FULLY_PRESENT) and
//! `vhdx_user_visible_write` / `vhdx_update_headers` (new FileWriteGuid and DataWriteGuid, a higher
//! sequence number, written to the non-current header then to the other one; spec 2.2.2.1). A log
//! that needs replaying is replayed first, as `vhdx_open` does read-write ([`crate::replay`]); the
//! image is then opened and validated by [`crate::reader::open`] and checked for what writing needs
//! ([`crate::inplace_check`]).
//!
//! What each write does, by the state of the block's BAT entry:
//! - FULLY_PRESENT: data and zeros go into the block in place (zeros as zero bytes: the driver has
//!   no `bdrv_co_pwrite_zeroes`, so qemu's block layer writes zero buffers through `vhdx_co_writev`);
//! - NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED (both values): data allocates the block, as qemu does
//!   for each of these states, and the data is written into it; the rest of the block reads as
//!   zeros, as qemu's reads of the block did before (it lies wholly past the old end of the file,
//!   which is extended over it: qemu truncates the same way and zero-fills only when the
//!   truncation cannot promise zeros). A ZERO block of a fixed image that carries an offset is
//!   allocated anew at the end too, as qemu does; its preallocated space is left unused;
//! - zeros into a block that is not FULLY_PRESENT: nothing, it reads as zeros already. qemu-img
//!   `convert -n` allocates such blocks and fills them with zeros (it writes zero buffers on a
//!   target it cannot assume zero); the guest bytes are the same;
//! - PARTIALLY_PRESENT and the reserved state 4 (qemu fails such writes with EIO), a FULLY_PRESENT
//!   entry in the first MiB (qemu: EFAULT) and blocks overlapping each other are refused when the
//!   writer is opened, with the file unchanged.
//!
//! Headers. Before the first byte of a session reaches the file, the headers are updated as
//! `vhdx_update_headers` does: the current header's fields with a new FileWriteGuid and
//! DataWriteGuid (one pair per session) and sequence number + 1 go into the non-current header
//! (its 4 KiB block's reserved bytes kept, the CRC-32C over all of it, the 80 bytes of fields
//! written: one sector), made durable; then the same with sequence number + 2 into the other
//! header, made durable, so that both headers are valid and agree as after qemu's update. The log
//! GUID is kept as it is (zero for every image qemu or vdisk wrote, and after a replay: qemu's own
//! writes end with `vhdx_log_reset`). Like qemu 10 (whose `vhdx_open` writes nothing to an image
//! without a log to replay), vdisk writes nothing at open, so an open without writes changes
//! nothing. After a replay qemu does not update the headers again for its first write (the
//! replay's `vhdx_user_visible_write` counts as it); vdisk does, with two more sequence numbers.
//!
//! Crash ordering, without the log: (H) the header update above, before any other write; (1) in
//! place writes happen at once, new blocks are written past the old end of the file, and `finish`
//! makes all of it (and the file's new length) durable; (2) then the BAT entries of the new blocks,
//! made durable. qemu journals each BAT entry through its log; vdisk writes no log and never sets
//! the log GUID, so qemu never finds anything to replay, and the ordering keeps every crash point
//! consistent: before (2) the BAT references no new block, so the image reads as before apart from
//! the blocks written in place, and is only longer (qemu never looks past what the BAT
//! references, and `qemu-img check` counts no leaks for vhdx); each BAT entry is 8 bytes aligned to
//! 8 (a table at an offset that is not is refused) and so lies in one sector, written whole or not at all, and it is written only once its block
//! is durable: a crash inside (2) leaves each new block referenced with its data or not at all. A
//! header write torn inside (H) fails its CRC-32C, and qemu uses the other header, which is whole.
//! The header update comes first, not last, because its DataWriteGuid says "the data may have
//! changed since": a crash after it with the data unchanged is harmless, whereas data changed under
//! the old DataWriteGuid would deceive a differencing child that checks its parent's GUID. Writes
//! into FULLY_PRESENT blocks are in place, as in qemu: a crash in the middle of one can leave that
//! block part old, part new. With durable commits off (`-t unsafe`) no step is flushed.
//!
//! A writer dropped without `finish` leaves the updated headers, the in-place writes and the new
//! blocks unreferenced past the old end of the file; the next writer allocates after them.

use crate::bat::{entry_offset, Bat, BlockState};
use crate::inplace_check::{check_layout, write_headers};
use crate::limits::{qemu_file_length, BAT_ENTRY_SIZE, BAT_STATE_MASK, MAX_FILE_OFFSET};
use crate::reader;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vdisk_core::writer::{check_write_range, durable_commit, for_each_block_piece};
use vdisk_core::{Error, FileStorage, ImageWriter, Payload, Result, Storage, WriterCaps};

const MIB: u64 = 1 << 20;

/// The FULLY_PRESENT state (spec 2.5.1.1; `PAYLOAD_BLOCK_FULLY_PRESENT`).
const FULLY_PRESENT: u64 = 6;

/// Most BAT bytes written at once by `finish`.
const BAT_WRITE_CHUNK: usize = 64 * 1024;

/// Opens the existing VHDX image at `path` for writing in place: [`open_writer_in`] on the file
/// opened read-write.
pub fn open_writer(path: &Path) -> Result<Box<dyn ImageWriter>> {
    open_writer_in(Arc::new(FileStorage::open_rw(path)?))
}

/// Opens the existing VHDX image in `storage` for writing in place. A log that needs replaying is
/// replayed first ([`crate::replay::replay_log`]), as qemu's read-write open does; the image is
/// then opened as [`crate::reader::open`] opens it and checked for what writing needs; nothing
/// else is written until the first write that changes the file.
pub fn open_writer_in(storage: Arc<dyn Storage>) -> Result<Box<dyn ImageWriter>> {
    Ok(Box::new(InplaceWriter::open_in(storage)?))
}

pub(crate) struct InplaceWriter {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    size: u64,
    block_size: u64,
    bat: Bat,
    /// The current header's index and its 80 bytes of fields as stored.
    pub(crate) header: (usize, [u8; crate::limits::HEADER_FIELDS_SIZE]),
    /// Whether this session has updated the headers yet.
    headers_done: bool,
    /// Blocks allocated by this writer and their file offsets; their entries are not on disk yet.
    new_blocks: BTreeMap<u64, u64>,
    /// Where the next block goes (a multiple of 1 MiB, at or past the end of the file).
    next: u64,
}

fn overflow() -> Error {
    Error::Other("VHDX writer: file offset overflows".into())
}

impl InplaceWriter {
    #[cfg(test)]
    pub(crate) fn open(path: &Path) -> Result<Self> {
        Self::open_in(Arc::new(FileStorage::open_rw(path)?))
    }

    fn open_in(storage: Arc<dyn Storage>) -> Result<Self> {
        let path = storage.path().to_path_buf();
        // vhdx_open with BDRV_O_RDWR replays a log that needs it before anything else.
        crate::replay::replay_log(storage.as_ref())?;
        let r = reader::open(Arc::clone(&storage))?;
        let block_size = u64::from(r.metadata().block_size);
        let size = r.size();
        let file_len = storage.len()?;
        check_layout(&path, r.bat(), block_size, size, file_len)?;
        let (index, h) = r.header();
        // vhdx_allocate_block: the file's length (bdrv_getlength, whole sectors) rounded up to 1 MiB.
        let next = qemu_file_length(file_len)
            .checked_next_multiple_of(MIB)
            .ok_or_else(overflow)?;
        Ok(InplaceWriter {
            header: (index, h.fields),
            bat: r.bat().clone(),
            storage,
            path,
            size,
            block_size,
            headers_done: false,
            new_blocks: BTreeMap::new(),
            next,
        })
    }

    /// The entry of payload `block` as this session has made it.
    fn entry(&self, block: u64) -> u64 {
        match self.new_blocks.get(&block) {
            Some(at) => at | FULLY_PRESENT,
            None => self.bat.payload_entry(block),
        }
    }

    /// `vhdx_user_visible_write`: the header update of the module comment, once per session,
    /// stopping after `max_steps` durable steps (tests look at what a crash there leaves).
    pub(crate) fn update_headers(&mut self, max_steps: u32) -> Result<()> {
        if self.headers_done {
            return Ok(());
        }
        self.headers_done = true;
        write_headers(
            self.storage.as_ref(),
            self.header,
            max_steps,
            durable_commit(),
        )
    }

    /// Stores one piece of a write that lies inside payload `block`: `data`, or `len` zeros.
    fn write_in_block(
        &mut self,
        block: u64,
        in_block: u64,
        len: u64,
        data: Option<&[u8]>,
    ) -> Result<()> {
        let entry = self.entry(block);
        let state = BlockState::of(entry);
        match state {
            BlockState::FullyPresent => {}
            BlockState::PartiallyPresent | BlockState::Reserved4 => {
                // Refused at open; kept as qemu's EIO should the table change under us.
                return Err(Error::unsupported(
                    &self.path,
                    format!(
                        "writing into payload block {block} in state {}",
                        state.name()
                    ),
                ));
            }
            // Zeros into a block that reads as zeros: nothing to do.
            _ if data.is_none() => return Ok(()),
            _ => {}
        }
        self.update_headers(u32::MAX)?;
        let base = if state == BlockState::FullyPresent {
            entry_offset(entry)
        } else {
            self.allocate(block)?
        };
        let at = base.checked_add(in_block).ok_or_else(overflow)?;
        match data {
            Some(bytes) => self.storage.write_at(bytes, at),
            None => self.storage.write_zeros(at, len),
        }
    }

    /// `vhdx_allocate_block`: block `block` goes at `next`, and the file is extended over it, so
    /// that it reads as zeros. Only the in-memory table references it until `finish`.
    fn allocate(&mut self, block: u64) -> Result<u64> {
        let at = self.next;
        let end = at
            .checked_add(self.block_size)
            .filter(|e| *e <= MAX_FILE_OFFSET)
            .ok_or_else(|| {
                Error::limit(
                    &self.path,
                    "file length after a new payload block",
                    at.saturating_add(self.block_size),
                    MAX_FILE_OFFSET,
                )
            })?;
        if self.storage.len()? < end {
            self.storage.set_len(end)?;
        }
        self.new_blocks.insert(block, at);
        // The block size is a multiple of 1 MiB, so `end` is the next place already.
        self.next = end;
        Ok(at)
    }

    /// Makes the new blocks part of the image in the durable steps the module comment lists,
    /// stopping after `max_steps` of them: tests use it to look at what a crash there leaves.
    pub(crate) fn commit(&self, max_steps: u32) -> Result<()> {
        // (1) the in-place writes, the new blocks and the file's length.
        self.sync()?;
        if self.new_blocks.is_empty() || max_steps <= 1 {
            return Ok(());
        }
        // (2) the BAT entries, in runs of neighbouring entries.
        let ratio = self.bat.chunk_ratio;
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0u64;
        for (&block, &at) in &self.new_blocks {
            // vhdx_block_translate: a sector bitmap entry after every `chunk_ratio` blocks.
            let index = block + block / ratio;
            let next_index = run_start + (run.len() as u64) / BAT_ENTRY_SIZE;
            if !run.is_empty() && (index != next_index || run.len() >= BAT_WRITE_CHUNK) {
                self.write_bat_run(run_start, &run)?;
                run.clear();
            }
            if run.is_empty() {
                run_start = index;
            }
            let entry = (at & !BAT_STATE_MASK) | FULLY_PRESENT;
            run.extend_from_slice(&entry.to_le_bytes());
        }
        if !run.is_empty() {
            self.write_bat_run(run_start, &run)?;
        }
        self.sync()
    }

    fn write_bat_run(&self, first_index: u64, bytes: &[u8]) -> Result<()> {
        let at = first_index
            .checked_mul(BAT_ENTRY_SIZE)
            .and_then(|o| o.checked_add(self.bat.offset))
            .ok_or_else(overflow)?;
        self.storage.write_at(bytes, at)
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
            // Data goes to the file as it comes, whatever its alignment within a block.
            granularity: 512,
            // Every write looks its block up and allocates at the end of the file, so the order of
            // writes only changes where a new block goes.
            out_of_order: true,
            // The image holds data: zero runs must be written.
            zero_initialized: false,
            copy_range: false,
        }
    }

    fn write(&mut self, offset: u64, payload: Payload) -> Result<()> {
        let len = payload.len();
        check_write_range(&self.path, offset, len, self.size)?;
        let data = payload.plain("VHDX writer")?;
        let bs = self.block_size;
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
