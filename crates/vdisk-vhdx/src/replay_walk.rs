//! The walk of the log sequence that QEMU 10's `vhdx_log_flush` (block/vhdx-log.c) makes when it
//! replays it, with `vhdx_log_peek_hdr`, `vhdx_log_read_desc`, `vhdx_log_desc_is_valid`,
//! `vhdx_log_read_sectors` and `vhdx_log_flush_desc`'s checks: entry by entry from the sequence's
//! start, each header (which must pass `vhdx_log_hdr_is_valid`) and its descriptors (at most
//! [`LOG_MAX_DESCRIPTORS`], all in the header's sector, every one checked before any is used),
//! then for each descriptor in order, a data sector read from the log for a data descriptor (its
//! split sequence number must match; its "data" signature is not checked, as in qemu) or a run of
//! zeros for a zero descriptor.
//!
//! qemu's read position moves only by what it reads: the descriptor sectors and one sector per
//! data descriptor, whatever the entry's length says; reading stops where the sequence ends (the
//! search's write position), and a read needed past it fails the replay (EINVAL). The walk does
//! the same and hands what it meets to a visitor, so that one pass checks and plans and a second,
//! identical pass writes. It reads one sector at a time: nothing is allocated per descriptor.
//!
//! qemu's buffer for a data sector is read whole and written whole (4 KiB at the descriptor's file
//! offset); a zero descriptor becomes `zero_length / 4096` writes of 4 KiB of zeros.

use crate::guid::Guid;
use crate::header::{le32, le64};
use crate::limits::{
    LOG_DESC_SIGNATURE, LOG_DESC_SIZE, LOG_ENTRY_FLUSHED_FILE_OFFSET, LOG_ENTRY_LAST_FILE_OFFSET,
    LOG_HEADER_SIZE, LOG_MAX_DESCRIPTORS, LOG_SECTOR_SIZE, LOG_SIGNATURE, LOG_ZERO_SIGNATURE,
};
use crate::pread::pread;
use vdisk_core::{Error, Storage};

const SECTOR: usize = LOG_SECTOR_SIZE as usize;

/// Why the walk stopped early.
pub(crate) enum Stop {
    /// Reading or writing the file failed.
    Io(Error),
    /// qemu fails the replay here (the words say why; qemu: EINVAL unless they say otherwise).
    Refuse(String),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Io(e)
    }
}

/// What the walk meets, in qemu's order.
pub(crate) enum Op<'a> {
    /// Entry `index` (from 0) begins; its header's FlushedFileOffset. qemu compares it with the
    /// file's length before it looks at anything else of the entry.
    Entry { index: u32, flushed: u64 },
    /// A data descriptor: the 4 KiB sector to write at `at` (its first 8 and last 4 bytes restored
    /// from the descriptor).
    Data { at: u64, sector: &'a [u8] },
    /// A zero descriptor: `len` zero bytes at `at` (a multiple of 4 KiB, possibly 0).
    Zero { at: u64, len: u64 },
    /// The entry's descriptors are done; its header's LastFileOffset.
    EntryEnd { last: u64 },
}

/// The sequence to walk: the log's place in the file, the current header's log GUID, and the
/// sequence's start, end (offsets in the log) and number of entries.
pub(crate) struct Sequence {
    pub offset: u64,
    pub length: u64,
    pub guid: Guid,
    pub start: u64,
    pub end: u64,
    pub entries: u32,
}

struct Walk<'a> {
    storage: &'a dyn Storage,
    seq: &'a Sequence,
    read: u64,
}

