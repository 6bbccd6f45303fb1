//! Unit tests of header parsing and serializing with hand-built bytes, valid and malformed.

use super::*;
use std::path::Path;

fn v3() -> Header {
    Header {
        version: 3,
        backing_file_offset: 0,
        backing_file_size: 0,
        cluster_bits: 16,
        size: 1 << 30,
        crypt_method: 0,
        l1_size: 2,
        l1_table_offset: 0x30000,
        refcount_table_offset: 0x10000,
        refcount_table_clusters: 1,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible_features: 0,
        compatible_features: compat::LAZY_REFCOUNTS,
        autoclear_features: 0,
        refcount_order: 4,
        header_length: 112,
        compression_type: COMPRESSION_ZLIB,
        extensions: vec![
            Extension::BackingFormat("raw".into()),
            Extension::Unknown {
                kind: 0x1234_5678,
                data: vec![1, 2, 3],
            },
            Extension::FeatureTable(vec![FeatureName {
                kind: 0,
                bit: 9,
                name: "teleport".into(),
            }]),
        ],
        backing_file: Some("base.raw".into()),
    }
}

fn cluster(h: &Header) -> Vec<u8> {
    let mut b = h.serialize();
    b.resize(h.cluster_size() as usize, 0);
    b
}

fn parse(b: &[u8]) -> Result<Header> {
    Header::parse(b, Path::new("t.qcow2"))
}

fn err(b: &[u8]) -> String {
    parse(b).expect_err("must fail").to_string()
}

#[test]
fn round_trips_v3_and_v2() {
    let h = v3();
    let mut p = parse(&cluster(&h)).unwrap();
    assert_eq!(p.backing_file, Some("base.raw".into()));
    assert_eq!(p.backing_format(), Some("raw"));
    assert_eq!(p.feature_name(0, 9), Some("teleport"));
    // serialize placed the name after the extensions; everything else is as given.
    p.backing_file_offset = 0;
    p.backing_file_size = 0;
    assert_eq!(p, h);
    let v2 = Header {
        version: 2,
        header_length: 72,
        extensions: vec![],
        compatible_features: 0,
        ..v3()
    };
    let p2 = parse(&cluster(&v2)).unwrap();
    assert_eq!(
        (p2.version, p2.refcount_order, p2.header_length),
        (2, 4, 72)
    );
}

#[test]
fn short_v3_header_has_no_compression_byte() {
    let h = Header {
        header_length: 104,
        extensions: vec![],
        backing_file: None,
        ..v3()
    };
    let mut b = cluster(&h);
    assert_eq!(
        b[104..112],
        [0u8; 8],
        "end-of-extensions marker right after 104 bytes"
    );
    b[104] = 0; // still the end marker: no compression type byte is read
    let p = parse(&b).unwrap();
    assert_eq!(
        (p.header_length, p.compression_type),
        (104, COMPRESSION_ZLIB)
    );
}

#[test]
fn truncated_headers_fail() {
    let b = cluster(&v3());
    for n in [0usize, 4, 71, 80, 103] {
        assert!(parse(&b[..n]).is_err(), "{n} bytes");
    }
    assert!(
        err(b"not a qcow2 image at all, no, not at all, really not, nope, never ever ok")
            .contains("not in qcow2")
    );
}

