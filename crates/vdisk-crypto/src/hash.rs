//! The hashes a LUKS header may name (QEMU's QCryptoHashAlgo without SM3, which Debian's qemu
//! lacks), PBKDF2 over their HMAC (RFC 8018 section 5.2), and the anti-forensic merge of a key
//! slot's stripes (LUKS On-Disk Format Specification 1.2.3, section 2.4, AFmerge and diffuse).

use crate::{CryptoError, Result};
use sha2::Digest;

/// A hash algorithm by QEMU's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
    Ripemd160,
}

impl Hash {
    pub fn from_name(name: &str) -> Result<Hash> {
        Ok(match name {
            "md5" => Hash::Md5,
            "sha1" => Hash::Sha1,
            "sha224" => Hash::Sha224,
            "sha256" => Hash::Sha256,
            "sha384" => Hash::Sha384,
            "sha512" => Hash::Sha512,
            "ripemd160" => Hash::Ripemd160,
            _ => return Err(CryptoError(format!("Hash algorithm {name} not supported"))),
        })
    }

    /// Bytes of a digest.
    pub fn len(self) -> usize {
        match self {
            Hash::Md5 => 16,
            Hash::Sha1 | Hash::Ripemd160 => 20,
            Hash::Sha224 => 28,
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// The digest of the concatenated `parts`.
    pub fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            h.finalize().to_vec()
        }
        match self {
            Hash::Md5 => run::<md5::Md5>(parts),
            Hash::Sha1 => run::<sha1::Sha1>(parts),
            Hash::Sha224 => run::<sha2::Sha224>(parts),
            Hash::Sha256 => run::<sha2::Sha256>(parts),
            Hash::Sha384 => run::<sha2::Sha384>(parts),
            Hash::Sha512 => run::<sha2::Sha512>(parts),
            Hash::Ripemd160 => run::<ripemd::Ripemd160>(parts),
        }
    }

    /// PBKDF2 with HMAC of this hash: `out.len()` bytes from `password` and `salt`.
    pub fn pbkdf2(self, password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
        use pbkdf2::pbkdf2_hmac;
        match self {
            Hash::Md5 => pbkdf2_hmac::<md5::Md5>(password, salt, iterations, out),
            Hash::Sha1 => pbkdf2_hmac::<sha1::Sha1>(password, salt, iterations, out),
            Hash::Sha224 => pbkdf2_hmac::<sha2::Sha224>(password, salt, iterations, out),
            Hash::Sha256 => pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, out),
            Hash::Sha384 => pbkdf2_hmac::<sha2::Sha384>(password, salt, iterations, out),
            Hash::Sha512 => pbkdf2_hmac::<sha2::Sha512>(password, salt, iterations, out),
            Hash::Ripemd160 => pbkdf2_hmac::<ripemd::Ripemd160>(password, salt, iterations, out),
        }
    }

    /// `diffuse`: each digest-sized piece of `d` (the last one shorter) replaced by the hash of
    /// its big-endian index followed by the piece, cut to the piece's length.
    fn diffuse(self, d: &mut [u8]) {
        for (i, piece) in d.chunks_mut(self.len()).enumerate() {
            let h = self.digest(&[&(i as u32).to_be_bytes(), piece]);
            let n = piece.len();
            piece.copy_from_slice(&h[..n]);
        }
    }

    /// `AFmerge`: the key of `key_len` bytes that `material` (`stripes` stripes of it) was split
    /// into.
    pub fn af_merge(self, material: &[u8], key_len: usize, stripes: usize) -> Result<Vec<u8>> {
        let short = || CryptoError("LUKS key material is shorter than its stripes".to_string());
        if key_len == 0 || stripes == 0 {
            return Err(short());
        }
        let want = key_len.checked_mul(stripes).ok_or_else(short)?;
        let material = material.get(..want).ok_or_else(short)?;
        let mut d = vec![0u8; key_len];
        let mut blocks = material.chunks_exact(key_len);
        for _ in 0..stripes - 1 {
            let b = blocks.next().ok_or_else(short)?;
            d.iter_mut().zip(b).for_each(|(x, y)| *x ^= y);
            self.diffuse(&mut d);
        }
        let last = blocks.next().ok_or_else(short)?;
        d.iter_mut().zip(last).for_each(|(x, y)| *x ^= y);
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// RFC 6070's first PBKDF2-HMAC-SHA1 vectors, and one for SHA-256.
    #[test]
    fn pbkdf2_known_answers() {
        let mut out = [0u8; 20];
        Hash::Sha1.pbkdf2(b"password", b"salt", 1, &mut out);
        assert_eq!(hex(&out), "0c60c80f961f0e71f3a9b524af6012062fe037a6");
        Hash::Sha1.pbkdf2(b"password", b"salt", 4096, &mut out);
        assert_eq!(hex(&out), "4b007901b765489abead49d926f721d065a429c1");
        let mut out = [0u8; 32];
        Hash::Sha256.pbkdf2(b"password", b"salt", 1, &mut out);
        assert_eq!(
            hex(&out),
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
        );
    }

    /// A merge of one stripe is the stripe; of two, the diffused first one XOR the second.
    #[test]
    fn af_merge_follows_the_spec() {
        let k: Vec<u8> = (0u8..40).collect();
        assert_eq!(Hash::Sha1.af_merge(&k, 40, 1).unwrap(), k);
        let mut two = vec![7u8; 40];
        two.extend_from_slice(&k);
        let mut d = [7u8; 40];
        let h0 = Hash::Sha1.digest(&[&0u32.to_be_bytes(), &d[..20]]);
        let h1 = Hash::Sha1.digest(&[&1u32.to_be_bytes(), &d[20..]]);
        d[..20].copy_from_slice(&h0);
        d[20..].copy_from_slice(&h1[..20]);
        let want: Vec<u8> = d.iter().zip(&k).map(|(a, b)| a ^ b).collect();
        assert_eq!(Hash::Sha1.af_merge(&two, 40, 2).unwrap(), want);
        assert!(Hash::Sha1.af_merge(&k, 40, 2).is_err());
        assert!(Hash::from_name("sm3").is_err());
    }
}
