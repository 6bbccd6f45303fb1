//! VMDK binary headers: the hosted sparse header ("Hosted Sparse Extent Header"), the ESX COWD
//! header, the seSparse header and stream markers; each must parse or fail, and a parsed hosted
//! header must serialize to bytes that parse back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdisk_vmdk::header::{sparse_kind, Marker, SparseHeader, HEADER_SIZE};
use vdisk_vmdk::sesparse::{check_volatile, decode_entry, SeSparseHeader};

fuzz_target!(|data: &[u8]| {
    let _ = sparse_kind(data);
    let mut b = [0u8; HEADER_SIZE];
    let n = data.len().min(HEADER_SIZE);
    b[..n].copy_from_slice(&data[..n]);
    if let Ok(h) = SparseHeader::parse(&b) {
        let _ = (
            h.grain_bytes(),
            h.capacity_bytes(),
            h.gt_coverage_bytes(),
            h.gd_entries(),
        );
        let again = SparseHeader::parse(&h.to_bytes()).expect("a serialized header parses");
        assert_eq!(again, h, "hosted sparse header does not round-trip");
    }
    if let Ok(h) = vdisk_vmdk::cowd::CowdHeader::parse(&b) {
        let _ = h.to_sparse().gd_entries();
    }
    if let Ok(h) = SeSparseHeader::parse(&b) {
        let _ = h.gd_entries_needed();
        for i in 0..64 {
            let _ = h.table_sector(i);
        }
    }
    let _ = check_volatile(&b);
    let mut m = [0u8; 16];
    m[..data.len().min(16)].copy_from_slice(&data[..data.len().min(16)]);
    let _ = Marker::parse(&m);
    for w in data.chunks_exact(8).take(512) {
        let _ = decode_entry(u64::from_le_bytes(w.try_into().unwrap_or_default()));
    }
});
