//! The persistent bitmaps as QEMU loads them when it opens an image (qcow2.txt "Bitmaps
//! extension", "Bitmap directory", "Bitmap table"; QEMU's qcow2-bitmap.c `bitmap_list_load`,
//! `check_dir_entry`, `load_bitmap`): an entry or table QEMU rejects makes the image fail to open,
//! for `info` and `check` alike, with QEMU's message. What lies past the end of the file reads as
//! zeros, as QEMU's block layer reads it, without being allocated.

use crate::header::{BitmapsExt, Header};
use crate::info::BitmapInfo;
use std::path::Path;
use vdisk_core::{Error, Result, Storage};

/// Bitmap directory entry flags other than `in_use` (bit 0) and `auto` (bit 1).
const RESERVED_FLAGS: u32 = 0xffff_fffc;
/// Bitmap directory entry flag: in use (the bitmap is inconsistent).
pub(crate) const FLAG_IN_USE: u32 = 1;
/// Bitmap directory entry flag: enabled (tracks writes).
pub(crate) const FLAG_AUTO: u32 = 2;
/// The only bitmap type: dirty tracking.
const TYPE_DIRTY_TRACKING: u8 = 1;
const MIN_GRANULARITY_BITS: u8 = 9;
const MAX_GRANULARITY_BITS: u8 = 31;
/// QEMU's BME_MAX_TABLE_SIZE (entries) and BME_MAX_PHYS_SIZE (bytes of bitmap data).
const MAX_TABLE_ENTRIES: u64 = 0x800_0000;
const MAX_PHYS_BYTES: u64 = 0x2000_0000;
const MAX_NAME: u64 = 1023;
/// Bitmap table entries: reserved bits, the offset, and "all ones" (bit 0, only without offset).
const ENTRY_RESERVED: u64 = 0xff00_0000_0000_01fe;
pub(crate) const ENTRY_OFFSET: u64 = 0x00ff_ffff_ffff_fe00;
pub(crate) const ENTRY_ALL_ONES: u64 = 1;

/// Bytes of `s` at `offset`, `len` long, of which only those inside the file are read; the accessor
/// returns 0 past them (the file's end), as QEMU reads there.
struct Padded {
    bytes: Vec<u8>,
}

impl Padded {
    fn read(s: &dyn Storage, offset: u64, len: u64, file_len: u64) -> Result<Padded> {
        let inside = file_len.saturating_sub(offset).min(len) as usize;
        let mut bytes = vec![0u8; inside];
        if inside > 0 {
            s.read_exact_at(&mut bytes, offset)?;
        }
        Ok(Padded { bytes })
    }

    fn be(&self, at: u64, n: usize) -> u64 {
        (0..n as u64).fold(0u64, |a, i| {
            let b = usize::try_from(at + i)
                .ok()
                .and_then(|k| self.bytes.get(k))
                .copied()
                .unwrap_or(0);
            (a << 8) | u64::from(b)
        })
    }
}

/// Whether a bitmap table entry is one QEMU accepts (`check_table_entry`).
pub(crate) fn table_entry_ok(e: u64, cluster_size: u64) -> bool {
    if e & ENTRY_RESERVED != 0 {
        return false;
    }
    let off = e & ENTRY_OFFSET;
    off == 0 || (e & ENTRY_ALL_ONES == 0 && off % cluster_size == 0)
}

/// Bytes of a directory entry before its extra data and name.
const ENTRY_HEADER: usize = 24;

/// The `count` raw entries of the directory `ext` points at, in order: fixed part, extra data,
/// name, padding to 8 bytes (`open` validated their layout).
pub(crate) fn raw_entries(
    s: &dyn Storage,
    path: &Path,
    ext: &BitmapsExt,
    count: usize,
) -> Result<Vec<Vec<u8>>> {
    let bad = || Error::corrupt(path, Some(ext.directory_offset), "bitmap directory entry");
    let mut dir = vec![0u8; usize::try_from(ext.directory_size).map_err(|_| bad())?];
    s.read_exact_at(&mut dir, ext.directory_offset)?;
    let field = |at: usize, n: usize| {
        dir.get(at..at + n)
            .map(|b| b.iter().fold(0usize, |a, x| (a << 8) | usize::from(*x)))
            .ok_or_else(bad)
    };
    let mut out = Vec::with_capacity(count);
    let mut at = 0usize;
    for _ in 0..count {
        let (name_len, extra) = (field(at + 18, 2)?, field(at + 20, 4)?);
        let end = (at + ENTRY_HEADER + extra + name_len).next_multiple_of(8);
        out.push(dir.get(at..end).ok_or_else(bad)?.to_vec());
        at = end;
    }
    Ok(out)
}

/// The name bytes of a raw directory entry from [`raw_entries`].
pub(crate) fn entry_name(entry: &[u8]) -> &[u8] {
    let field = |at: usize, n: usize| {
        entry.get(at..at + n).map_or(0, |b| {
            b.iter().fold(0usize, |a, x| (a << 8) | usize::from(*x))
        })
    };
    let from = ENTRY_HEADER + field(20, 4);
    entry.get(from..from + field(18, 2)).unwrap_or(&[])
}

/// The table of bitmap `b`, refused when its data would take more than
/// [`crate::limits::MAX_BITMAP_DATA_BYTES`] in memory.
pub(crate) fn read_table(
    s: &dyn Storage,
    path: &Path,
    b: &BitmapInfo,
    cluster_size: u64,
) -> Result<Vec<u64>> {
    let bytes = u64::from(b.table_size) * cluster_size;
    if bytes > crate::limits::MAX_BITMAP_DATA_BYTES {
        return Err(Error::limit(
            path,
            "bitmap data size",
            bytes,
            crate::limits::MAX_BITMAP_DATA_BYTES,
        ));
    }
    crate::reader::read_u64_table(s, b.table_offset, b.table_size as usize, "bitmap table")
}

