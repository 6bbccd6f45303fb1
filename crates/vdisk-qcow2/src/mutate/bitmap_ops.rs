//! `qemu-img bitmap`: adding, removing, clearing, enabling, disabling and merging the persistent
//! dirty bitmaps of a qcow2 image, in the order given, as qemu-img.c's `img_bitmap` runs QEMU's
//! block-dirty-bitmap-* commands (block/monitor/bitmap-qmp-cmds.c, block/dirty-bitmap.c) and the
//! qcow2 driver stores the result when it closes the image (block/qcow2-bitmap.c; qcow2.txt
//! "Bitmaps extension", "Bitmap directory", "Bitmap table").
//!
//! The bitmaps are read whole, changed in memory, and stored in one shadow-paged change: every
//! consistent bitmap written anew, as QEMU rewrites them on close, a bitmap marked in use kept as
//! it is stored (QEMU loads it as inconsistent: it can only be removed). As in qemu-img, an
//! operation that fails ends the command with QEMU's message, and what the operations before it
//! changed is stored all the same.

use super::copy_bitmaps::{
    bitmap_bytes, commit_directory, read_stored_bitmaps, store_bitmap, PersistentBitmap,
};
use super::image::{Purpose, RwImage};
use super::txn::Txn;
use crate::limits::{MAX_BITMAPS, MAX_BITMAP_DATA_BYTES, MAX_BITMAP_DIRECTORY_BYTES};
use std::sync::Arc;
use vdisk_core::{Error, Result, Storage};

/// One operation of `qemu-img bitmap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BitmapOp {
    /// `--add [-g GRANULARITY]`: a new, enabled, empty bitmap; `granularity` is what `-g` gave
    /// (QEMU takes it as a 32-bit value), `None` for the default.
    Add {
        granularity: Option<u64>,
    },
    Remove,
    Clear,
    Enable,
    Disable,
    /// `--merge SOURCE`: sets every bit of the bitmap that is set in SOURCE (of this image, or of
    /// the `-b` image's bitmaps given to [`bitmap_ops_in`]).
    Merge {
        source: String,
    },
}

impl BitmapOp {
    /// qemu-img's name of the operation in its messages (`add`, `merge`, ...).
    fn verb(&self) -> &'static str {
        match self {
            BitmapOp::Add { .. } => "add",
            BitmapOp::Remove => "remove",
            BitmapOp::Clear => "clear",
            BitmapOp::Enable => "enable",
            BitmapOp::Disable => "disable",
            BitmapOp::Merge { .. } => "merge",
        }
    }

    /// qemu-img's error for this operation failing on bitmap `name` because of `why`.
    pub fn failed(&self, name: &str, why: &str) -> Error {
        Error::Other(format!(
            "Operation {} on bitmap {name} failed: {why}",
            self.verb()
        ))
    }
}

/// The bitmaps of another image, for `--merge` with `-b`: its virtual size and its bitmaps.
pub struct MergeSource {
    pub size: u64,
    pub bitmaps: Vec<PersistentBitmap>,
}

/// QEMU's BME_MAX_PHYS_SIZE and BME_MAX_TABLE_SIZE (block/qcow2-bitmap.c).
const QEMU_MAX_PHYS_BYTES: u64 = 0x2000_0000;
const QEMU_MAX_TABLE_ENTRIES: u64 = 0x800_0000;
const MIN_GRANULARITY_BITS: u32 = 9;
const MAX_GRANULARITY_BITS: u32 = 31;
const MAX_NAME: usize = 1023;

/// A bitmap of the image as the command changes it.
struct Held {
    b: PersistentBitmap,
    /// Which of the image's stored bitmaps it is (None for one the command added).
    stored: Option<usize>,
}

/// A stored bitmap's directory entry, table offset and table entries.
type Stored = (Vec<u8>, u64, Vec<u64>);

fn inconsistent(name: &str) -> String {
    format!(
        "Bitmap '{name}' is inconsistent and cannot be used\nTry block-dirty-bitmap-remove to \
         delete this bitmap from disk"
    )
}

/// QEMU's calc_dir_entry_size with no extra data.
fn dir_entry_size(name_len: usize) -> u64 {
    (24 + name_len as u64).next_multiple_of(8)
}

