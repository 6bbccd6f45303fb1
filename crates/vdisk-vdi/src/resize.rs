//! Growing VDI images like `VBoxManage modifymedium --resize` (VirtualBox's `vdiResize` in VDI.cpp),
//! which qemu-img cannot do for VDI. The block map grows into the space before the data area; when
//! that space is short, the first data slots are copied to the end of the file and the data area
//! start moves up by whole slots (every slot number then drops by that many). Static images also get
//! a slot for every new block (VirtualBox refuses to resize those).
//!
//! Write order, so that a crash leaves a readable image: moved slots are copied (and synced) before
//! anything refers to them; the map is written next, the header last. When no slot has to move,
//! every intermediate state is the old, consistent image. When slots move, a crash between the map
//! write and the header write leaves renumbered entries under the old data offset: VDI has no
//! journal, and VirtualBox has the same window.

use crate::bmap::{self, Entry};
use crate::check::check_map;
use crate::header::{Header, PARSE_LEN, TYPE_STATIC};
use crate::limits::*;
use crate::writer::align_up;
use std::path::Path;
use vdisk_core::{Error, FileStorage, Result, Storage};

/// Grows the VDI image at `path` to `new_size` bytes (rounded up to 512). Shrinking is refused; the
/// same size is a no-op. The image must pass `check` first.
pub fn resize(path: &Path, new_size: u64) -> Result<()> {
    let storage = FileStorage::open_rw(path)?;
    let file_len = storage.len()?;
    let mut sector = vec![0u8; PARSE_LEN.min(usize::try_from(file_len).unwrap_or(PARSE_LEN))];
    storage.read_exact_at(&mut sector, 0)?;
    let mut h = Header::parse(&sector, path)?;
    h.validate(path, file_len)?;
    if h.is_v0() {
        return Err(Error::unsupported(path, "resizing a version 0 VDI image"));
    }
    sector.resize(PARSE_LEN, 0);
    let mut map = bmap::read(&storage, &h)?;
    let report = check_map(&h, &map, file_len);
    if report.corruptions > 0 {
        return Err(Error::corrupt(
            path,
            None,
            format!(
                "{} errors found by check ({}); refusing to resize",
                report.corruptions,
                report.messages.join("; ")
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
    let slot_size = h.slot_size();
    let old_blocks = u64::from(h.blocks_in_image);
    let new_blocks = new_size.div_ceil(bs);
    if new_blocks > MAX_BLOCKS {
        return Err(Error::invalid(format!(
            "{}: {new_size} bytes need {new_blocks} VDI blocks, more than the limit of {MAX_BLOCKS}",
            path.display()
        )));
    }

    // Bytes past the old end inside the last block must read as zeros.
    zero_tail_of_last_block(&storage, &h, &map, new_size)?;

    // Make room for the larger map by moving the first slots to the end.
    let bmap_end = h.offset_bmap + new_blocks * 4;
    if bmap_end > h.offset_data {
        if slot_size % SECTOR_SIZE != 0 {
            return Err(Error::unsupported(
                path,
                "resizing a VDI image whose block extra data is not sector-aligned",
            ));
        }
        let shift = (bmap_end - h.offset_data).div_ceil(slot_size);
        relocate(&storage, &mut h, &mut map, shift)?;
    }

    // Static images: give every new block a slot after the last used one (sparse zeros).
    map.resize(new_blocks as usize, BLOCK_FREE);
    if h.image_type == TYPE_STATIC {
        let mut next = next_free_slot(&map, 0);
        for e in map.iter_mut().skip(old_blocks as usize) {
            *e = next as u32;
            next += 1;
        }
        h.blocks_allocated = h
            .blocks_allocated
            .saturating_add((new_blocks - old_blocks) as u32);
        let end = h.offset_data + next * slot_size;
        if end > storage.len()? {
            storage.set_len(end)?;
        }
    }
    storage.sync()?;
    storage.write_at(&bmap::to_bytes(&map), h.offset_bmap)?;
    storage.sync()?;
    h.disk_size = new_size;
    h.blocks_in_image = new_blocks as u32;
    h.write_v1(&mut sector)?;
    storage.write_at(&sector, 0)?;
    storage.sync()
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

fn zero_tail_of_last_block(
    storage: &FileStorage,
    h: &Header,
    map: &[u32],
    new_size: u64,
) -> Result<()> {
    let bs = u64::from(h.block_size);
    let in_block = h.disk_size % bs;
    if in_block == 0 {
        return Ok(());
    }
    let block = h.disk_size / bs;
    let Some(Entry::Slot(slot)) = map.get(block as usize).map(|e| Entry::decode(*e)) else {
        return Ok(());
    };
    let host = bmap::slot_offset(h, storage.path(), block, slot)?;
    let end = (new_size - block * bs).min(bs);
    let zeros = vec![0u8; (end - in_block) as usize];
    storage.write_at(&zeros, host + in_block)
}

/// Moves the data area start up by `shift` slots: slots below `shift` are copied past every used
/// slot, then all slot numbers are rebased on the new start (in `map` and `h`, not yet on disk).
fn relocate(storage: &FileStorage, h: &mut Header, map: &mut [u32], shift: u64) -> Result<()> {
    let slot_size = h.slot_size();
    let new_data = shift
        .checked_mul(slot_size)
        .and_then(|d| d.checked_add(h.offset_data))
        .filter(|d| *d <= u64::from(u32::MAX))
        .ok_or_else(|| {
            Error::invalid(format!(
                "{}: the grown VDI block map does not fit",
                storage.path().display()
            ))
        })?;
    let dest_base = next_free_slot(map, shift);
    // The blocks whose slots sit where the map will grow, in slot order.
    let mut low: Vec<(u64, usize)> = map
        .iter()
        .enumerate()
        .filter_map(|(block, e)| match Entry::decode(*e) {
            Entry::Slot(s) if u64::from(s) < shift => Some((u64::from(s), block)),
            _ => None,
        })
        .collect();
    low.sort_unstable();
    let mut buf = vec![0u8; slot_size as usize];
    for (moved, (old, block)) in low.into_iter().enumerate() {
        let dest = dest_base + moved as u64;
        storage.read_zero_padded(&mut buf, h.offset_data + old * slot_size)?;
        storage.write_at(&buf, h.offset_data + dest * slot_size)?;
        map[block] =
            u32::try_from(dest).map_err(|_| Error::invalid("VDI slot number overflows"))?;
    }
    storage.sync()?;
    for e in map.iter_mut() {
        if let Entry::Slot(s) = Entry::decode(*e) {
            // Every used slot is now >= shift: the low ones were moved above.
            *e = u64::from(s)
                .checked_sub(shift)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| {
                    Error::Other(format!("VDI resize: slot {s} below the new data start"))
                })?;
        }
    }
    h.offset_data = new_data;
    Ok(())
}
