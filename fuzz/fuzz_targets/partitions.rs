//! Partition tables (`vdisk_part::read`) on the input as a raw disk: the MBR, an extended
//! partition's chain of logical partitions, the protective MBR and GPT (headers, checksums,
//! entry array, backup header), then both reports of what was found.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdisk_fuzz::mem;

fuzz_target!(|data: &[u8]| {
    let Ok(r) = vdisk_raw::open(mem("fuzz.raw", data)) else {
        return;
    };
    if let Ok(Some(t)) = vdisk_part::read(&r) {
        let _ = vdisk_part::report::sfdisk_json(&t, "fuzz.raw", data.len() as u64);
        let _ = vdisk_part::report::human_text(&t, data.len() as u64);
    }
});
