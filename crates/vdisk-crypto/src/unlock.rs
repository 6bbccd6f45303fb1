//! Unlocking a LUKS1 master key with a password (LUKS On-Disk Format Specification 1.2.3,
//! section 2.5 "Recovering the master key"; QEMU's qcrypto_block_luks_find_key): each active key
//! slot in turn, its key derived with PBKDF2, its key material decrypted and merged, the result
//! checked against the master key digest.

use crate::hash::Hash;
use crate::sector::SectorCipher;
use crate::{CryptoError, Result, SECTOR_SIZE};

/// PBKDF2 iterations vdisk runs for one key slot or the master key digest, at most. QEMU has no
/// limit; its own images ask for what takes about two seconds (`iter-time` 2000 ms: a few
/// million). A header asking for more is refused rather than run for minutes per slot.
pub const MAX_ITERATIONS: u32 = 1 << 26;
/// The longest master key (64 bytes: AES-256 in XTS mode), so key material of at most 4000
/// stripes of it is read.
pub const MAX_KEY_LEN: u32 = 64;
/// Stripes of key material (the only count QEMU accepts).
pub const MAX_STRIPES: u32 = 4000;

/// One key slot of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySlotParams {
    pub active: bool,
    pub iterations: u32,
    pub salt: [u8; 32],
    pub key_offset_sector: u32,
    pub stripes: u32,
}

/// What unlocking needs of a LUKS1 header (one that passed QEMU's header checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuksParams {
    pub cipher: String,
    pub mode: String,
    pub ivgen: String,
    pub ivgen_hash: Option<String>,
    pub hash: String,
    pub master_key_len: u32,
    pub mk_digest: [u8; 20],
    pub mk_digest_salt: [u8; 32],
    pub mk_digest_iterations: u32,
    pub slots: [KeySlotParams; 8],
}

impl LuksParams {
    /// The payload's cipher, keyed with the master key.
    pub fn payload_cipher(&self, master_key: &[u8]) -> Result<SectorCipher> {
        SectorCipher::new(
            &self.cipher,
            &self.mode,
            &self.ivgen,
            self.ivgen_hash.as_deref(),
            master_key,
        )
    }
}

fn check_iterations(n: u32, what: &str) -> Result<()> {
    if n > MAX_ITERATIONS {
        return Err(CryptoError(format!(
            "{what} asks for {n} PBKDF2 iterations, more than vdisk runs ({MAX_ITERATIONS})"
        )));
    }
    Ok(())
}

/// The master key that `password` unlocks, trying the active slots in order; `read(offset, buf)`
/// reads key material at a byte offset of the LUKS volume. QEMU's message when no slot opens.
pub fn unlock(
    p: &LuksParams,
    password: &[u8],
    read: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
) -> Result<Vec<u8>> {
    let hash = Hash::from_name(&p.hash)?;
    let key_len = p.master_key_len;
    if key_len == 0 || key_len > MAX_KEY_LEN {
        return Err(CryptoError(format!("LUKS master key of {key_len} bytes")));
    }
    check_iterations(p.mk_digest_iterations, "The master key digest")?;
    for (i, slot) in p.slots.iter().enumerate() {
        if !slot.active {
            continue;
        }
        check_iterations(slot.iterations, &format!("Key slot {i}"))?;
        if slot.stripes == 0 || slot.stripes > MAX_STRIPES {
            return Err(CryptoError(format!(
                "Keyslot {i} is corrupted (stripes {})",
                slot.stripes
            )));
        }
        let mut slot_key = vec![0u8; key_len as usize];
        hash.pbkdf2(password, &slot.salt, slot.iterations, &mut slot_key);
        // Bounded: at most 64 bytes times 4000 stripes.
        let mut material = vec![0u8; (key_len * slot.stripes) as usize];
        read(
            u64::from(slot.key_offset_sector) * SECTOR_SIZE as u64,
            &mut material,
        )?;
        let cipher = SectorCipher::new(
            &p.cipher,
            &p.mode,
            &p.ivgen,
            p.ivgen_hash.as_deref(),
            &slot_key,
        )?;
        cipher.decrypt(0, &mut material)?;
        let candidate = hash.af_merge(&material, key_len as usize, slot.stripes as usize)?;
        let mut digest = [0u8; 20];
        hash.pbkdf2(
            &candidate,
            &p.mk_digest_salt,
            p.mk_digest_iterations,
            &mut digest,
        );
        if digest == p.mk_digest {
            return Ok(candidate);
        }
    }
    Err(CryptoError(
        "Invalid password, cannot unlock any keyslot".to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(iterations: u32, mk_iterations: u32) -> LuksParams {
        let slot = KeySlotParams {
            active: true,
            iterations,
            salt: [1; 32],
            key_offset_sector: 8,
            stripes: MAX_STRIPES,
        };
        LuksParams {
            cipher: "aes-256".into(),
            mode: "xts".into(),
            ivgen: "plain64".into(),
            ivgen_hash: None,
            hash: "sha256".into(),
            master_key_len: 64,
            mk_digest: [0; 20],
            mk_digest_salt: [2; 32],
            mk_digest_iterations: mk_iterations,
            slots: [slot; 8],
        }
    }

    /// A hostile header's iteration counts are refused before any PBKDF2 runs, and key material
    /// is read at its bounded size; a password that opens no slot gets QEMU's words.
    #[test]
    fn hostile_counts_are_refused_and_wrong_passwords_named() {
        let reads = std::cell::Cell::new(0usize);
        let mut read = |_: u64, b: &mut [u8]| -> Result<()> {
            reads.set(reads.get() + b.len());
            Ok(())
        };
        let e = unlock(&params(u32::MAX, 1), b"pw", &mut read).unwrap_err();
        assert!(
            e.0.contains("Key slot 0 asks for 4294967295 PBKDF2 iterations"),
            "{e}"
        );
        let e = unlock(&params(1, u32::MAX), b"pw", &mut read).unwrap_err();
        assert!(e.0.contains("master key digest"), "{e}");
        assert_eq!(reads.get(), 0);
        let e = unlock(&params(1, 1), b"pw", &mut read).unwrap_err();
        assert_eq!(e.0, "Invalid password, cannot unlock any keyslot");
        assert_eq!(reads.get(), 8 * 64 * MAX_STRIPES as usize);
        let mut p = params(1, 1);
        p.master_key_len = 1 << 20;
        assert!(unlock(&p, b"pw", &mut read).is_err());
    }
}
