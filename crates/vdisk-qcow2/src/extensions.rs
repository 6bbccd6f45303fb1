//! qcow2 header extensions (qcow2.txt "Header extensions"): backing format, feature name table,
//! external data file name, bitmaps, full disk encryption header, and unknown ones kept verbatim;
//! parsed from and serialized to the bytes that follow the header in cluster 0. No I/O.

use crate::header::Header;
use crate::limits;
use std::path::Path;
use vdisk_core::{Error, Result};

/// Header extension types (qcow2.txt "Header extensions").
pub mod ext {
    pub const END: u32 = 0;
    pub const BACKING_FORMAT: u32 = 0xe279_2aca;
    pub const FEATURE_TABLE: u32 = 0x6803_f857;
    pub const DATA_FILE: u32 = 0x4441_5441;
    pub const BITMAPS: u32 = 0x2385_2875;
    pub const CRYPTO: u32 = 0x0537_be77;
}

/// One entry of the feature name table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureName {
    /// 0 incompatible, 1 compatible, 2 autoclear.
    pub kind: u8,
    pub bit: u8,
    pub name: String,
}

/// The feature name table QEMU writes (qcow2.txt "Feature name table"): every feature it knows.
pub fn qemu_feature_table() -> Extension {
    let names = [
        (0, 0, "dirty bit"),
        (0, 1, "corrupt bit"),
        (0, 2, "external data file"),
        (0, 3, "compression type"),
        (0, 4, "extended L2 entries"),
        (1, 0, "lazy refcounts"),
        (2, 0, "bitmaps"),
        (2, 1, "raw external data"),
    ];
    let table = names.iter().map(|&(kind, bit, name)| FeatureName {
        kind,
        bit,
        name: name.to_string(),
    });
    Extension::FeatureTable(table.collect())
}

/// The bitmaps extension (its directory is read separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitmapsExt {
    pub nb_bitmaps: u32,
    pub directory_size: u64,
    pub directory_offset: u64,
}

/// A header extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extension {
    BackingFormat(String),
    FeatureTable(Vec<FeatureName>),
    DataFile(String),
    Bitmaps(BitmapsExt),
    /// Full disk encryption header: offset and length of the LUKS header in the file.
    Crypto {
        offset: u64,
        length: u64,
    },
    /// Any other extension, kept verbatim.
    Unknown {
        kind: u32,
        data: Vec<u8>,
    },
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_be_bytes(a)
}

pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

pub(crate) fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// QEMU's checks of a bitmaps extension it uses (qcow2_read_extensions), in its order.
fn check_bitmaps_ext(
    b: &BitmapsExt,
    reserved: u32,
    cluster_size: u64,
) -> std::result::Result<(), String> {
    if reserved != 0 {
        return Err("bitmaps_ext: Reserved field is not zero".into());
    }
    if u64::from(b.nb_bitmaps) > limits::MAX_BITMAPS {
        return Err(format!(
            "bitmaps_ext: Image has {} bitmaps, exceeding the QEMU supported maximum of {}",
            b.nb_bitmaps,
            limits::MAX_BITMAPS
        ));
    }
    if b.nb_bitmaps == 0 {
        return Err("found bitmaps extension with zero bitmaps".into());
    }
    if b.directory_offset % cluster_size != 0 {
        return Err("bitmaps_ext: invalid bitmap directory offset".into());
    }
    if b.directory_size > limits::MAX_BITMAP_DIRECTORY_BYTES {
        return Err(format!(
            "bitmaps_ext: bitmap directory size ({}) exceeds the maximum supported size ({})",
            b.directory_size,
            limits::MAX_BITMAP_DIRECTORY_BYTES
        ));
    }
    Ok(())
}

