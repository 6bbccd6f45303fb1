//! The qcow2 header and its extensions as bytes <-> [`Header`], with no I/O: parsing validates every
//! field the way QEMU's `qcow2_do_open` does, serializing produces what a writer puts in cluster 0.
//! Follows QEMU's docs/interop/qcow2.txt, sections "Header" and "Header extensions".

#[path = "extensions.rs"]
pub mod extensions;
use crate::limits;
use extensions::{be32, be64, parse_extensions, serialize_extension};
pub use extensions::{ext, BitmapsExt, Extension, FeatureName};
use std::path::Path;
use vdisk_core::StoredName;
use vdisk_core::{Error, Result};

/// "QFI\xfb".
pub const MAGIC: u32 = 0x5146_49fb;
/// Length of a version 2 header (qcow2.txt "Header": fields up to snapshots_offset).
pub const V2_HEADER_LEN: u32 = 72;
/// Smallest version 3 header (up to header_length).
pub const V3_MIN_HEADER_LEN: u32 = 104;
/// Offset of the compression_type byte, present when header_length > 104.
pub const COMPRESSION_TYPE_OFFSET: usize = 104;

/// Incompatible feature bits (qcow2.txt "Header", bytes 72-79).
pub mod incompat {
    pub const DIRTY: u64 = 1 << 0;
    pub const CORRUPT: u64 = 1 << 1;
    pub const DATA_FILE: u64 = 1 << 2;
    pub const COMPRESSION: u64 = 1 << 3;
    pub const EXTL2: u64 = 1 << 4;
    /// Every bit this reader understands.
    pub const KNOWN: u64 = DIRTY | CORRUPT | DATA_FILE | COMPRESSION | EXTL2;
}

/// Compatible feature bits (bytes 80-87).
pub mod compat {
    pub const LAZY_REFCOUNTS: u64 = 1 << 0;
}

/// Autoclear feature bits (bytes 88-95).
pub mod autoclear {
    pub const BITMAPS: u64 = 1 << 0;
    pub const DATA_FILE_RAW: u64 = 1 << 1;
}

/// Compression methods (header byte 104).
pub const COMPRESSION_ZLIB: u8 = 0;
pub const COMPRESSION_ZSTD: u8 = 1;

/// A parsed qcow2 header with its extensions and backing file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible_features: u64,
    pub compatible_features: u64,
    pub autoclear_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression_type: u8,
    pub extensions: Vec<Extension>,
    /// The backing file name stored at backing_file_offset (up to its first NUL).
    pub backing_file: Option<StoredName>,
}

