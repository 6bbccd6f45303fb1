//! Whether an XFS filesystem was cleanly unmounted, found as the kernel finds it before deciding
//! to recover ("XFS Algorithms & Data Structures", chapter "Journaling Log"; the kernel's
//! xlog_find_head and xlog_check_unmount_rec): every 512-byte block of the internal log starts
//! with the cycle number it was written in, so the head is where the cycle number drops; the
//! log is clean when the record just before the head is an unmount record (one operation,
//! flagged XLOG_UNMOUNT_TRANS) that ends at the head. vdisk-fs does not replay XFS logs, so a
//! log that is not clean means the filesystem on disk may lack what the log holds.

use super::superblock::Super;
use crate::bytes::{be32_at, u8_at};
use crate::device::Device;
use vdisk_core::Result;

/// `XLOG_HEADER_MAGIC_NUM`.
const RECORD_MAGIC: u32 = 0xfeed_babe;
/// Bytes of a log basic block.
const BB: u64 = 512;
/// A record header covers this many bytes of cycle data; larger v2 records have more headers.
const HEADER_CYCLE_SIZE: u64 = 32 * 1024;
/// `XLOG_VERSION_2`.
const VERSION_2: u32 = 2;
/// `XLOG_UNMOUNT_TRANS` in an operation header's flags.
const UNMOUNT_TRANS: u8 = 0x20;
/// How far before the head a record header is looked for: the largest record (256 KiB of
/// data, XLOG_MAX_RECORD_BSIZE) with its headers.
const MAX_RECORD_BBS: u64 = (256 * 1024 + 8 * BB) / BB;

/// What the log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogState {
    /// Cleanly unmounted: the filesystem on disk is complete.
    Clean,
    /// Not cleanly unmounted: the kernel would replay the log before mounting.
    NeedsRecovery,
    /// An external log device (not in the image): nothing can be said.
    External,
}

struct Log<'a> {
    dev: &'a Device,
    start: u64,
    bbs: u64,
}

impl Log<'_> {
    fn block(&self, n: u64) -> Result<Vec<u8>> {
        let at = self.start + (n % self.bbs) * BB;
        self.dev.read_vec(at, BB as usize, "XFS log block")
    }

    /// The cycle a block was written in: its first word, or a record header's `h_cycle`
    /// (its first word is the magic).
    fn cycle(&self, n: u64) -> Result<u32> {
        let b = self.block(n)?;
        Ok(match be32_at(&b, 0) {
            RECORD_MAGIC => be32_at(&b, 4),
            c => c,
        })
    }
}

/// Reads the internal log's head and last record.
pub fn state(dev: &Device, sb: &Super) -> Result<LogState> {
    if sb.log_start == 0 {
        return Ok(LogState::External);
    }
    let (start, _) = sb
        .fsb_to_byte(sb.log_start)
        .ok_or_else(|| dev.corrupt(None, format!("log start block {}", sb.log_start)))?;
    let bbs = sb
        .log_blocks
        .checked_mul(sb.block_size / BB)
        .filter(|&n| n >= 2)
        .ok_or_else(|| dev.corrupt(None, format!("log of {} blocks", sb.log_blocks)))?;
    let log = Log { dev, start, bbs };
    // The head: the first block of the last cycle when the cycle drops part way (found by
    // bisection, as the blocks before it are of the first block's cycle); block 0 (the log
    // wrapped exactly) when the whole log is of one cycle.
    let first = log.cycle(0)?;
    let last = log.cycle(bbs - 1)?;
    let head = if first == last {
        0
    } else {
        let (mut lo, mut hi) = (0u64, bbs - 1);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if log.cycle(mid)? == first {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    };
    // The last record header before the head.
    for back in 1..=MAX_RECORD_BBS.min(bbs) {
        let at = (head + bbs - back) % bbs;
        let h = log.block(at)?;
        if be32_at(&h, 0) != RECORD_MAGIC {
            continue;
        }
        let size = u64::from(be32_at(&h, 320));
        let hblks = if be32_at(&h, 8) & VERSION_2 != 0 && size > HEADER_CYCLE_SIZE {
            size.div_ceil(HEADER_CYCLE_SIZE)
        } else {
            1
        };
        let data_bbs = u64::from(be32_at(&h, 12)).div_ceil(BB);
        let after = (at + hblks + data_bbs) % bbs;
        if after == head && be32_at(&h, 40) == 1 {
            let op = log.block(at + hblks)?;
            if u8_at(&op, 9) & UNMOUNT_TRANS != 0 {
                return Ok(LogState::Clean);
            }
        }
        return Ok(LogState::NeedsRecovery);
    }
    Ok(LogState::NeedsRecovery)
}
