//! Decrypting the guest data of an encrypted qcow2 image with the password given for it
//! (qcow2.txt, header field `crypt_method`: 1 is QEMU's legacy AES-CBC, 2 is LUKS with its header
//! where the "Full disk encryption header pointer" extension says). As QEMU's qcow2 driver does:
//! LUKS numbers sectors by their offset in the file, legacy AES by their offset in the guest's
//! disk; compressed clusters are stored unencrypted.

use crate::luks::LuksHeader;
use vdisk_core::{Error, Result, Storage};
use vdisk_crypto::SectorCipher;

/// Bytes of an encrypted sector.
pub(crate) const SECTOR: u64 = 512;

/// The payload cipher of an unlocked image.
pub(crate) struct Decryptor {
    cipher: SectorCipher,
    /// Sectors numbered by host offset (LUKS), else by guest offset (legacy AES).
    physical: bool,
}

impl Decryptor {
    /// Unlocks the image with `password`: the LUKS header's key slots (key material read from
    /// the file relative to `luks_offset`, where the header is), or the legacy AES key.
    /// QEMU's message when it cannot.
    pub(crate) fn unlock(
        storage: &dyn Storage,
        crypt_method: u32,
        luks: Option<(&LuksHeader, u64)>,
        password: &[u8],
    ) -> std::result::Result<Decryptor, String> {
        match (crypt_method, luks) {
            (1, _) => {
                // qcrypto_block_qcow_init: the password up to its first NUL, cut or padded with
                // zeros to 16 bytes, is the AES-128 key.
                let end = password
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(password.len());
                let mut key = [0u8; 16];
                let n = end.min(16);
                key[..n].copy_from_slice(&password[..n]);
                let cipher =
                    SectorCipher::new("aes-128", "cbc", "plain64", None, &key).map_err(|e| e.0)?;
                Ok(Decryptor {
                    cipher,
                    physical: false,
                })
            }
            (2, Some((h, at))) => Ok(Decryptor {
                cipher: h.unlock(storage, at, password)?,
                physical: true,
            }),
            _ => Err(format!("encryption method {crypt_method} not supported")),
        }
    }

    /// Decrypts `buf`, whose first byte is stored at `host` and belongs at `guest` (both sector
    /// aligned, `buf` whole sectors).
    pub(crate) fn decrypt(&self, buf: &mut [u8], host: u64, guest: u64) -> Result<()> {
        let sector = if self.physical { host } else { guest } / SECTOR;
        self.cipher
            .decrypt(sector, buf)
            .map_err(|e| Error::Other(e.to_string()))
    }
}