#[test]
fn bad_fields_are_refused() {
    let mut b = cluster(&v3());
    b[20..24].copy_from_slice(&22u32.to_be_bytes());
    assert!(err(&b).contains("cluster size"));
    b[20..24].copy_from_slice(&8u32.to_be_bytes());
    assert!(err(&b).contains("cluster size"));
    let mut b = cluster(&v3());
    b[4..8].copy_from_slice(&4u32.to_be_bytes());
    assert!(err(&b).contains("version 4"));
    let h = Header {
        l1_size: u32::MAX,
        ..v3()
    };
    assert!(matches!(
        parse(&cluster(&h)),
        Err(Error::Limit {
            what: "active L1 table size",
            ..
        })
    ));
    let h = Header {
        l1_size: 1,
        size: 1 << 40,
        ..v3()
    };
    assert!(err(&cluster(&h)).contains("L1 table is too small"));
    let h = Header {
        l1_table_offset: 0x30001,
        ..v3()
    };
    assert!(err(&cluster(&h)).contains("Active L1 table offset invalid"));
    let h = Header {
        refcount_table_clusters: 1 << 20,
        ..v3()
    };
    assert!(matches!(parse(&cluster(&h)), Err(Error::Limit { .. })));
    let h = Header {
        nb_snapshots: 70000,
        snapshots_offset: 0x40000,
        ..v3()
    };
    assert!(matches!(
        parse(&cluster(&h)),
        Err(Error::Limit {
            what: "snapshot count",
            ..
        })
    ));
    let h = Header {
        refcount_order: 7,
        ..v3()
    };
    assert!(err(&cluster(&h)).contains("64 bits"));
    let h = Header {
        crypt_method: 3,
        ..v3()
    };
    assert!(err(&cluster(&h)).contains("encryption method"));
    let h = Header {
        size: u64::MAX,
        ..v3()
    };
    assert!(parse(&cluster(&h)).is_err());
    let mut b = cluster(&v3());
    b[100..104].copy_from_slice(&(1u32 << 20).to_be_bytes());
    assert!(err(&b).contains("exceeds cluster size"));
}

#[test]
fn feature_bits() {
    let h = Header {
        incompatible_features: 1 << 9,
        ..v3()
    };
    assert!(err(&cluster(&h)).contains("unsupported qcow2 feature(s): teleport"));
    let h = Header {
        incompatible_features: (1 << 9) | (1 << 40),
        ..v3()
    };
    assert!(err(&cluster(&h)).contains("teleport, Unknown incompatible feature: 10000000000"));
    let h = Header {
        incompatible_features: incompat::DIRTY | incompat::CORRUPT,
        ..v3()
    };
    assert!(
        parse(&cluster(&h)).is_ok(),
        "dirty and corrupt images open read-only"
    );
    let h = Header {
        compression_type: COMPRESSION_ZSTD,
        ..v3()
    };
    assert!(err(&cluster(&h)).contains("must be set"));
    let h = Header {
        incompatible_features: incompat::COMPRESSION,
        ..v3()
    };
    assert!(err(&cluster(&h)).contains("must not be set"));
    let h = Header {
        compression_type: 9,
        incompatible_features: incompat::COMPRESSION,
        ..v3()
    };
    assert!(err(&cluster(&h)).contains("compression type 9"));
    let h = Header {
        incompatible_features: incompat::EXTL2,
        cluster_bits: 12,
        ..v3()
    };
    assert!(err(&cluster(&h)).contains("16 KiB"));
    // The raw data file bit alone parses (QEMU's `info` opens such an image); opening the data
    // file, as `check` and changes do, refuses it.
    let h = Header {
        autoclear_features: autoclear::DATA_FILE_RAW,
        ..v3()
    };
    let p = parse(&cluster(&h)).unwrap();
    let e = p.check_data_file_raw(Path::new("t.qcow2")).unwrap_err();
    assert!(e.to_string().contains("requires a data file"), "{e}");
}

#[test]
fn malformed_extensions() {
    let mut b = cluster(&Header {
        backing_file: None,
        ..v3()
    });
    // First extension claims to run past the cluster.
    b[116..120].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(err(&b).contains("too large"));
    let h = Header {
        extensions: vec![Extension::BackingFormat("a-very-long-format-name".into())],
        ..v3()
    };
    assert!(err(&cluster(&h)).contains("backing format"));
    let h = Header {
        extensions: vec![Extension::Unknown {
            kind: ext::BITMAPS,
            data: vec![0; 8],
        }],
        ..v3()
    };
    assert!(err(&cluster(&h)).contains("bitmaps"));
    let mut b = cluster(&v3());
    b[16..20].copy_from_slice(&5000u32.to_be_bytes());
    assert!(err(&b).contains("Backing file name too long"));
    let mut b = cluster(&v3());
    b[8..16].copy_from_slice(&(1u64 << 17).to_be_bytes());
    assert!(err(&b).contains("Invalid backing file offset"));
}
