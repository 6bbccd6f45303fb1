//! The block allocation table of a dynamic disk (spec "Block Allocation Table and Data Blocks"):
//! reading it and validating it as `vpc_open` does (block count, table size, every allocated block
//! inside the file), and looking blocks up as `get_image_offset` does. The per-block sector bitmap
//! is skipped, never consulted: qemu reads every sector of an allocated block from the file.

use crate::dynheader::DynHeader;
use crate::limits::{
    qemu_file_length, BAT_ENTRY_SIZE, BAT_UNUSED, MAX_BLOCKS, MAX_TABLE_ENTRIES, SECTOR_SIZE,
};
use std::path::Path;
use vdisk_core::{Error, Result, Storage};

/// The BAT of an opened dynamic (or differencing) disk.
#[derive(Debug, Clone)]
pub struct Bat {
    entries: Vec<u32>,
    block_size: u32,
    bitmap_size: u64,
    table_offset: u64,
    end_offset: u64,
}

fn truncated(path: &Path, at: u64, what: String, file_len: u64) -> Error {
    Error::corrupt(
        path,
        Some(at),
        format!(
            "{what} ends past the end of the file ({file_len} bytes): free_data_block_offset points \
             after the end of file. The image has been truncated."
        ),
    )
}

impl Bat {
    /// Checks the header's table against the virtual size and the file, then reads it. `header_at`
    /// is the header's file offset (for messages); `total_sectors` the virtual size.
    pub fn read(
        storage: &dyn Storage,
        header: &DynHeader,
        header_at: u64,
        total_sectors: u64,
    ) -> Result<Bat> {
        let path = storage.path();
        let block_size = header.checked_block_size(path, header_at)?;
        let bs = u64::from(block_size);
        let bitmap_size = header.bitmap_size();
        let disk_bytes = total_sectors
            .checked_mul(SECTOR_SIZE)
            .ok_or_else(|| Error::corrupt(path, None, "virtual size overflows"))?;
        let blocks = disk_bytes / bs;
        if blocks > MAX_BLOCKS {
            return Err(Error::limit(
                path,
                "number of blocks (Too many blocks)",
                blocks,
                MAX_BLOCKS,
            ));
        }
        let count = u64::from(header.max_table_entries);
        // A u32 times a u32: no overflow in u64.
        if count * bs < disk_bytes {
            return Err(Error::corrupt(
                path,
                Some(header_at + 28),
                format!(
                    "Page table too small: {count} entries of {bs}-byte blocks cover less than the \
                     virtual size of {disk_bytes} bytes"
                ),
            ));
        }
        if count > MAX_TABLE_ENTRIES {
            return Err(Error::limit(
                path,
                "BAT entries (Max Table Entries too large)",
                count,
                MAX_TABLE_ENTRIES,
            ));
        }
        // qemu reads the table (zeros past the end of the file) and then finds that it ends past the
        // end of the file; vdisk checks first, so that a hostile count allocates nothing.
        let file_len = qemu_file_length(storage.len()?);
        let table_offset = header.table_offset;
        let table_bytes = count * BAT_ENTRY_SIZE;
        let table_end = table_offset
            .checked_add(table_bytes)
            .and_then(|e| e.checked_next_multiple_of(SECTOR_SIZE))
            .filter(|e| *e <= file_len)
            .ok_or_else(|| {
                truncated(
                    path,
                    table_offset,
                    format!("the block allocation table ({count} entries at {table_offset:#x})"),
                    file_len,
                )
            })?;
        // The table lies inside the file, so this allocation is bounded by the file's length.
        let len = usize::try_from(table_bytes)
            .map_err(|_| Error::limit(path, "BAT size in bytes", table_bytes, usize::MAX as u64))?;
        let mut raw = vec![0u8; len];
        storage.read_zero_padded(&mut raw, table_offset)?;
        let entries: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        drop(raw);
        let mut end_offset = table_end;
        for (i, e) in entries.iter().enumerate() {
            if *e == BAT_UNUSED {
                continue;
            }
            // At most 2^41 + 2^31 + 2^31: no overflow.
            let next = u64::from(*e) * SECTOR_SIZE + bitmap_size + bs;
            if next > file_len {
                return Err(truncated(
                    path,
                    table_offset + i as u64 * BAT_ENTRY_SIZE,
                    format!("block {i} (at sector {e:#x})"),
                    file_len,
                ));
            }
            end_offset = end_offset.max(next);
        }
        Ok(Bat {
            entries,
            block_size,
            bitmap_size,
            table_offset,
            end_offset,
        })
    }

    /// Bytes of guest data per block.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Bytes of sector bitmap in front of each block's data.
    pub fn bitmap_size(&self) -> u64 {
        self.bitmap_size
    }

    /// Offset of the table in the file.
    pub fn table_offset(&self) -> u64 {
        self.table_offset
    }

    /// Where qemu would put the next block (`free_data_block_offset`): the end of the table or of the
    /// last block, whichever is further.
    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }

    /// The raw entries (sector numbers of each block's bitmap, or [`BAT_UNUSED`]).
    pub fn entries(&self) -> &[u32] {
        &self.entries
    }

    /// How many blocks are allocated.
    pub fn allocated(&self) -> usize {
        self.entries.iter().filter(|e| **e != BAT_UNUSED).count()
    }

    /// File offset of the first data byte of `block` (after its bitmap), or `None` when the block is
    /// not allocated or beyond the table (`get_image_offset` returning -1).
    pub fn data_offset(&self, block: u64) -> Option<u64> {
        let e = *usize::try_from(block)
            .ok()
            .and_then(|i| self.entries.get(i))?;
        (e != BAT_UNUSED).then(|| u64::from(e) * SECTOR_SIZE + self.bitmap_size)
    }
}