impl Walk<'_> {
    /// `vhdx_log_inc_idx`.
    fn inc(&self, idx: u64) -> u64 {
        let n = idx.saturating_add(LOG_SECTOR_SIZE);
        if n >= self.seq.length {
            0
        } else {
            n
        }
    }

    /// Sectors `vhdx_log_read_sectors` can still read before it reaches the end of the sequence.
    fn available(&self) -> u64 {
        let (r, w, l) = (self.read, self.seq.end, self.seq.length);
        if r == w {
            0
        } else if w > r {
            (w - r) / LOG_SECTOR_SIZE
        } else {
            l.saturating_sub(r).saturating_add(w) / LOG_SECTOR_SIZE
        }
    }

    fn pread_log(&self, buf: &mut [u8], pos: u64) -> Result<(), Stop> {
        let at = self.seq.offset.saturating_add(pos);
        Ok(pread(self.storage, buf, at)?)
    }

    /// Reads the next sector of the sequence, as `vhdx_log_read_sectors` does for one sector.
    fn next_sector(&mut self, buf: &mut [u8], what: &str) -> Result<(), Stop> {
        if self.available() == 0 {
            return Err(Stop::Refuse(format!(
                "the log sequence ends before {what} (qemu: Invalid argument)"
            )));
        }
        self.pread_log(buf, self.read)?;
        self.read = self.inc(self.read);
        Ok(())
    }

    /// One entry, `vhdx_log_flush`'s loop body.
    fn entry(
        &mut self,
        index: u32,
        visit: &mut dyn FnMut(Op<'_>) -> Result<(), Stop>,
    ) -> Result<(), Stop> {
        // vhdx_log_peek_hdr: the header where the read position is, unless the sequence ended.
        if self.read == self.seq.end {
            return Err(Stop::Refuse(format!(
                "log entry {index} of {}: the sequence ends before it (qemu: Invalid argument)",
                self.seq.entries
            )));
        }
        let mut hdr = [0u8; LOG_HEADER_SIZE];
        self.pread_log(&mut hdr, self.read)?;
        visit(Op::Entry {
            index,
            flushed: le64(&hdr, LOG_ENTRY_FLUSHED_FILE_OFFSET),
        })?;
        let (length, sequence, count) = (le32(&hdr, 8), le64(&hdr, 16), le32(&hdr, 24));
        // vhdx_log_hdr_is_valid (vhdx_log_read_desc fails with EINVAL otherwise).
        let valid = &hdr[..4] == LOG_SIGNATURE
            && u64::from(length) <= self.seq.length
            && u64::from(length) % LOG_SECTOR_SIZE == 0
            && sequence != 0
            && Guid::read(&hdr, 32) == self.seq.guid
            && u64::from(count) * LOG_DESC_SIZE as u64 <= u64::from(length);
        if !valid {
            return Err(Stop::Refuse(format!(
                "log entry {index} at log offset {}: invalid entry header where the replay \
                 reads it (qemu: Invalid argument)",
                self.read
            )));
        }
        if count > LOG_MAX_DESCRIPTORS {
            return Err(Stop::Refuse(format!(
                "log entry {index}: {count} descriptors, more than the {LOG_MAX_DESCRIPTORS} qemu \
                 can read (qemu: Invalid argument)"
            )));
        }
        // So the descriptors all lie in the header's sector (vhdx_compute_desc_sectors: 1), which
        // vhdx_log_read_sectors must be able to read.
        let mut sector = vec![0u8; SECTOR];
        self.next_sector(&mut sector, "the descriptor sector")?;
        for k in 0..count as usize {
            let d = desc(&sector, k);
            // vhdx_log_desc_is_valid
            let ok = le64(d, 24) == sequence
                && le64(d, 16) % LOG_SECTOR_SIZE == 0
                && ((&d[..4] == LOG_ZERO_SIGNATURE && le64(d, 8) % LOG_SECTOR_SIZE == 0)
                    || &d[..4] == LOG_DESC_SIGNATURE);
            if !ok {
                return Err(Stop::Refuse(format!(
                    "log entry {index}: descriptor {k} is invalid (qemu: Invalid argument)"
                )));
            }
        }
        // Each descriptor in order, a data descriptor with the next sector of the log.
        let mut data = vec![0u8; SECTOR];
        let mut out = vec![0u8; SECTOR];
        for k in 0..count as usize {
            let d = desc(&sector, k);
            let at = le64(d, 16);
            if &d[..4] == LOG_DESC_SIGNATURE {
                self.next_sector(&mut data, "a data sector")?;
                // vhdx_log_flush_desc: the data sector's split sequence number.
                let seq = (u64::from(le32(&data, 4)) << 32) | u64::from(le32(&data, SECTOR - 4));
                if seq != le64(d, 24) {
                    return Err(Stop::Refuse(format!(
                        "log entry {index}: the data sector of descriptor {k} has sequence number \
                         {seq}, not {} (qemu: Invalid argument)",
                        le64(d, 24)
                    )));
                }
                out[..8].copy_from_slice(&d[8..16]);
                out[8..SECTOR - 4].copy_from_slice(&data[8..SECTOR - 4]);
                out[SECTOR - 4..].copy_from_slice(&d[4..8]);
                visit(Op::Data { at, sector: &out })?;
            } else {
                visit(Op::Zero {
                    at,
                    len: le64(d, 8),
                })?;
            }
        }
        visit(Op::EntryEnd {
            last: le64(&hdr, LOG_ENTRY_LAST_FILE_OFFSET),
        })
    }
}

/// Descriptor `k`'s 32 bytes in the entry's first sector (after the 64-byte header; `k` is at
/// most [`LOG_MAX_DESCRIPTORS`] - 1).
fn desc(sector: &[u8], k: usize) -> &[u8] {
    let off = LOG_HEADER_SIZE + k * LOG_DESC_SIZE;
    sector
        .get(off..off + LOG_DESC_SIZE)
        .unwrap_or(&[0; LOG_DESC_SIZE])
}

/// Walks every entry of `seq` as `vhdx_log_flush` does, handing each step to `visit`.
pub(crate) fn walk(
    storage: &dyn Storage,
    seq: &Sequence,
    visit: &mut dyn FnMut(Op<'_>) -> Result<(), Stop>,
) -> Result<(), Stop> {
    let mut w = Walk {
        storage,
        seq,
        read: seq.start,
    };
    for index in 0..seq.entries {
        w.entry(index, visit)?;
    }
    Ok(())
}
