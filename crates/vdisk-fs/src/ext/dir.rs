//! Directory entries (ext4 docs "Directory Entries"): linear `ext4_dir_entry_2` records (with
//! the filetype feature a one-byte name length and a file type; without it, ext2's 16-bit name
//! length) filling each directory block, and inline directories (a 4-byte parent inode number,
//! then records in the rest of `i_block` and in `system.data`). Hashed (htree) directories are
//! read linearly: their index blocks look like one empty record covering the block, and the
//! metadata_csum tail like an empty 12-byte record, so both are skipped as unused entries.

use crate::bytes::{u16_at, u32_at, u8_at};
use crate::device::Device;
use std::ops::ControlFlow;
use vdisk_core::Result;

/// The length a record `name_len` long needs (EXT4_DIR_REC_LEN).
fn rec_len_needed(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

/// `rec_len` as stored: 64 KiB blocks encode 65536 as 65535 or 0 (ext4_rec_len_from_disk).
fn rec_len_from_disk(len: u16, block_size: u64) -> usize {
    if block_size < 65536 {
        return usize::from(len);
    }
    if len == 65535 || len == 0 {
        return block_size as usize;
    }
    usize::from(len & 65532) | (usize::from(len & 3) << 16)
}

/// A callback given each entry's inode number and name; it breaks to stop the walk.
pub type EntryFn<'a> = dyn FnMut(u32, &[u8]) -> Result<ControlFlow<()>> + 'a;

/// Calls `f(inode, name)` for each used record of one block (or inline area) `buf`; `what`
/// names the directory for errors. Stops early when `f` breaks.
pub fn for_each_record(
    dev: &Device,
    buf: &[u8],
    block_size: u64,
    filetype: bool,
    inodes_count: u32,
    what: &dyn Fn() -> String,
    f: &mut EntryFn,
) -> Result<ControlFlow<()>> {
    let mut pos = 0usize;
    while pos + 8 <= buf.len() {
        let ino = u32_at(buf, pos);
        let rec_len = rec_len_from_disk(u16_at(buf, pos + 4), block_size);
        let name_len = if filetype {
            usize::from(u8_at(buf, pos + 6))
        } else {
            usize::from(u16_at(buf, pos + 6))
        };
        let bad =
            |msg: String| dev.corrupt(None, format!("{}: entry at byte {pos}: {msg}", what()));
        if rec_len < 12 || rec_len % 4 != 0 {
            return Err(bad(format!("rec_len {rec_len}")));
        }
        if pos + rec_len > buf.len() {
            return Err(bad(format!("rec_len {rec_len} runs past the block")));
        }
        if ino != 0 {
            if rec_len < rec_len_needed(name_len) || name_len == 0 {
                return Err(bad(format!(
                    "name_len {name_len} in a rec_len of {rec_len}"
                )));
            }
            if ino > inodes_count {
                return Err(bad(format!(
                    "inode {ino} is past the {inodes_count} inodes"
                )));
            }
            let name = &buf[pos + 8..pos + 8 + name_len];
            if name != b"." && name != b".." && f(ino, name)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        pos += rec_len;
    }
    Ok(ControlFlow::Continue(()))
}
