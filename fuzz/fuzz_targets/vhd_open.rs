//! VHD ("vpc") end to end: open (footer at 0 or at the end, checksum, size rules, dynamic header,
//! BAT), then the bounded client exercise.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdisk_fuzz::{exercise, mem};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = vdisk_vhd::open(mem("fuzz.vhd", data)) {
        exercise(&r);
    }
});
