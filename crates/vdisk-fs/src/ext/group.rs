//! Block group descriptors (ext4 docs "Block Group Descriptors"): 32 bytes, or `s_desc_size`
//! (64) with the 64bit feature, in the blocks after the superblock, or with meta_bg one block at
//! the start of each metagroup's first, second and last group.

use super::superblock::{incompat, Super};
use crate::bytes::{u16_at, u32_at};
use crate::device::Device;
use vdisk_core::Result;

/// What vdisk-fs uses of a group descriptor.
#[derive(Debug, Clone, Copy)]
pub struct GroupDesc {
    pub inode_table: u64,
    pub free_blocks: u64,
    pub free_inodes: u64,
}

/// The block holding group `g`'s descriptor, and the descriptor's offset in it (the kernel's
/// descriptor_loc).
pub fn desc_location(sb: &Super, g: u64) -> (u64, u64) {
    let dpb = sb.descs_per_block();
    let nr = g / dpb;
    let within = (g % dpb) * u64::from(sb.desc_size);
    let sb_block = u64::from(sb.first_data_block);
    if !sb.has_incompat(incompat::META_BG) || nr < u64::from(sb.first_meta_bg) {
        return (sb_block + nr + 1, within);
    }
    let bg = dpb * nr;
    let mut has_super = u64::from(sb.group_has_super(bg));
    if sb.block_size == 1024 && nr == 0 && sb.first_data_block == 0 {
        has_super += 1;
    }
    let first = u64::from(sb.first_data_block) + bg * u64::from(sb.blocks_per_group);
    (first + has_super, within)
}

/// Reads group `g`'s descriptor (`g` below the group count).
pub fn read_desc(dev: &Device, sb: &Super, g: u64) -> Result<GroupDesc> {
    let (block, within) = desc_location(sb, g);
    if block >= sb.blocks_count {
        return Err(dev.corrupt(
            None,
            format!("group {g}: descriptor block {block} is past the filesystem's end"),
        ));
    }
    let off = block * sb.block_size + within;
    let mut b = [0u8; 64];
    let n = usize::from(sb.desc_size).min(64);
    dev.read(off, &mut b[..n], "group descriptor")?;
    let wide = sb.has_incompat(incompat::BIT64) && n >= 64;
    let hi32 = |o: usize| {
        if wide {
            u64::from(u32_at(&b, o)) << 32
        } else {
            0
        }
    };
    let hi16 = |o: usize| {
        if wide {
            u64::from(u16_at(&b, o)) << 16
        } else {
            0
        }
    };
    Ok(GroupDesc {
        inode_table: u64::from(u32_at(&b, 0x08)) | hi32(0x28),
        free_blocks: u64::from(u16_at(&b, 0x0C)) | hi16(0x2C),
        free_inodes: u64::from(u16_at(&b, 0x0E)) | hi16(0x2E),
    })
}
