//! The OVF manifest (`.mf`, DMTF DSP0243 5.1 "OVF package structure"): one line a file,
//! `SHA1(name)= hex` or `SHA256(name)= hex` (SHA-512 is read too; ovftool writes it with
//! `--shaAlgorithm=SHA512`), and the check of a file's digest, streamed through the hash in pieces of
//! [`DIGEST_CHUNK_BYTES`] (for `check`; opening a package never reads its disks). The certificate
//! (`.cert`), which signs the manifest, is only reported.

use crate::limits::{DIGEST_CHUNK_BYTES, MAX_MANIFEST_BYTES, MAX_MEMBERS};
use sha1::Digest;
use std::fmt;
use vdisk_core::{Result, Storage};

/// A digest algorithm a manifest names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The name as written in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }

    fn parse(s: &str) -> Option<Algorithm> {
        match s.trim().to_ascii_uppercase().replace('-', "").as_str() {
            "SHA1" => Some(Algorithm::Sha1),
            "SHA256" => Some(Algorithm::Sha256),
            "SHA512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One manifest line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The file name, as in the package (`disk1.vmdk`).
    pub name: String,
    pub algorithm: Algorithm,
    /// The digest.
    pub digest: Vec<u8>,
}

impl ManifestEntry {
    /// The digest in lower-case hex.
    pub fn hex(&self) -> String {
        hex(&self.digest)
    }
}

/// A parsed manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    /// The entry for `name`, if listed.
    pub fn entry(&self, name: &str) -> Option<&ManifestEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// Parses a manifest's text. Blank lines are skipped; spaces around `(`, `)` and `=` are allowed
/// (`openssl dgst` writes `SHA256(name)= hex`, as ovftool does). An unknown algorithm or a line of
/// another shape is an error naming its line.
pub fn parse(text: &[u8]) -> std::result::Result<Manifest, String> {
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!(
            "manifest of {} bytes is larger than the limit of {MAX_MANIFEST_BYTES}",
            text.len()
        ));
    }
    let text = std::str::from_utf8(text)
        .map_err(|e| format!("manifest is not UTF-8 text (byte {})", e.valid_up_to()))?;
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let (Some(open), Some(close)) = (line.find('('), line.rfind(')')) else {
            return Err(format!(
                "manifest line {n} is not 'ALGORITHM(name)= digest'"
            ));
        };
        if close < open {
            return Err(format!(
                "manifest line {n} is not 'ALGORITHM(name)= digest'"
            ));
        }
        let algo_name = &line[..open];
        let algorithm = Algorithm::parse(algo_name).ok_or_else(|| {
            format!(
                "manifest line {n}: digest algorithm '{}' is not SHA1, SHA256 or SHA512",
                algo_name.trim()
            )
        })?;
        let name = line[open + 1..close].trim().to_string();
        let Some(value) = line[close + 1..].trim_start().strip_prefix('=') else {
            return Err(format!("manifest line {n}: no '=' after the file name"));
        };
        let digest = unhex(value.trim())
            .filter(|d| d.len() == algorithm.digest_len())
            .ok_or_else(|| {
                format!(
                    "manifest line {n}: '{}' is not a {algorithm} digest ({} hex digits)",
                    value.trim(),
                    2 * algorithm.digest_len()
                )
            })?;
        if entries.len() >= MAX_MEMBERS {
            return Err(format!("manifest lists more than {MAX_MEMBERS} files"));
        }
        entries.push(ManifestEntry {
            name,
            algorithm,
            digest,
        });
    }
    Ok(Manifest { entries })
}

/// Streams all of `storage` through `algorithm`, [`DIGEST_CHUNK_BYTES`] at a time.
pub fn digest(storage: &dyn Storage, algorithm: Algorithm) -> Result<Vec<u8>> {
    match algorithm {
        Algorithm::Sha1 => stream::<sha1::Sha1>(storage),
        Algorithm::Sha256 => stream::<sha2::Sha256>(storage),
        Algorithm::Sha512 => stream::<sha2::Sha512>(storage),
    }
}

fn stream<D: Digest>(storage: &dyn Storage) -> Result<Vec<u8>> {
    let len = storage.len()?;
    let mut h = D::new();
    let mut buf = vec![0u8; DIGEST_CHUNK_BYTES];
    let mut at = 0u64;
    while at < len {
        let n = usize::try_from(len - at).map_or(buf.len(), |r| r.min(buf.len()));
        let piece = &mut buf[..n];
        storage.read_exact_at(piece, at)?;
        h.update(&*piece);
        at += n as u64;
    }
    Ok(h.finalize().to_vec())
}

/// The result of checking one manifest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCheck {
    /// The entry checked.
    pub entry: ManifestEntry,
    /// The digest computed, or `None` when the file is not in the package.
    pub actual: Option<Vec<u8>>,
}

impl DigestCheck {
    /// Whether the file is there and its digest matches.
    pub fn ok(&self) -> bool {
        self.actual.as_deref() == Some(&self.entry.digest[..])
    }
}

/// Checks `storage` (the file `entry` names) against the entry.
pub fn verify(entry: &ManifestEntry, storage: &dyn Storage) -> Result<DigestCheck> {
    Ok(DigestCheck {
        entry: entry.clone(),
        actual: Some(digest(storage, entry.algorithm)?),
    })
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || s.len() > 128 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Reads a manifest of at most [`MAX_MANIFEST_BYTES`] from `storage`.
pub fn read(storage: &dyn Storage) -> Result<std::result::Result<Manifest, String>> {
    let buf = crate::member::read_bounded(storage, "size of the manifest", MAX_MANIFEST_BYTES)?;
    Ok(parse(&buf))
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
