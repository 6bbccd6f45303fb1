//! One 512-byte tar header block decoded from bytes alone (no I/O, so it can be fuzzed): the POSIX
//! ustar layout (IEEE 1003.1 `pax`, "ustar Interchange Format"), GNU tar's variant of it (magic
//! `ustar  \0`, base-256 numbers, the old sparse header), and pre-POSIX (v7) headers, which GNU tar
//! still reads. The checksum is accepted as unsigned or signed byte sums, as GNU tar accepts it.

use std::fmt;

/// Bytes in a header block.
pub const HEADER_BYTES: usize = 512;

/// The header's layout, told by its magic field (offset 257).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFormat {
    /// POSIX ustar (`ustar\0`, as `tar --format=ustar` and `--format=pax` write): the name may have
    /// a prefix (offset 345).
    Ustar,
    /// GNU tar's own (`ustar  \0`, `tar --format=gnu`): no prefix field (that space holds times and
    /// the old sparse map).
    Gnu,
    /// Anything else with a valid checksum: a pre-POSIX (v7) header, name and size only.
    V7,
}

/// What a header describes, from its typeflag (offset 156).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file: `0`, NUL, `7` (contiguous file, which POSIX says to read as regular), and
    /// any typeflag not listed here (POSIX: an unrecognized type is read as a regular file, as GNU
    /// tar extracts it).
    Regular(u8),
    /// `1`: a hard link.
    HardLink,
    /// `2`: a symbolic link.
    Symlink,
    /// `3`: a character device.
    CharDevice,
    /// `4`: a block device.
    BlockDevice,
    /// `5`, or a v7 regular-file header whose name ends in `/`: a directory.
    Directory,
    /// `6`: a FIFO.
    Fifo,
    /// `x` (and Solaris's `X`): a pax extended header for the next entry.
    PaxExtended,
    /// `g`: a pax global extended header, for all following entries.
    PaxGlobal,
    /// `L`: GNU tar's long name for the next entry (its data is the name).
    GnuLongName,
    /// `K`: GNU tar's long link target for the next entry.
    GnuLongLink,
    /// `S`: a GNU sparse file (holes left out of the archive, map in the header).
    GnuSparse,
    /// `D`: a GNU incremental dump directory listing.
    GnuDumpDir,
    /// `M`: the continuation of a file begun on the previous volume of a multi-volume archive.
    GnuMultiVolume,
    /// `V`: a GNU volume label.
    GnuVolumeLabel,
    /// `N`: GNU tar's obsolete long-names record.
    GnuOldNames,
}

impl EntryKind {
    fn from_flag(flag: u8) -> EntryKind {
        match flag {
            b'1' => EntryKind::HardLink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            b'x' | b'X' => EntryKind::PaxExtended,
            b'g' => EntryKind::PaxGlobal,
            b'L' => EntryKind::GnuLongName,
            b'K' => EntryKind::GnuLongLink,
            b'S' => EntryKind::GnuSparse,
            b'D' => EntryKind::GnuDumpDir,
            b'M' => EntryKind::GnuMultiVolume,
            b'V' => EntryKind::GnuVolumeLabel,
            b'N' => EntryKind::GnuOldNames,
            other => EntryKind::Regular(other),
        }
    }

    /// Whether `size` bytes of data follow the header. GNU tar skips a member's size in data for
    /// every type but a directory (whose size, in GNU incremental archives, describes no data);
    /// writers put 0 in the size of links, devices and FIFOs, as POSIX asks.
    pub fn has_data(self) -> bool {
        self != EntryKind::Directory
    }

    /// Whether the header only qualifies the next entry (pax `x`/`g`, GNU `L`/`K`).
    pub fn is_extension(self) -> bool {
        matches!(
            self,
            EntryKind::PaxExtended
                | EntryKind::PaxGlobal
                | EntryKind::GnuLongName
                | EntryKind::GnuLongLink
        )
    }
}

/// A decoded header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name as the header block holds it: `prefix/name` for ustar, `name` otherwise (a pax
    /// `path` record or GNU long name replaces it, see `tar_ext`).
    pub name: Vec<u8>,
    /// The size field: bytes of data that follow the header (for a GNU sparse file, the bytes
    /// stored, not the file's size).
    pub size: u64,
    /// The typeflag.
    pub kind: EntryKind,
    /// The layout.
    pub format: HeaderFormat,
    /// GNU sparse headers only (offset 482): whether sparse-map extension blocks follow.
    pub gnu_sparse_extended: bool,
}

/// One block of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// 512 zero bytes: two of them end the archive ("ustar Interchange Format": "two consecutive
    /// 512-byte blocks of binary zeros").
    Zero,
    /// A header.
    Header(Header),
}

