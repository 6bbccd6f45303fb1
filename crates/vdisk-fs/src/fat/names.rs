//! Names and times of FAT directory entries: 8.3 names in the OEM code page (437, the Linux
//! driver's default `codepage`) shown as the Linux vfat driver shows them with its default
//! `shortname=mixed` (the NT case bits of byte 12, 0x08 lower-case base and 0x10 lower-case
//! extension, honoured), VFAT long names (UTF-16, to UTF-8), the long-name checksum
//! (fatgen103 section 7), and DOS date/time (fatgen103 section 6.1) as seconds since the
//! epoch, local time taken as UTC, computed as the kernel's fat_time_fat2unix computes it.

/// Code page 437's upper half, as Unicode.
const CP437_HIGH: [u16; 128] = [
    0x00C7, 0x00FC, 0x00E9, 0x00E2, 0x00E4, 0x00E0, 0x00E5, 0x00E7, 0x00EA, 0x00EB, 0x00E8, 0x00EF,
    0x00EE, 0x00EC, 0x00C4, 0x00C5, 0x00C9, 0x00E6, 0x00C6, 0x00F4, 0x00F6, 0x00F2, 0x00FB, 0x00F9,
    0x00FF, 0x00D6, 0x00DC, 0x00A2, 0x00A3, 0x00A5, 0x20A7, 0x0192, 0x00E1, 0x00ED, 0x00F3, 0x00FA,
    0x00F1, 0x00D1, 0x00AA, 0x00BA, 0x00BF, 0x2310, 0x00AC, 0x00BD, 0x00BC, 0x00A1, 0x00AB, 0x00BB,
    0x2591, 0x2592, 0x2593, 0x2502, 0x2524, 0x2561, 0x2562, 0x2556, 0x2555, 0x2563, 0x2551, 0x2557,
    0x255D, 0x255C, 0x255B, 0x2510, 0x2514, 0x2534, 0x252C, 0x251C, 0x2500, 0x253C, 0x255E, 0x255F,
    0x255A, 0x2554, 0x2569, 0x2566, 0x2560, 0x2550, 0x256C, 0x2567, 0x2568, 0x2564, 0x2565, 0x2559,
    0x2558, 0x2552, 0x2553, 0x256B, 0x256A, 0x2518, 0x250C, 0x2588, 0x2584, 0x258C, 0x2590, 0x2580,
    0x03B1, 0x00DF, 0x0393, 0x03C0, 0x03A3, 0x03C3, 0x00B5, 0x03C4, 0x03A6, 0x0398, 0x03A9, 0x03B4,
    0x221E, 0x03C6, 0x03B5, 0x2229, 0x2261, 0x00B1, 0x2265, 0x2264, 0x2320, 0x2321, 0x00F7, 0x2248,
    0x00B0, 0x2219, 0x00B7, 0x221A, 0x207F, 0x00B2, 0x25A0, 0x00A0,
];

/// Appends a code page 437 byte as UTF-8.
fn push_cp437(out: &mut Vec<u8>, b: u8) {
    if b < 0x80 {
        out.push(b);
        return;
    }
    let u = CP437_HIGH[usize::from(b - 0x80)];
    let c = char::from_u32(u32::from(u)).unwrap_or(char::REPLACEMENT_CHARACTER);
    let mut tmp = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
}

/// NT reserved byte (offset 12) flags.
pub const CASE_LOWER_BASE: u8 = 0x08;
pub const CASE_LOWER_EXT: u8 = 0x10;

/// The 8.3 name of an entry as the Linux driver shows it (`shortname=mixed`, the kernel's
/// `fat_parse_short`): a leading 0x05 read as 0xE5, the base and the extension each ending at
/// a NUL and losing their trailing blanks (blanks before other characters stay), the case
/// bits applied, `.` before a non-empty extension. Empty when both are: the driver then
/// passes over the entry unless a long name names it.
pub fn short_name(raw: &[u8; 11], case: u8) -> Vec<u8> {
    let mut base: Vec<u8> = raw[..8].to_vec();
    if base[0] == 0x05 {
        base[0] = 0xE5;
    }
    let trim = |s: &[u8]| -> Vec<u8> {
        let s = &s[..s.iter().position(|b| *b == 0).unwrap_or(s.len())];
        let end = s.iter().rposition(|b| *b != b' ').map_or(0, |i| i + 1);
        s[..end].to_vec()
    };
    let mut base = trim(&base);
    let mut ext = trim(&raw[8..]);
    if case & CASE_LOWER_BASE != 0 {
        base.make_ascii_lowercase();
    }
    if case & CASE_LOWER_EXT != 0 {
        ext.make_ascii_lowercase();
    }
    let mut out = Vec::with_capacity(13);
    for b in base {
        push_cp437(&mut out, b);
    }
    if !ext.is_empty() {
        out.push(b'.');
        for b in ext {
            push_cp437(&mut out, b);
        }
    }
    out
}

/// The long-name checksum of an 8.3 name (fatgen103 section 7).
pub fn lfn_checksum(raw: &[u8; 11]) -> u8 {
    raw.iter()
        .fold(0u8, |sum, b| (sum >> 1 | (sum & 1) << 7).wrapping_add(*b))
}

/// A long name's UTF-16 units (up to the first NUL) as UTF-8; unpaired surrogates become
/// U+FFFD.
pub fn utf16_to_utf8(units: &[u16]) -> Vec<u8> {
    let end = units.iter().position(|u| *u == 0).unwrap_or(units.len());
    char::decode_utf16(units[..end].iter().copied())
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect::<String>()
        .into_bytes()
}

/// Days before each month of a non-leap year, indexed by month 1..=15 as the kernel's table
/// is (13-15, invalid, count as 0).
const DAYS_IN_YEAR: [i64; 16] = [
    0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 0, 0, 0,
];

/// A DOS date and time as seconds since the epoch (the kernel's fat_time_fat2unix with no
/// time zone offset): month and day 0 read as 1, two-second resolution.
pub fn dos_time(date: u16, time: u16) -> i64 {
    let year = i64::from(date >> 9);
    let month = i64::from((date >> 5) & 0xF).max(1);
    let day = i64::from(date & 0x1F).max(1) - 1;
    const YEAR_2100: i64 = 120;
    let mut leap_day = (year + 3) / 4;
    if year > YEAR_2100 {
        leap_day -= 1;
    }
    let is_leap = year & 3 == 0 && year != YEAR_2100;
    if is_leap && month > 2 {
        leap_day += 1;
    }
    let second = i64::from(time & 0x1F) * 2
        + i64::from((time >> 5) & 0x3F) * 60
        + i64::from(time >> 11) * 3600;
    const DAYS_DELTA: i64 = 365 * 10 + 2;
    second + (year * 365 + leap_day + DAYS_IN_YEAR[month as usize] + day + DAYS_DELTA) * 86400
}

#[cfg(test)]
#[path = "names_tests.rs"]
mod tests;
