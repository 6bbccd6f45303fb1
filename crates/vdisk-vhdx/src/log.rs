//! Detecting whether the log (spec 2.3) holds entries that must be replayed, exactly as QEMU's
//! `vhdx_parse_log` and `vhdx_log_search` (block/vhdx-log.c) decide it. qemu replays such a log only
//! when it opens the image read-write; read-only (`qemu-img info`, `convert`, `map`) it refuses the
//! image, and so does vdisk, which never writes. Nothing is replayed here.
//!
//! The search walks the circular log sector by sector from its start: an entry counts when its
//! header is valid (`vhdx_log_hdr_is_valid`) and its CRC-32C over the whole entry matches; an entry
//! with a valid header but an invalid descriptor fails the open (EINVAL), and so does one with more
//! than [`LOG_MAX_DESCRIPTORS`] descriptors (qemu reads those into memory it never fills). Entries
//! are streamed one 4 KiB sector at a time, so a hostile descriptor count allocates nothing.

use crate::crc32c::Crc32c;
use crate::guid::Guid;
use crate::header::{le32, le64, Header};
use crate::limits::{
    LOG_ALIGN, LOG_DESC_SIGNATURE, LOG_DESC_SIZE, LOG_HEADER_SIZE, LOG_MAX_DESCRIPTORS,
    LOG_SEARCH_BUDGET_FACTOR, LOG_SECTOR_SIZE, LOG_SIGNATURE, LOG_ZERO_SIGNATURE,
};
use crate::pread::pread;
use crate::Refusal;
use vdisk_core::{Error, Storage};

/// What the log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogState {
    /// Nothing to replay: the log GUID or length is zero, or no valid entry was found.
    Empty(&'static str),
    /// A sequence of valid entries that qemu would replay: the sequence number of its first entry,
    /// how many entries it has, and where it starts and ends in the log (offsets from the log's
    /// start: qemu's `log.read` and `log.write` of the sequence, equal when it fills the log).
    NeedsReplay {
        sequence: u64,
        entries: u32,
        start: u64,
        end: u64,
    },
}

enum Stop {
    Io(Error),
    Refuse(Refusal),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Io(e)
    }
}

/// The sequence `vhdx_log_search` finds.
#[derive(Clone, Copy)]
struct Sequence {
    sequence: u64,
    entries: u32,
    start: u64,
    end: u64,
}

/// A log entry header's fields (spec 2.3.1.1).
struct EntryHeader {
    checksum: u32,
    entry_length: u32,
    sequence: u64,
    descriptor_count: u32,
}

struct Log<'a> {
    storage: &'a dyn Storage,
    file_len: u64,
    offset: u64,
    length: u64,
    guid: Guid,
    budget: u64,
}

