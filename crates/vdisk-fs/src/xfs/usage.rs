//! What `statvfs` says of a mounted XFS filesystem, computed as Linux's `xfs_fs_statfs` computes
//! it from the superblock counters: the data blocks less an internal log, the free blocks less
//! the blocks set aside for the free-space btrees and free lists (`xfs_alloc_set_aside`: eight
//! an allocation group) and the free-space btree blocks counted in the AGFs
//! (`m_allocbt_blks`, read at mount when reflink or the reverse-map btree asks for per-AG
//! reservations), and inodes as allocated plus as many as the free blocks could hold, capped by
//! `sb_imax_pct` ("XFS Algorithms & Data Structures", "Superblocks" and "AG Free Space
//! Management").

use super::superblock::{ro_compat, Super};
use crate::bytes::be32_at;
use crate::device::Device;
use crate::Usage;
use vdisk_core::Result;

/// `XAGF`.
const AGF_MAGIC: u32 = 0x5841_4746;
/// XFS_ALLOCBT_AGFL_RESERVE plus the four blocks `xfs_alloc_set_aside` adds, per AG.
const SET_ASIDE_PER_AG: u64 = 8;
/// Inodes in an inode chunk (XFS_INODES_PER_CHUNK).
const INODES_PER_CHUNK: u64 = 64;
/// The largest inode number (XFS_MAXINUMBER).
const MAX_INUMBER: u64 = (1 << 56) - 1;

/// Free-space btree blocks beyond their roots, summed over the AGFs (the reverse-map btree's
/// share of `agf_btreeblks` taken out).
fn allocbt_blocks(dev: &Device, sb: &Super) -> Result<u64> {
    let rmap = sb.features_ro_compat & ro_compat::RMAPBT != 0;
    let mut sum = 0u64;
    let mut agf = vec![0u8; sb.sect_size as usize];
    for agno in 0..sb.ag_count {
        let at = sb
            .ag_sector_byte(agno, 1)
            .ok_or_else(|| dev.corrupt(None, format!("AGF of allocation group {agno}")))?;
        dev.read(at, &mut agf, "AGF")?;
        if be32_at(&agf, 0) != AGF_MAGIC {
            return Err(dev.corrupt(Some(at), format!("AGF {agno}: no magic")));
        }
        let btree = i64::from(be32_at(&agf, 60));
        let rmap_blocks = if rmap {
            i64::from(be32_at(&agf, 80)) - 1
        } else {
            0
        };
        sum = sum.saturating_add((btree - rmap_blocks).max(0) as u64);
    }
    Ok(sum)
}

pub fn usage(dev: &Device, sb: &Super) -> Result<Usage> {
    let log = if sb.log_start != 0 { sb.log_blocks } else { 0 };
    let blocks = sb.dblocks.saturating_sub(log);
    let allocbt = if sb.features_ro_compat & (ro_compat::REFLINK | ro_compat::RMAPBT) != 0 {
        allocbt_blocks(dev, sb)?
    } else {
        0
    };
    let unavailable = sb.ag_count * SET_ASIDE_PER_AG + allocbt;
    let free = sb.fdblocks.saturating_sub(unavailable);
    let per_block = 1u64 << sb.inop_block_log;
    let fake_inodes = free.saturating_mul(per_block);
    let mut files = sb.icount.saturating_add(fake_inodes).min(MAX_INUMBER);
    if sb.imax_pct != 0 {
        let chunk_blocks = (INODES_PER_CHUNK >> sb.inop_block_log).max(1);
        let pct = u128::from(sb.dblocks) * u128::from(sb.imax_pct) / 100;
        let pct_blocks = u64::try_from(pct).unwrap_or(u64::MAX) / chunk_blocks;
        let max_inodes = (pct_blocks * chunk_blocks).saturating_mul(per_block);
        files = files.min(max_inodes);
    }
    files = files.max(sb.icount);
    let used_inodes = sb.icount.saturating_sub(sb.ifree);
    Ok(Usage {
        block_size: sb.block_size,
        blocks,
        free_blocks: free,
        available_blocks: free,
        inodes: Some(files),
        free_inodes: Some(files.saturating_sub(used_inodes)),
    })
}
