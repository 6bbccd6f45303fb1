//! LUKS1 decryption as QEMU's crypto/block-luks.c does it, for encrypted qcow2 images (qcow2.txt
//! "Full disk encryption header pointer") and LUKS volumes: a key slot unlocked with a password
//! (PBKDF2, the anti-forensic merge, the master key digest: LUKS On-Disk Format Specification
//! 1.2.3, sections 2.4 and 2.5) and 512-byte sectors decrypted with the header's cipher, mode and
//! IV generator. Pure: bytes in, bytes out; the caller reads the key material and the sectors.
//! Algorithms are named as QEMU names them ("aes-256", "xts", "plain64", "sha256").

mod block;
mod hash;
mod sector;
mod unlock;

pub use sector::SectorCipher;
pub use unlock::{unlock, KeySlotParams, LuksParams, MAX_ITERATIONS};

/// Why a key could not be unlocked or a cipher set up, in QEMU's words where it has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoError(pub String);

impl std::fmt::Display for CryptoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CryptoError {}

pub type Result<T> = std::result::Result<T, CryptoError>;

/// LUKS sectors are 512 bytes (QCRYPTO_BLOCK_LUKS_SECTOR_SIZE).
pub const SECTOR_SIZE: usize = 512;
