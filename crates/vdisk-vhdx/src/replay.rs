//! Replaying the log (spec 2.3.3) as QEMU 10 does when it opens an image read-write: `vhdx_open`
//! checks the signature, picks the header (`vhdx_parse_header`), and `vhdx_parse_log` replays the
//! sequence `vhdx_log_search` finds ([`crate::log`]) with `vhdx_log_flush` (block/vhdx-log.c),
//! then `vhdx_log_reset` marks the log empty with a header update (`vhdx_update_headers`,
//! block/vhdx.c: the non-current header first, each with a higher sequence number).
//!
//! What the replay writes is exactly what qemu's leaves in the file: each data descriptor's sector
//! (its first 8 and last 4 bytes from the descriptor), each zero descriptor's zeros, the file grown
//! as qemu grows it (a LastFileOffset beyond the file's length at the start of its entry extends
//! the file to it rounded up to 1 MiB, but only when it is not already a multiple of 1 MiB: qemu's
//! `vhdx_log_flush` truncates inside that test), and both headers as qemu's four header writes
//! leave them: the other header with its own fields, sequence number + 3 and log GUID zero, the
//! current one with + 4 and log GUID zero, both with one new FileWriteGuid, each with its own new
//! DataWriteGuid. Only the GUIDs and checksums differ from qemu's result.
//!
//! What differs is the order, for crash safety, and that vdisk checks everything first:
//! - (plan) the whole sequence is walked once without writing ([`crate::replay_walk`]), making
//!   every check qemu makes on the way (FlushedFileOffset against the file's length at the start of
//!   each entry, headers, descriptors, data sector sequence numbers) and vdisk's own: no write into
//!   the log or into either header's 4 KiB block (qemu would write there, which would leave a
//!   crash with no valid log or header; vdisk refuses), no write past qemu's largest offset, no
//!   truncation that would cut bytes off (qemu's "grow" to LastFileOffset shrinks the file when the
//!   entry wrote past it), a current header whose sequence number cannot grow by 4 (qemu wraps
//!   it), and the limits [`REPLAY_MAX_GROWTH`] and [`REPLAY_MAX_ZERO_BYTES`]. (An entry with more
//!   than [`crate::limits::LOG_MAX_DESCRIPTORS`] descriptors, which qemu cannot read, is refused
//!   by the log search already.)
//!   Where qemu fails part way (having written the first header update and any earlier entries),
//!   vdisk refuses with the file unchanged;
//! - (A, B) `vhdx_user_visible_write`'s update: the other header, then the current one, get the
//!   current header's fields with sequence number + 1 and + 2, the new FileWriteGuid and a new
//!   DataWriteGuid each, the log GUID kept. qemu writes the other header's own fields here, with its
//!   own log GUID; were that one stale, a crash right after would leave a current header without the
//!   log and the replayed changes lost, so vdisk writes the current header's fields first and the
//!   other header's own fields only at (C), where qemu's final bytes have them;
//! - (E) the file is grown at once to the length the replay ends with (qemu reaches it by writes
//!   past the end and truncations; the bytes are the same zeros). A replay resumed after a crash
//!   then finds every LastFileOffset and FlushedFileOffset inside the file and ends at the same
//!   length: the replay is idempotent;
//! - (W) the data and zero writes, then one sync (qemu syncs after each 4 KiB);
//! - (C, D) `vhdx_log_reset`'s update: the other header, then the current one, with sequence number
//!   + 3 and + 4 and log GUID zero, each synced.
//!
//! A crash before (C) is durable leaves the current header with the log GUID and the log intact:
//! the image is still refused read-only and replays to the same bytes. After it, the data is
//! durable and the current header says the log is empty: fully replayed. A header write torn
//! inside one sector fails its CRC-32C and the other header, valid, is used. With durable commits
//! off (`-t unsafe`) no step is synced, as qemu's `cache=unsafe` ignores its flushes.

