//! What the in-place writer ([`crate::inplace`]) adds to the open: the BAT checks that make writing
//! safe (the states `vhdx_co_writev` fails on, the header-section test it makes before each write,
//! blocks that overlap), and the header update of `vhdx_update_header` (spec 2.2.2.1: the
//! non-current header gets the higher sequence number, then the other one).

use crate::bat::{entry_offset, Bat, BlockState};
use crate::header::le64;
use crate::header_update::{updated, write_header};
use crate::limits::{BAT_ENTRY_SIZE, HEADER_FIELDS_SIZE};
use crate::writer::random_guid;
use std::path::Path;
use vdisk_core::{Error, Result, Storage};

const MIB: u64 = 1 << 20;

fn refuse(path: &Path, at: u64, what: String) -> Error {
    Error::corrupt(path, Some(at), format!("{what}; refusing to write into it"))
}

/// Refuses, before anything is written, an image whose payload blocks qemu could not write into
/// or that a write could not change alone: a block in state PARTIALLY_PRESENT or 4
/// (`vhdx_co_writev`: EIO), a FULLY_PRESENT block in the first MiB (its EFAULT: the header
/// section), two blocks sharing file bytes, a BAT whose entries could straddle sectors. Only entries inside the file are looked at (the rest
/// read as zeros, NOT_PRESENT), so the work is bounded by the file's length.
pub(crate) fn check_layout(
    path: &Path,
    bat: &Bat,
    block_size: u64,
    size: u64,
    file_len: u64,
) -> Result<()> {
    // The crash ordering relies on each 8-byte entry lying in one sector (spec 2.2.3.2 puts the
    // region on a 1 MiB boundary; qemu does not check it).
    if bat.offset % BAT_ENTRY_SIZE != 0 {
        return Err(refuse(
            path,
            bat.offset,
            format!("the BAT at {} is not 8-byte aligned", bat.offset),
        ));
    }
    let in_file = file_len
        .saturating_sub(bat.offset)
        .div_ceil(BAT_ENTRY_SIZE)
        .min(bat.entries);
    let entry_at = |index: u64| {
        bat.offset
            .saturating_add(index.saturating_mul(BAT_ENTRY_SIZE))
    };
    // (start, end, block) of every FULLY_PRESENT block: at most one per entry inside the file.
    let mut present: Vec<(u64, u64, u64)> = Vec::new();
    let mut block = 0u64;
    while block < bat.payload_blocks {
        let index = block + block / bat.chunk_ratio;
        if index >= in_file {
            break;
        }
        let e = bat.payload_entry(block);
        match BlockState::of(e) {
            s @ (BlockState::PartiallyPresent | BlockState::Reserved4) => {
                return Err(Error::unsupported(
                    path,
                    format!(
                        "writing into payload block {block} in state {} ({}), which qemu fails \
                         to write into (EIO); the image was left unchanged",
                        s.name(),
                        e & 7
                    ),
                ));
            }
            BlockState::FullyPresent => {
                let start = entry_offset(e);
                if start < MIB {
                    return Err(refuse(
                        path,
                        entry_at(index),
                        format!(
                            "payload block {block} lies at {start}, in the header section (the \
                             first MiB), where qemu refuses to write (EFAULT)"
                        ),
                    ));
                }
                let len = block_size.min(size.saturating_sub(block.saturating_mul(block_size)));
                if len > 0 {
                    present.push((start, start.saturating_add(len), block));
                }
            }
            _ => {}
        }
        block += 1;
    }
    present.sort_unstable();
    for w in present.windows(2) {
        if w[1].0 < w[0].1 {
            let index = w[1].2 + w[1].2 / bat.chunk_ratio;
            return Err(refuse(
                path,
                entry_at(index),
                format!(
                    "payload block {} overlaps payload block {} in the file",
                    w[1].2, w[0].2
                ),
            ));
        }
    }
    Ok(())
}

/// Writes the session's header update: the `current` header's fields (its index and stored bytes)
/// with a new FileWriteGuid and DataWriteGuid into the other header with sequence number + 1, then
/// into the current one with + 2; each written as [`crate::header_update::write_header`] does it
/// (reserved bytes kept, CRC-32C over the 4 KiB block, 80 bytes written, synced when `durable`).
/// Stops after `max_steps` of the two writes.
pub(crate) fn write_headers(
    storage: &dyn Storage,
    current: (usize, [u8; HEADER_FIELDS_SIZE]),
    max_steps: u32,
    durable: bool,
) -> Result<()> {
    let (index, fields) = current;
    let seq = le64(&fields, 8);
    let (file_guid, data_guid) = (random_guid()?, random_guid()?);
    let slots = [(1 - index.min(1), 1u64), (index.min(1), 2u64)];
    for (step, (slot, add)) in slots.into_iter().enumerate() {
        if step as u64 >= u64::from(max_steps) {
            break;
        }
        let seq = seq.checked_add(add).ok_or_else(|| {
            Error::corrupt(
                storage.path(),
                None,
                "the header's sequence number cannot grow; refusing to write into it",
            )
        })?;
        let f = updated(&fields, seq, file_guid, data_guid, None);
        write_header(storage, slot, &f, durable)?;
    }
    Ok(())
}
