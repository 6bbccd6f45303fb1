//! 8.3 names with case bits, the long-name checksum, DOS times.

use super::*;

#[test]
fn short_names_as_linux_shows_them() {
    assert_eq!(short_name(b"README  TXT", 0), b"README.TXT");
    assert_eq!(short_name(b"README  TXT", CASE_LOWER_BASE), b"readme.TXT");
    assert_eq!(short_name(b"README  TXT", CASE_LOWER_EXT), b"README.txt");
    assert_eq!(short_name(b"README  TXT", 0x18), b"readme.txt");
    assert_eq!(short_name(b"NOEXT      ", 0x18), b"noext");
    // 0x05 stands for 0xE5 (cp437 sigma); cp437 to UTF-8.
    assert_eq!(short_name(b"\x05BC     \x82  ", 0), "σBC.é".as_bytes());
    // fat_parse_short: a NUL ends the base or the extension; blanks before other characters
    // stay; a name of blanks is empty (and its entry passed over), one of an extension only
    // starts with its dot.
    assert_eq!(
        short_name(b"\xe8\xba\0\0\0\0\0\0\0\0\0", 0),
        "Φ║".as_bytes()
    );
    assert_eq!(short_name(b"AB\0CD   TXT", 0), b"AB.TXT");
    assert_eq!(short_name(b"NAME    T\0X", 0), b"NAME.T");
    assert_eq!(short_name(b"A  B      F", 0), b"A  B.  F");
    assert_eq!(short_name(b"table disk.", 0), b"table di.sk.");
    assert_eq!(short_name(b"           ", 0), b"");
    assert_eq!(short_name(b"\0          ", 0), b"");
    assert_eq!(short_name(b"        TXT", 0), b".TXT");
}

#[test]
fn checksum_and_long_names() {
    // fatgen103's algorithm, by hand for "A       B  ": sum rotates right then adds.
    let mut sum = 0u8;
    for b in b"A       B  " {
        sum = (sum >> 1 | (sum & 1) << 7).wrapping_add(*b);
    }
    assert_eq!(lfn_checksum(b"A       B  "), sum);
    assert_ne!(lfn_checksum(b"A       B  "), lfn_checksum(b"A       C  "));
    let units: Vec<u16> = "h\u{e9}llo \u{1F600}"
        .encode_utf16()
        .chain([0, 0xFFFF])
        .collect();
    assert_eq!(utf16_to_utf8(&units), "h\u{e9}llo \u{1F600}".as_bytes());
    assert_eq!(utf16_to_utf8(&[0xD800, 0x41]), "\u{FFFD}A".as_bytes());
}

#[test]
fn dos_times() {
    // 1980-01-01 00:00:00.
    assert_eq!(dos_time(0x0021, 0), 315_532_800);
    // 2000-02-29 12:34:56 (a leap day).
    let date = (20 << 9) | (2 << 5) | 29;
    let time = (12 << 11) | (34 << 5) | 28;
    assert_eq!(dos_time(date, time), 951_827_696);
    // 2107-12-31 23:59:58, the last FAT time.
    assert_eq!(dos_time(0xFF9F, 0xBF7D), 4_354_819_198);
    // Month and day 0 read as January 1st.
    assert_eq!(dos_time(0, 0), 315_532_800);
}
