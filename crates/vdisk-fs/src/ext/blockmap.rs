//! Mapping a file's logical blocks to device blocks: the extent tree (ext4 docs "The Contents of
//! inode.i_block": `eh_magic` 0xF30A, index and leaf nodes, uninitialized extents reading as
//! zeros) or the ext2/3 block map (12 direct pointers, then single, double and triple indirect
//! blocks). A lookup answers one run: where the asked block is (or that it is a hole) and how
//! many following blocks continue the same way, so that reads go in large pieces.

use super::inode::{flags, Inode};
use super::superblock::Super;
use crate::bytes::{u16_at, u32_at};
use crate::device::Device;
use crate::limits::EXT_MAX_EXTENT_DEPTH;
use vdisk_core::Result;

/// `eh_magic`.
pub const EXTENT_MAGIC: u16 = 0xF30A;
/// An `ee_len` above this marks an uninitialized extent (reads as zeros) of `ee_len - 32768`.
const EXT_INIT_MAX_LEN: u16 = 32768;

/// Blocks from the asked one on: at `phys` (consecutive) or a hole when `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub phys: Option<u64>,
    pub len: u64,
}

/// Where logical block `lblk` of `inode` is.
pub fn map(dev: &Device, sb: &Super, inode: &Inode, lblk: u64) -> Result<Run> {
    if inode.has_flag(flags::EXTENTS) {
        map_extent(dev, sb, inode.ino, inode.i_block(), lblk)
    } else {
        map_indirect(dev, sb, inode.ino, inode.i_block(), lblk)
    }
}

/// The extent tree lookup; `root` is the 60 bytes of `i_block`.
pub fn map_extent(dev: &Device, sb: &Super, ino: u32, root: &[u8], lblk: u64) -> Result<Run> {
    let bad = |what: String| dev.corrupt(None, format!("inode {ino}: extent tree: {what}"));
    if lblk > u64::from(u32::MAX) {
        return Ok(Run {
            phys: None,
            len: u64::MAX - lblk,
        });
    }
    let mut node = root.to_vec();
    let mut want_depth: Option<u16> = None;
    // The end (exclusive) of the logical range the current node covers.
    let mut upper: u64 = 1 << 32;
    for _ in 0..=EXT_MAX_EXTENT_DEPTH {
        let magic = u16_at(&node, 0);
        let entries = usize::from(u16_at(&node, 2));
        let max = usize::from(u16_at(&node, 4));
        let depth = u16_at(&node, 6);
        if magic != EXTENT_MAGIC {
            return Err(bad(format!(
                "header magic {magic:#06x}, expected {EXTENT_MAGIC:#06x}"
            )));
        }
        if entries > max || 12 + max * 12 > node.len() {
            return Err(bad(format!(
                "{entries} entries of room for {max} in a {}-byte node",
                node.len()
            )));
        }
        if depth > EXT_MAX_EXTENT_DEPTH || want_depth.is_some_and(|d| d != depth) {
            return Err(bad(format!("node depth {depth}, expected {want_depth:?}")));
        }
        let entry = |i: usize| &node[12 + i * 12..24 + i * 12];
        // The last entry starting at or before lblk, and the start of the one after it.
        let mut found: Option<usize> = None;
        let mut next_start = upper;
        let mut prev: Option<u32> = None;
        for i in 0..entries {
            let start = u32_at(entry(i), 0);
            if prev.is_some_and(|p| start <= p) {
                return Err(bad(format!(
                    "entries out of order at logical block {start}"
                )));
            }
            prev = Some(start);
            if u64::from(start) <= lblk {
                found = Some(i);
            } else {
                next_start = next_start.min(u64::from(start));
                break;
            }
        }
        if depth == 0 {
            let Some(i) = found else {
                return Ok(Run {
                    phys: None,
                    len: next_start.saturating_sub(lblk).max(1),
                });
            };
            let e = entry(i);
            let start = u64::from(u32_at(e, 0));
            let raw_len = u16_at(e, 4);
            let (len, init) = if raw_len > EXT_INIT_MAX_LEN {
                (u64::from(raw_len - EXT_INIT_MAX_LEN), false)
            } else {
                (u64::from(raw_len), true)
            };
            let phys = (u64::from(u16_at(e, 6)) << 32) | u64::from(u32_at(e, 8));
            if len == 0 {
                return Err(bad(format!("empty extent at logical block {start}")));
            }
            if phys == 0
                || phys
                    .checked_add(len)
                    .is_none_or(|end| end > sb.blocks_count)
            {
                return Err(bad(format!(
                    "extent of {len} blocks at block {phys} is outside the filesystem"
                )));
            }
            if lblk >= start + len {
                return Ok(Run {
                    phys: None,
                    len: next_start.saturating_sub(lblk).max(1),
                });
            }
            let len_left = start + len - lblk;
            return Ok(Run {
                phys: init.then_some(phys + (lblk - start)),
                len: len_left,
            });
        }
        let Some(i) = found else {
            return Ok(Run {
                phys: None,
                len: next_start.saturating_sub(lblk).max(1),
            });
        };
        upper = next_start;
        let e = entry(i);
        let leaf = u64::from(u32_at(e, 4)) | (u64::from(u16_at(e, 8)) << 32);
        if leaf == 0 || leaf >= sb.blocks_count {
            return Err(bad(format!(
                "index points at block {leaf}, outside the filesystem"
            )));
        }
        node = dev.read_vec(
            leaf * sb.block_size,
            sb.block_size as usize,
            "extent tree node",
        )?;
        want_depth = Some(depth - 1);
    }
    Err(bad("deeper than the limit".into()))
}

