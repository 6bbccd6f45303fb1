//! VDI header parsing and validation (VirtualBox VDICore.h "VDIHEADER0/1"): any bytes parse or fail;
//! a header that validates against some file length must also serialize (version 1) and parse back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use vdisk_vdi::header::{Header, PARSE_LEN};

fuzz_target!(|data: &[u8]| {
    let p = Path::new("fuzz.vdi");
    let Ok(h) = Header::parse(data, p) else {
        return;
    };
    let _ = (h.slot_size(), h.virtual_size(), h.is_v0());
    for len in [0, data.len() as u64, 1 << 20, u64::MAX] {
        if h.validate(p, len).is_ok() && !h.is_v0() {
            let mut buf = vec![0u8; PARSE_LEN];
            if h.write_v1(&mut buf).is_ok() {
                let again = Header::parse(&buf, p).expect("a written header parses");
                assert_eq!(again.virtual_size(), h.virtual_size());
                assert_eq!(again.blocks_in_image, h.blocks_in_image);
            }
        }
    }
});
