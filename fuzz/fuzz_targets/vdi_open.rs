//! VDI end to end: open (header, validation, block map), then the bounded client exercise.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdisk_fuzz::{exercise, mem};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = vdisk_vdi::open(mem("fuzz.vdi", data)) {
        exercise(&r);
    }
});
