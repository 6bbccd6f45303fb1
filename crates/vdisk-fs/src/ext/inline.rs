//! Inline data (ext4 docs "Inline Data"): a small file's or directory's bytes in `i_block` (60
//! bytes) followed by the value of the in-inode extended attribute `system.data` (ext4 docs
//! "Extended Attributes": the area after `i_extra_isize`, magic 0xEA020000, entries whose values
//! are at offsets from the first entry).

use super::inode::Inode;
use crate::bytes::{bytes_at, u16_at, u32_at, u8_at};
use crate::device::Device;
use vdisk_core::Result;

/// `h_magic` of the in-inode attribute area.
const XATTR_MAGIC: u32 = 0xEA02_0000;
/// The `system.` name index.
const INDEX_SYSTEM: u8 = 7;

/// The value of `system.data` in the inode's in-inode attributes (empty if there is none).
pub fn system_data<'a>(dev: &Device, inode: &'a Inode) -> Result<&'a [u8]> {
    let bad = |what: &str| {
        dev.corrupt(
            None,
            format!("inode {}: in-inode attributes: {what}", inode.ino),
        )
    };
    let area_start = 128 + usize::from(inode.extra_isize);
    let raw = &inode.raw;
    if area_start + 4 > raw.len() || u32_at(raw, area_start) != XATTR_MAGIC {
        return Ok(&[]);
    }
    let first = area_start + 4;
    let mut pos = first;
    while pos + 16 <= raw.len() {
        if u32_at(raw, pos) == 0 {
            break;
        }
        let name_len = usize::from(u8_at(raw, pos));
        let index = u8_at(raw, pos + 1);
        let value_offs = usize::from(u16_at(raw, pos + 2));
        let value_inum = u32_at(raw, pos + 4);
        let value_size = u32_at(raw, pos + 8) as usize;
        let name = bytes_at(raw, pos + 16, name_len);
        if name.len() != name_len {
            return Err(bad("entry name runs past the inode"));
        }
        if index == INDEX_SYSTEM && name == b"data" {
            if value_inum != 0 {
                return Err(dev.unsupported(format!(
                    "inode {}: inline data in an extended attribute inode",
                    inode.ino
                )));
            }
            let start = first + value_offs;
            return match start.checked_add(value_size) {
                Some(end) if end <= raw.len() => Ok(&raw[start..end]),
                _ => Err(bad("system.data value runs past the inode")),
            };
        }
        pos += (16 + name_len + 3) & !3;
    }
    Ok(&[])
}

/// The inline bytes of a file: `i_block` then `system.data`, at most `inode.size` of them. A
/// file whose size is larger reads as zeros past them, as the kernel reads it (inline data
/// lives in the first page only; the others read as zeros).
pub fn inline_bytes(dev: &Device, inode: &Inode) -> Result<Vec<u8>> {
    let extra = system_data(dev, inode)?;
    let mut all = inode.i_block().to_vec();
    all.extend_from_slice(extra);
    all.truncate(usize::try_from(inode.size).unwrap_or(usize::MAX));
    Ok(all)
}
