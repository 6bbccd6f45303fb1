//! VHDX end to end on a sparse file made from the input (`vdisk_fuzz::paged`: 4 KiB pages placed
//! where qemu-img puts the headers, region tables, log, BAT, metadata and first payload blocks):
//! open as `info`/`convert` open (headers, log search, region table, metadata, BAT check), then the
//! bounded client exercise; and open as `check` opens (the BAT unchecked), then the exercise and
//! the check.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdisk_fuzz::exercise;
use vdisk_fuzz::paged::PagedStorage;

fuzz_target!(|data: &[u8]| {
    let s = PagedStorage::new("fuzz.vhdx", data);
    if let Ok(r) = vdisk_vhdx::open(s.clone()) {
        exercise(&r);
    }
    if let Ok(r) = vdisk_vhdx::open_for_check(s) {
        exercise(&r);
    }
});
