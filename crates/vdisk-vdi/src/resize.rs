//! Growing VDI images like `VBoxManage modifymedium --resize` (VirtualBox's `vdiResize` in
//! VDI.cpp), which qemu-img cannot do for VDI. The block map grows into the free space before the
//! data area. When that space is short, the data area start moves up by `k` whole slots and the
//! grown map is written into the space those slots held. Static images also get a slot for every
//! new block (VirtualBox refuses to resize those), zeroed where the file already holds bytes. The
//! map never shrinks: it may have more entries than the disk needs (QEMU accepts that, and data in
//! them).
//!
//! Write order, so that the guest data stay readable whenever a crash happens: (0) what the grown
//! disk will read of slots at or past the old end (invisible to the old image) is zeroed and
//! synced; (1) slots `0..k` that hold data are copied past every used slot and synced; (2) their
//! map entries are switched to the copies one 4-byte write at a time and synced: slots `0..k` are
//! now unreferenced; (3) the grown map, renumbered for the new data start, is written into that
//! unreferenced space (or, when nothing moves, only the new entries are written after the old
//! ones) and synced; (4) the header fields in a single sector (the map offset, data offset, block
//! counts and size) are written last and switch from the old image to the new one. Between (2) and
//! (4) the old image reads correctly but its moved entries may name slots beyond
//! `blocks_in_image`, which `qemu-img check` reports.

use crate::bmap::{self, Entry};
use crate::check::check_map;
use crate::header::{Header, BLOCKS_ALLOCATED_V1, PARSE_LEN, TYPE_STATIC};
use crate::limits::*;
use crate::writer::align_up;
use std::path::Path;
use std::sync::Arc;
use vdisk_core::{Error, FileStorage, Result, Storage};

/// Grows the VDI image at `path` to `new_size` bytes (rounded up to 512): [`resize_in`] on the file
/// opened read-write.
pub fn resize(path: &Path, new_size: u64) -> Result<()> {
    resize_in(Arc::new(FileStorage::open_rw(path)?), new_size)
}

/// Grows the VDI image in `storage` to `new_size` bytes (rounded up to 512). Shrinking is refused;
/// the same size is a no-op. The image must pass `check` first.
pub fn resize_in(storage: Arc<dyn Storage>, new_size: u64) -> Result<()> {
    resize_steps_in(storage.as_ref(), new_size, u32::MAX)
}

/// [`resize`], stopping after `max_steps` durable steps: tests use it to look at every state a
/// crash can leave behind.
#[cfg(test)]
pub(crate) fn resize_steps(path: &Path, new_size: u64, max_steps: u32) -> Result<()> {
    resize_steps_in(&FileStorage::open_rw(path)?, new_size, max_steps)
}