/// Why a block is not a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than 512 bytes were given.
    Short(usize),
    /// The checksum field is not an octal number.
    ChecksumField,
    /// The checksum does not match the block (the stored value, and the unsigned sum).
    Checksum { stored: u64, computed: u64 },
    /// A numeric field (`size`) is neither octal nor positive base-256, or overflows 64 bits.
    Number(&'static str),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Short(n) => write!(f, "header block has {n} bytes, not 512"),
            HeaderError::ChecksumField => {
                write!(f, "not a tar header: the checksum field is not an octal number")
            }
            HeaderError::Checksum { stored, computed } => write!(
                f,
                "not a tar header: checksum {stored:o} (octal) does not match the block's ({computed:o})"
            ),
            HeaderError::Number(field) => {
                write!(f, "tar header field '{field}' is not a valid number")
            }
        }
    }
}

/// Decodes one block (the first 512 bytes of `block`).
pub fn parse_header(block: &[u8]) -> Result<Block, HeaderError> {
    let Some(b) = block.get(..HEADER_BYTES) else {
        return Err(HeaderError::Short(block.len()));
    };
    if b.iter().all(|&c| c == 0) {
        return Ok(Block::Zero);
    }
    check_checksum(b)?;
    let format = match &b[257..265] {
        m if &m[..6] == b"ustar\0" => HeaderFormat::Ustar,
        b"ustar  \0" => HeaderFormat::Gnu,
        _ => HeaderFormat::V7,
    };
    let mut name = Vec::new();
    if format == HeaderFormat::Ustar {
        let prefix = cstr(&b[345..500]);
        if !prefix.is_empty() {
            name.extend_from_slice(prefix);
            name.push(b'/');
        }
    }
    name.extend_from_slice(cstr(&b[0..100]));
    let size = parse_number(&b[124..136]).ok_or(HeaderError::Number("size"))?;
    let flag = b[156];
    let mut kind = EntryKind::from_flag(flag);
    // A regular-file header of the v7 kind (typeflag NUL) whose name ends in '/' is a directory, as
    // GNU tar reads it.
    if flag == 0 && name.last() == Some(&b'/') {
        kind = EntryKind::Directory;
    }
    let gnu_sparse_extended = kind == EntryKind::GnuSparse && b[482] != 0;
    Ok(Block::Header(Header {
        name,
        size,
        kind,
        format,
        gnu_sparse_extended,
    }))
}

/// The bytes of a NUL-terminated field (all of it when it has no NUL).
pub fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&c| c == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

/// Checks the header checksum (offset 148, 8 bytes): the sum of the block's bytes with the checksum
/// field counted as spaces, as unsigned bytes (POSIX) or signed ones (some old tars; GNU tar
/// accepts either).
fn check_checksum(b: &[u8]) -> Result<(), HeaderError> {
    let stored = parse_octal(&b[148..156]).ok_or(HeaderError::ChecksumField)?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &c) in b.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += u64::from(c);
        signed += i64::from(c as i8);
    }
    if stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed) {
        Ok(())
    } else {
        Err(HeaderError::Checksum {
            stored,
            computed: unsigned,
        })
    }
}

/// A numeric field: octal digits (leading spaces allowed, ended by NUL, space or the field's end),
/// or GNU tar's base-256 (first byte's high bit set; the next bit is the sign, and a negative value
/// is refused). `None` when it is neither or does not fit 64 bits.
pub fn parse_number(field: &[u8]) -> Option<u64> {
    let first = *field.first()?;
    if first & 0x80 != 0 {
        if first & 0x40 != 0 {
            return None;
        }
        let mut v = u64::from(first & 0x3f);
        for &c in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(c))?;
        }
        return Some(v);
    }
    parse_octal(field)
}

/// Octal digits after optional leading spaces, ended by NUL, space or the end of the field. An
/// empty number (the field starts with NUL after its spaces) is 0, as GNU tar reads it; a field of
/// spaces only is refused.
pub fn parse_octal(field: &[u8]) -> Option<u64> {
    let start = field.iter().position(|&c| c != b' ')?;
    let mut v: u64 = 0;
    let mut i = start;
    while let Some(&c) = field.get(i) {
        if !(b'0'..=b'7').contains(&c) {
            break;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(c - b'0'))?;
        i += 1;
    }
    match field.get(i) {
        None | Some(0) | Some(b' ') => Some(v),
        Some(_) => None,
    }
}

#[cfg(test)]
#[path = "tar_header_tests.rs"]
mod tests;
