//! The LUKS1 header of an encrypted qcow2 image (qcow2.txt "Full disk encryption header pointer";
//! the LUKS On-Disk Format Specification 1.2.3, section 2 "PHDR" and "Key slots"), parsed and
//! checked as QEMU's crypto/block-luks.c does when it opens an image without I/O (no key needed),
//! and shown as `qemu-img info` shows it. Pure: bytes in, fields or QEMU's error message out.

use crate::header::extensions::be32;
use serde_json::{json, Value};
use std::path::Path;
use vdisk_core::Error;

/// Bytes of the header: the partition header and its eight key slots.
pub const HEADER_LEN: usize = 592;
const MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
const VERSION: u16 = 1;
const SECTOR: u64 = 512;
/// Where the first key material may start, in sectors (4096 bytes: the header, padded).
const HEADER_SECTORS: u32 = 8;
const STRIPES: u32 = 4000;
pub const SLOT_ENABLED: u32 = 0x00AC_71F3;
pub const SLOT_DISABLED: u32 = 0x0000_DEAD;
const SLOTS: usize = 8;
const SLOT_LEN: usize = 48;
const SLOTS_AT: usize = 208;

/// One key slot (only what `info` shows or the checks need).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySlot {
    /// `active`: [`SLOT_ENABLED`] or [`SLOT_DISABLED`] once checked.
    pub state: u32,
    pub iterations: u32,
    pub key_offset_sector: u32,
    pub stripes: u32,
    /// The PBKDF2 salt of the slot's key.
    pub salt: [u8; 32],
}

/// A header that passed QEMU's checks, with its algorithms by QEMU's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuksHeader {
    pub cipher_alg: &'static str,
    pub cipher_mode: &'static str,
    pub ivgen_alg: &'static str,
    /// Only for the essiv IV generator (QEMU shows it for no other).
    pub ivgen_hash_alg: Option<&'static str>,
    pub hash_alg: &'static str,
    pub payload_offset_sector: u32,
    pub master_key_iterations: u32,
    pub uuid: String,
    pub slots: [KeySlot; SLOTS],
    /// Bytes of the master key (both keys in XTS mode).
    pub master_key_len: u32,
    /// PBKDF2 of the master key, to recognise it (its first 20 bytes), and that PBKDF2's salt.
    pub mk_digest: [u8; 20],
    pub mk_digest_salt: [u8; 32],
}

impl KeySlot {
    /// Whether the slot holds a key.
    pub fn active(&self) -> bool {
        self.state == SLOT_ENABLED
    }
}

/// A NUL-terminated field of `len` bytes at `at`, or `None` when it has no NUL.
fn c_string(b: &[u8], at: usize, len: usize) -> Option<String> {
    let field = &b[at..at + len];
    let end = field.iter().position(|&c| c == 0)?;
    Some(String::from_utf8_lossy(&field[..end]).into_owned())
}

/// QCryptoCipherMode.
const CIPHER_MODES: [&str; 4] = ["ecb", "cbc", "xts", "ctr"];
/// QCryptoHashAlgo, with each digest's length.
const HASHES: [(&str, u32); 8] = [
    ("md5", 16),
    ("sha1", 20),
    ("sha224", 28),
    ("sha256", 32),
    ("sha384", 48),
    ("sha512", 64),
    ("ripemd160", 20),
    ("sm3", 32),
];
/// QCryptoIVGenAlgo.
const IVGENS: [&str; 3] = ["plain", "plain64", "essiv"];
/// The ciphers a LUKS header may name, with their sizes (QEMU's table; SM4 only exists in builds
/// with it, which Debian's qemu-utils is not).
const CIPHERS: [(&str, &[(u32, &str)]); 4] = [
    ("aes", &[(16, "aes-128"), (24, "aes-192"), (32, "aes-256")]),
    ("cast5", &[(16, "cast5-128")]),
    (
        "serpent",
        &[
            (16, "serpent-128"),
            (24, "serpent-192"),
            (32, "serpent-256"),
        ],
    ),
    (
        "twofish",
        &[
            (16, "twofish-128"),
            (24, "twofish-192"),
            (32, "twofish-256"),
        ],
    ),
];

