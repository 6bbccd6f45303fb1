//! `convert --bitmaps`: the persistent dirty bitmaps of a qcow2 source, read whole, and written into
//! the qcow2 target after its data (a new image, or with `-n` an existing one, whose own bitmaps
//! stay first in its directory), as qemu-img.c's `convert_check_bitmaps` and
//! `convert_copy_bitmaps` do (qcow2.txt "Bitmaps extension", "Bitmap directory", "Bitmap table").
//! A copy keeps the bitmap's name, granularity and whether it is enabled (the `auto` flag); it is
//! stored as QEMU stores bitmaps when it closes an image (`qcow2_store_persistent_dirty_bitmaps`):
//! not in use, no extra data, a cluster of zero bits as a zero table entry.

use super::image::{Purpose, RwImage};
use super::txn::Txn;
use crate::bitmap_dir::{
    entry_name, raw_entries, read_bitmap_data, read_table, FLAG_AUTO as AUTO, FLAG_IN_USE as IN_USE,
};
use crate::header::{autoclear, BitmapsExt, Extension, Header};
use crate::limits::MAX_BITMAP_DATA_BYTES;
use crate::reader::Qcow2Reader;
use std::sync::Arc;
use vdisk_core::{Error, Result, Storage};

/// The only bitmap type (qcow2.txt: 1, "dirty tracking bitmap").
const TYPE_DIRTY_TRACKING: u8 = 1;

/// One persistent bitmap of a source image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentBitmap {
    /// The name as stored (QEMU compares names byte for byte).
    pub name: Vec<u8>,
    /// The `auto` flag: the bitmap records writes.
    pub enabled: bool,
    /// The `in_use` flag: QEMU did not store the bitmap cleanly, so it is inconsistent.
    pub in_use: bool,
    pub granularity_bits: u32,
    /// One bit per `1 << granularity_bits` guest bytes, from guest offset 0, the virtual size's
    /// worth (an inconsistent bitmap is not read: empty).
    pub bits: Vec<u8>,
}