/// A bitmap's bits as its table stores them, one cluster per entry (qcow2.txt "Bitmap table":
/// an offset of 0 reads as zeros, or as ones with the all-ones bit); the caller has bounded the
/// table's size.
pub(crate) fn read_bitmap_data(
    s: &dyn Storage,
    table: &[u64],
    cluster_size: usize,
) -> Result<Vec<u8>> {
    let mut bits = vec![0u8; table.len() * cluster_size];
    for (e, chunk) in table.iter().zip(bits.chunks_exact_mut(cluster_size)) {
        let off = e & ENTRY_OFFSET;
        if off != 0 {
            s.read_exact_at(chunk, off)?;
        } else if e & ENTRY_ALL_ONES != 0 {
            chunk.fill(0xff);
        }
    }
    Ok(bits)
}

/// The bitmap directory of `h`, validated as QEMU's `bitmap_list_load` does (`virtual_size` is
/// the disk size QEMU sees, in whole sectors). No bitmaps extension, or one QEMU ignores because
/// the autoclear bit is clear, gives an empty list.
pub(crate) fn load_directory(
    s: &dyn Storage,
    path: &Path,
    h: &Header,
    file_len: u64,
    virtual_size: u64,
) -> Result<Vec<BitmapInfo>> {
    let Some(ext) = h.bitmaps() else {
        return Ok(Vec::new());
    };
    let at = Some(ext.directory_offset);
    let fail = |what: String| Error::corrupt(path, at, what);
    if ext.directory_size == 0 {
        return Err(fail("Requested bitmap directory size is zero".into()));
    }
    // The extension's own checks bounded the size (MAX_BITMAP_DIRECTORY_BYTES) and the count.
    let size = ext.directory_size;
    let dir = Padded::read(s, ext.directory_offset, size, file_len)?;
    let broken = || fail("Broken bitmap directory".into());
    let cs = h.cluster_size();
    let mut out: Vec<BitmapInfo> = Vec::new();
    let mut e = 0u64;
    while e < size {
        if e + 24 > size {
            return Err(broken());
        }
        if out.len() as u64 >= u64::from(ext.nb_bitmaps) {
            return Err(fail(
                "More bitmaps found than specified in header extension".into(),
            ));
        }
        let table_offset = dir.be(e, 8);
        let table_size = dir.be(e + 8, 4);
        let flags = dir.be(e + 12, 4) as u32;
        let kind = dir.be(e + 16, 1) as u8;
        let gran = dir.be(e + 17, 1) as u8;
        let name_size = dir.be(e + 18, 2);
        let extra = dir.be(e + 20, 4);
        let next = (e + 24 + name_size + extra).next_multiple_of(8);
        if next > size {
            return Err(broken());
        }
        if extra != 0 {
            return Err(fail("Bitmap extra data is not supported".into()));
        }
        // QEMU keeps the name as a C string.
        let raw: Vec<u8> = (0..name_size)
            .map(|i| dir.be(e + 24 + i, 1) as u8)
            .take_while(|b| *b != 0)
            .collect();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let phys = table_size * cs;
        let bad = table_size == 0
            || table_offset == 0
            || table_offset % cs != 0
            || table_size > MAX_TABLE_ENTRIES
            || !(MIN_GRANULARITY_BITS..=MAX_GRANULARITY_BITS).contains(&gran)
            || flags & RESERVED_FLAGS != 0
            || name_size > MAX_NAME
            || kind != TYPE_DIRTY_TRACKING
            || phys > MAX_PHYS_BYTES
            || (flags & FLAG_IN_USE == 0 && virtual_size > (phys * 8) << gran);
        if bad {
            return Err(fail(format!(
                "Bitmap '{name}' doesn't satisfy the constraints"
            )));
        }
        out.push(BitmapInfo {
            name,
            flags,
            granularity_bits: gran,
            table_offset,
            table_size: table_size as u32,
        });
        e = next;
    }
    if out.len() as u64 != u64::from(ext.nb_bitmaps) {
        return Err(fail(
            "Less bitmaps found than specified in header extension".into(),
        ));
    }
    Ok(out)
}

/// QEMU's `load_bitmap` for each bitmap of `list`: names are unique, and the table of a bitmap
/// that is not in use has valid entries and the size its disk and granularity need.
pub(crate) fn check_tables(
    s: &dyn Storage,
    path: &Path,
    cluster_size: u64,
    file_len: u64,
    virtual_size: u64,
    list: &[BitmapInfo],
) -> Result<()> {
    for (i, b) in list.iter().enumerate() {
        let fail = |what: String| Error::corrupt(path, Some(b.table_offset), what);
        if list[..i].iter().any(|o| o.name == b.name) {
            return Err(fail(format!("Bitmap already exists: {}", b.name)));
        }
        if b.flags & FLAG_IN_USE != 0 {
            continue;
        }
        let entries = u64::from(b.table_size);
        let table = Padded::read(s, b.table_offset, entries * 8, file_len)?;
        let inside = table.bytes.len() as u64 / 8;
        if (0..inside).any(|k| !table_entry_ok(table.be(k * 8, 8), cluster_size)) {
            return Err(fail(format!(
                "Could not read bitmap_table table from image for bitmap '{}': Invalid argument",
                b.name
            )));
        }
        let bits = virtual_size.div_ceil(1u64 << b.granularity_bits);
        let needed = bits.div_ceil(64).saturating_mul(8).div_ceil(cluster_size);
        if needed != entries {
            return Err(fail(format!(
                "Could not read bitmap '{}' from image: Invalid argument",
                b.name
            )));
        }
    }
    Ok(())
}