use crate::guid::Guid;
use crate::header::Header;
use crate::header_update::{updated, write_header};
use crate::limits::{
    qemu_file_length, FILE_SIGNATURE, HEADER1_OFFSET, HEADER2_OFFSET, HEADER_SIZE, LOG_SECTOR_SIZE,
    MAX_FILE_OFFSET, REPLAY_MAX_GROWTH, REPLAY_MAX_ZERO_BYTES,
};
use crate::log::{self, LogState};
use crate::pread::pread;
use crate::reader::{not_vhdx, read_headers};
use crate::replay_walk::{walk, Op, Sequence, Stop};
use crate::writer::random_guid;
use std::path::Path;
use vdisk_core::writer::durable_commit;
use vdisk_core::{Error, FileStorage, Result, Storage};

const MIB: u64 = 1 << 20;

/// Replays the log of the VHDX image in `storage` if it needs replaying, as qemu's read-write open
/// does; `Ok(true)` when a log was replayed, `Ok(false)` when there was none to replay (nothing is
/// written then). Fails, with the file unchanged, where qemu's open fails before or during its
/// replay, and where vdisk's limits refuse the replay (see the module comment).
pub fn replay_log(storage: &dyn Storage) -> Result<bool> {
    let path = storage.path().to_path_buf();
    let mut sig = [0u8; 8];
    pread(storage, &mut sig, 0)?;
    if &sig != FILE_SIGNATURE {
        return Err(not_vhdx(&path));
    }
    let (index, header, blocks) = read_headers(storage)?;
    let state = log::detect(storage, &header)?.map_err(|r| r.into_error(&path))?;
    let LogState::NeedsReplay {
        start,
        end,
        entries,
        ..
    } = state
    else {
        return Ok(false);
    };
    let seq = Sequence {
        offset: header.log_offset,
        length: u64::from(header.log_length),
        guid: header.log_guid,
        start,
        end,
        entries,
    };
    let final_len = plan(storage, &seq)?;
    let other = 1 - index.min(1);
    let other_fields = Header::parse(&blocks[other]).fields;
    let n = header.sequence_number;
    let seqs = [1u64, 2, 3, 4].map(|k| n.checked_add(k));
    let [Some(s1), Some(s2), Some(s3), Some(s4)] = seqs else {
        return Err(refused(
            &path,
            format!("the header's sequence number {n} cannot grow by 4"),
        ));
    };
    let (session, data1, data2) = (random_guid()?, random_guid()?, random_guid()?);
    let durable = durable_commit();
    let f = &header.fields;
    // (A, B): vhdx_user_visible_write, the log GUID kept.
    write_header(
        storage,
        other,
        &updated(f, s1, session, data1, None),
        durable,
    )?;
    write_header(
        storage,
        index,
        &updated(f, s2, session, data2, None),
        durable,
    )?;
    // (E): the length the replay ends with.
    if final_len > storage.len()? {
        storage.set_len(final_len)?;
    }
    // (W): the writes, then one sync.
    walk(storage, &seq, &mut |op| apply(storage, op)).map_err(|s| stop_error(&path, s))?;
    if durable {
        storage.sync()?;
    }
    // (C, D): vhdx_log_reset.
    let zero = Some(Guid::default());
    write_header(
        storage,
        other,
        &updated(&other_fields, s3, session, data1, zero),
        durable,
    )?;
    write_header(
        storage,
        index,
        &updated(f, s4, session, data2, zero),
        durable,
    )?;
    Ok(true)
}

/// [`replay_log`] on the file at `path`, opened read-write.
pub fn replay_log_at(path: &Path) -> Result<bool> {
    replay_log(&FileStorage::open_rw(path)?)
}

fn refused(path: &Path, why: String) -> Error {
    Error::corrupt(path, None, format!("cannot replay the VHDX log: {why}"))
}

fn stop_error(path: &Path, stop: Stop) -> Error {
    match stop {
        Stop::Io(e) => e,
        Stop::Refuse(why) => refused(path, why),
    }
}

/// (W): one step of the walk written to the file.
fn apply(storage: &dyn Storage, op: Op<'_>) -> std::result::Result<(), Stop> {
    match op {
        Op::Data { at, sector } => storage.write_at(sector, at)?,
        Op::Zero { at, len } if len > 0 => storage.write_zeros(at, len)?,
        _ => {}
    }
    Ok(())
}