impl PersistentBitmap {
    /// The name as text (bytes that are not UTF-8 as U+FFFD), for messages.
    pub fn name_text(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// The names of the persistent bitmaps of the opened image `r`, in directory order, without
/// reading their bits; `None` for a version 2 image, which cannot hold bitmaps.
pub fn persistent_bitmap_names(r: &Qcow2Reader) -> Result<Option<Vec<Vec<u8>>>> {
    if r.header.version < 3 {
        return Ok(None);
    }
    let Some(ext) = r.header.bitmaps() else {
        return Ok(Some(Vec::new()));
    };
    let entries = raw_entries(r.storage.as_ref(), &r.path, &ext, r.bitmaps().len())?;
    Ok(Some(
        entries.iter().map(|e| entry_name(e).to_vec()).collect(),
    ))
}

/// The persistent bitmaps of the opened image `r`, in directory order, with their bits (each at
/// most [`MAX_BITMAP_DATA_BYTES`]). An image of version 2 cannot hold bitmaps: "Source lacks bitmap
/// support", as qemu-img says. `open` validated the directory and the tables.
pub fn read_persistent_bitmaps(r: &Qcow2Reader) -> Result<Vec<PersistentBitmap>> {
    if r.header.version < 3 {
        return Err(Error::invalid("Source lacks bitmap support"));
    }
    Ok(read_stored_bitmaps(r, false)?
        .into_iter()
        .map(|s| s.bitmap)
        .collect())
}

/// Bytes of bits a bitmap of granularity 2^`granularity_bits` has for a disk of `size` bytes.
pub(super) fn bitmap_bytes(size: u64, granularity_bits: u32) -> u64 {
    size.div_ceil(1u64 << granularity_bits).div_ceil(8)
}

/// One stored bitmap of an image: the bitmap with its bits, its directory entry as stored, and
/// where its table is with the table's entries.
pub(super) struct StoredBitmap {
    pub bitmap: PersistentBitmap,
    pub entry: Vec<u8>,
    pub table_offset: u64,
    /// Empty for a bitmap in use, unless its table was asked for.
    pub table: Vec<u64>,
}

/// The stored bitmaps of the opened image `r`, in directory order (see
/// [`read_persistent_bitmaps`]); `in_use_tables` reads the tables of bitmaps in use too (a change
/// that drops one frees what its table names), whose bits are never read.
pub(super) fn read_stored_bitmaps(
    r: &Qcow2Reader,
    in_use_tables: bool,
) -> Result<Vec<StoredBitmap>> {
    let Some(ext) = r.header.bitmaps() else {
        return Ok(Vec::new());
    };
    let path: &std::path::Path = &r.path;
    let cs = 1u64 << r.geo.cluster_bits;
    let entries = raw_entries(r.storage.as_ref(), path, &ext, r.bitmaps().len())?;
    let mut out = Vec::with_capacity(entries.len());
    for (info, entry) in r.bitmaps().iter().zip(entries) {
        let in_use = info.flags & IN_USE != 0;
        let granularity_bits = u32::from(info.granularity_bits);
        let mut bits = Vec::new();
        let mut table = Vec::new();
        if !in_use {
            let nbits = r.size.div_ceil(1u64 << granularity_bits);
            let nbytes = bitmap_bytes(r.size, granularity_bits);
            if nbytes > MAX_BITMAP_DATA_BYTES {
                return Err(Error::limit(
                    path,
                    "bitmap data size",
                    nbytes,
                    MAX_BITMAP_DATA_BYTES,
                ));
            }
            table = read_table(r.storage.as_ref(), path, info, cs)?;
            let mut all = read_bitmap_data(r.storage.as_ref(), &table, cs as usize)?;
            all.resize(nbytes as usize, 0);
            // Bits past the virtual size carry nothing.
            if nbits % 8 != 0 {
                if let Some(last) = all.last_mut() {
                    *last &= (1u8 << (nbits % 8)) - 1;
                }
            }
            bits = all;
        } else if in_use_tables {
            table = read_table(r.storage.as_ref(), path, info, cs)?;
        }
        out.push(StoredBitmap {
            bitmap: PersistentBitmap {
                name: entry_name(&entry).to_vec(),
                enabled: info.flags & AUTO != 0,
                in_use,
                granularity_bits,
                bits,
            },
            entry,
            table_offset: info.table_offset,
            table,
        });
    }
    Ok(out)
}

/// Adds `bitmaps` (none in use) to the qcow2 image in `storage` in one transaction: their data
/// clusters, tables and a new directory (the image's own bitmaps' entries first, unchanged), then
/// a header naming it with the bitmaps autoclear bit set; the old directory's clusters are freed. A
/// version 2 image cannot hold them ("Format driver 'qcow2' does not support bitmaps"), and a name
/// the image already has is refused with QEMU's words.
pub fn add_bitmaps_in(storage: Arc<dyn Storage>, bitmaps: &[PersistentBitmap]) -> Result<()> {
    if bitmaps.is_empty() {
        return Ok(());
    }
    let mut img = RwImage::open(storage, Purpose::Modify)?;
    let h = img.r.header.clone();
    if h.version < 3 {
        return Err(Error::invalid(
            "Format driver 'qcow2' does not support bitmaps",
        ));
    }
    let old = h.bitmaps();
    let existing = match &old {
        Some(ext) => raw_entries(
            img.storage.as_ref(),
            img.path(),
            ext,
            ext.nb_bitmaps as usize,
        )?,
        None => Vec::new(),
    };
    let total = existing.len() as u64 + bitmaps.len() as u64;
    if total > crate::limits::MAX_BITMAPS {
        return Err(Error::invalid(format!(
            "The image would hold {total} bitmaps, more than qcow2 allows ({})",
            crate::limits::MAX_BITMAPS
        )));
    }
    for b in bitmaps {
        if existing.iter().any(|e| entry_name(e) == b.name.as_slice()) {
            let n = b.name_text();
            return Err(Error::invalid(format!(
                "Failed to create bitmap {n}: Bitmap already exists: {n}"
            )));
        }
    }
    let size = img.r.size;
    let cs = img.cs();
    let mut t = Txn::new(&mut img);
    let mut dir: Vec<u8> = existing.concat();
    if let Some(ext) = &old {
        // The old directory is no longer referenced once the header names the new one.
        t.add_range(ext.directory_offset, ext.directory_size, -1)?;
    }
    for b in bitmaps {
        if b.in_use {
            return Err(Error::invalid(format!(
                "Cannot copy inconsistent bitmap '{}'",
                b.name_text()
            )));
        }
        dir.extend_from_slice(&store_bitmap(&mut t, b, size, cs)?);
    }
    commit_directory(t, h, dir, total)
}

/// Writes the bitmap directory `dir` of `count` entries in `t`, points a copy of the header `h` at
/// it (without any bitmap: no bitmaps extension and the autoclear bit clear, as QEMU leaves an
/// image whose last bitmap is removed) and commits. The caller has freed the old directory.
pub(super) fn commit_directory(mut t: Txn, h: Header, dir: Vec<u8>, count: u64) -> Result<()> {
    let cs = t.img.cs();
    let dir_len = dir.len() as u64;
    if dir_len > crate::limits::MAX_BITMAP_DIRECTORY_BYTES {
        return Err(Error::invalid(format!(
            "The bitmap directory would take {dir_len} bytes, more than qcow2 allows ({})",
            crate::limits::MAX_BITMAP_DIRECTORY_BYTES
        )));
    }
    let mut nh = h;
    nh.extensions
        .retain(|e| !matches!(e, Extension::Bitmaps(_)));
    if count == 0 {
        nh.autoclear_features &= !autoclear::BITMAPS;
    } else {
        let dir_off = t.alloc(dir_len.div_ceil(cs))?;
        t.write(dir_off, dir);
        nh.extensions.push(Extension::Bitmaps(BitmapsExt {
            nb_bitmaps: count as u32,
            directory_size: dir_len,
            directory_offset: dir_off,
        }));
        nh.autoclear_features |= autoclear::BITMAPS;
    }
    t.rewrite_whole_header();
    t.commit(&nh, false)
}

/// Writes `b`'s bits in `t` as QEMU stores a bitmap (a cluster of zero bits as a zero table entry,
/// then the table) and returns its directory entry: not in use, `auto` if enabled, no extra data,
/// padded to 8 bytes. `size` is the image's virtual size, which the bits must cover exactly.
pub(super) fn store_bitmap(
    t: &mut Txn,
    b: &PersistentBitmap,
    size: u64,
    cs: u64,
) -> Result<Vec<u8>> {
    let nbytes = bitmap_bytes(size, b.granularity_bits);
    if b.bits.len() as u64 != nbytes {
        return Err(Error::invalid(format!(
            "bitmap '{}' has {} bytes of bits where the image needs {nbytes}",
            b.name_text(),
            b.bits.len()
        )));
    }
    let (table_offset, table) = super::bitmaps::store_bits(t, &b.bits, cs)?;
    let name_len = u16::try_from(b.name.len())
        .map_err(|_| Error::invalid(format!("bitmap name '{}' too long", b.name_text())))?;
    let granularity = u8::try_from(b.granularity_bits)
        .map_err(|_| Error::invalid("bitmap granularity out of range"))?;
    let flags = if b.enabled { AUTO } else { 0 };
    let mut e = Vec::with_capacity(24 + b.name.len() + 7);
    e.extend_from_slice(&table_offset.to_be_bytes());
    e.extend_from_slice(&(table.len() as u32).to_be_bytes());
    e.extend_from_slice(&flags.to_be_bytes());
    e.push(TYPE_DIRTY_TRACKING);
    e.push(granularity);
    e.extend_from_slice(&name_len.to_be_bytes());
    e.extend_from_slice(&0u32.to_be_bytes());
    e.extend_from_slice(&b.name);
    e.resize(e.len().next_multiple_of(8), 0);
    Ok(e)
}