/// [`resize_in`], stopping after `max_steps` durable steps.
fn resize_steps_in(storage: &dyn Storage, new_size: u64, max_steps: u32) -> Result<()> {
    let path = storage.path();
    let file_len = storage.len()?;
    let mut sector = vec![0u8; PARSE_LEN.min(usize::try_from(file_len).unwrap_or(PARSE_LEN))];
    storage.read_exact_at(&mut sector, 0)?;
    let mut h = Header::parse(&sector, path)?;
    h.validate(path, file_len)?;
    if h.is_v0() {
        return Err(Error::unsupported(path, "resizing a version 0 VDI image"));
    }
    sector.resize(PARSE_LEN, 0);
    let mut map = bmap::read(storage, &h)?;
    let report = check_map(&h, &map, file_len);
    if report.corruptions > 0 {
        let msgs = report.messages.join("; ");
        return Err(Error::corrupt(
            path,
            None,
            format!(
                "{} errors found by check ({msgs}); refusing to resize",
                report.corruptions
            ),
        ));
    }
    let new_size = align_up(new_size, SECTOR_SIZE)
        .ok_or_else(|| Error::invalid("Image size must be less than 8 EiB!"))?;
    if new_size < h.disk_size {
        return Err(Error::invalid(format!(
            "{}: shrinking a VDI image (from {} to {new_size} bytes) is not supported",
            path.display(),
            h.disk_size
        )));
    }
    if new_size == h.disk_size {
        return Ok(());
    }
    let bs = u64::from(h.block_size);
    let old_blocks = u64::from(h.blocks_in_image);
    // The map may already have more entries than the new size needs (qemu accepts that, and data
    // in them): it never shrinks.
    let new_blocks = new_size.div_ceil(bs).max(old_blocks);
    if new_blocks > MAX_BLOCKS {
        return Err(Error::invalid(format!(
            "{}: {new_size} bytes need {new_blocks} VDI blocks, more than the limit of \
             {MAX_BLOCKS}",
            path.display()
        )));
    }
    let mut steps = Steps { left: max_steps };

    // Bytes past the old end that slots hold must read as zeros (invisible to the old image).
    zero_past_old_end(storage, &h, &map, new_size)?;
    if steps.stop(storage)? {
        return Ok(());
    }

    // Whether the grown map fits before the data area; if not, free the first slots for it.
    let in_place = h.offset_bmap + new_blocks * 4 <= h.offset_data;
    if !in_place {
        relocate(storage, &mut h, &mut map, new_blocks, &mut steps)?;
        if steps.left == 0 {
            return Ok(());
        }
    }

    // Static images: every new block gets a slot after the last used one, reading as zeros: the
    // part of the file past the end is sparse, and whatever the file already holds there (nothing
    // references it) is overwritten with zeros.
    map.resize(new_blocks as usize, BLOCK_FREE);
    if h.image_type == TYPE_STATIC {
        let first = next_free_slot(&map, 0);
        let mut next = first;
        for e in map.iter_mut().skip(old_blocks as usize) {
            *e = u32::try_from(next).map_err(|_| Error::invalid("VDI slot number overflows"))?;
            next += 1;
        }
        h.blocks_allocated = h
            .blocks_allocated
            .saturating_add((new_blocks - old_blocks) as u32);
        let slot_at = |slot: u64| {
            slot.checked_mul(h.slot_size())
                .and_then(|o| o.checked_add(h.offset_data))
                .ok_or_else(|| Error::invalid("VDI slot offset overflows"))
        };
        let (start, end) = (slot_at(first)?, slot_at(next)?);
        let len = storage.len()?;
        if start < len {
            storage.write_zeros(start, end.min(len) - start)?;
        }
        if end > len {
            storage.set_len(end)?;
        }
    }
    // In place, the old entries are unchanged: write only the new ones, after them.
    let first = if in_place { old_blocks as usize } else { 0 };
    let tail = map.get(first..).unwrap_or_default();
    bmap::write(storage, h.offset_bmap + first as u64 * 4, tail)?;
    if steps.stop(storage)? {
        return Ok(());
    }
    h.disk_size = new_size;
    h.blocks_in_image = new_blocks as u32;
    put_resized_fields(&h, &mut sector)?;
    storage.write_at(&sector, 0)?;
    storage.sync()
}

/// Writes the header fields a resize changes (`offBlocks`, `offData`, `cbDisk`, `cBlocks`,
/// `cBlocksAllocated` of `VDIHEADER1`) into the header sector as read from the file, leaving every
/// other byte as it was: the text and description are free bytes, which a round trip through
/// [`Header::write_v1`] would change (bytes after a NUL, and bytes that are not UTF-8).
fn put_resized_fields(h: &Header, sector: &mut [u8]) -> Result<()> {
    let off32 = |v: u64| {
        u32::try_from(v).map_err(|_| Error::invalid(format!("VDI offset {v:#x} overflows")))
    };
    let mut put = |at: usize, bytes: &[u8]| -> Result<()> {
        sector
            .get_mut(at..at + bytes.len())
            .ok_or_else(|| Error::Other("VDI header sector too short".into()))?
            .copy_from_slice(bytes);
        Ok(())
    };
    put(0x154, &off32(h.offset_bmap)?.to_le_bytes())?;
    put(0x158, &off32(h.offset_data)?.to_le_bytes())?;
    put(0x170, &h.disk_size.to_le_bytes())?;
    put(0x180, &h.blocks_in_image.to_le_bytes())?;
    put(BLOCKS_ALLOCATED_V1, &h.blocks_allocated.to_le_bytes())
}

/// Bytes a slot is copied by when it moves: memory stays bounded whatever the block size.
const COPY_CHUNK: u64 = 1 << 20;

/// Counts durable steps; `stop` syncs and says whether the caller must stop here.
struct Steps {
    left: u32,
}

impl Steps {
    fn stop(&mut self, storage: &dyn Storage) -> Result<bool> {
        storage.sync()?;
        self.left = self.left.saturating_sub(1);
        Ok(self.left == 0)
    }
}

