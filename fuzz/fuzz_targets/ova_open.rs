//! OVA packages (`vdisk_ova`): the input as an archive (tar headers: ustar, GNU long names, pax
//! records; the member index), then the package (descriptor first, OVF parsed with its guards,
//! manifest, disks located), each disk's store opened and read at both ends, and the input also
//! parsed directly as an OVF descriptor and as a manifest.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use vdisk_fuzz::mem;
use vdisk_ova::Package;

fuzz_target!(|data: &[u8]| {
    let _ = vdisk_ova::ovf::parse(data, Path::new("fuzz.ovf"));
    let _ = vdisk_ova::manifest::parse(data);
    let Ok(p) = Package::open(mem("fuzz.ova", data)) else {
        return;
    };
    let _ = (p.warnings(), p.manifest(), p.certificate());
    for (i, d) in p.disks().iter().enumerate() {
        let _ = p.drives_for(&d.disk_id);
        if let Ok(s) = p.disk_storage(i) {
            let mut buf = [0u8; 512];
            let len = s.len().unwrap_or(0);
            let _ = s.read_zero_padded(&mut buf, 0);
            let _ = s.read_zero_padded(&mut buf, len.saturating_sub(512));
        }
    }
    let _ = p.verify();
});
