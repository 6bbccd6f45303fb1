//! raw end to end: any bytes are a raw disk; the client exercise must read them back unchanged (and
//! zeros for the tail of a partial last sector).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdisk_core::ImageReader;
use vdisk_fuzz::{exercise, mem};

fuzz_target!(|data: &[u8]| {
    let Ok(r) = vdisk_raw::open(mem("fuzz.img", data)) else {
        return;
    };
    exercise(&r);
    let mut buf = vec![0u8; r.virtual_size() as usize];
    r.read_at(&mut buf, 0).expect("a raw image reads whole");
    assert_eq!(&buf[..data.len()], data);
    assert!(buf[data.len()..].iter().all(|b| *b == 0));
});
