//! Extent trees and block maps built by hand: trees of depth 1 and 2 (the oracle tests reach
//! them through mke2fs too), holes before, between and after extents, uninitialized extents,
//! and damaged trees: a node pointing at itself, depths that do not go down by one, bad magic,
//! more entries than room, entries out of order, extents outside the filesystem.

use super::*;
use crate::testmem::device;

const BS: u64 = 1024;

fn sb(blocks: u64) -> Super {
    Super {
        inodes_count: 16,
        blocks_count: blocks,
        r_blocks_count: 0,
        first_data_block: 1,
        block_size: BS,
        cluster_bits: 0,
        blocks_per_group: 8192,
        inodes_per_group: 16,
        inode_size: 128,
        first_ino: 11,
        compat: 0,
        incompat: 0,
        ro_compat: 0,
        uuid: [0; 16],
        volume_name: [0; 16],
        reserved_gdt_blocks: 0,
        journal_inum: 0,
        journal_dev: 0,
        desc_size: 32,
        first_meta_bg: 0,
        overhead_clusters: 0,
        backup_bgs: [0; 2],
        flags: 0,
        groups: 1,
    }
}

fn header(entries: u16, max: u16, depth: u16) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&EXTENT_MAGIC.to_le_bytes());
    h.extend_from_slice(&entries.to_le_bytes());
    h.extend_from_slice(&max.to_le_bytes());
    h.extend_from_slice(&depth.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h
}

fn leaf(block: u32, len: u16, phys: u64) -> Vec<u8> {
    let mut e = block.to_le_bytes().to_vec();
    e.extend_from_slice(&len.to_le_bytes());
    e.extend_from_slice(&((phys >> 32) as u16).to_le_bytes());
    e.extend_from_slice(&(phys as u32).to_le_bytes());
    e
}