/// Sets in `dst` (granularity 2^`dst_bits`) the bits covering every byte whose bit is set in `src`
/// (granularity 2^`src_bits`), for a disk of `size` bytes (QEMU's hbitmap_merge).
fn merge_bits(dst: &mut [u8], dst_bits: u32, src: &[u8], src_bits: u32, size: u64) {
    for (i, &byte) in src.iter().enumerate() {
        if byte == 0 {
            continue;
        }
        for bit in 0..8u64 {
            if byte & (1 << bit) == 0 {
                continue;
            }
            let n = i as u64 * 8 + bit;
            let start = n << src_bits;
            if start >= size {
                continue;
            }
            let end = (start + (1u64 << src_bits)).min(size);
            for d in (start >> dst_bits)..=((end - 1) >> dst_bits) {
                if let Some(x) = dst.get_mut((d / 8) as usize) {
                    *x |= 1 << (d % 8);
                }
            }
        }
    }
}

/// Runs `ops` on bitmap `name` of the qcow2 image in `storage`, then stores the bitmaps if
/// anything changed; `merge_from` holds the `-b` image's bitmaps (`None`: merge from this image).
/// The error of a failed operation is qemu-img's "Operation OP on bitmap NAME failed: ...".
pub fn bitmap_ops_in(
    storage: Arc<dyn Storage>,
    name: &str,
    ops: &[BitmapOp],
    merge_from: Option<&MergeSource>,
) -> Result<()> {
    let mut img = RwImage::open(storage, Purpose::Modify)?;
    let h = img.r.header.clone();
    let size = img.r.size;
    let cs = img.cs();
    let file = img.path().display().to_string();
    let mut held = Vec::new();
    let mut loaded: Vec<Stored> = Vec::new();
    if h.version >= 3 {
        for (i, s) in read_stored_bitmaps(&img.r, true)?.into_iter().enumerate() {
            held.push(Held {
                b: s.bitmap,
                stored: Some(i),
            });
            loaded.push((s.entry, s.table_offset, s.table));
        }
    }
    let mut changed = false;
    let mut failure = None;
    for op in ops {
        match apply(op, name, &mut held, merge_from, size, cs, h.version, &file) {
            Ok(()) => changed = true,
            Err(why) => {
                failure = Some(op.failed(name, &why));
                break;
            }
        }
    }
    if changed {
        store(&mut img, &h, &held, &loaded, size, cs)?;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
fn apply(
    op: &BitmapOp,
    name: &str,
    held: &mut Vec<Held>,
    merge_from: Option<&MergeSource>,
    size: u64,
    cs: u64,
    version: u32,
    file: &str,
) -> std::result::Result<(), String> {
    let find = |held: &[Held], n: &str| held.iter().position(|x| x.b.name == n.as_bytes());
    let not_found = |n: &str| format!("Dirty bitmap '{n}' not found");
    match op {
        BitmapOp::Add { granularity } => {
            if name.is_empty() {
                return Err("Bitmap name cannot be empty".into());
            }
            // qemu-img hands -g to a 32-bit parameter; 0 means "not given".
            let g = match granularity.filter(|&g| g != 0) {
                Some(g) => {
                    let g = g as u32;
                    if g < 512 || !g.is_power_of_two() {
                        return Err("Granularity must be power of 2 and at least 512".into());
                    }
                    g
                }
                None => cs.clamp(4096, 65536) as u32,
            };
            if find(held, name).is_some() {
                return Err(format!("Bitmap already exists: {name}"));
            }
            let cannot =
                |why: &str| format!("Can't make bitmap '{name}' persistent in '{file}': {why}");
            if version < 3 {
                return Err(cannot("Cannot store dirty bitmaps in qcow2 v2 files"));
            }
            let bits = g.trailing_zeros();
            if bits > MAX_GRANULARITY_BITS {
                return Err(cannot("Granularity exceeds maximum (2147483648 bytes)"));
            }
            if bits < MIN_GRANULARITY_BITS {
                return Err(cannot("Granularity is under minimum (512 bytes)"));
            }
            let nbytes = bitmap_bytes(size, bits);
            if nbytes > QEMU_MAX_PHYS_BYTES || nbytes > QEMU_MAX_TABLE_ENTRIES * cs {
                return Err(cannot(
                    "Too much space will be occupied by the bitmap. Use larger granularity",
                ));
            }
            if name.len() > MAX_NAME {
                return Err(cannot("Name length exceeds maximum (1023 characters)"));
            }
            if held.len() as u64 + 1 > MAX_BITMAPS {
                return Err(cannot(
                    "Maximum number of persistent bitmaps is already reached",
                ));
            }
            let dir: u64 = held
                .iter()
                .map(|x| dir_entry_size(x.b.name.len()))
                .sum::<u64>()
                + dir_entry_size(name.len());
            if dir > MAX_BITMAP_DIRECTORY_BYTES {
                return Err(cannot("Not enough space in the bitmap directory"));
            }
            if nbytes > MAX_BITMAP_DATA_BYTES {
                return Err(format!(
                    "a bitmap of {nbytes} bytes is more than vdisk holds in memory ({MAX_BITMAP_DATA_BYTES}); use a larger granularity"
                ));
            }
            held.push(Held {
                b: PersistentBitmap {
                    name: name.as_bytes().to_vec(),
                    enabled: true,
                    in_use: false,
                    granularity_bits: bits,
                    bits: vec![0; nbytes as usize],
                },
                stored: None,
            });
        }
        BitmapOp::Remove => {
            let i = find(held, name).ok_or_else(|| not_found(name))?;
            held.remove(i);
        }
        BitmapOp::Clear | BitmapOp::Enable | BitmapOp::Disable => {
            let i = find(held, name).ok_or_else(|| not_found(name))?;
            let b = &mut held[i].b;
            if b.in_use {
                return Err(inconsistent(name));
            }
            match op {
                BitmapOp::Clear => b.bits.fill(0),
                BitmapOp::Enable => b.enabled = true,
                _ => b.enabled = false,
            }
        }
        BitmapOp::Merge { source } => {
            let d = find(held, name).ok_or_else(|| not_found(name))?;
            let (src, src_size) = match merge_from {
                Some(m) => (
                    m.bitmaps
                        .iter()
                        .find(|b| b.name == source.as_bytes())
                        .ok_or_else(|| not_found(source))?
                        .clone(),
                    m.size,
                ),
                None => (
                    held[find(held, source).ok_or_else(|| not_found(source))?]
                        .b
                        .clone(),
                    size,
                ),
            };
            if held[d].b.in_use {
                return Err(inconsistent(name));
            }
            if src.in_use {
                return Err(inconsistent(source));
            }
            if src_size != size {
                return Err(format!(
                    "Bitmaps are of different sizes (destination size is {size}, source size is \
                     {src_size}) and can't be merged"
                ));
            }
            let dst = &mut held[d].b;
            merge_bits(
                &mut dst.bits,
                dst.granularity_bits,
                &src.bits,
                src.granularity_bits,
                size,
            );
        }
    }
    Ok(())
}

/// Stores `held` in one change: the old directory, and the tables and data of every stored bitmap
/// that is rewritten or gone (all of `loaded` but those in use that stay), are freed.
fn store(
    img: &mut RwImage,
    h: &crate::header::Header,
    held: &[Held],
    loaded: &[Stored],
    size: u64,
    cs: u64,
) -> Result<()> {
    // A stored bitmap in use stays as it is stored; every other one is freed (and rewritten).
    let mut kept = vec![false; loaded.len()];
    for i in held.iter().filter(|x| x.b.in_use).filter_map(|x| x.stored) {
        if let Some(k) = kept.get_mut(i) {
            *k = true;
        }
    }
    let mut t = Txn::new(img);
    if let Some(ext) = h.bitmaps() {
        t.add_range(ext.directory_offset, ext.directory_size, -1)?;
    }
    for (i, (_, table_offset, table)) in loaded.iter().enumerate() {
        if !kept[i] {
            super::bitmaps::free_bitmap(&mut t, *table_offset, table)?;
        }
    }
    let mut dir = Vec::new();
    for x in held {
        match x.stored.filter(|_| x.b.in_use).and_then(|i| loaded.get(i)) {
            Some((entry, _, _)) => dir.extend_from_slice(entry),
            None => dir.extend_from_slice(&store_bitmap(&mut t, &x.b, size, cs)?),
        }
    }
    commit_directory(t, h.clone(), dir, held.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bit(v: &[u8], i: u64) -> bool {
        v[(i / 8) as usize] & (1 << (i % 8)) != 0
    }

    #[test]
    fn merging_converts_between_granularities() {
        let size = 1 << 20;
        // A 64 KiB-granularity source with bit 1 set (64-128 KiB), into 4 KiB: bits 16..32.
        let mut src = vec![0u8; 2];
        src[0] = 0b10;
        let mut dst = vec![0u8; 32];
        merge_bits(&mut dst, 12, &src, 16, size);
        let set: Vec<u64> = (0..256).filter(|&i| bit(&dst, i)).collect();
        assert_eq!(set, (16..32).collect::<Vec<_>>());
        // A 4 KiB-granularity source with bit 17 set, into 64 KiB: bit 1 only.
        let mut src = vec![0u8; 32];
        src[2] = 0b10;
        let mut dst = vec![0u8; 2];
        merge_bits(&mut dst, 16, &src, 12, size);
        assert_eq!(dst, [0b10, 0]);
        // A source bit reaching past the disk's end only covers what is inside it.
        let mut src = vec![0u8; 1];
        src[0] = 0b1;
        let mut dst = vec![0u8; 1];
        merge_bits(&mut dst, 9, &src, 16, 1024);
        assert_eq!(dst, [0b11]);
    }
}
