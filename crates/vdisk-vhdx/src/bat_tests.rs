use super::*;
use vdisk_core::MemStorage;

#[test]
fn shape_follows_calc_bat_entries() {
    // 8 MiB blocks: chunk ratio 512. 10 MiB -> 2 payload entries, no bitmap entry needed yet.
    assert_eq!(shape(10 << 20, 8 << 20, 512), Ok((2, 2)));
    // 513 blocks of 1 MiB with chunk ratio 4096: no bitmap; 4097 blocks: one bitmap entry.
    assert_eq!(shape(4097 << 20, 1 << 20, 4096), Ok((4097, 4098)));
    // An empty disk: qemu's uint32_t arithmetic wants 0xffffffff >> 9 entries.
    assert_eq!(shape(0, 8 << 20, 512), Ok((0, (1 << 23) - 1)));
    assert_eq!(shape(1000, 1 << 20, 4096), Ok((1, 1)));
    assert!(shape(u64::MAX, 1 << 20, 4096).is_err());
}

fn bat_bytes(entries: &[u64]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_le_bytes()).collect()
}

#[test]
fn payload_entries_skip_bitmap_entries() {
    // Chunk ratio 2: entries are p0 p1 b0 p2 p3 b1 p4.
    let e: Vec<u64> = vec![6 | 1 << 20, 2, 0, 6 | 2 << 20, 3, 0, 6 | 3 << 20];
    let mut file = vec![0u8; 4 << 20];
    file[..56].copy_from_slice(&bat_bytes(&e));
    let s = MemStorage::new("b", file);
    let regions = Regions::default();
    let ctx = CheckContext {
        block_size: 1 << 20,
        chunk_ratio: 2,
        disk_bytes: 5 << 20,
        file_length: 4 << 20,
        regions: &regions,
    };
    let (bat, f) = Bat::load(&s, 0, (5, 7), &ctx, true).unwrap();
    assert_eq!(f.count, 0);
    assert_eq!(bat.payload_entry(2), 6 | 2 << 20);
    assert_eq!(bat.payload_entry(4), 6 | 3 << 20);
    assert_eq!(bat.payload_entry(99), 0);
    assert_eq!(bat.state_counts[6], 3);
    assert_eq!(bat.state_counts[2] + bat.state_counts[3], 2);
}

#[test]
fn entries_past_the_file_are_findings() {
    let e: Vec<u64> = vec![6 | 9 << 20, 6 | 1 << 20];
    let mut file = vec![0u8; 2 << 20];
    file[..16].copy_from_slice(&bat_bytes(&e));
    let s = MemStorage::new("b", file);
    let regions = Regions::default();
    let ctx = CheckContext {
        block_size: 1 << 20,
        chunk_ratio: 4096,
        disk_bytes: 2 << 20,
        file_length: 2 << 20,
        regions: &regions,
    };
    assert!(Bat::load(&s, 0, (2, 2), &ctx, true).is_err());
    let (_, f) = Bat::load(&s, 0, (2, 2), &ctx, false).unwrap();
    assert_eq!(f.count, 1);
    assert!(f.messages[0].contains("points after end of file"), "{f:?}");
}
