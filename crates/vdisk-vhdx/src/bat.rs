//! The block allocation table (spec 2.5): how many entries qemu expects (`vhdx_calc_bat_entries`),
//! reading them (only the part inside the file is read or kept: past its end qemu reads zeros,
//! which are NOT_PRESENT entries), the validation `vhdx_check_bat_entries` runs on every open (and
//! `qemu-img check` repeats, counting), and the entry states (`vhdx_co_readv`: which read as zeros,
//! which from the file, which fail).

use crate::limits::{
    BAT_ENTRY_SIZE, BAT_OFFSET_MASK, BAT_READ_CHUNK_ENTRIES, BAT_STATE_MASK, MAX_CHECK_MESSAGES,
    MAX_PAYLOAD_BLOCKS,
};
use crate::pread::pread;
use crate::region::Regions;
use vdisk_core::{Error, Result, Storage};

/// The state of a payload block (spec 2.5.1.1; vhdx.h `PAYLOAD_BLOCK_*`). A sector bitmap entry
/// uses the same bits (0 not present, 6 present).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockState {
    /// 0: never written; reads as zeros (no parent).
    NotPresent,
    /// 1: contents undefined; qemu reads zeros.
    Undefined,
    /// 2: reads as zeros (qemu creates every block so with `block_state_zero=on`).
    Zero,
    /// 3: discarded (unmapped); qemu reads zeros.
    Unmapped,
    /// 4: not defined by the spec; qemu's reads fail with EIO.
    Reserved4,
    /// 5: the unmapped state of the spec's draft 0.95; qemu reads zeros.
    UnmappedV095,
    /// 6: stored in the file at the entry's offset.
    FullyPresent,
    /// 7: partly in a parent (differencing images only); qemu's reads fail with EIO.
    PartiallyPresent,
}

impl BlockState {
    /// The state bits of a BAT entry.
    pub fn of(entry: u64) -> BlockState {
        match entry & BAT_STATE_MASK {
            0 => BlockState::NotPresent,
            1 => BlockState::Undefined,
            2 => BlockState::Zero,
            3 => BlockState::Unmapped,
            4 => BlockState::Reserved4,
            5 => BlockState::UnmappedV095,
            6 => BlockState::FullyPresent,
            _ => BlockState::PartiallyPresent,
        }
    }

    /// The spec's name.
    pub fn name(self) -> &'static str {
        match self {
            BlockState::NotPresent => "not-present",
            BlockState::Undefined => "undefined",
            BlockState::Zero => "zero",
            BlockState::Unmapped => "unmapped",
            BlockState::Reserved4 => "reserved-4",
            BlockState::UnmappedV095 => "unmapped-v095",
            BlockState::FullyPresent => "fully-present",
            BlockState::PartiallyPresent => "partially-present",
        }
    }

    /// Every state, in the order of their values.
    pub const ALL: [BlockState; 8] = [
        BlockState::NotPresent,
        BlockState::Undefined,
        BlockState::Zero,
        BlockState::Unmapped,
        BlockState::Reserved4,
        BlockState::UnmappedV095,
        BlockState::FullyPresent,
        BlockState::PartiallyPresent,
    ];
}

/// The file offset of an entry (its upper 44 bits, in bytes).
pub fn entry_offset(entry: u64) -> u64 {
    entry & BAT_OFFSET_MASK
}

/// The BAT's shape: `vhdx_calc_bat_entries` for an image without a parent. `Ok((payload blocks,
/// entries))`, or the limit that a count breaks: qemu counts both in `uint32_t`, and a larger
/// count would wrap there and leave its reads beyond its table.
pub fn shape(
    virtual_disk_size: u64,
    block_size: u32,
    chunk_ratio: u64,
) -> Result<(u64, u64), (&'static str, u64)> {
    let blocks = virtual_disk_size.div_ceil(u64::from(block_size));
    if blocks > MAX_PAYLOAD_BLOCKS {
        return Err(("payload blocks", blocks));
    }
    let bits = chunk_ratio.trailing_zeros();
    // qemu: data + ((data - 1) >> bits) in uint32_t, so an empty disk still wants
    // 0xffffffff >> bits entries.
    let entries = if blocks == 0 {
        u64::from(u32::MAX) >> bits
    } else {
        blocks + ((blocks - 1) >> bits)
    };
    if entries > MAX_PAYLOAD_BLOCKS {
        return Err(("BAT entries", entries));
    }
    Ok((blocks, entries))
}

/// What `vhdx_check_bat_entries` needs besides the entries.
pub struct CheckContext<'a> {
    pub block_size: u64,
    pub chunk_ratio: u64,
    /// The virtual size in whole sectors, in bytes (`bs->total_sectors * BDRV_SECTOR_SIZE`).
    pub disk_bytes: u64,
    /// The file length as `bdrv_getlength` reports it.
    pub file_length: u64,
    pub regions: &'a Regions,
}

/// The findings of `vhdx_check_bat_entries`: how many, and their messages (the first
/// [`MAX_CHECK_MESSAGES`]).
#[derive(Debug, Default, Clone)]
pub struct Findings {
    pub count: u64,
    pub messages: Vec<String>,
}

impl Findings {
    fn add(&mut self, m: String) {
        self.count += 1;
        if self.messages.len() < MAX_CHECK_MESSAGES {
            self.messages.push(m);
        }
    }
}

