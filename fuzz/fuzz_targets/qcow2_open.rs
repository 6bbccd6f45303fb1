//! qcow2 end to end: open the input as an image (no other files), then block status over the whole
//! disk, read what is data, info and check, within the harness's bounds; an input that does not
//! open is opened again as `check` opens it, and exercised the same way.
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
        let first = r.snapshots().first().map(|s| s.id.to_lossy());
        if let Some(id) = first {
            let opts = OpenOptions {
                snapshot: Some(SnapshotSel::Id(id)),
                ..Default::default()
            };
            if let Ok(s) = open(mem("fuzz.qcow2", data), Arc::new(NoFiles), &opts) {
                exercise(&s);
            }
        }
    } else {
        // `check` opens what reading refuses (tables past the end of the file read as zeros).
        let opts = OpenOptions {
            for_check: true,
            ..Default::default()
        };
        if let Ok(r) = open(mem("fuzz.qcow2", data), Arc::new(NoFiles), &opts) {
            exercise(&r);
        }
    }
});
