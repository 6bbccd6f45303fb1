//! VMDK descriptor with extent files: the input is a descriptor, the line `#EXTENT-DATA`, then the
//! bytes that every extent file the descriptor names is served with (sparse, COWD, seSparse or flat
//! data), so the fuzzer reaches the multi-extent, flat and delta paths; then the client exercise.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use vdisk_fuzz::{exercise, mem, split_at_marker, InputFiles};

fuzz_target!(|data: &[u8]| {
    let (desc, extent) = split_at_marker(data, b"\n#EXTENT-DATA\n");
    let files = Arc::new(InputFiles(extent.to_vec()));
    if let Ok(r) = vdisk_vmdk::open(mem("dir/fuzz.vmdk", desc), files) {
        exercise(&r);
    }
});