fn lookup<'a>(names: &[&'a str], name: &str, what: &str) -> Result<&'a str, String> {
    names
        .iter()
        .find(|n| **n == name)
        .copied()
        .ok_or_else(|| format!("{what} '{name}' not supported"))
}

fn hash_lookup(name: &str) -> Result<&'static str, String> {
    let names: Vec<&'static str> = HASHES.iter().map(|h| h.0).collect();
    lookup(&names, name, "Hash algorithm")
}

fn digest_len(hash: &str) -> u32 {
    HASHES.iter().find(|h| h.0 == hash).map_or(0, |h| h.1)
}

/// The key length of a cipher named as QEMU names it ("aes-256": 32).
fn key_len(cipher: &str) -> u32 {
    CIPHERS
        .iter()
        .flat_map(|(_, sizes)| sizes.iter())
        .find(|(_, n)| *n == cipher)
        .map_or(0, |(k, _)| *k)
}

/// The cipher for the essiv IV generator: the same family with a key as long as the hash's
/// digest (qcrypto_block_luks_essiv_cipher); only the errors matter here.
fn essiv_cipher(cipher: &'static str, hash: &str) -> Result<(), String> {
    let digest = digest_len(hash);
    if digest == key_len(cipher) {
        return Ok(());
    }
    let (family, title) = match cipher.split('-').next() {
        Some("aes") => ("aes", "AES"),
        Some("serpent") => ("serpent", "Serpent"),
        Some("twofish") => ("twofish", "Twofish"),
        _ => return Err(format!("Cipher {cipher} not supported with essiv")),
    };
    let fits = CIPHERS
        .iter()
        .find(|(n, _)| *n == family)
        .is_some_and(|(_, sizes)| sizes.iter().any(|(k, _)| *k == digest));
    if fits {
        Ok(())
    } else {
        Err(format!(
            "No {title} cipher with key size {digest} available"
        ))
    }
}

/// Sectors of key material for `stripes` stripes of a `key_len`-byte key, rounded up to the
/// header's size, in QEMU's unsigned int arithmetic (qcrypto_block_luks_splitkeylen_sectors).
fn key_material_sectors(key_len: u32, stripes: u32) -> u32 {
    let split = u64::from(key_len.wrapping_mul(stripes));
    let sectors = split.div_ceil(SECTOR);
    sectors.next_multiple_of(u64::from(HEADER_SECTORS)) as u32
}

/// The 32 bytes at `at`.
fn bytes32(b: &[u8], at: usize) -> [u8; 32] {
    std::array::from_fn(|i| b[at + i])
}

/// QEMU's ranges_overlap on 64-bit values (a range's last byte is first + len - 1).
fn ranges_overlap(first1: u64, len1: u64, first2: u64, len2: u64) -> bool {
    let last1 = first1.wrapping_add(len1).wrapping_sub(1);
    let last2 = first2.wrapping_add(len2).wrapping_sub(1);
    !(last2 < first1 || last1 < first2)
}

