//! Persistent dirty bitmaps kept valid through a change (qcow2.txt "Bitmaps extension", "Bitmap
//! directory", "Bitmap table"; QEMU's block/qcow2-bitmap.c and block/dirty-bitmap.c for what each
//! operation does to them): a resize resizes every bitmap (bits past the new end cleared, new bits
//! clear), a write sets the bits of the guest range it covers in every enabled ("auto"), consistent
//! bitmap, a downgrade to version 2 drops them all. A bitmap marked in use is inconsistent: QEMU
//! leaves it alone, except that a resize refuses it.
//!
//! Shadow-paged with the rest of the change: a bitmap that changes gets new data clusters and a new
//! table, the directory is written anew, and the bitmaps header extension pointing at it changes
//! in the transaction's (whole) header write.

use super::image::RwImage;
use super::txn::Txn;
use crate::header::{autoclear, Extension, Header};
use crate::limits::MAX_BITMAP_DATA_BYTES;
use vdisk_core::{Error, Result};

use crate::bitmap_dir::{
    raw_entries, read_table, ENTRY_OFFSET as BME_OFFSET_MASK, FLAG_AUTO as AUTO,
    FLAG_IN_USE as IN_USE,
};

struct Bitmap {
    /// The directory entry as stored (fixed part, extra data, name, padding).
    entry: Vec<u8>,
    name: String,
    flags: u32,
    granularity_bits: u32,
    table_offset: u64,
    table: Vec<u64>,
    /// The bitmap's bits, once loaded to be changed.
    bits: Option<Vec<u8>>,
}

/// The bitmaps of an image being changed.
pub(crate) struct Bitmaps {
    list: Vec<Bitmap>,
    directory_offset: u64,
    directory_size: u64,
    changed: bool,
}

impl Bitmaps {
    /// The image's bitmaps; None when it has none (or QEMU would ignore them: autoclear bit clear).
    pub fn load(img: &RwImage) -> Result<Option<Bitmaps>> {
        let Some(ext) = img.r.header.bitmaps() else {
            return Ok(None);
        };
        let path = img.path();
        let infos = crate::info::read_bitmaps(&img.r)?;
        let entries = raw_entries(img.storage.as_ref(), path, &ext, infos.len())?;
        let mut list = Vec::with_capacity(infos.len());
        for (b, entry) in infos.into_iter().zip(entries) {
            if b.table_offset % img.cs() != 0 || b.granularity_bits > 31 {
                let what = format!("bitmap '{}': table offset or granularity invalid", b.name);
                return Err(Error::corrupt(path, Some(b.table_offset), what));
            }
            let table = read_table(img.storage.as_ref(), path, &b, img.cs())?;
            list.push(Bitmap {
                entry,
                name: b.name,
                flags: b.flags,
                granularity_bits: u32::from(b.granularity_bits),
                table_offset: b.table_offset,
                table,
                bits: None,
            });
        }
        Ok(Some(Bitmaps {
            list,
            directory_offset: ext.directory_offset,
            directory_size: ext.directory_size,
            changed: false,
        }))
    }

    /// QEMU's qcow2_truncate_bitmaps_check: a bitmap in use cannot be resized.
    pub fn refuse_in_use(&self) -> Result<()> {
        match self.list.iter().find(|b| b.flags & IN_USE != 0) {
            Some(b) => Err(Error::Other(format!(
                "Bitmap '{}' is inconsistent and cannot be used\nTry block-dirty-bitmap-remove to \
                 delete this bitmap from disk",
                b.name
            ))),
            None => Ok(()),
        }
    }

    fn load_bits(img: &RwImage, b: &mut Bitmap) -> Result<()> {
        if b.bits.is_some() {
            return Ok(());
        }
        let bits =
            crate::bitmap_dir::read_bitmap_data(img.storage.as_ref(), &b.table, img.cs() as usize)?;
        b.bits = Some(bits);
        Ok(())
    }

    /// Resizes every bitmap to cover `size` guest bytes; bits past the end are cleared.
    pub fn truncate(&mut self, img: &RwImage, size: u64) -> Result<()> {
        let cs = img.cs();
        for b in &mut self.list {
            Self::load_bits(img, b)?;
            let nbits = size.div_ceil(1 << b.granularity_bits);
            let clusters = nbits.div_ceil(8).div_ceil(cs);
            if clusters * cs > MAX_BITMAP_DATA_BYTES {
                return Err(Error::limit(
                    img.path(),
                    "bitmap data size",
                    clusters * cs,
                    MAX_BITMAP_DATA_BYTES,
                ));
            }
            if let Some(bits) = b.bits.as_mut() {
                bits.resize((clusters * cs) as usize, 0);
                for i in nbits..clusters * cs * 8 {
                    if let Some(byte) = bits.get_mut((i / 8) as usize) {
                        *byte &= !(1u8 << (i % 8));
                    }
                }
            }
            self.changed = true;
        }
        Ok(())
    }