impl Header {
    /// The cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits
    }

    /// Whether L2 entries are 128-bit with 32 subclusters.
    pub fn extended_l2(&self) -> bool {
        self.incompatible_features & incompat::EXTL2 != 0
    }

    /// Bytes per L2 entry.
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2() {
            16
        } else {
            8
        }
    }

    /// Entries per L2 table (one cluster).
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_size()
    }

    /// Reference count width in bits.
    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }

    /// Whether an external data file holds the guest data.
    pub fn has_data_file(&self) -> bool {
        self.incompatible_features & incompat::DATA_FILE != 0
    }

    /// The backing format named by the extension.
    pub fn backing_format(&self) -> Option<&str> {
        self.extensions.iter().find_map(|e| match e {
            Extension::BackingFormat(f) => Some(f.as_str()),
            _ => None,
        })
    }

    /// The external data file name from the extension.
    pub fn data_file(&self) -> Option<&str> {
        self.extensions.iter().find_map(|e| match e {
            Extension::DataFile(f) => Some(f.as_str()),
            _ => None,
        })
    }

    /// The bitmaps extension, if present and valid (its autoclear bit set, as QEMU requires).
    pub fn bitmaps(&self) -> Option<BitmapsExt> {
        if self.autoclear_features & autoclear::BITMAPS == 0 {
            return None;
        }
        self.extensions.iter().find_map(|e| match e {
            Extension::Bitmaps(b) => Some(*b),
            _ => None,
        })
    }

    /// The name of a feature bit from the feature name table.
    pub fn feature_name(&self, kind: u8, bit: u8) -> Option<&str> {
        self.extensions.iter().find_map(|e| match e {
            Extension::FeatureTable(t) => t
                .iter()
                .find(|f| f.kind == kind && f.bit == bit)
                .map(|f| f.name.as_str()),
            _ => None,
        })
    }

    /// The cluster size a header declares, from its first 24 bytes, so that the caller can read the
    /// whole first cluster before calling [`Header::parse`].
    pub fn peek_cluster_bits(buf: &[u8], path: &Path) -> Result<u32> {
        if buf.len() < V2_HEADER_LEN as usize {
            return Err(Error::corrupt(path, Some(0), "qcow2 header truncated"));
        }
        if be32(buf, 0) != MAGIC {
            return Err(Error::corrupt(
                path,
                Some(0),
                "Image is not in qcow2 format",
            ));
        }
        let bits = be32(buf, 20);
        if !(limits::MIN_CLUSTER_BITS..=limits::MAX_CLUSTER_BITS).contains(&bits) {
            return Err(Error::unsupported(path, format!("cluster size: 2^{bits}")));
        }
        Ok(bits)
    }

    /// Parses and validates the header from `buf`, the first cluster of the file (shorter only when
    /// the file is).
    pub fn parse(buf: &[u8], path: &Path) -> Result<Header> {
        let cluster_bits = Self::peek_cluster_bits(buf, path)?;
        let cluster_size = 1u64 << cluster_bits;
        let version = be32(buf, 4);
        if version != 2 && version != 3 {
            return Err(Error::unsupported(path, format!("qcow2 version {version}")));
        }
        let mut h = Header {
            version,
            backing_file_offset: be64(buf, 8),
            backing_file_size: be32(buf, 16),
            cluster_bits,
            size: be64(buf, 24),
            crypt_method: be32(buf, 32),
            l1_size: be32(buf, 36),
            l1_table_offset: be64(buf, 40),
            refcount_table_offset: be64(buf, 48),
            refcount_table_clusters: be32(buf, 56),
            nb_snapshots: be32(buf, 60),
            snapshots_offset: be64(buf, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
            compression_type: COMPRESSION_ZLIB,
            extensions: Vec::new(),
            backing_file: None,
        };
        if version == 3 {
            if buf.len() < V3_MIN_HEADER_LEN as usize {
                return Err(Error::corrupt(path, Some(0), "qcow2 header truncated"));
            }
            h.incompatible_features = be64(buf, 72);
            h.compatible_features = be64(buf, 80);
            h.autoclear_features = be64(buf, 88);
            h.refcount_order = be32(buf, 96);
            h.header_length = be32(buf, 100);
            if h.header_length < V3_MIN_HEADER_LEN {
                return Err(Error::corrupt(path, Some(100), "qcow2 header too short"));
            }
            if u64::from(h.header_length) > cluster_size {
                return Err(Error::corrupt(
                    path,
                    Some(100),
                    "qcow2 header exceeds cluster size",
                ));
            }
            if h.header_length as usize > buf.len() {
                return Err(Error::corrupt(path, Some(0), "qcow2 header truncated"));
            }
            if h.header_length as usize > COMPRESSION_TYPE_OFFSET {
                h.compression_type = buf.get(COMPRESSION_TYPE_OFFSET).copied().unwrap_or(0);
            }
        }
        if h.backing_file_offset > cluster_size {
            return Err(Error::corrupt(path, Some(8), "Invalid backing file offset"));
        }
        h.extensions = parse_extensions(&h, buf, path)?;
        h.validate(path)?;
        if h.backing_file_offset != 0 {
            let len = u64::from(h.backing_file_size);
            let room = (cluster_size - h.backing_file_offset).min(limits::MAX_BACKING_NAME);
            if len > room {
                return Err(Error::corrupt(path, Some(16), "Backing file name too long"));
            }
            let start = h.backing_file_offset as usize;
            let name = buf.get(start..start + len as usize).ok_or_else(|| {
                Error::corrupt(
                    path,
                    Some(h.backing_file_offset),
                    "backing file name truncated",
                )
            })?;
            // QEMU keeps the name as a C string: it ends at the first NUL byte.
            h.backing_file = Some(StoredName::from_stored(name));
        }
        Ok(h)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let unknown = self.incompatible_features & !incompat::KNOWN;
        if unknown != 0 {
            let mut names = Vec::new();
            let mut rest = unknown;
            for bit in 0..64u8 {
                if unknown & (1 << bit) != 0 {
                    if let Some(n) = self.feature_name(0, bit) {
                        names.push(n.to_string());
                        rest &= !(1 << bit);
                    }
                }
            }
            if rest != 0 {
                names.push(format!("Unknown incompatible feature: {rest:x}"));
            }
            return Err(Error::unsupported(
                path,
                format!("qcow2 feature(s): {}", names.join(", ")),
            ));
        }
        if self.refcount_order > limits::MAX_REFCOUNT_ORDER {
            return Err(Error::unsupported(
                path,
                "reference count entry width: may not exceed 64 bits",
            ));
        }
        match self.compression_type {
            COMPRESSION_ZLIB if self.incompatible_features & incompat::COMPRESSION != 0 => {
                return Err(Error::corrupt(
                    path,
                    Some(72),
                    "Compression type incompatible feature bit must not be set",
                ))
            }
            COMPRESSION_ZSTD if self.incompatible_features & incompat::COMPRESSION == 0 => {
                return Err(Error::corrupt(
                    path,
                    Some(72),
                    "Compression type incompatible feature bit must be set",
                ))
            }
            COMPRESSION_ZLIB | COMPRESSION_ZSTD => {}
            t => return Err(Error::unsupported(path, format!("compression type {t}"))),
        }
        if self.crypt_method > 2 {
            return Err(Error::unsupported(
                path,
                format!("encryption method: {}", self.crypt_method),
            ));
        }
        let crypto_ext = self
            .extensions
            .iter()
            .any(|e| matches!(e, Extension::Crypto { .. }));
        if self.crypt_method == 2 && !crypto_ext {
            return Err(Error::corrupt(
                path,
                Some(32),
                "Missing CRYPTO header for crypt method 2",
            ));
        }
        if self.extended_l2() && self.cluster_bits < limits::MIN_CLUSTER_BITS_EXTENDED_L2 {
            return Err(Error::corrupt(
                path,
                Some(20),
                "The cluster size must be at least 16 KiB with extended L2",
            ));
        }
        if self.size > limits::MAX_VIRTUAL_SIZE {
            return Err(Error::limit(
                path,
                "virtual size",
                self.size,
                limits::MAX_VIRTUAL_SIZE,
            ));
        }
        let cs = self.cluster_size();
        let rt = u64::from(self.refcount_table_clusters) * cs;
        if rt > limits::MAX_REFTABLE_BYTES {
            return Err(Error::limit(
                path,
                "refcount table size",
                rt,
                limits::MAX_REFTABLE_BYTES,
            ));
        }
        check_table(
            path,
            "Reference count table",
            self.refcount_table_offset,
            rt,
            cs,
        )?;
        if u64::from(self.nb_snapshots) > limits::MAX_SNAPSHOTS {
            return Err(Error::limit(
                path,
                "snapshot count",
                self.nb_snapshots.into(),
                limits::MAX_SNAPSHOTS,
            ));
        }
        check_table(
            path,
            "Snapshot table",
            self.snapshots_offset,
            u64::from(self.nb_snapshots) * 40,
            cs,
        )?;
        let l1_bytes = u64::from(self.l1_size) * 8;
        if l1_bytes > limits::MAX_L1_BYTES {
            return Err(Error::limit(
                path,
                "active L1 table size",
                l1_bytes,
                limits::MAX_L1_BYTES,
            ));
        }
        if u64::from(self.l1_size) < self.min_l1_entries(self.size) {
            return Err(Error::corrupt(path, Some(36), "L1 table is too small"));
        }
        check_table(path, "Active L1 table", self.l1_table_offset, l1_bytes, cs)
    }

    /// The raw data file bit without a data file: QEMU refuses it when it opens the data file
    /// (`check`, and changes), not when it opens without I/O (`info`).
    pub fn check_data_file_raw(&self, path: &Path) -> Result<()> {
        if !self.has_data_file() && self.autoclear_features & autoclear::DATA_FILE_RAW != 0 {
            return Err(Error::corrupt(
                path,
                Some(88),
                "data-file-raw requires a data file",
            ));
        }
        Ok(())
    }

    /// The number of L1 entries needed to map `size` guest bytes.
    pub fn min_l1_entries(&self, size: u64) -> u64 {
        let per_l2 = self.l2_entries() * self.cluster_size();
        size.div_ceil(per_l2)
    }

    /// The header, its extensions, the end marker and the backing file name, as bytes for cluster 0.
    /// When a backing file is set, its offset and size fields are set to follow the extensions.
    pub fn serialize(&self) -> Vec<u8> {
        let hlen = if self.version >= 3 {
            self.header_length.max(V3_MIN_HEADER_LEN)
        } else {
            V2_HEADER_LEN
        };
        let mut b = vec![0u8; hlen as usize];
        let put32 =
            |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
        let put64 =
            |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_be_bytes());
        put32(&mut b, 0, MAGIC);
        put32(&mut b, 4, self.version);
        put32(&mut b, 20, self.cluster_bits);
        put64(&mut b, 24, self.size);
        put32(&mut b, 32, self.crypt_method);
        put32(&mut b, 36, self.l1_size);
        put64(&mut b, 40, self.l1_table_offset);
        put64(&mut b, 48, self.refcount_table_offset);
        put32(&mut b, 56, self.refcount_table_clusters);
        put32(&mut b, 60, self.nb_snapshots);
        put64(&mut b, 64, self.snapshots_offset);
        if self.version >= 3 {
            put64(&mut b, 72, self.incompatible_features);
            put64(&mut b, 80, self.compatible_features);
            put64(&mut b, 88, self.autoclear_features);
            put32(&mut b, 96, self.refcount_order);
            put32(&mut b, 100, hlen);
            if hlen as usize > COMPRESSION_TYPE_OFFSET {
                b[COMPRESSION_TYPE_OFFSET] = self.compression_type;
            }
        }
        for e in &self.extensions {
            let (kind, data) = serialize_extension(e);
            b.extend_from_slice(&kind.to_be_bytes());
            b.extend_from_slice(&(data.len() as u32).to_be_bytes());
            b.extend_from_slice(&data);
            b.resize(b.len().next_multiple_of(8), 0);
        }
        b.extend_from_slice(&[0u8; 8]);
        match &self.backing_file {
            Some(name) => {
                let at = b.len() as u64;
                put64(&mut b, 8, at);
                put32(&mut b, 16, name.len() as u32);
                b.extend_from_slice(name.as_bytes());
            }
            None => {
                put64(&mut b, 8, 0);
                put32(&mut b, 16, 0);
            }
        }
        b
    }
}

/// QEMU's validate_table_offset: a table must start on a cluster boundary, even an empty one, and
/// its end must not overflow.
fn check_table(path: &Path, what: &str, offset: u64, bytes: u64, cluster_size: u64) -> Result<()> {
    if offset % cluster_size != 0 {
        return Err(Error::corrupt(
            path,
            Some(offset),
            format!("{what} offset invalid (not cluster aligned)"),
        ));
    }
    match offset.checked_add(bytes) {
        Some(end) if end <= i64::MAX as u64 => Ok(()),
        _ => Err(Error::corrupt(
            path,
            Some(offset),
            format!("{what} offset invalid (overflows)"),
        )),
    }
}
#[cfg(test)]
#[path = "header_tests.rs"]
mod tests;
