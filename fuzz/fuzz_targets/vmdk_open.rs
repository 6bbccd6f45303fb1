//! VMDK end to end on one file: a monolithic sparse or stream-optimized image, or a descriptor whose
//! extent files cannot be opened (ZERO extents still work), then the bounded client exercise.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use vdisk_core::storage::NoFiles;
use vdisk_fuzz::{exercise, mem};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = vdisk_vmdk::open(mem("fuzz.vmdk", data), Arc::new(NoFiles)) {
        exercise(&r);
    }
});
