//! 512-byte sectors decrypted as QEMU's qcrypto_block_decrypt_helper does: each sector with the
//! IV of its number (crypto/ivgen-plain.c, ivgen-plain64.c, ivgen-essiv.c) in the mode the header
//! names (ECB, CBC, CTR as nettle's `ctr_crypt`, XTS as IEEE 1619 with 512-byte data units).

use crate::block::{self, Block16, BlockCipher};
use crate::hash::Hash;
use crate::{CryptoError, Result, SECTOR_SIZE};

enum Mode {
    Ecb,
    Cbc,
    Ctr,
    /// The tweak cipher (keyed with the second half of the key).
    Xts(Box<BlockCipher>),
}

enum IvGen {
    Plain,
    Plain64,
    /// ESSIV: the sector number encrypted with a cipher keyed by the hash of the key.
    Essiv(Box<BlockCipher>),
}

/// A keyed sector cipher: the payload's, or a key slot's for its key material.
pub struct SectorCipher {
    cipher: BlockCipher,
    mode: Mode,
    ivgen: IvGen,
}

impl SectorCipher {
    /// `cipher` ("aes-256"), `mode` ("xts"), `ivgen` ("plain64", "essiv" with `ivgen_hash`), keyed
    /// with `key` (both XTS keys, one after the other, in XTS mode).
    pub fn new(
        cipher: &str,
        mode: &str,
        ivgen: &str,
        ivgen_hash: Option<&str>,
        key: &[u8],
    ) -> Result<SectorCipher> {
        let (data, mode) = match mode {
            "ecb" => (BlockCipher::new(cipher, key)?, Mode::Ecb),
            "cbc" => (BlockCipher::new(cipher, key)?, Mode::Cbc),
            "ctr" => (BlockCipher::new(cipher, key)?, Mode::Ctr),
            "xts" => {
                if key.len() % 2 != 0 {
                    return Err(CryptoError(format!("XTS key of {} bytes", key.len())));
                }
                let (k1, k2) = key.split_at(key.len() / 2);
                let data = BlockCipher::new(cipher, k1)?;
                if data.block_len() != 16 {
                    return Err(CryptoError(format!(
                        "Cipher {cipher} cannot be used in XTS mode (its blocks are not 16 bytes)"
                    )));
                }
                (data, Mode::Xts(Box::new(BlockCipher::new(cipher, k2)?)))
            }
            m => return Err(CryptoError(format!("Cipher mode '{m}' not supported"))),
        };
        let ivgen = match ivgen {
            "plain" => IvGen::Plain,
            "plain64" => IvGen::Plain64,
            "essiv" => {
                let hash = Hash::from_name(ivgen_hash.ok_or_else(|| {
                    CryptoError("Missing IV generator hash specification".to_string())
                })?)?;
                let family = cipher.split('-').next().unwrap_or(cipher);
                let name = block::with_key_len(family, hash.len()).ok_or_else(|| {
                    CryptoError(format!("Cipher {cipher} not supported with essiv"))
                })?;
                IvGen::Essiv(Box::new(BlockCipher::new(name, &hash.digest(&[key]))?))
            }
            g => return Err(CryptoError(format!("IV generator '{g}' not supported"))),
        };
        Ok(SectorCipher {
            cipher: data,
            mode,
            ivgen,
        })
    }

    /// The IV of `sector` (as many bytes as a block; ECB takes none).
    fn iv(&self, sector: u64) -> Vec<u8> {
        let n = self.cipher.block_len();
        let mut iv = vec![0u8; n];
        match &self.ivgen {
            IvGen::Plain => {
                let b = (sector as u32).to_le_bytes();
                let k = b.len().min(n);
                iv[..k].copy_from_slice(&b[..k]);
            }
            IvGen::Plain64 => {
                let b = sector.to_le_bytes();
                let k = b.len().min(n);
                iv[..k].copy_from_slice(&b[..k]);
            }
            IvGen::Essiv(c) => {
                let mut data = vec![0u8; c.block_len()];
                let b = sector.to_le_bytes();
                let k = b.len().min(data.len());
                data[..k].copy_from_slice(&b[..k]);
                c.encrypt(&mut data);
                let k = data.len().min(n);
                iv[..k].copy_from_slice(&data[..k]);
            }
        }
        iv
    }