/// Parses the extensions between the header and `backing_file_offset` (or the cluster end).
pub fn parse_extensions(h: &Header, buf: &[u8], path: &Path) -> Result<Vec<Extension>> {
    let end = if h.backing_file_offset != 0 {
        h.backing_file_offset
    } else {
        h.cluster_size()
    };
    let end = end.min(buf.len() as u64) as usize;
    let mut at = h.header_length as usize;
    let mut out = Vec::new();
    while at < end {
        if end - at < 8 {
            return Err(Error::corrupt(
                path,
                Some(at as u64),
                "qcow2 header extension truncated",
            ));
        }
        let kind = be32(buf, at);
        let len = be32(buf, at + 4) as usize;
        let data_at = at + 8;
        if len > end - data_at {
            return Err(Error::corrupt(
                path,
                Some(at as u64),
                "Header extension too large",
            ));
        }
        let data = &buf[data_at..data_at + len];
        let bad = |what: &str| Error::corrupt(path, Some(at as u64), what.to_string());
        let e = match kind {
            ext::END => break,
            ext::BACKING_FORMAT => {
                if len as u64 > limits::MAX_BACKING_FORMAT {
                    return Err(bad("backing format extension too large"));
                }
                Extension::BackingFormat(string(data))
            }
            ext::FEATURE_TABLE => Extension::FeatureTable(
                data.chunks_exact(48)
                    .map(|c| {
                        let name = &c[2..];
                        let n = name.iter().position(|b| *b == 0).unwrap_or(name.len());
                        FeatureName {
                            kind: c[0],
                            bit: c[1],
                            name: string(&name[..n]),
                        }
                    })
                    .collect(),
            ),
            ext::DATA_FILE => Extension::DataFile(string(data)),
            ext::BITMAPS => {
                if len != 24 {
                    return Err(bad("bitmaps_ext: Invalid extension length"));
                }
                let b = BitmapsExt {
                    nb_bitmaps: be32(data, 0),
                    directory_size: be64(data, 8),
                    directory_offset: be64(data, 16),
                };
                // QEMU ignores the extension when the autoclear bit is clear (a program without
                // bitmap support wrote the image) and checks it otherwise.
                if h.autoclear_features & crate::header::autoclear::BITMAPS != 0 {
                    check_bitmaps_ext(&b, be32(data, 4), h.cluster_size())
                        .map_err(|what| bad(&what))?;
                }
                Extension::Bitmaps(b)
            }
            ext::CRYPTO => {
                if h.crypt_method != 2 {
                    return Err(bad(
                        "CRYPTO header extension only expected with LUKS encryption method",
                    ));
                }
                if len != 16 {
                    return Err(bad(&format!(
                        "CRYPTO header extension size {len}, but expected size 16"
                    )));
                }
                let offset = be64(data, 0);
                if offset % h.cluster_size() != 0 {
                    return Err(bad(&format!(
                        "Encryption header offset '{offset}' is not a multiple of cluster size '{}'",
                        h.cluster_size()
                    )));
                }
                Extension::Crypto {
                    offset,
                    length: be64(data, 8),
                }
            }
            other => Extension::Unknown {
                kind: other,
                data: data.to_vec(),
            },
        };
        out.push(e);
        at = data_at + len.next_multiple_of(8);
    }
    Ok(out)
}

/// One extension as its type and data (without the 8-byte type/length prefix or padding).
pub fn serialize_extension(e: &Extension) -> (u32, Vec<u8>) {
    match e {
        Extension::BackingFormat(s) => (ext::BACKING_FORMAT, s.as_bytes().to_vec()),
        Extension::DataFile(s) => (ext::DATA_FILE, s.as_bytes().to_vec()),
        Extension::FeatureTable(t) => {
            let mut d = Vec::with_capacity(t.len() * 48);
            for f in t {
                let mut c = [0u8; 48];
                c[0] = f.kind;
                c[1] = f.bit;
                let n = f.name.len().min(46);
                c[2..2 + n].copy_from_slice(&f.name.as_bytes()[..n]);
                d.extend_from_slice(&c);
            }
            (ext::FEATURE_TABLE, d)
        }
        Extension::Bitmaps(b) => {
            let mut d = Vec::with_capacity(24);
            d.extend_from_slice(&b.nb_bitmaps.to_be_bytes());
            d.extend_from_slice(&[0u8; 4]);
            d.extend_from_slice(&b.directory_size.to_be_bytes());
            d.extend_from_slice(&b.directory_offset.to_be_bytes());
            (ext::BITMAPS, d)
        }
        Extension::Crypto { offset, length } => {
            let mut d = offset.to_be_bytes().to_vec();
            d.extend_from_slice(&length.to_be_bytes());
            (ext::CRYPTO, d)
        }
        Extension::Unknown { kind, data } => (*kind, data.clone()),
    }
}
