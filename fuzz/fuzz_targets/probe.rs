//! Format probing (qemu's bdrv_probe_all): any bytes give a format or raw, never a panic; then the
//! probed format's reader opens the bytes with no other files and is exercised.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use vdisk_core::storage::NoFiles;
use vdisk_core::{probe_format, Format, ImageReader};
use vdisk_fuzz::{exercise, mem};

fuzz_target!(|data: &[u8]| {
    let s = mem("fuzz.img", data);
    let Ok(fmt) = probe_format(s.as_ref()) else {
        return;
    };
    let r: Box<dyn ImageReader> = match fmt {
        Format::Qcow2 => match vdisk_qcow2::open(s, Arc::new(NoFiles), &Default::default()) {
            Ok(r) => Box::new(r),
            Err(_) => return,
        },
        Format::Vmdk => match vdisk_vmdk::open(s, Arc::new(NoFiles)) {
            Ok(r) => Box::new(r),
            Err(_) => return,
        },
        Format::Vdi => match vdisk_vdi::open(s) {
            Ok(r) => Box::new(r),
            Err(_) => return,
        },
        Format::Vpc => match vdisk_vhd::open(s) {
            Ok(r) => Box::new(r),
            Err(_) => return,
        },
        Format::Vhdx => match vdisk_vhdx::open(s) {
            Ok(r) => Box::new(r),
            Err(_) => return,
        },
        _ => return,
    };
    exercise(r.as_ref());
});
