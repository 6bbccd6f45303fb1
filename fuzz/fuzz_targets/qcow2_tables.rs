//! qcow2 table parsing: the snapshot table (qcow2.txt "Snapshots") read from a store, L2 entry
//! classification for every cluster size with and without extended L2 ("Cluster mapping"), refcount
//! block entries of every width ("Host cluster management") and compressed-cluster inflation
//! ("Compressed Clusters Descriptor") into a one-cluster buffer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdisk_fuzz::mem;
use vdisk_qcow2::compress::decompress;
use vdisk_qcow2::refcount::block_entry;
use vdisk_qcow2::snapshot::{read_table, Snapshot, ENTRY_FIXED};
use vdisk_qcow2::tables::{continues, Geometry};

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let (ctl, body) = data.split_at(16);
    // Snapshot table: count from the control bytes, read from the body.
    // Bit 0 of byte 4 reads as `check` opens (zeros past the end of the file), with the count
    // bounded as the header bounds it.
    let padded = ctl[4] & 1 != 0;
    let mut count = u32::from_le_bytes([ctl[0], ctl[1], ctl[2], ctl[3]]);
    if padded {
        count %= vdisk_qcow2::limits::MAX_SNAPSHOTS as u32 + 1;
    }
    if let Ok((list, bytes)) = read_table(mem("t", body).as_ref(), 0, count, padded) {
        // The table size counts each entry's padding to 8 bytes, which a file may end before.
        assert!(
            padded || bytes as usize <= body.len() + 7,
            "snapshot table longer than the file"
        );
        // The first entries: a padded table of up to 65536 entries past the end of the file is
        // mostly alike, and round-tripping them all made this target run at ~100 inputs a second.
        for s in list.iter().take(64) {
            let b = s.serialize();
            let again = Snapshot::parse(&b[..ENTRY_FIXED], &b[ENTRY_FIXED..]);
            assert_eq!(again.serialize(), b, "snapshot entry does not round-trip");
        }
    }
    // L2 entries: any 16 bytes as (entry, bitmap) under every geometry.
    let cluster_bits = 9 + u32::from(ctl[4]) % 13;
    let extended = ctl[5] & 1 != 0 && cluster_bits >= 14;
    let g = Geometry {
        cluster_bits,
        extended,
        data_file: ctl[5] & 2 != 0,
    };
    let mut prev = None;
    for w in body.chunks_exact(16).take(256) {
        let entry = u64::from_be_bytes(w[..8].try_into().unwrap_or_default());
        let bitmap = u64::from_be_bytes(w[8..].try_into().unwrap_or_default());
        let _ = g.compressed(entry);
        for sc in 0..32 {
            let t = g.classify(entry, bitmap, sc);
            if let Some(p) = prev {
                let _ = continues(p, 1 << g.unit_bits(), t);
            }
            prev = Some(t);
        }
    }
    // Refcount blocks of every order.
    for order in 0..=6 {
        for i in 0..64u64 {
            let _ = block_entry(body, order, u64::from(ctl[6]) * 64 + i);
        }
    }
    // Compressed clusters: zlib and zstd into a cluster of up to 64 KiB.
    let out_len = 1usize << (9 + u32::from(ctl[7]) % 8);
    let mut out = vec![0u8; out_len];
    let _ = decompress(ctl[8] & 1, body, &mut out);
});
