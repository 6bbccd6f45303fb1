//! LVM2 physical volumes (`vdisk_lvm`) on the input as a raw device: the label in the first four
//! sectors, the PV header and its area lists, the metadata area header and its circular buffer,
//! the volume group text (parsed and interpreted: PVs, LVs, linear and striped segments), then
//! each logical volume's reader: its size, block status and reads at its start, end and middle.
//! The first input byte is the device's length in 64 KiB units (at least the rest of the input's
//! length): the rest is its start, zeros follow, so a short input stands for a PV of up to 16 MiB
//! whose label and metadata lie at its start (pvcreate puts the metadata area at 4 KiB). lvm2's
//! checksums (label, metadata area header, metadata text) are taken as matching in fuzzing
//! builds, so that mutated inputs reach the parsers behind them; `lvm-parity.py` compares the
//! corpus with lvm2, checksums checked.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdisk_fuzz::sized_device;

fuzz_target!(|data: &[u8]| {
    let Some(dev) = sized_device(data) else {
        return;
    };
    let Ok(Some(pv)) = vdisk_lvm::read_pv(dev.as_ref()) else {
        return;
    };
    let pvs = [(dev, pv)];
    let mut buf = vec![0u8; 4096];
    for lv in vdisk_lvm::logical_volumes(&pvs) {
        let _ = (lv.device(), lv.aliases());
        let Ok(r) = &lv.reader else { continue };
        let size = r.virtual_size();
        assert_eq!(size, lv.size, "the reader's size is the volume's");
        if size == 0 {
            continue;
        }
        let _ = r.block_status(0, size);
        for at in [0, size / 2, size.saturating_sub(buf.len() as u64)] {
            let n = (buf.len() as u64).min(size - at) as usize;
            let _ = r.read_at(&mut buf[..n], at);
        }
        // Past the end is an error, never a panic.
        assert!(r.read_at(&mut buf[..1], size).is_err());
    }
});