    /// Decrypts `buf` in place, its first sector being number `first_sector`: 512-byte sectors,
    /// the last one possibly shorter (key material of 24-byte keys ends mid-sector), but whole
    /// blocks.
    pub fn decrypt(&self, first_sector: u64, buf: &mut [u8]) -> Result<()> {
        if buf.len() % self.cipher.block_len() != 0 {
            return Err(CryptoError(format!(
                "encrypted data of {} bytes is not made of {}-byte blocks",
                buf.len(),
                self.cipher.block_len()
            )));
        }
        for (i, s) in buf.chunks_mut(SECTOR_SIZE).enumerate() {
            let iv = self.iv(first_sector.wrapping_add(i as u64));
            self.decrypt_unit(&iv, s);
        }
        Ok(())
    }

    /// One data unit (a multiple of the block length) with its IV.
    fn decrypt_unit(&self, iv: &[u8], s: &mut [u8]) {
        if self.cipher.block_len() == 16 && s.len() <= SECTOR_SIZE {
            self.decrypt_unit16(iv, s);
        } else {
            self.decrypt_unit_by_block(iv, s);
        }
    }

    /// [`SectorCipher::decrypt_unit`] for a cipher of 16-byte blocks: the unit's blocks copied
    /// out, the mode's whitening applied to all of them, and the cipher run over all of them in
    /// one call (pipelined), which is what makes AES fast.
    fn decrypt_unit16(&self, iv: &[u8], s: &mut [u8]) {
        const MAX: usize = SECTOR_SIZE / 16;
        let n = s.len() / 16;
        let mut blocks = [Block16::default(); MAX];
        let blocks = &mut blocks[..n];
        for (b, src) in blocks.iter_mut().zip(s.chunks_exact(16)) {
            b.copy_from_slice(src);
        }
        let xor = |dst: &mut [u8], src: &[u8]| dst.iter_mut().zip(src).for_each(|(x, y)| *x ^= y);
        match &self.mode {
            Mode::Ecb => {
                self.cipher.decrypt16(blocks);
            }
            Mode::Cbc => {
                self.cipher.decrypt16(blocks);
                xor(&mut blocks[0], iv);
                // Each later block's chaining value is the ciphertext before it, still in `s`.
                for (b, prev) in blocks[1..].iter_mut().zip(s.chunks_exact(16)) {
                    xor(b, prev);
                }
            }
            Mode::Ctr => {
                let mut ks = [Block16::default(); MAX];
                let ks = &mut ks[..n];
                let mut counter = u128::from_be_bytes(iv.try_into().unwrap_or([0; 16]));
                for k in ks.iter_mut() {
                    k.copy_from_slice(&counter.to_be_bytes());
                    counter = counter.wrapping_add(1);
                }
                self.cipher.encrypt16(ks);
                for (b, k) in blocks.iter_mut().zip(ks.iter()) {
                    xor(b, k);
                }
            }
            Mode::Xts(tweak) => {
                let mut t = Block16::default();
                t.copy_from_slice(iv);
                tweak.encrypt(&mut t);
                let mut tweaks = [Block16::default(); MAX];
                let tweaks = &mut tweaks[..n];
                for tw in tweaks.iter_mut() {
                    *tw = t;
                    mul_alpha(&mut t);
                }
                for (b, tw) in blocks.iter_mut().zip(tweaks.iter()) {
                    xor(b, tw);
                }
                self.cipher.decrypt16(blocks);
                for (b, tw) in blocks.iter_mut().zip(tweaks.iter()) {
                    xor(b, tw);
                }
            }
        }
        for (dst, b) in s.chunks_exact_mut(16).zip(blocks.iter()) {
            dst.copy_from_slice(b);
        }
    }

    /// [`SectorCipher::decrypt_unit`] one block at a time, for any block length.
    fn decrypt_unit_by_block(&self, iv: &[u8], s: &mut [u8]) {
        let n = self.cipher.block_len();
        match &self.mode {
            Mode::Ecb => s.chunks_exact_mut(n).for_each(|b| self.cipher.decrypt(b)),
            Mode::Cbc => {
                let mut prev = iv.to_vec();
                let mut this = vec![0u8; n];
                for b in s.chunks_exact_mut(n) {
                    this.copy_from_slice(b);
                    self.cipher.decrypt(b);
                    b.iter_mut().zip(&prev).for_each(|(x, y)| *x ^= y);
                    std::mem::swap(&mut prev, &mut this);
                }
            }
            Mode::Ctr => {
                let mut counter = iv.to_vec();
                let mut ks = vec![0u8; n];
                for b in s.chunks_exact_mut(n) {
                    ks.copy_from_slice(&counter);
                    self.cipher.encrypt(&mut ks);
                    b.iter_mut().zip(&ks).for_each(|(x, y)| *x ^= y);
                    // A big-endian increment of the whole counter block.
                    for c in counter.iter_mut().rev() {
                        *c = c.wrapping_add(1);
                        if *c != 0 {
                            break;
                        }
                    }
                }
            }
            Mode::Xts(tweak) => {
                let mut t = iv.to_vec();
                tweak.encrypt(&mut t);
                for b in s.chunks_exact_mut(16) {
                    b.iter_mut().zip(&t).for_each(|(x, y)| *x ^= y);
                    self.cipher.decrypt(b);
                    b.iter_mut().zip(&t).for_each(|(x, y)| *x ^= y);
                    mul_alpha(&mut t);
                }
            }
        }
    }
}