/// Parses and checks the header in `b` (its first [`HEADER_LEN`] bytes) as QEMU's
/// qcrypto_block_luks_check_header and qcrypto_block_luks_parse_header do, in their order, with
/// their messages.
pub fn parse(b: &[u8]) -> Result<LuksHeader, String> {
    let b = b
        .get(..HEADER_LEN)
        .ok_or_else(|| "Request for data outside of extension header".to_string())?;
    if &b[..6] != MAGIC {
        return Err("Volume is not in LUKS format".into());
    }
    let version = u16::from_be_bytes([b[6], b[7]]);
    if version != VERSION {
        return Err(format!("LUKS version {version} is not supported"));
    }
    let cipher_name = c_string(b, 8, 32)
        .ok_or_else(|| "LUKS header cipher name is not NUL terminated".to_string())?;
    let cipher_mode = c_string(b, 40, 32)
        .ok_or_else(|| "LUKS header cipher mode is not NUL terminated".to_string())?;
    let hash_spec = c_string(b, 72, 32)
        .ok_or_else(|| "LUKS header hash spec is not NUL terminated".to_string())?;
    let payload_offset_sector = be32(b, 104);
    let master_key_len = be32(b, 108);
    let master_key_iterations = be32(b, 164);
    let uuid_field = &b[168..208];
    let uuid_end = uuid_field.iter().position(|&c| c == 0).unwrap_or(40);
    let uuid = String::from_utf8_lossy(&uuid_field[..uuid_end]).into_owned();
    let slots: [KeySlot; SLOTS] = std::array::from_fn(|i| {
        let at = SLOTS_AT + i * SLOT_LEN;
        KeySlot {
            state: be32(b, at),
            iterations: be32(b, at + 4),
            key_offset_sector: be32(b, at + 40),
            stripes: be32(b, at + 44),
            salt: bytes32(b, at + 8),
        }
    });

    if payload_offset_sector < HEADER_SECTORS {
        return Err("LUKS payload is overlapping with the header".into());
    }
    if master_key_iterations == 0 {
        return Err("LUKS key iteration count is zero".into());
    }
    for i in 0..SLOTS {
        let s = &slots[i];
        let len1 = key_material_sectors(master_key_len, s.stripes);
        if s.stripes != STRIPES {
            // %d of an unsigned value, as QEMU prints it.
            return Err(format!(
                "Keyslot {i} is corrupted (stripes {} != {STRIPES})",
                s.stripes as i32
            ));
        }
        if s.state != SLOT_DISABLED && s.state != SLOT_ENABLED {
            return Err(format!("Keyslot {i} state (active/disable) is corrupted"));
        }
        if s.active() && s.iterations == 0 {
            return Err(format!("Keyslot {i} iteration count is zero"));
        }
        if s.key_offset_sector < HEADER_SECTORS {
            return Err(format!("Keyslot {i} is overlapping with the LUKS header"));
        }
        if s.key_offset_sector.wrapping_add(len1) > payload_offset_sector {
            return Err(format!(
                "Keyslot {i} is overlapping with the encrypted payload"
            ));
        }
        for (j, t) in slots.iter().enumerate().skip(i + 1) {
            let len2 = key_material_sectors(master_key_len, t.stripes);
            if ranges_overlap(
                s.key_offset_sector.into(),
                len1.into(),
                t.key_offset_sector.into(),
                len2.into(),
            ) {
                return Err(format!(
                    "Keyslots {i} and {j} are overlapping in the header"
                ));
            }
        }
    }

    // "<cipher-mode>-<iv-generator>[:<iv-hash>]", e.g. "xts-plain64", "cbc-essiv:sha256".
    let Some((mode_name, ivgen_spec)) = cipher_mode.split_once('-') else {
        return Err(format!(
            "Unexpected cipher mode string format '{cipher_mode}'"
        ));
    };
    let (ivgen_name, ivhash_name) = match ivgen_spec.split_once(':') {
        Some((g, h)) => (g, Some(h)),
        None => (ivgen_spec, None),
    };
    let ivgen_hash = ivhash_name.map(hash_lookup).transpose()?;
    let mode = lookup(&CIPHER_MODES, mode_name, "Cipher mode")?;
    let key_bytes = if mode == "xts" {
        master_key_len / 2
    } else {
        master_key_len
    };
    let cipher_alg = CIPHERS
        .iter()
        .find(|(n, _)| *n == cipher_name)
        .and_then(|(_, sizes)| sizes.iter().find(|(k, _)| *k == key_bytes))
        .map(|(_, n)| *n)
        .ok_or_else(|| {
            format!(
                "Algorithm '{cipher_name}' with key size {} bytes not supported",
                key_bytes as i32
            )
        })?;
    let hash_alg = hash_lookup(&hash_spec)?;
    let ivgen_alg = lookup(&IVGENS, ivgen_name, "IV generator")?;
    let mut ivgen_hash_alg = None;
    if ivgen_alg == "essiv" {
        let hash =
            ivgen_hash.ok_or_else(|| "Missing IV generator hash specification".to_string())?;
        essiv_cipher(cipher_alg, hash)?;
        ivgen_hash_alg = Some(hash);
    }
    Ok(LuksHeader {
        cipher_alg,
        cipher_mode: mode,
        ivgen_alg,
        ivgen_hash_alg,
        hash_alg,
        payload_offset_sector,
        master_key_iterations,
        uuid,
        slots,
        master_key_len,
        mk_digest: std::array::from_fn(|i| b[112 + i]),
        mk_digest_salt: bytes32(b, 132),
    })
}

