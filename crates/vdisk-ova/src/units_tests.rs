//! Tests of DSP0004 programmatic units and the legacy names exports use.

use super::*;

#[test]
fn programmatic_units_of_bytes() {
    let cases: &[(&str, u64)] = &[
        ("byte", 1),
        ("byte * 2^30", 1 << 30),
        ("byte*2^20", 1 << 20),
        ("  byte  *  2^10  ", 1 << 10),
        ("2^20 * byte", 1 << 20),
        ("byte * 10^9", 1_000_000_000),
        ("byte * 1024 * 1024", 1 << 20),
        ("kilobyte", 1000),
        ("megabyte", 1_000_000),
        ("gigabyte", 1_000_000_000),
        ("kibibyte", 1024),
        ("mebibyte", 1 << 20),
        ("gibibyte", 1 << 30),
        ("tebibyte", 1 << 40),
        ("kibibyte * 2^10", 1 << 20),
        ("byte^1 * 2^30", 1 << 30),
        ("bytes * 2^30", 1 << 30),
        ("byte * 2^50 / 2^40", 1 << 10),
    ];
    for &(u, f) in cases {
        assert_eq!(to_bytes(3, Some(u)), Ok(3 * f), "{u}");
    }
    assert_eq!(to_bytes(7, None), Ok(7));
}

#[test]
fn names_older_exports_use_are_binary() {
    for (u, f) in [
        ("MegaBytes", 1u64 << 20),
        ("GigaBytes", 1 << 30),
        ("KiloBytes", 1 << 10),
        ("TeraBytes", 1 << 40),
        ("MB", 1 << 20),
        ("GB", 1 << 30),
        ("KB", 1 << 10),
        ("bytes", 1),
        ("Bytes", 1),
    ] {
        assert_eq!(to_bytes(2, Some(u)), Ok(2 * f), "{u}");
    }
}

#[test]
fn units_that_are_not_a_whole_number_of_bytes() {
    for u in [
        "",
        "hertz * 10^6",
        "byte^2",
        "byte * byte",
        "byte / byte",
        "2^30",
        "byte * 2^-3",
        "-byte",
        "byte *",
        "* byte",
        "byte * 0",
        "byte * 1.5",
        "zettabyte",
        "Byte",
        "byte * 2^64 * 2",
        "byte * 2^128",
        "byte * 2^4294967296",
        "byte * 99999999999999999999999",
    ] {
        assert!(to_bytes(1, Some(u)).is_err(), "{u:?}");
    }
    assert!(to_bytes(3, Some("byte / 2")).is_err(), "1.5 bytes");
    assert_eq!(to_bytes(4, Some("byte / 2")), Ok(2));
    let e = to_bytes(1 << 40, Some("byte * 2^30")).unwrap_err();
    assert!(e.contains("2^64"), "{e}");
    assert_eq!(to_bytes(u64::MAX, Some("byte")), Ok(u64::MAX));
}