/// The ext2/3 block map lookup; `root` is the 60 bytes of `i_block` (15 pointers).
pub fn map_indirect(dev: &Device, sb: &Super, ino: u32, root: &[u8], lblk: u64) -> Result<Run> {
    let ppb = sb.block_size / 4;
    let check = |b: u32| -> Result<()> {
        if u64::from(b) >= sb.blocks_count {
            return Err(dev.corrupt(
                None,
                format!("inode {ino}: block pointer {b} is outside the filesystem"),
            ));
        }
        Ok(())
    };
    if lblk < 12 {
        let i = lblk as usize;
        let ptrs: Vec<u32> = (i..12).map(|j| u32_at(root, j * 4)).collect();
        return run_of(&ptrs, sb.blocks_count, check);
    }
    // Which tree (single, double, triple), and the offset inside it.
    let mut rel = lblk - 12;
    let mut levels = 1u32;
    let mut span = ppb;
    while rel >= span {
        rel -= span;
        levels += 1;
        if levels > 3 {
            return Ok(Run {
                phys: None,
                len: u64::MAX - lblk,
            });
        }
        span = span.saturating_mul(ppb);
    }
    let mut ptr = u32_at(root, (11 + levels as usize) * 4);
    for level in (0..levels).rev() {
        // Blocks one pointer at this level covers, and which pointer covers `rel`.
        let below = ppb.pow(level);
        if ptr == 0 {
            let covered = below * ppb;
            return Ok(Run {
                phys: None,
                len: covered - rel % covered,
            });
        }
        check(ptr)?;
        let block = dev.read_vec(
            u64::from(ptr) * sb.block_size,
            sb.block_size as usize,
            "indirect block",
        )?;
        let idx = ((rel / below) % ppb) as usize;
        if level == 0 {
            let ptrs: Vec<u32> = (idx..ppb as usize).map(|j| u32_at(&block, j * 4)).collect();
            return run_of(&ptrs, sb.blocks_count, check);
        }
        ptr = u32_at(&block, idx * 4);
        if ptr == 0 {
            return Ok(Run {
                phys: None,
                len: below - rel % below,
            });
        }
    }
    Err(dev.corrupt(None, format!("inode {ino}: block map walk")))
}

/// The run starting at `ptrs[0]`: consecutive block numbers, or consecutive zeros (a hole).
fn run_of(ptrs: &[u32], blocks_count: u64, check: impl Fn(u32) -> Result<()>) -> Result<Run> {
    let first = ptrs.first().copied().unwrap_or(0);
    if first == 0 {
        let n = ptrs.iter().take_while(|p| **p == 0).count().max(1);
        return Ok(Run {
            phys: None,
            len: n as u64,
        });
    }
    check(first)?;
    let n = ptrs
        .iter()
        .enumerate()
        .take_while(|(k, p)| {
            let want = u64::from(first) + *k as u64;
            u64::from(**p) == want && want < blocks_count
        })
        .count();
    Ok(Run {
        phys: Some(u64::from(first)),
        len: n as u64,
    })
}

#[cfg(test)]
#[path = "blockmap_tests.rs"]
mod tests;