/// The plan pass: every check, and the length the file ends with.
fn plan(storage: &dyn Storage, seq: &Sequence) -> Result<u64> {
    let original = storage.len()?;
    let log_end = seq.offset.saturating_add(seq.length);
    let mut p = Plan {
        original,
        len: original,
        entry_len: 0,
        zeros: 0,
        forbidden: [
            (seq.offset, log_end, "the log"),
            (
                HEADER1_OFFSET,
                HEADER1_OFFSET + HEADER_SIZE as u64,
                "header 1",
            ),
            (
                HEADER2_OFFSET,
                HEADER2_OFFSET + HEADER_SIZE as u64,
                "header 2",
            ),
        ],
    };
    walk(storage, seq, &mut |op| p.visit(op)).map_err(|s| stop_error(storage.path(), s))?;
    Ok(p.len)
}

struct Plan {
    original: u64,
    /// The file's length as the replay would have left it so far.
    len: u64,
    /// qemu's length of the file (`bdrv_getlength`: whole 512-byte sectors) at the entry's start.
    entry_len: u64,
    zeros: u64,
    /// Ranges the replay must not write into.
    forbidden: [(u64, u64, &'static str); 3],
}

impl Plan {
    fn visit(&mut self, op: Op<'_>) -> std::result::Result<(), Stop> {
        match op {
            Op::Entry { index, flushed } => {
                self.entry_len = qemu_file_length(self.len);
                if flushed > self.entry_len {
                    return Err(Stop::Refuse(format!(
                        "log entry {index} has FlushedFileOffset {flushed}, past the end of the \
                         file ({} bytes): the file was truncated (qemu: Invalid argument)",
                        self.entry_len
                    )));
                }
            }
            Op::Data { at, .. } => self.write(at, LOG_SECTOR_SIZE)?,
            Op::Zero { at, len } => {
                self.zeros = self
                    .zeros
                    .checked_add(len)
                    .filter(|z| *z <= REPLAY_MAX_ZERO_BYTES)
                    .ok_or_else(|| {
                        Stop::Refuse(format!(
                            "its zero descriptors write more than {REPLAY_MAX_ZERO_BYTES} bytes \
                             of zeros (vdisk's limit)"
                        ))
                    })?;
                self.write(at, len)?;
            }
            Op::EntryEnd { last } => {
                // vhdx_log_flush grows the file only inside `if (new_file_size % MiB)`.
                if self.entry_len < last && last % MIB != 0 {
                    let new = last.checked_next_multiple_of(MIB).ok_or_else(|| {
                        Stop::Refuse(format!(
                            "LastFileOffset {last} rounded up to 1 MiB wraps to 0 in qemu, which \
                             then truncates the file to nothing"
                        ))
                    })?;
                    if new > MAX_FILE_OFFSET {
                        return Err(Stop::Refuse(format!(
                            "LastFileOffset {last} lies beyond the largest file qemu writes \
                             (qemu: Invalid argument or Input/output error)"
                        )));
                    }
                    if new < self.len {
                        return Err(Stop::Refuse(format!(
                            "the entry writes up to {}, past the length its LastFileOffset sets \
                             the file to ({new}); qemu would cut those bytes off",
                            self.len
                        )));
                    }
                    self.grow(new)?;
                }
            }
        }
        Ok(())
    }

    /// A write of `len` bytes at `at`.
    fn write(&mut self, at: u64, len: u64) -> std::result::Result<(), Stop> {
        if len == 0 {
            return Ok(());
        }
        let end = at
            .checked_add(len)
            .filter(|e| *e <= MAX_FILE_OFFSET)
            .ok_or_else(|| {
                Stop::Refuse(format!(
                    "a descriptor writes {len} bytes at {at}, beyond the largest offset qemu \
                     writes (qemu: Input/output error)"
                ))
            })?;
        for (a, b, what) in self.forbidden {
            if at < b && a < end {
                return Err(Stop::Refuse(format!(
                    "a descriptor writes {len} bytes at {at}, into {what}; vdisk refuses to \
                     (a crash there would leave no valid log or header)"
                )));
            }
        }
        self.grow(end)
    }

    fn grow(&mut self, end: u64) -> std::result::Result<(), Stop> {
        if end > self.len {
            if end - self.original > REPLAY_MAX_GROWTH {
                return Err(Stop::Refuse(format!(
                    "it would grow the file from {} to {end} bytes, more than vdisk's limit of \
                     {REPLAY_MAX_GROWTH} bytes more",
                    self.original
                )));
            }
            self.len = end;
        }
        Ok(())
    }
}