/// The opened table: the entries guest reads can reach (those inside the file; the rest are
/// zero), and counts of the payload blocks' states.
#[derive(Debug, Clone)]
pub struct Bat {
    kept: Vec<u64>,
    /// Entries qemu expects (payload and sector bitmap).
    pub entries: u64,
    /// Payload blocks of the virtual disk.
    pub payload_blocks: u64,
    /// File offset of the table.
    pub offset: u64,
    /// Payload blocks per sector bitmap entry.
    pub chunk_ratio: u64,
    /// How many payload blocks are in each state, indexed by the state's value.
    pub state_counts: [u64; 8],
}

impl Bat {
    /// Reads the table at `offset` and runs qemu's entry check on every entry. With
    /// `stop_at_first`, as on a normal open, the first finding is returned as the error; otherwise
    /// (`qemu-img check`, which opens without the check) all are counted in the findings.
    pub fn load(
        storage: &dyn Storage,
        offset: u64,
        shape: (u64, u64),
        ctx: &CheckContext<'_>,
        stop_at_first: bool,
    ) -> Result<(Bat, Findings)> {
        let (payload_blocks, entries) = shape;
        let path = storage.path();
        let len = storage.len()?;
        // Entries at or past the end of the file read as zeros: NOT_PRESENT, skipped by the check.
        let in_file = len
            .saturating_sub(offset)
            .div_ceil(BAT_ENTRY_SIZE)
            .min(entries);
        let reachable = if payload_blocks == 0 {
            0
        } else {
            payload_blocks + (payload_blocks - 1) / ctx.chunk_ratio
        };
        let keep = reachable.min(in_file);
        // Bounded by the file's length: `keep` entries lie inside it.
        let mut kept = Vec::with_capacity(usize::try_from(keep).unwrap_or(0));
        let mut findings = Findings::default();
        let mut state_counts = [0u64; 8];
        let mut payblocks = ctx.chunk_ratio;
        let mut buf = vec![0u8; BAT_READ_CHUNK_ENTRIES * BAT_ENTRY_SIZE as usize];
        let mut i = 0u64;
        while i < in_file {
            let n = (in_file - i).min(BAT_READ_CHUNK_ENTRIES as u64) as usize;
            let chunk = &mut buf[..n * BAT_ENTRY_SIZE as usize];
            pread(storage, chunk, offset + i * BAT_ENTRY_SIZE)?;
            for c in chunk.chunks_exact(BAT_ENTRY_SIZE as usize) {
                let e = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                if i < keep {
                    kept.push(e);
                }
                if i < reachable && (i + 1) % (ctx.chunk_ratio + 1) != 0 {
                    state_counts[(e & BAT_STATE_MASK) as usize] += 1;
                }
                if BlockState::of(e) == BlockState::FullyPresent {
                    check_entry(i, e, ctx, &mut payblocks, &mut findings);
                    if stop_at_first && findings.count > 0 {
                        let m = findings.messages.swap_remove(0);
                        return Err(Error::corrupt(path, Some(offset + i * BAT_ENTRY_SIZE), m));
                    }
                }
                i += 1;
            }
        }
        // Payload entries past the end of the file are zeros: NOT_PRESENT.
        let counted: u64 = state_counts.iter().sum();
        let payload_total = reachable - reachable / (ctx.chunk_ratio + 1);
        state_counts[0] += payload_total - counted;
        let bat = Bat {
            kept,
            entries,
            payload_blocks,
            offset,
            chunk_ratio: ctx.chunk_ratio,
            state_counts,
        };
        Ok((bat, findings))
    }

    /// The entry of payload block `block` (the sector bitmap entries interleaved after every
    /// `chunk_ratio` blocks skipped, as `vhdx_block_translate` does); zero past the kept entries.
    pub fn payload_entry(&self, block: u64) -> u64 {
        let idx = block + block / self.chunk_ratio;
        usize::try_from(idx)
            .ok()
            .and_then(|i| self.kept.get(i))
            .copied()
            .unwrap_or(0)
    }
}

/// `vhdx_check_bat_entries` for one FULLY_PRESENT entry `i` (payload or sector bitmap: qemu tests
/// both, and counts only FULLY_PRESENT entries towards its payload/bitmap alternation).
fn check_entry(i: u64, e: u64, ctx: &CheckContext<'_>, payblocks: &mut u64, f: &mut Findings) {
    let offset = entry_offset(e);
    let bs = ctx.block_size;
    // The last block may lie partly in the file. qemu computes this with the BAT index (bitmap
    // entries included) in uint64_t arithmetic, which wraps past the end of the disk.
    let block_length = bs.min(ctx.disk_bytes.wrapping_sub(i * bs));
    if offset > i64::MAX as u64 - bs {
        f.add(format!("VHDX BAT entry {i} offset overflow."));
    }
    if offset >= ctx.file_length {
        f.add(format!(
            "VHDX BAT entry {i} start offset {offset} points after end of file ({}). Image has \
             probably been truncated.",
            ctx.file_length
        ));
    } else if offset + block_length > ctx.file_length {
        f.add(format!(
            "VHDX BAT entry {i} end offset {} points after end of file ({}). Image has probably \
             been truncated.",
            offset + block_length - 1,
            ctx.file_length
        ));
    }
    if *payblocks != 0 {
        *payblocks -= 1;
        if let Some(m) = ctx.regions.overlap(offset, bs) {
            f.add(m);
        }
    } else {
        *payblocks = ctx.chunk_ratio;
    }
}

#[cfg(test)]
#[path = "bat_tests.rs"]
mod tests;