    /// Sets the bits of guest bytes `offset..offset+len` in every enabled, consistent bitmap.
    pub fn set_dirty(&mut self, img: &RwImage, offset: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        for b in &mut self.list {
            if b.flags & (AUTO | IN_USE) != AUTO {
                continue;
            }
            Self::load_bits(img, b)?;
            let first = offset >> b.granularity_bits;
            let last = (offset + len - 1) >> b.granularity_bits;
            if let Some(bits) = b.bits.as_mut() {
                for i in first..=last {
                    if let Some(byte) = bits.get_mut((i / 8) as usize) {
                        *byte |= 1u8 << (i % 8);
                    }
                }
            }
            self.changed = true;
        }
        Ok(())
    }

    /// Writes the changed bitmaps, their tables and a new directory in `t`, and points `nh` at
    /// them; the caller must make the transaction rewrite the whole header. Returns whether
    /// anything changed.
    pub fn write(mut self, t: &mut Txn, nh: &mut Header) -> Result<bool> {
        if !self.changed {
            return Ok(false);
        }
        let cs = t.img.cs();
        let mut dir = Vec::with_capacity(self.directory_size as usize);
        for b in &mut self.list {
            if let Some(bits) = b.bits.take() {
                free_bitmap(t, b.table_offset, &b.table)?;
                (b.table_offset, b.table) = store_bits(t, &bits, cs)?;
            }
            let mut e = b.entry.clone();
            if let Some(s) = e.get_mut(0..12) {
                s[..8].copy_from_slice(&b.table_offset.to_be_bytes());
                s[8..].copy_from_slice(&(b.table.len() as u32).to_be_bytes());
            }
            dir.extend_from_slice(&e);
        }
        t.add_range(self.directory_offset, self.directory_size, -1)?;
        let off = t.alloc((dir.len() as u64).div_ceil(cs))?;
        t.write(off, dir);
        for x in nh.extensions.iter_mut() {
            if let Extension::Bitmaps(ext) = x {
                ext.directory_offset = off;
            }
        }
        Ok(true)
    }

    /// Frees every bitmap and its directory and removes them from `nh` (a downgrade to version 2,
    /// which cannot carry them).
    pub fn drop_all(self, t: &mut Txn, nh: &mut Header) -> Result<()> {
        for b in &self.list {
            free_bitmap(t, b.table_offset, &b.table)?;
        }
        t.add_range(self.directory_offset, self.directory_size, -1)?;
        nh.extensions
            .retain(|e| !matches!(e, Extension::Bitmaps(_)));
        nh.autoclear_features &= !autoclear::BITMAPS;
        Ok(())
    }

    /// Whether the image has any bitmap (QEMU refuses to apply a snapshot then).
    pub fn any(&self) -> bool {
        !self.list.is_empty()
    }
}

/// Drops the references of a stored bitmap: its data clusters and its table.
pub(super) fn free_bitmap(t: &mut Txn, table_offset: u64, table: &[u64]) -> Result<()> {
    for e in table {
        if e & BME_OFFSET_MASK != 0 {
            t.add((e & BME_OFFSET_MASK) >> t.img.cluster_bits(), -1)?;
        }
    }
    t.add_range(table_offset, table.len() as u64 * 8, -1)
}

/// Writes `bits` in `t` as QEMU stores a bitmap's data (a cluster of zero bits as a zero table
/// entry, each other cluster allocated), then its table; returns the table's offset (0 for an
/// empty table) and entries.
pub(super) fn store_bits(t: &mut Txn, bits: &[u8], cs: u64) -> Result<(u64, Vec<u64>)> {
    let mut table = Vec::with_capacity(bits.len().div_ceil(cs as usize));
    for chunk in bits.chunks(cs as usize) {
        if vdisk_core::zero::is_zero(chunk) {
            table.push(0);
        } else {
            let off = t.alloc(1)?;
            t.write(off, chunk.to_vec());
            table.push(off);
        }
    }
    let offset = if table.is_empty() {
        0
    } else {
        t.put_table(&table)?
    };
    Ok((offset, table))
}
