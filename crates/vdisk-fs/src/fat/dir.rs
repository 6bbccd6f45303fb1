//! FAT directory entries (fatgen103 sections 6 and 7): 32-byte 8.3 entries, the VFAT long-name
//! entries before them (attribute 0x0F, ordinals counting down to 1 from one flagged 0x40, each
//! with the checksum of the 8.3 name they belong to), deleted entries (0xE5), the end marker
//! (0x00: nothing after it is read, as fatgen103 says and mtools does), `.`/`..`, and the
//! volume label entry.

use super::names::{lfn_checksum, short_name, utf16_to_utf8};
use crate::bytes::{u16_at, u32_at, u8_at};
use crate::limits::FAT_MAX_LFN_ENTRIES;

pub const ATTR_READ_ONLY: u8 = 0x01;
pub const ATTR_VOLUME: u8 = 0x08;
pub const ATTR_DIR: u8 = 0x10;
pub const ATTR_LFN: u8 = 0x0F;

/// An 8.3 entry's fields.
#[derive(Debug, Clone)]
pub struct Short {
    pub raw_name: [u8; 11],
    pub attr: u8,
    pub case: u8,
    pub cluster: u32,
    pub size: u32,
    pub wtime: u16,
    pub wdate: u16,
}

impl Short {
    /// Parses a 32-byte entry; `fat32` takes the high cluster word into account.
    pub fn parse(e: &[u8], fat32: bool) -> Short {
        let mut raw_name = [0u8; 11];
        for (k, b) in raw_name.iter_mut().enumerate() {
            *b = u8_at(e, k);
        }
        let hi = if fat32 {
            u32::from(u16_at(e, 20)) << 16
        } else {
            0
        };
        Short {
            raw_name,
            attr: u8_at(e, 11),
            case: u8_at(e, 12),
            cluster: hi | u32::from(u16_at(e, 26)),
            size: u32_at(e, 28),
            wtime: u16_at(e, 22),
            wdate: u16_at(e, 24),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.attr & ATTR_DIR != 0
    }

    pub fn is_dot(&self) -> bool {
        self.raw_name == *b".          " || self.raw_name == *b"..         "
    }
}

/// What one 32-byte slot is.
pub enum Slot {
    /// 0x00: the end of the directory.
    End,
    /// Deleted, a long-name piece, the volume label, `.` or `..`: not a file.
    Skip,
    /// A file or directory: its 8.3 entry and its name (long if one belonged to it).
    File(Short, Vec<u8>),
}

/// Assembles long names across the slots of one directory.
pub struct Parser {
    fat32: bool,
    units: Vec<u16>,
    /// The ordinal the next long-name slot must have (0: none expected).
    expect: u8,
    checksum: u8,
    /// Whether slots down to ordinal 1 were seen.
    complete: bool,
}

impl Parser {
    pub fn new(fat32: bool) -> Parser {
        Parser {
            fat32,
            units: Vec::new(),
            expect: 0,
            checksum: 0,
            complete: false,
        }
    }

    fn reset(&mut self) {
        self.units.clear();
        self.expect = 0;
        self.complete = false;
    }

    /// Reads the next slot `e` (32 bytes).
    pub fn slot(&mut self, e: &[u8]) -> Slot {
        let first = u8_at(e, 0);
        if first == 0 {
            return Slot::End;
        }
        if first == 0xE5 {
            self.reset();
            return Slot::Skip;
        }
        let attr = u8_at(e, 11);
        if attr & 0x3F == ATTR_LFN {
            self.long_piece(e, first);
            return Slot::Skip;
        }
        let short = Short::parse(e, self.fat32);
        if attr & ATTR_VOLUME != 0 || short.is_dot() {
            self.reset();
            return Slot::Skip;
        }
        let long = (self.complete && lfn_checksum(&short.raw_name) == self.checksum)
            .then(|| utf16_to_utf8(&self.units))
            .filter(|n| !n.is_empty());
        self.reset();
        let name = long.unwrap_or_else(|| short_name(&short.raw_name, short.case));
        // An 8.3 name of blanks and NULs with no long name: the driver passes over it.
        if name.is_empty() {
            return Slot::Skip;
        }
        Slot::File(short, name)
    }

    fn long_piece(&mut self, e: &[u8], first: u8) {
        let ord = first & 0x1F;
        let sum = u8_at(e, 13);
        if first & 0x40 != 0 {
            self.reset();
            if ord == 0 || ord > FAT_MAX_LFN_ENTRIES {
                return;
            }
            self.units = vec![0xFFFF; usize::from(ord) * 13];
            self.checksum = sum;
        } else if ord == 0 || ord != self.expect || sum != self.checksum {
            self.reset();
            return;
        }
        let base = (usize::from(ord) - 1) * 13;
        let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
        for (k, off) in offsets.iter().enumerate() {
            if let Some(u) = self.units.get_mut(base + k) {
                *u = u16_at(e, *off);
            }
        }
        self.expect = ord - 1;
        self.complete = ord == 1;
        if self.complete {
            // Units after the terminating NUL are 0xFFFF padding: cut at the NUL.
            if let Some(p) = self.units.iter().position(|u| *u == 0) {
                self.units.truncate(p);
            }
            while self.units.last() == Some(&0xFFFF) {
                self.units.pop();
            }
        }
    }
}

/// Whether a slot is the volume label (blkid's rule: the volume bit without the directory
/// bit, not a long-name piece, not deleted).
pub fn volume_label(e: &[u8]) -> Option<Vec<u8>> {
    let attr = u8_at(e, 11);
    let first = u8_at(e, 0);
    if first == 0
        || first == 0xE5
        || attr & 0x3F == ATTR_LFN
        || attr & (ATTR_VOLUME | ATTR_DIR) != ATTR_VOLUME
    {
        return None;
    }
    let raw: Vec<u8> = (0..11).map(|k| u8_at(e, k)).collect();
    let end = raw.iter().rposition(|b| *b != b' ').map_or(0, |i| i + 1);
    Some(raw[..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &[u8; 11], attr: u8) -> Vec<u8> {
        let mut e = vec![0u8; 32];
        e[..11].copy_from_slice(name);
        e[11] = attr;
        e
    }

    /// An entry whose 8.3 name is blanks and NULs, with no long name, is passed over as the
    /// Linux driver passes it over; one ending at a NUL is listed by what comes before.
    #[test]
    fn empty_short_names_are_passed_over() {
        let mut p = Parser::new(false);
        assert!(matches!(p.slot(&entry(b"           ", 0x20)), Slot::Skip));
        assert!(matches!(
            p.slot(&entry(b" \0\0\0\0\0\0\0   ", 0x20)),
            Slot::Skip
        ));
        match p.slot(&entry(b"AB\0\0\0\0\0\0TXT", 0x20)) {
            Slot::File(_, name) => assert_eq!(name, b"AB.TXT"),
            _ => panic!("AB.TXT is a file"),
        }
    }
}
