//! Tests of manifest parsing (DSP0243 5.1) and streamed digests, against FIPS 180 test vectors.

use super::*;
use vdisk_core::Error;
use vdisk_core::MemStorage;

// FIPS 180 test vectors for "abc".
const SHA1_ABC: &str = "a9993e364706816aba3e25717850c26c9cd0d89d";
const SHA256_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const SHA512_ABC: &str = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";

#[test]
fn parses_the_lines_exporters_write() {
    let text = format!(
        "SHA256(appliance.ovf)= {SHA256_ABC}\r\nSHA1(disk 1.vmdk)= {}\n\n  SHA512 (x(1).vmdk) = {SHA512_ABC}  \nsha256(lower.vmdk)={SHA256_ABC}\n",
        SHA1_ABC.to_uppercase()
    );
    let m = parse(text.as_bytes()).unwrap();
    assert_eq!(m.entries.len(), 4);
    assert_eq!(m.entries[0].name, "appliance.ovf");
    assert_eq!(m.entries[0].algorithm, Algorithm::Sha256);
    assert_eq!(m.entries[0].hex(), SHA256_ABC);
    assert_eq!(m.entries[1].name, "disk 1.vmdk");
    assert_eq!(m.entries[1].hex(), SHA1_ABC, "hex of either case");
    assert_eq!(m.entries[2].name, "x(1).vmdk", "names may hold parentheses");
    assert_eq!(m.entries[2].algorithm, Algorithm::Sha512);
    assert_eq!(m.entries[3].algorithm, Algorithm::Sha256);
    assert_eq!(m.entry("disk 1.vmdk").unwrap().algorithm, Algorithm::Sha1);
    assert!(m.entry("nope").is_none());
    assert_eq!(parse(b"").unwrap().entries.len(), 0);
}

#[test]
fn refuses_what_it_cannot_check() {
    let cases: Vec<(String, &str)> = vec![
        (
            format!("MD5(a)= {}", "0".repeat(32)),
            "not SHA1, SHA256 or SHA512",
        ),
        (format!("SHA256(a)= {SHA1_ABC}"), "not a SHA256 digest"),
        (format!("SHA256(a) {SHA256_ABC}"), "no '='"),
        ("SHA1 a = b".into(), "not 'ALGORITHM(name)= digest'"),
        ("SHA1)a( = b".into(), "not 'ALGORITHM(name)= digest'"),
        (format!("SHA1(a)= {}", "g".repeat(40)), "not a SHA1 digest"),
        (format!("SHA1(a)= +{}", "0".repeat(39)), "not a SHA1 digest"),
    ];
    for (text, want) in cases {
        let e = parse(text.as_bytes()).expect_err(&text);
        assert!(e.contains(want) && e.contains("line 1"), "{text}: {e}");
    }
    assert!(parse(b"\xff").unwrap_err().contains("UTF-8"));
}

#[test]
fn digests_stream_in_pieces() {
    let s = MemStorage::new("abc", b"abc".to_vec());
    assert_eq!(hex(&digest(&s, Algorithm::Sha1).unwrap()), SHA1_ABC);
    assert_eq!(hex(&digest(&s, Algorithm::Sha256).unwrap()), SHA256_ABC);
    assert_eq!(hex(&digest(&s, Algorithm::Sha512).unwrap()), SHA512_ABC);
    // Across several read pieces: "abc" repeated, against the one-shot digest of the same bytes.
    let data: Vec<u8> = b"abc"
        .iter()
        .copied()
        .cycle()
        .take(2 * DIGEST_CHUNK_BYTES + 7)
        .collect();
    let s = MemStorage::new("big", data.clone());
    assert_eq!(
        digest(&s, Algorithm::Sha256).unwrap(),
        sha2::Sha256::digest(&data).to_vec()
    );
    let entry = ManifestEntry {
        name: "abc".into(),
        algorithm: Algorithm::Sha256,
        digest: sha2::Sha256::digest(&data).to_vec(),
    };
    assert!(verify(&entry, &s).unwrap().ok());
    let other = MemStorage::new("other", b"abd".to_vec());
    let c = verify(&entry, &other).unwrap();
    assert!(!c.ok() && c.actual.is_some());
    let missing = DigestCheck {
        entry,
        actual: None,
    };
    assert!(!missing.ok());
}

#[test]
fn large_manifests_are_refused_before_reading() {
    struct Huge;
    impl Storage for Huge {
        fn path(&self) -> &std::path::Path {
            std::path::Path::new("huge.mf")
        }
        fn len(&self) -> Result<u64> {
            Ok(1 << 50)
        }
        fn read_at(&self, _: &mut [u8], _: u64) -> Result<usize> {
            panic!("read")
        }
    }
    assert!(matches!(read(&Huge), Err(Error::Limit { .. })));
    let s = MemStorage::new("m.mf", format!("SHA1(a)= {SHA1_ABC}\n").into_bytes());
    assert_eq!(read(&s).unwrap().unwrap().entries.len(), 1);
}