/// The XTS tweak times the primitive element of GF(2^128), little-endian (IEEE 1619, 5.2).
fn mul_alpha(t: &mut [u8]) {
    let mut carry = 0u8;
    for b in t.iter_mut() {
        let next = *b >> 7;
        *b = (*b << 1) | carry;
        carry = next;
    }
    if carry != 0 {
        t[0] ^= 0x87;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// IEEE 1619-2007 XTS-AES-128 vector 1 (keys and data unit 0, 32 zero bytes of plaintext).
    #[test]
    fn xts_aes_known_answer() {
        let c = SectorCipher::new("aes-128", "xts", "plain64", None, &[0u8; 32]).unwrap();
        let mut b = unhex("917cf69ebd68b2ec9b9fe9a3eadda692cd43d2f59598ed858c02c2652fbf922e");
        c.decrypt_unit(&c.iv(0), &mut b);
        assert_eq!(b, [0u8; 32]);
    }

    /// NIST SP 800-38A F.2.2 (CBC-AES128 decrypt, first two blocks) and F.5.2 (CTR-AES128).
    #[test]
    fn cbc_and_ctr_known_answers() {
        let key = unhex("2b7e151628aed2a6abf7158809cf4f3c");
        let pt = unhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        let c = SectorCipher::new("aes-128", "cbc", "plain64", None, &key).unwrap();
        let mut b = unhex("7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2");
        c.decrypt_unit(&unhex("000102030405060708090a0b0c0d0e0f"), &mut b);
        assert_eq!(b, pt);
        let c = SectorCipher::new("aes-128", "ctr", "plain64", None, &key).unwrap();
        let mut b = unhex("874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff");
        c.decrypt_unit(&unhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"), &mut b);
        assert_eq!(b, pt);
    }

    /// The batched path and the block-at-a-time path decrypt alike, in every mode.
    #[test]
    fn batched_and_single_block_paths_agree() {
        let key: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(37)).collect();
        let data: Vec<u8> = (0..512u32).map(|i| (i * 7 + 3) as u8).collect();
        for (cipher, mode, ivgen, klen) in [
            ("aes-256", "xts", "plain64", 64),
            ("aes-128", "cbc", "essiv", 16),
            ("serpent-128", "ctr", "plain", 16),
            ("twofish-256", "ecb", "plain64", 32),
        ] {
            let c = SectorCipher::new(cipher, mode, ivgen, Some("sha256"), &key[..klen]).unwrap();
            for len in [512usize, 496, 16] {
                let iv = c.iv(0x1234_5678_9abc);
                let (mut a, mut b) = (data[..len].to_vec(), data[..len].to_vec());
                c.decrypt_unit16(&iv, &mut a);
                c.decrypt_unit_by_block(&iv, &mut b);
                assert_eq!(a, b, "{cipher}-{mode} {len}");
            }
        }
    }

    #[test]
    fn ivs_are_qemus() {
        let c = SectorCipher::new("aes-128", "cbc", "plain", None, &[0u8; 16]).unwrap();
        let mut want = vec![0u8; 16];
        want[..4].copy_from_slice(&0x0403_0201u32.to_le_bytes());
        assert_eq!(c.iv(0x0908_0706_0403_0201), want);
        let c = SectorCipher::new("aes-128", "cbc", "plain64", None, &[0u8; 16]).unwrap();
        want[..8].copy_from_slice(&0x0908_0706_0403_0201u64.to_le_bytes());
        assert_eq!(c.iv(0x0908_0706_0403_0201), want);
        assert!(SectorCipher::new("cast5-128", "xts", "plain64", None, &[0u8; 32]).is_err());
        assert!(SectorCipher::new("aes-128", "cbc", "essiv", None, &[0u8; 16]).is_err());
        let mut odd = [0u8; 100];
        assert!(c.decrypt(0, &mut odd).is_err());
    }
}
