//! The index of a tar archive read from a [`Storage`]: its headers walked from the start (IEEE
//! 1003.1 `pax`, "ustar Interchange Format" and "pax Interchange Format"; GNU tar's `L`/`K` long
//! names and `S` sparse headers), listing each regular file's name and where its data lies, without
//! reading the data. The walk ends at two zero blocks (a lone one, as GNU tar, with a note) or at the
//! end of the file after a whole member; it refuses a bad checksum, a member or header cut off by the
//! end of the file, and archives over the limits of [`crate::limits`].

use crate::limits::{
    BLOCK, MAX_EXTENSION_BYTES, MAX_HEADERS, MAX_MEMBERS, MAX_NAME_BYTES,
    MAX_TOTAL_EXTENSION_BYTES, MAX_TOTAL_NAME_BYTES,
};
use crate::tar_ext::{Entry, Pending};
use crate::tar_header::{parse_header, Block, EntryKind, HEADER_BYTES};
use vdisk_core::{Error, Result, Storage};

/// A regular file in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name as stored (after pax and GNU long-name headers), lossily made UTF-8.
    pub name: String,
    /// Offset of its header block in the archive (of the first extension header before it, if any).
    pub header_offset: u64,
    /// Offset of its data in the archive.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
    /// Stored by `tar --sparse` (GNU `S` header or pax `GNU.sparse.*` records): the data in the
    /// archive is not the file's content byte for byte, so it cannot be read in place.
    pub sparse: bool,
}

/// How the walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveEnd {
    /// Two zero blocks, as every tar writes.
    Marker,
    /// One zero block followed by something else or by the end of the file (GNU tar: "A lone zero
    /// block"), read as the end.
    LoneZeroBlock,
    /// The end of the file right after a member, without the end-of-archive blocks: a tar that was
    /// cut at a member boundary reads exactly like this.
    Eof,
}

/// The regular files of an archive, in archive order.
#[derive(Debug, Clone)]
pub struct TarIndex {
    /// Regular files (directories, links, devices and extension headers are not listed).
    pub members: Vec<Member>,
    /// How the walk ended.
    pub end: ArchiveEnd,
    /// Offset at which it ended (the first end-of-archive block, or the file's length).
    pub end_offset: u64,
}

