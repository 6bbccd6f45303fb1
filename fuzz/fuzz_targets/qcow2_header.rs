//! qcow2 header parsing (qcow2.txt "Header", "Header extensions"): any bytes as cluster 0 must parse
//! or fail with an error, and a parsed header must serialize without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use vdisk_qcow2::header::Header;

fuzz_target!(|data: &[u8]| {
    let p = Path::new("fuzz.qcow2");
    let _ = Header::peek_cluster_bits(data, p);
    let Ok(h) = Header::parse(data, p) else {
        return;
    };
    let _ = (
        h.cluster_size(),
        h.l2_entries(),
        h.l2_entry_size(),
        h.refcount_bits(),
    );
    let _ = (
        h.backing_format(),
        h.data_file(),
        h.bitmaps(),
        h.feature_name(0, 0),
    );
    let _ = h.min_l1_entries(h.size);
    // Serializing any parsed header, and parsing that again, must not panic either. (No equality
    // is asserted: names that are not UTF-8 are stored lossily and a v3 header_length that is not a
    // multiple of 8, which qcow2.txt forbids, is re-padded.)
    let bytes = h.serialize();
    if let Ok(h2) = Header::parse(&bytes, p) {
        let _ = h2.serialize();
    }
});
