//! What statvfs says of a mounted ext2/3/4 filesystem, computed as the kernel's ext4_statfs
//! computes it (ext4 driver, default `bsddf`): `f_blocks` is the block count less the overhead
//! (blocks before `s_first_data_block`; in each group the superblock copy, group descriptor and
//! reserved GDT blocks, two bitmaps and the inode table; the internal journal), `f_bfree` the
//! sum of the group descriptors' free counts (what the kernel counts at mount, not the
//! superblock's possibly stale total), `f_bavail` that less `s_r_blocks_count` and, with
//! extents, the kernel's own reserve (2% of the clusters, at most 4096).

use super::group::read_desc;
use super::inode::read_inode;
use super::superblock::{compat, incompat, ro_compat, Super};
use crate::device::Device;
use crate::Usage;
use vdisk_core::Result;

/// The overhead in clusters (ext4_calculate_overhead, for filesystems without bigalloc; with
/// it, the superblock's `s_overhead_clusters`, which mke2fs records).
fn overhead_clusters(dev: &Device, sb: &Super) -> Result<u64> {
    if sb.has_ro_compat(ro_compat::BIGALLOC) {
        let o = u64::from(sb.overhead_clusters);
        if o == 0 || o > sb.blocks_count {
            return Err(
                dev.unsupported("usage of a bigalloc filesystem without s_overhead_clusters")
            );
        }
        return Ok(o);
    }
    let itb = (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size)).div_ceil(sb.block_size);
    let mut overhead = u64::from(sb.first_data_block);
    for g in 0..sb.groups {
        let has_super = u64::from(sb.group_has_super(g));
        let reserved = if has_super == 1 {
            u64::from(sb.reserved_gdt_blocks)
        } else {
            0
        };
        overhead += has_super + sb.group_desc_blocks(g) + reserved + itb + 2;
    }
    if sb.compat & compat::HAS_JOURNAL != 0 && sb.journal_inum != 0 {
        let j = read_inode(dev, sb, u64::from(sb.journal_inum))?;
        overhead = overhead.saturating_add(j.size / sb.block_size);
    }
    Ok(overhead)
}

pub fn usage(dev: &Device, sb: &Super) -> Result<Usage> {
    let c2b = |c: u64| c.saturating_mul(1 << sb.cluster_bits);
    let overhead = c2b(overhead_clusters(dev, sb)?);
    let (mut free_clusters, mut free_inodes) = (0u64, 0u64);
    for g in 0..sb.groups {
        let d = read_desc(dev, sb, g)?;
        free_clusters = free_clusters.saturating_add(d.free_blocks);
        free_inodes = free_inodes.saturating_add(d.free_inodes);
    }
    let bfree = c2b(free_clusters);
    let resv = if sb.has_incompat(incompat::EXTENTS) {
        c2b(((sb.blocks_count >> sb.cluster_bits) / 50).min(4096))
    } else {
        0
    };
    Ok(Usage {
        block_size: sb.block_size,
        blocks: sb.blocks_count.saturating_sub(overhead),
        free_blocks: bfree,
        available_blocks: bfree.saturating_sub(sb.r_blocks_count.saturating_add(resv)),
        inodes: Some(u64::from(sb.inodes_count)),
        free_inodes: Some(free_inodes),
    })
}
