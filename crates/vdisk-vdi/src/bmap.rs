//! The block map ("blocks array" in VirtualBox's VDICore.h): one little-endian u32 per guest block,
//! either the index of the block's slot in the data area, `VDI_IMAGE_BLOCK_FREE` (never written) or
//! `VDI_IMAGE_BLOCK_ZERO` (known zero). Slot `i` lies at `offData + i * (cbBlock + cbBlockExtra)`, its
//! extra data first.

use crate::header::Header;
use crate::limits::{BLOCK_FREE, BLOCK_ZERO};
use std::path::Path;
use vdisk_core::{Error, Result, Storage};

/// What one block map entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Never written: reads as zeros in a base image.
    Free,
    /// Discarded or known zero: reads as zeros.
    Zero,
    /// Stored in data slot `n`.
    Slot(u32),
}

impl Entry {
    /// Decodes a raw entry.
    pub fn decode(raw: u32) -> Entry {
        match raw {
            BLOCK_FREE => Entry::Free,
            BLOCK_ZERO => Entry::Zero,
            n => Entry::Slot(n),
        }
    }
}

/// Bytes of the map read per I/O call.
const READ_CHUNK: usize = 1 << 20;

/// Reads the `blocks_in_image` entries at `offset_bmap`. The header must have been validated, which
/// guarantees the map lies inside the file (bounding the allocation by the file's size).
pub fn read(storage: &dyn Storage, h: &Header) -> Result<Vec<u32>> {
    let count = h.blocks_in_image as usize;
    let mut entries = Vec::with_capacity(count);
    let mut buf = vec![0u8; READ_CHUNK.min(count.saturating_mul(4))];
    let mut pos = h.offset_bmap;
    while entries.len() < count {
        let n = (count - entries.len()).saturating_mul(4).min(buf.len());
        let chunk = &mut buf[..n];
        storage.read_exact_at(chunk, pos)?;
        entries.extend(
            chunk
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        pos += n as u64;
    }
    Ok(entries)
}

/// Writes `entries` at `offset`, a bounded chunk at a time.
pub fn write(storage: &dyn Storage, offset: u64, entries: &[u32]) -> Result<()> {
    let mut pos = offset;
    for chunk in entries.chunks(READ_CHUNK / 4) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|e| e.to_le_bytes()).collect();
        storage.write_at(&bytes, pos)?;
        pos += bytes.len() as u64;
    }
    Ok(())
}

/// File offset of the first data byte of slot `slot` (after the slot's extra data), or an error when
/// the slot cannot belong to this image (QEMU's check calls that "too large": slot >= blocks).
pub fn slot_offset(h: &Header, path: &Path, block: u64, slot: u32) -> Result<u64> {
    if slot >= h.blocks_in_image {
        return Err(Error::corrupt(
            path,
            Some(h.offset_bmap + block * 4),
            format!(
                "block {block} points to data slot {slot}, beyond the {} slots of the image",
                h.blocks_in_image
            ),
        ));
    }
    // Bounded: slot < 2^30, slot size <= 512 MiB, offsets < 2^32.
    u64::from(slot)
        .checked_mul(h.slot_size())
        .and_then(|o| o.checked_add(h.offset_data))
        .and_then(|o| o.checked_add(u64::from(h.block_extra)))
        .ok_or_else(|| Error::corrupt(path, None, format!("block {block}: data offset overflows")))
}