impl Log<'_> {
    fn read(&mut self, buf: &mut [u8], pos: u64) -> Result<(), Stop> {
        let n = buf.len() as u64;
        if self.budget < n {
            return Err(Stop::Refuse(Refusal::Invalid(format!(
                "the log search reads more than {LOG_SEARCH_BUDGET_FACTOR} times the log's \
                 length; vdisk stops here (qemu would spend that long or longer)"
            ))));
        }
        self.budget -= n;
        let at = self.offset.checked_add(pos);
        match at {
            // Past the end of the file qemu reads zeros; skip the call.
            Some(a) if a >= self.file_len && a < crate::limits::MAX_FILE_OFFSET => {
                buf.fill(0);
                Ok(())
            }
            _ => Ok(pread(self.storage, buf, at.unwrap_or(u64::MAX))?),
        }
    }

    /// `vhdx_log_inc_idx`: the next sector, wrapping at the end of the log.
    fn inc(&self, idx: u64) -> u64 {
        let n = idx + LOG_SECTOR_SIZE;
        if n >= self.length {
            0
        } else {
            n
        }
    }

    /// `vhdx_log_peek_hdr` and `vhdx_log_hdr_is_valid`: the header at `read`, if valid.
    fn peek(&mut self, read: u64) -> Result<Option<EntryHeader>, Stop> {
        let pos = if read + LOG_HEADER_SIZE as u64 > self.length {
            0
        } else {
            read
        };
        let mut b = [0u8; LOG_HEADER_SIZE];
        self.read(&mut b, pos)?;
        let h = EntryHeader {
            checksum: le32(&b, 4),
            entry_length: le32(&b, 8),
            sequence: le64(&b, 16),
            descriptor_count: le32(&b, 24),
        };
        let valid = &b[..4] == LOG_SIGNATURE
            && u64::from(h.entry_length) <= self.length
            && u64::from(h.entry_length) % LOG_SECTOR_SIZE == 0
            && h.sequence != 0
            && Guid::read(&b, 32) == self.guid
            && u64::from(h.descriptor_count) * LOG_DESC_SIZE as u64 <= u64::from(h.entry_length);
        Ok(valid.then_some(h))
    }

    /// `vhdx_validate_log_entry`: the entry at `*read` if it is valid (and follows `seq`, unless
    /// `seq` is 0), advancing `*read` as qemu does (one sector past an invalid header, past the
    /// sectors read otherwise).
    fn validate(&mut self, read: &mut u64, seq: u64) -> Result<Option<EntryHeader>, Stop> {
        let h = match self.peek(*read)? {
            Some(h) if seq == 0 || h.sequence == seq.wrapping_add(1) => h,
            _ => {
                *read = self.inc(*read);
                return Ok(None);
            }
        };
        if h.descriptor_count > LOG_MAX_DESCRIPTORS {
            return Err(Stop::Refuse(Refusal::Invalid(format!(
                "log entry {} at log offset {}: {} descriptors, more than the \
                 {LOG_MAX_DESCRIPTORS} qemu can read (it reads them into memory it never fills: \
                 Invalid argument)",
                h.sequence, *read, h.descriptor_count
            ))));
        }
        // `vhdx_compute_desc_sectors`: the header takes the room of two descriptors.
        let desc_sectors = (u64::from(h.descriptor_count) + 2).div_ceil(128);
        let total_sectors = u64::from(h.entry_length) / LOG_SECTOR_SIZE;
        let mut crc = Crc32c::new();
        let mut sector = vec![0u8; LOG_SECTOR_SIZE as usize];
        for s in 0..desc_sectors {
            let at = *read;
            self.read(&mut sector, at)?;
            *read = self.inc(*read);
            if s == 0 {
                crc.update_zeroing(&sector, 4);
            } else {
                crc.update(&sector);
            }
            // The descriptors of this sector (`vhdx_log_read_desc` checks each).
            let first = (s * 128).saturating_sub(2);
            let last = ((s + 1) * 128 - 2).min(u64::from(h.descriptor_count));
            for k in first..last {
                let off = ((k + 2) % 128) as usize * LOG_DESC_SIZE;
                let d = &sector[off..off + LOG_DESC_SIZE];
                let ok = le64(d, 24) == h.sequence
                    && le64(d, 16) % LOG_SECTOR_SIZE == 0
                    && ((&d[..4] == LOG_ZERO_SIGNATURE && le64(d, 8) % LOG_SECTOR_SIZE == 0)
                        || &d[..4] == LOG_DESC_SIGNATURE);
                if !ok {
                    return Err(Stop::Refuse(Refusal::Invalid(format!(
                        "log entry {} at log offset {at}: descriptor {k} is invalid",
                        h.sequence
                    ))));
                }
            }
        }
        for _ in desc_sectors..total_sectors.max(desc_sectors) {
            let at = *read;
            self.read(&mut sector, at)?;
            *read = self.inc(*read);
            crc.update(&sector);
        }
        Ok((crc.finish() == h.checksum).then_some(h))
    }

    /// `vhdx_log_search`: the active sequence with the highest first sequence number. As in qemu,
    /// the entry after the first is taken whatever its sequence number (`curr_seq` is still 0);
    /// the ones after it must follow one another.
    fn search(&mut self) -> Result<Option<Sequence>, Stop> {
        let mut read = 0u64;
        let mut candidate: Option<Sequence> = None;
        loop {
            let tail = read;
            if let Some(first) = self.validate(&mut read, 0)? {
                let mut current = Sequence {
                    sequence: first.sequence,
                    entries: 1,
                    start: tail,
                    end: read,
                };
                let mut seq = 0u64;
                while let Some(h) = self.validate(&mut read, seq)? {
                    current.entries = current.entries.saturating_add(1);
                    current.end = read;
                    seq = h.sequence;
                }
                if candidate.is_none_or(|c| current.sequence > c.sequence) {
                    candidate = Some(current);
                }
            }
            if read < tail {
                return Ok(candidate);
            }
            if read == tail {
                // The same walk would start again from the same place: qemu loops forever.
                return Err(Stop::Refuse(Refusal::Invalid(format!(
                    "the log search comes back to log offset {tail} and never ends (qemu-img \
                     hangs on this image)"
                ))));
            }
        }
    }
}

/// `vhdx_parse_log` for a read-only open: the log's state, or why qemu refuses it. The outer
/// `Result` carries I/O errors.
pub fn detect(
    storage: &dyn Storage,
    header: &Header,
) -> vdisk_core::Result<Result<LogState, Refusal>> {
    let (offset, length) = (header.log_offset, u64::from(header.log_length));
    if offset < LOG_ALIGN || offset % LOG_ALIGN != 0 {
        return Ok(Err(Refusal::Invalid(format!(
            "log offset {offset:#x} is not a non-zero multiple of 1 MiB"
        ))));
    }
    if header.log_version != 0 {
        return Ok(Err(Refusal::Invalid(format!(
            "log version {} (only 0 is defined)",
            header.log_version
        ))));
    }
    if header.log_guid.is_zero() {
        return Ok(Ok(LogState::Empty("log GUID is zero")));
    }
    if length == 0 {
        return Ok(Ok(LogState::Empty("log length is zero")));
    }
    if length % LOG_ALIGN != 0 {
        return Ok(Err(Refusal::Invalid(format!(
            "log length {length} is not a multiple of 1 MiB"
        ))));
    }
    let mut log = Log {
        storage,
        file_len: storage.len()?,
        offset,
        length,
        guid: header.log_guid,
        budget: length * LOG_SEARCH_BUDGET_FACTOR + LOG_SECTOR_SIZE * 4,
    };
    match log.search() {
        Ok(None) => Ok(Ok(LogState::Empty("no valid log entry"))),
        Ok(Some(c)) => Ok(Ok(LogState::NeedsReplay {
            sequence: c.sequence,
            entries: c.entries,
            start: c.start,
            end: c.end,
        })),
        Err(Stop::Io(e)) => Err(e),
        Err(Stop::Refuse(r)) => Ok(Err(r)),
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
