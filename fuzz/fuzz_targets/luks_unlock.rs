//! LUKS1 unlocking and decryption (`vdisk_crypto`, fed by `vdisk_qcow2::luks`): the input is a
//! LUKS volume; a header that passes QEMU's checks is unlocked with a fixed password, its key
//! material read from the input (zeros past its end), with the PBKDF2 iteration counts cut to a
//! few and only the first active key slot kept (each slot's merge hashes 4000 stripes) so that
//! each run is quick; an unlocked key, or the first byte's choice of key, decrypts the input's
//! payload sectors. Any bytes give a key or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdisk_qcow2::luks;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = luks::parse(data) else {
        return;
    };
    let mut p = h.crypto_params();
    p.mk_digest_iterations = p.mk_digest_iterations.min(2);
    let keep = p.slots.iter().position(|s| s.active);
    for (i, s) in p.slots.iter_mut().enumerate() {
        s.iterations = s.iterations.min(2);
        s.active = s.active && Some(i) == keep;
    }
    let mut read = |offset: u64, buf: &mut [u8]| -> vdisk_crypto::Result<()> {
        buf.fill(0);
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let n = (data.len() - start).min(buf.len());
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(())
    };
    let key = match vdisk_crypto::unlock(&p, b"fuzz", &mut read) {
        Ok(k) => k,
        // A key of the header's length all the same, to decrypt with every cipher it can name.
        Err(_) => vec![data.first().copied().unwrap_or(0); p.master_key_len.min(64) as usize],
    };
    if let Ok(c) = p.payload_cipher(&key) {
        let mut sectors: Vec<u8> = data.iter().copied().take(4096).collect();
        sectors.truncate(sectors.len() / 512 * 512);
        let _ = c.decrypt(u64::from(h.payload_offset_sector), &mut sectors);
    }
});
