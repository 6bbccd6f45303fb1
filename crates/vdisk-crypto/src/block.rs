//! The block ciphers a LUKS header may name (QEMU's QCryptoCipherAlgo without SM4, which
//! Debian's qemu lacks), one block at a time, by QEMU's names.

use crate::{CryptoError, Result};
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};

/// One keyed block cipher.
pub enum BlockCipher {
    Aes128(aes::Aes128),
    Aes192(aes::Aes192),
    Aes256(aes::Aes256),
    Cast5(cast5::Cast5),
    Serpent(serpent::Serpent),
    Twofish(twofish::Twofish),
}

/// Calls `$body` with `$c` bound to the cipher inside `$self`.
macro_rules! with_cipher {
    ($self:expr, $c:ident => $body:expr) => {
        match $self {
            BlockCipher::Aes128($c) => $body,
            BlockCipher::Aes192($c) => $body,
            BlockCipher::Aes256($c) => $body,
            BlockCipher::Cast5($c) => $body,
            BlockCipher::Serpent($c) => $body,
            BlockCipher::Twofish($c) => $body,
        }
    };
}

impl BlockCipher {
    /// The cipher `name` ("aes-256", "serpent-128", ...) keyed with `key`, which must have the
    /// cipher's key length.
    pub fn new(name: &str, key: &[u8]) -> Result<Self> {
        let bad = || CryptoError(format!("Cipher {name} takes no key of {} bytes", key.len()));
        let want =
            key_len(name).ok_or_else(|| CryptoError(format!("Cipher {name} not supported")))?;
        if key.len() != want {
            return Err(bad());
        }
        Ok(match name {
            "aes-128" => BlockCipher::Aes128(aes::Aes128::new_from_slice(key).map_err(|_| bad())?),
            "aes-192" => BlockCipher::Aes192(aes::Aes192::new_from_slice(key).map_err(|_| bad())?),
            "aes-256" => BlockCipher::Aes256(aes::Aes256::new_from_slice(key).map_err(|_| bad())?),
            "cast5-128" => {
                BlockCipher::Cast5(cast5::Cast5::new_from_slice(key).map_err(|_| bad())?)
            }
            n if n.starts_with("serpent-") => {
                BlockCipher::Serpent(serpent::Serpent::new_from_slice(key).map_err(|_| bad())?)
            }
            n if n.starts_with("twofish-") => {
                BlockCipher::Twofish(twofish::Twofish::new_from_slice(key).map_err(|_| bad())?)
            }
            _ => return Err(CryptoError(format!("Cipher {name} not supported"))),
        })
    }

    /// Bytes per block: 8 for CAST5, 16 for the others.
    pub fn block_len(&self) -> usize {
        match self {
            BlockCipher::Cast5(_) => 8,
            _ => 16,
        }
    }

    /// Encrypts one block in place (`b.len()` is [`BlockCipher::block_len`]).
    pub fn encrypt(&self, b: &mut [u8]) {
        with_cipher!(self, c => c.encrypt_block(GenericArray::from_mut_slice(b)))
    }

    /// Decrypts one block in place.
    pub fn decrypt(&self, b: &mut [u8]) {
        with_cipher!(self, c => c.decrypt_block(GenericArray::from_mut_slice(b)))
    }
}

/// A 16-byte block, as the ciphers with such blocks take them several at a time.
pub type Block16 = GenericArray<u8, aes::cipher::consts::U16>;

/// Calls `$body` with `$c` bound to a cipher of 16-byte blocks inside `$self`, else `$none`.
macro_rules! with_cipher16 {
    ($self:expr, $c:ident => $body:expr, $none:expr) => {
        match $self {
            BlockCipher::Aes128($c) => $body,
            BlockCipher::Aes192($c) => $body,
            BlockCipher::Aes256($c) => $body,
            BlockCipher::Serpent($c) => $body,
            BlockCipher::Twofish($c) => $body,
            BlockCipher::Cast5(_) => $none,
        }
    };
}

impl BlockCipher {
    /// Encrypts 16-byte blocks in one call (AES-NI pipelines them); false, doing nothing, for a
    /// cipher of 8-byte blocks.
    pub fn encrypt16(&self, blocks: &mut [Block16]) -> bool {
        with_cipher16!(self, c => { c.encrypt_blocks(blocks); true }, false)
    }

    /// Decrypts 16-byte blocks in one call, as [`BlockCipher::encrypt16`].
    pub fn decrypt16(&self, blocks: &mut [Block16]) -> bool {
        with_cipher16!(self, c => { c.decrypt_blocks(blocks); true }, false)
    }
}

/// The key length of the cipher `name`, if it is one.
pub fn key_len(name: &str) -> Option<usize> {
    Some(match name {
        "aes-128" | "cast5-128" | "serpent-128" | "twofish-128" => 16,
        "aes-192" | "serpent-192" | "twofish-192" => 24,
        "aes-256" | "serpent-256" | "twofish-256" => 32,
        _ => return None,
    })
}

/// The cipher of `family` ("aes", "serpent", "twofish") with a key of `len` bytes (essiv keys
/// its cipher with a digest).
pub fn with_key_len(family: &str, len: usize) -> Option<&'static str> {
    let names: &[&'static str] = match family {
        "aes" => &["aes-128", "aes-192", "aes-256"],
        "serpent" => &["serpent-128", "serpent-192", "serpent-256"],
        "twofish" => &["twofish-128", "twofish-192", "twofish-256"],
        _ => &[],
    };
    names.iter().copied().find(|n| key_len(n) == Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FIPS-197 appendix C.1: AES-128.
    #[test]
    fn aes_128_known_answer() {
        let key: Vec<u8> = (0u8..16).collect();
        let c = BlockCipher::new("aes-128", &key).unwrap();
        let mut b: Vec<u8> = (0u8..16).map(|i| i * 0x11).collect();
        c.encrypt(&mut b);
        assert_eq!(
            b,
            [
                0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30, 0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4,
                0xc5, 0x5a
            ]
        );
        c.decrypt(&mut b);
        assert_eq!(b, (0u8..16).map(|i| i * 0x11).collect::<Vec<_>>());
    }

    #[test]
    fn wrong_key_lengths_and_names_are_refused() {
        assert!(BlockCipher::new("aes-256", &[0; 16]).is_err());
        assert!(BlockCipher::new("sm4", &[0; 16]).is_err());
        assert_eq!(
            BlockCipher::new("cast5-128", &[1; 16]).unwrap().block_len(),
            8
        );
        assert_eq!(with_key_len("twofish", 32), Some("twofish-256"));
        assert_eq!(with_key_len("cast5", 16), None);
    }
}