/// Why an encrypted image cannot be read, checked or mapped: qemu-img's words when it is given no
/// key through the option `option` (`encrypt.key-secret` for qcow2, `key-secret` for a LUKS
/// volume), and how to give it.
pub fn no_key(path: &Path, option: &str) -> Error {
    let driver = if option == "key-secret" {
        "luks"
    } else {
        "qcow2"
    };
    Error::Other(format!(
        "Could not open '{p}': Parameter '{option}' is required for cipher (give the password \
         with --object secret,id=sec0,data=PASSWORD --image-opts \
         driver={driver},file.filename={p},{option}=sec0)",
        p = path.display()
    ))
}

impl LuksHeader {
    /// The payload cipher that `password` unlocks, the key material read from `storage` relative
    /// to `at` (where the header starts: 0 for a LUKS volume); QEMU's message when it cannot.
    pub fn unlock(
        &self,
        storage: &dyn vdisk_core::Storage,
        at: u64,
        password: &[u8],
    ) -> std::result::Result<vdisk_crypto::SectorCipher, String> {
        let params = self.crypto_params();
        let mut read = |offset: u64, buf: &mut [u8]| -> vdisk_crypto::Result<()> {
            let pos = at
                .checked_add(offset)
                .ok_or_else(|| vdisk_crypto::CryptoError("key material offset overflows".into()))?;
            storage
                .read_zero_padded(buf, pos)
                .map_err(|e| vdisk_crypto::CryptoError(e.to_string()))
        };
        let key = vdisk_crypto::unlock(&params, password, &mut read).map_err(|e| e.0)?;
        params.payload_cipher(&key).map_err(|e| e.0)
    }

    /// What unlocking the master key and decrypting need of the header (`vdisk_crypto`).
    pub fn crypto_params(&self) -> vdisk_crypto::LuksParams {
        vdisk_crypto::LuksParams {
            cipher: self.cipher_alg.to_string(),
            mode: self.cipher_mode.to_string(),
            ivgen: self.ivgen_alg.to_string(),
            ivgen_hash: self.ivgen_hash_alg.map(str::to_string),
            hash: self.hash_alg.to_string(),
            master_key_len: self.master_key_len,
            mk_digest: self.mk_digest,
            mk_digest_salt: self.mk_digest_salt,
            mk_digest_iterations: self.master_key_iterations,
            slots: self.slots.map(|s| vdisk_crypto::KeySlotParams {
                active: s.active(),
                iterations: s.iterations,
                salt: s.salt,
                key_offset_sector: s.key_offset_sector,
                stripes: s.stripes,
            }),
        }
    }

    /// The `encrypt` object of `qemu-img info` (QCryptoBlockInfoLUKS), keys in any order.
    pub fn info(&self) -> Value {
        let slots: Vec<Value> = self
            .slots
            .iter()
            .map(|s| {
                let mut o = json!({
                    "active": s.active(),
                    "key-offset": u64::from(s.key_offset_sector) * SECTOR,
                });
                if s.active() {
                    o["iters"] = json!(s.iterations);
                    o["stripes"] = json!(s.stripes);
                }
                o
            })
            .collect();
        let mut o = json!({
            "format": "luks",
            "cipher-alg": self.cipher_alg,
            "cipher-mode": self.cipher_mode,
            "ivgen-alg": self.ivgen_alg,
            "hash-alg": self.hash_alg,
            "detached-header": false,
            "payload-offset": u64::from(self.payload_offset_sector) * SECTOR,
            "master-key-iters": self.master_key_iterations,
            "uuid": self.uuid,
            "slots": slots,
        });
        if let Some(h) = self.ivgen_hash_alg {
            o["ivgen-hash-alg"] = json!(h);
        }
        o
    }
}

#[cfg(test)]
#[path = "luks_tests.rs"]
mod tests;