/// One past the highest slot in use, at least `min`.
fn next_free_slot(map: &[u32], min: u64) -> u64 {
    map.iter()
        .filter_map(|e| match Entry::decode(*e) {
            Entry::Slot(s) => Some(u64::from(s) + 1),
            _ => None,
        })
        .fold(min, u64::max)
}

/// Zeroes what the grown disk will read of the slots of blocks at or past the old end: the tail of
/// the block holding the old end, and whole blocks past it that still hold a slot (the map may have
/// more entries than the disk needs, and `qemu-img check` accepts data in them). None of it is
/// visible to the old image.
fn zero_past_old_end(storage: &dyn Storage, h: &Header, map: &[u32], new_size: u64) -> Result<()> {
    let bs = u64::from(h.block_size);
    let first = h.disk_size / bs;
    let last = new_size.div_ceil(bs).min(map.len() as u64);
    for block in first..last {
        let Some(Entry::Slot(slot)) = map.get(block as usize).map(|e| Entry::decode(*e)) else {
            continue;
        };
        let host = bmap::slot_offset(h, storage.path(), block, slot)?;
        let start = block * bs;
        let from = h.disk_size.saturating_sub(start);
        let to = (new_size - start).min(bs);
        storage.write_zeros(host + from, to - from)?;
    }
    Ok(())
}

/// Frees the first `k` slots, enough to hold a map of `new_blocks` entries: copies the used ones
/// past every used slot, switches their entries on disk, then (in memory only) moves the map into
/// the freed space and rebases every slot number on the new data start.
fn relocate(
    storage: &dyn Storage,
    h: &mut Header,
    map: &mut [u32],
    new_blocks: u64,
    steps: &mut Steps,
) -> Result<()> {
    let path = storage.path();
    let slot_size = h.slot_size();
    if slot_size % SECTOR_SIZE != 0 {
        return Err(Error::unsupported(
            path,
            "resizing a VDI image whose block extra data is not sector-aligned",
        ));
    }
    let k = (new_blocks * 4).div_ceil(slot_size);
    let new_data = k
        .checked_mul(slot_size)
        .and_then(|d| d.checked_add(h.offset_data))
        .filter(|d| *d <= u64::from(u32::MAX))
        .ok_or_else(|| {
            Error::invalid(format!(
                "{}: the grown VDI block map does not fit",
                path.display()
            ))
        })?;
    let dest_base = next_free_slot(map, k);
    // The blocks whose slots sit where the map will go, in slot order.
    let mut low: Vec<(u64, usize)> = map
        .iter()
        .enumerate()
        .filter_map(|(block, e)| match Entry::decode(*e) {
            Entry::Slot(s) if u64::from(s) < k => Some((u64::from(s), block)),
            _ => None,
        })
        .collect();
    low.sort_unstable();
    // Copied a piece at a time: a slot can be hundreds of MiB (block size up to MAX_BLOCK_SIZE).
    let mut buf = vec![0u8; slot_size.min(COPY_CHUNK) as usize];
    for (moved, (old, _)) in low.iter().enumerate() {
        let (from, to) = (
            h.offset_data + old * slot_size,
            h.offset_data + (dest_base + moved as u64) * slot_size,
        );
        let mut done = 0;
        while done < slot_size {
            let n = (slot_size - done).min(buf.len() as u64) as usize;
            storage.read_zero_padded(&mut buf[..n], from + done)?;
            storage.write_at(&buf[..n], to + done)?;
            done += n as u64;
        }
    }
    if steps.stop(storage)? {
        return Ok(());
    }
    for (moved, (_, block)) in low.iter().enumerate() {
        let dest = u32::try_from(dest_base + moved as u64)
            .map_err(|_| Error::invalid("VDI slot number overflows"))?;
        map[*block] = dest;
        storage.write_at(&dest.to_le_bytes(), h.offset_bmap + *block as u64 * 4)?;
    }
    if steps.stop(storage)? {
        return Ok(());
    }
    for e in map.iter_mut() {
        if let Entry::Slot(s) = Entry::decode(*e) {
            // Every used slot is now >= k: the low ones were moved above.
            *e = u64::from(s)
                .checked_sub(k)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| {
                    Error::Other(format!("VDI resize: slot {s} below the new data start"))
                })?;
        }
    }
    h.offset_bmap = h.offset_data;
    h.offset_data = new_data;
    Ok(())
}

#[cfg(test)]
#[path = "resize_tests.rs"]
mod tests;
