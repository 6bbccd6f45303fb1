//! qcow2 end to end: open the input as an image (no other files), then block status over the whole
//! disk, read what is data, info and check, within the harness's bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use vdisk_core::storage::NoFiles;
use vdisk_fuzz::{exercise, mem};
use vdisk_qcow2::{open, OpenOptions, SnapshotSel};

fuzz_target!(|data: &[u8]| {
    let opts = OpenOptions::default();
    if let Ok(r) = open(mem("fuzz.qcow2", data), Arc::new(NoFiles), &opts) {
        exercise(&r);
        // Internal snapshots go through a second L1 table.
        let first = r.snapshots().first().map(|s| s.id.clone());
        if let Some(id) = first {
            let opts = OpenOptions {
                snapshot: Some(SnapshotSel::Id(id)),
            };
            if let Ok(s) = open(mem("fuzz.qcow2", data), Arc::new(NoFiles), &opts) {
                exercise(&s);
            }
        }
    }
});