/// Walks the archive in `storage`.
pub fn index(storage: &dyn Storage) -> Result<TarIndex> {
    let path = storage.path();
    let len = storage.len()?;
    let corrupt = |at: u64, what: String| Error::corrupt(path, Some(at), what);
    let mut members: Vec<Member> = Vec::new();
    let mut pending = Pending::default();
    let mut pos: u64 = 0;
    let mut headers: u64 = 0;
    let mut ext_bytes: u64 = 0;
    let mut name_bytes: usize = 0;
    let mut first_ext: Option<u64> = None;
    let mut block = [0u8; HEADER_BYTES];
    let end = loop {
        if pos == len {
            if pending.is_waiting() {
                return Err(corrupt(
                    pos,
                    "tar archive is truncated: it ends after an extension header, before the entry it describes".into(),
                ));
            }
            break ArchiveEnd::Eof;
        }
        let left = len - pos;
        if left < BLOCK {
            // Part of an end-of-archive block: every member is whole.
            let mut tail = [0u8; HEADER_BYTES];
            let tail = &mut tail[..left as usize];
            storage.read_exact_at(tail, pos)?;
            if tail.iter().all(|&c| c == 0) && !pending.is_waiting() {
                break ArchiveEnd::Eof;
            }
            return Err(corrupt(
                pos,
                format!("tar archive is truncated: it ends {left} bytes into a 512-byte header"),
            ));
        }
        headers += 1;
        if headers > MAX_HEADERS {
            return Err(Error::limit(
                path,
                "number of tar headers",
                headers,
                MAX_HEADERS,
            ));
        }
        storage.read_exact_at(&mut block, pos)?;
        let header = match parse_header(&block) {
            Ok(Block::Zero) => {
                if pending.is_waiting() {
                    return Err(corrupt(
                        pos,
                        "tar archive ends after an extension header, before the entry it describes"
                            .into(),
                    ));
                }
                let next = pos + BLOCK;
                if len - next < BLOCK {
                    break ArchiveEnd::LoneZeroBlock;
                }
                storage.read_exact_at(&mut block, next)?;
                if block.iter().all(|&c| c == 0) {
                    break ArchiveEnd::Marker;
                }
                break ArchiveEnd::LoneZeroBlock;
            }
            Ok(Block::Header(h)) => h,
            Err(e) => return Err(corrupt(pos, format!("bad tar header: {e}"))),
        };
        let header_at = pos;
        let mut data_at = pos + BLOCK;
        if header.kind.is_extension() {
            first_ext.get_or_insert(header_at);
            if header.size > MAX_EXTENSION_BYTES {
                return Err(Error::limit(
                    path,
                    "size of a tar extension header (pax or GNU long name)",
                    header.size,
                    MAX_EXTENSION_BYTES,
                ));
            }
            ext_bytes = ext_bytes.saturating_add(header.size);
            if ext_bytes > MAX_TOTAL_EXTENSION_BYTES {
                return Err(Error::limit(
                    path,
                    "bytes of tar extension headers",
                    ext_bytes,
                    MAX_TOTAL_EXTENSION_BYTES,
                ));
            }
            let next = data_end(len, data_at, header.size)
                .map_err(|what| corrupt(header_at, format!("tar extension header: {what}")))?;
            // Bounded by MAX_EXTENSION_BYTES above.
            let mut data = vec![0u8; header.size as usize];
            storage.read_exact_at(&mut data, data_at)?;
            pending
                .absorb(header.kind, &data)
                .map_err(|what| corrupt(data_at, what))?;
            pos = next;
            continue;
        }
        if header.kind == EntryKind::GnuSparse && header.gnu_sparse_extended {
            data_at = skip_sparse_extensions(storage, len, data_at, &mut headers)?;
        }
        if header.kind == EntryKind::GnuMultiVolume {
            return Err(Error::unsupported(
                path,
                "multi-volume tar archive (a member continued from a previous volume)",
            ));
        }
        let entry: Entry = pending.apply(header);
        let next = data_end(
            len,
            data_at,
            if entry.kind.has_data() { entry.size } else { 0 },
        )
        .map_err(|what| {
            corrupt(
                header_at,
                format!(
                    "tar member '{}': {what}",
                    String::from_utf8_lossy(&entry.name)
                ),
            )
        })?;
        let start = first_ext.take().unwrap_or(header_at);
        if matches!(entry.kind, EntryKind::Regular(_) | EntryKind::GnuSparse) {
            if entry.name.len() > MAX_NAME_BYTES {
                return Err(Error::limit(
                    path,
                    "length of a tar member name",
                    entry.name.len() as u64,
                    MAX_NAME_BYTES as u64,
                ));
            }
            name_bytes += entry.name.len();
            if name_bytes > MAX_TOTAL_NAME_BYTES {
                return Err(Error::limit(
                    path,
                    "bytes of tar member names",
                    name_bytes as u64,
                    MAX_TOTAL_NAME_BYTES as u64,
                ));
            }
            if members.len() >= MAX_MEMBERS {
                return Err(Error::limit(
                    path,
                    "number of tar members",
                    members.len() as u64 + 1,
                    MAX_MEMBERS as u64,
                ));
            }
            members.push(Member {
                name: String::from_utf8_lossy(&entry.name).into_owned(),
                header_offset: start,
                offset: data_at,
                size: entry.size,
                sparse: entry.sparse,
            });
        }
        pos = next;
    };
    Ok(TarIndex {
        members,
        end,
        end_offset: pos,
    })
}

/// Where the next header is after `size` bytes of data at `data_at` and their padding to a block,
/// or why they do not fit in an archive of `len` bytes.
fn data_end(len: u64, data_at: u64, size: u64) -> std::result::Result<u64, String> {
    let padded = size
        .checked_add(BLOCK - 1)
        .map(|s| s / BLOCK * BLOCK)
        .ok_or_else(|| format!("size {size} overflows"))?;
    match data_at.checked_add(padded) {
        Some(end) if end <= len => Ok(end),
        _ => Err(format!(
            "its {size} bytes of data at offset {data_at:#x} run past the end of the archive ({len} bytes): the archive is truncated or the size is wrong"
        )),
    }
}

/// Skips the sparse-map extension blocks after a GNU `S` header (each with 21 map entries and, at
/// offset 504, whether another follows), returning the offset of the data.
fn skip_sparse_extensions(
    storage: &dyn Storage,
    len: u64,
    mut at: u64,
    headers: &mut u64,
) -> Result<u64> {
    let path = storage.path();
    let mut block = [0u8; HEADER_BYTES];
    loop {
        *headers += 1;
        if *headers > MAX_HEADERS {
            return Err(Error::limit(
                path,
                "number of tar headers",
                *headers,
                MAX_HEADERS,
            ));
        }
        if len.saturating_sub(at) < BLOCK {
            return Err(Error::corrupt(
                path,
                Some(at),
                "tar archive is truncated inside a GNU sparse map",
            ));
        }
        storage.read_exact_at(&mut block, at)?;
        at += BLOCK;
        if block[504] == 0 {
            return Ok(at);
        }
    }
}

#[cfg(test)]
#[path = "tar_tests.rs"]
mod tests;