fn index(block: u32, child: u64) -> Vec<u8> {
    let mut e = block.to_le_bytes().to_vec();
    e.extend_from_slice(&(child as u32).to_le_bytes());
    e.extend_from_slice(&((child >> 32) as u16).to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    e
}

fn node(h: Vec<u8>, entries: &[Vec<u8>], size: usize) -> Vec<u8> {
    let mut n = h;
    for e in entries {
        n.extend_from_slice(e);
    }
    n.resize(size, 0);
    n
}

/// A 64-block image with `blocks` placed at their block numbers.
fn image(blocks: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut img = vec![0u8; 64 * BS as usize];
    for (b, data) in blocks {
        let o = (*b * BS) as usize;
        img[o..o + data.len()].copy_from_slice(data);
    }
    img
}

fn run(phys: Option<u64>, len: u64) -> Run {
    Run { phys, len }
}

#[test]
fn depth_two_tree_maps_extents_and_holes() {
    let max = ((BS - 12) / 12) as u16;
    // Leaves at blocks 20 and 21, an index node at 10 above them, the root above that.
    let leaf_a = node(
        header(2, max, 0),
        &[leaf(0, 4, 40), leaf(10, 2, 50)],
        BS as usize,
    );
    let leaf_b = node(header(1, max, 0), &[leaf(100, 32768 + 5, 55)], BS as usize);
    let mid = node(
        header(2, max, 1),
        &[index(0, 20), index(100, 21)],
        BS as usize,
    );
    let root = node(header(1, 4, 2), &[index(0, 10)], 60);
    let dev = device(image(&[(10, mid), (20, leaf_a), (21, leaf_b)]));
    let s = sb(64);
    let m = |l| map_extent(&dev, &s, 12, &root, l).unwrap();
    assert_eq!(m(0), run(Some(40), 4));
    assert_eq!(m(3), run(Some(43), 1));
    assert_eq!(m(4), run(None, 6), "hole up to the next extent");
    assert_eq!(m(11), run(Some(51), 1));
    assert_eq!(m(12), run(None, 88), "hole up to the next index's range");
    assert_eq!(m(100), run(None, 5), "uninitialized extent reads as zeros");
    assert_eq!(m(105), run(None, (1 << 32) - 105), "hole to the end");
}

#[test]
fn damaged_trees_are_errors() {
    let max = ((BS - 12) / 12) as u16;
    let s = sb(64);
    let err = |root: &[u8], blocks: &[(u64, Vec<u8>)], l: u64| {
        let dev = device(image(blocks));
        map_extent(&dev, &s, 12, root, l).unwrap_err().to_string()
    };
    // An index node pointing at itself: its depth does not go down.
    let selfish = node(header(1, max, 1), &[index(0, 10)], BS as usize);
    let root = node(header(1, 4, 2), &[index(0, 10)], 60);
    assert!(err(&root, &[(10, selfish.clone())], 0).contains("depth"));
    // A root pointing at a node that claims to be a root again.
    let root1 = node(header(1, 4, 1), &[index(0, 10)], 60);
    assert!(err(&root1, &[(10, selfish)], 0).contains("depth"));
    let deep = node(header(1, 4, 6), &[index(0, 10)], 60);
    assert!(err(&deep, &[], 0).contains("depth"));
    let mut bad_magic = node(header(1, 4, 0), &[leaf(0, 1, 40)], 60);
    bad_magic[0] = 0;
    assert!(err(&bad_magic, &[], 0).contains("magic"));
    assert!(err(&node(header(5, 4, 0), &[], 60), &[], 0).contains("entries"));
    assert!(err(&node(header(1, 5, 0), &[leaf(0, 1, 40)], 60), &[], 0).contains("entries"));
    let unordered = node(header(2, 4, 0), &[leaf(10, 1, 40), leaf(5, 1, 41)], 60);
    assert!(err(&unordered, &[], 20).contains("order"));
    let outside = node(header(1, 4, 0), &[leaf(0, 10, 60)], 60);
    assert!(err(&outside, &[], 0).contains("outside"));
    let empty = node(header(1, 4, 0), &[leaf(0, 0, 40)], 60);
    assert!(err(&empty, &[], 0).contains("empty"));
    let index_out = node(header(1, 4, 1), &[index(0, 64)], 60);
    assert!(err(&index_out, &[], 0).contains("outside"));
}

#[test]
fn block_maps_direct_indirect_and_holes() {
    let s = sb(64);
    let ppb = BS / 4;
    let mut root = vec![0u8; 60];
    let put =
        |v: &mut Vec<u8>, i: usize, b: u32| v[i * 4..i * 4 + 4].copy_from_slice(&b.to_le_bytes());
    put(&mut root, 0, 30);
    put(&mut root, 1, 31);
    put(&mut root, 2, 33);
    put(&mut root, 12, 10); // single indirect block at 10
    put(&mut root, 13, 11); // double indirect block at 11
    let mut single = vec![0u8; BS as usize];
    put(&mut single, 0, 40);
    put(&mut single, 1, 41);
    put(&mut single, 2, 42);
    put(&mut single, 5, 45);
    let mut double = vec![0u8; BS as usize];
    put(&mut double, 1, 12); // the second pointer block of the double tree
    let mut second = vec![0u8; BS as usize];
    put(&mut second, 3, 50);
    let dev = device(image(&[(10, single), (11, double), (12, second)]));
    let m = |l| map_indirect(&dev, &s, 12, &root, l).unwrap();
    assert_eq!(m(0), run(Some(30), 2));
    assert_eq!(m(2), run(Some(33), 1));
    assert_eq!(m(3), run(None, 9));
    assert_eq!(m(12), run(Some(40), 3));
    assert_eq!(m(15), run(None, 2));
    assert_eq!(m(17), run(Some(45), 1));
    let dbl = 12 + ppb;
    assert_eq!(
        m(dbl),
        run(None, ppb),
        "an absent pointer block is a hole of its span"
    );
    assert_eq!(m(dbl + ppb + 3), run(Some(50), 1));
    assert_eq!(m(dbl + ppb + 4), run(None, ppb - 4));
    let tri = dbl + ppb * ppb;
    assert_eq!(
        m(tri + 7),
        run(None, ppb * ppb * ppb - 7),
        "no triple indirect block"
    );
    // A pointer past the filesystem's end.
    put(&mut root, 0, 64);
    assert!(map_indirect(&dev, &s, 12, &root, 0).is_err());
}
