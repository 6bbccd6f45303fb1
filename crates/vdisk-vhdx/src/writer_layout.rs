//! Where a new VHDX image puts its structures and what they hold, as QEMU 10's block/vhdx.c
//! creates them: `vhdx_co_create_opts` (silent rounding of the options), `vhdx_co_create`
//! (validation, default block size), `vhdx_create_new_headers`, `vhdx_create_new_region_table`,
//! `vhdx_create_bat` (the BAT's initial entries and the data start), `vhdx_create_new_metadata`,
//! and `vhdx_allocate_block` (where a payload block goes on its first write). Pure computation:
//! no I/O.

use crate::bat;
use crate::crc32c::crc32c;
use crate::guid::{self, Guid};
use crate::limits::{
    BAT_ENTRY_SIZE, FILE_SIGNATURE, HEADER_SIGNATURE, HEADER_SIZE, HEADER_VERSION,
    LOGICAL_SECTOR_SIZE, MAX_BLOCK_SIZE, METADATA_SIGNATURE, METADATA_TABLE_SIZE,
    PARAMS_LEAVE_BLOCKS_ALLOCATED, REGION_SIGNATURE, REGION_TABLE_SIZE, SECTORS_PER_CHUNK,
    SPEC_MAX_VIRTUAL_SIZE,
};
use vdisk_core::{Error, Result};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// The log's default length (vhdx.h `DEFAULT_LOG_SIZE`).
pub const DEFAULT_LOG_SIZE: u64 = MIB;

/// Where the log starts: right after the 1 MiB header section (`VHDX_HEADER_SECTION_END`).
pub const LOG_OFFSET: u64 = MIB;

/// The second copy of the region table (`VHDX_REGION_TABLE2_OFFSET`), written but never read.
pub const REGION_TABLE2_OFFSET: u64 = 256 * 1024;

/// The metadata region's length (`vhdx_create_new_region_table`: "min size, and more than enough").
pub const METADATA_REGION_LENGTH: u32 = MIB as u32;

/// The space `vhdx_create_bat` leaves between the metadata region's start and the first payload
/// block ("a 4 MB buffer for future expansion", after the 1 MiB metadata region).
pub const DATA_GAP: u64 = 5 * MIB;

/// Bytes of the five metadata items, stored right after the 64 KiB table
/// (`VHDX_METADATA_ENTRY_BUFFER_SIZE`: 8 + 8 + 16 + 4 + 4).
pub const METADATA_ITEMS_SIZE: usize = 40;

/// BAT entry states qemu creates (vhdx.h `PAYLOAD_BLOCK_*`).
pub const STATE_NOT_PRESENT: u64 = 0;
pub const STATE_ZERO: u64 = 2;
pub const STATE_FULLY_PRESENT: u64 = 6;

/// The options of `qemu-img create -f vhdx` after `vhdx_co_create_opts` rounded them and
/// `vhdx_co_create` validated them and filled in defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateParams {
    /// Virtual size, rounded up to whole 512-byte sectors.
    pub size: u64,
    /// Log length: a multiple of 1 MiB below 4 GiB.
    pub log_size: u32,
    /// Payload block size: a power of two from 1 MiB to 256 MiB.
    pub block_size: u32,
    /// `subformat=fixed`.
    pub fixed: bool,
    /// `block_state_zero` (on by default): unwritten blocks are ZERO rather than NOT_PRESENT
    /// (dynamic) or FULLY_PRESENT (fixed).
    pub zero_blocks: bool,
}

/// The block size `vhdx_co_create` picks when none is given ("mainly designed to keep the BAT
/// size reasonable to load into RAM").
pub fn default_block_size(size: u64) -> u32 {
    let mib = if size > 32 * TIB {
        64
    } else if size > 100 * GIB {
        32
    } else if size > GIB {
        16
    } else {
        8
    };
    mib * MIB as u32
}

/// `ROUND_UP(v, MiB)` in `uint64_t`, wrapping to 0 near 2^64 as qemu's macro does.
fn round_up_mib_wrapping(v: u64) -> u64 {
    v.wrapping_add(MIB - 1) & !(MIB - 1)
}

impl CreateParams {
    /// Rounds and validates as `vhdx_co_create_opts` then `vhdx_co_create` do, with qemu's
    /// messages. `block_size` of `None` or 0 means automatic; `log_size` of `None` the default.
    pub fn new(
        size: u64,
        log_size: Option<u64>,
        block_size: Option<u64>,
        fixed: bool,
        zero_blocks: bool,
    ) -> Result<CreateParams> {
        // vhdx_co_create_opts: "Silently round up sizes".
        let size = size.checked_next_multiple_of(512).unwrap_or(u64::MAX);
        let log_size = log_size.map(round_up_mib_wrapping);
        let block_size = block_size
            .map(round_up_mib_wrapping)
            .filter(|b| *b != 0)
            .map(|b| b.min(u64::from(MAX_BLOCK_SIZE)));
        // vhdx_co_create.
        if size > SPEC_MAX_VIRTUAL_SIZE {
            return Err(Error::invalid("Image size too large; max of 64TB"));
        }
        let log_size = match log_size {
            None => DEFAULT_LOG_SIZE,
            Some(l) if l > u64::from(u32::MAX) => {
                return Err(Error::invalid("Log size must be smaller than 4 GB"))
            }
            Some(l) => l,
        };
        if log_size < MIB || log_size % MIB != 0 {
            return Err(Error::invalid("Log size must be a multiple of 1 MB"));
        }
        let block_size = block_size.unwrap_or_else(|| u64::from(default_block_size(size)));
        if block_size < MIB || block_size % MIB != 0 {
            return Err(Error::invalid("Block size must be a multiple of 1 MB"));
        }
        if !block_size.is_power_of_two() {
            return Err(Error::invalid("Block size must be a power of two"));
        }
        if block_size > u64::from(MAX_BLOCK_SIZE) {
            return Err(Error::invalid(format!(
                "Block size must not exceed {MAX_BLOCK_SIZE}"
            )));
        }
        // Both checked to fit above.
        let too_big = || Error::invalid("Log size must be smaller than 4 GB");
        Ok(CreateParams {
            size,
            log_size: u32::try_from(log_size).map_err(|_| too_big())?,
            block_size: u32::try_from(block_size).map_err(|_| too_big())?,
            fixed,
            zero_blocks,
        })
    }
}

/// The file layout `vhdx_create_new_region_table` and `vhdx_create_bat` compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub params: CreateParams,
    /// Payload blocks per sector bitmap block, and its log2.
    pub chunk_ratio: u64,
    pub chunk_bits: u32,
    /// Payload blocks covering the virtual size, and BAT entries (`vhdx_calc_bat_entries`).
    pub payload_blocks: u64,
    pub bat_entries: u64,
    /// The BAT region: after the log, whole MiBs.
    pub bat_offset: u64,
    pub bat_length: u32,
    /// The metadata region: right after the BAT, 1 MiB.
    pub metadata_offset: u64,
    /// `data_file_offset`: where payload data starts (the file's length after a dynamic create).
    pub data_offset: u64,
}

impl Layout {
    /// The layout of an image with `params`.
    pub fn new(params: CreateParams) -> Result<Layout> {
        let bs = u64::from(params.block_size);
        let chunk_ratio = SECTORS_PER_CHUNK * u64::from(LOGICAL_SECTOR_SIZE) / bs;
        let (payload_blocks, bat_entries) = bat::shape(params.size, params.block_size, chunk_ratio)
            .map_err(|(what, n)| Error::invalid(format!("VHDX writer: {n} {what} is too many")))?;
        let overflow = || Error::invalid("VHDX writer: the layout overflows");
        let bat_bytes = bat_entries
            .checked_mul(BAT_ENTRY_SIZE)
            .and_then(|b| b.checked_next_multiple_of(MIB))
            .ok_or_else(overflow)?;
        let bat_length = u32::try_from(bat_bytes).map_err(|_| overflow())?;
        let bat_offset = (LOG_OFFSET + u64::from(params.log_size)).next_multiple_of(MIB);
        let metadata_offset = bat_offset + bat_bytes;
        let data_offset = metadata_offset + DATA_GAP;
        Ok(Layout {
            params,
            chunk_ratio,
            chunk_bits: chunk_ratio.trailing_zeros(),
            payload_blocks,
            bat_entries,
            bat_offset,
            bat_length,
            metadata_offset,
            data_offset,
        })
    }

    /// The block size in bytes.
    pub fn block_size(&self) -> u64 {
        u64::from(self.params.block_size)
    }

    /// The BAT index of payload block `block`: sector bitmap entries are interleaved after every
    /// `chunk_ratio` payload entries (`vhdx_block_translate`).
    pub fn bat_index(&self, block: u64) -> u64 {
        block + (block >> self.chunk_bits)
    }

    /// Whether payload data goes straight to its place in a preallocated data area: a fixed image
    /// made with `block_state_zero=off`, whose every entry is FULLY_PRESENT from the start.
    pub fn in_place(&self) -> bool {
        self.params.fixed && !self.params.zero_blocks
    }

    /// Whether `vhdx_create_bat` writes the BAT at all: for a dynamic image with
    /// `block_state_zero=off` it leaves the all-zero (NOT_PRESENT) table to the sparse file.
    pub fn writes_bat(&self) -> bool {
        self.params.fixed || self.params.zero_blocks
    }

    /// The file's length when `vhdx_co_create` is done: the data start, plus the data area of a
    /// fixed image (not rounded to blocks).
    pub fn created_length(&self) -> Result<u64> {
        let extra = if self.params.fixed {
            self.params.size
        } else {
            0
        };
        self.data_offset
            .checked_add(extra)
            .ok_or_else(|| Error::invalid("VHDX writer: the file length overflows"))
    }

    /// The entry of payload block `block` that nothing was written to.
    pub fn unwritten_entry(&self, block: u64) -> u64 {
        if self.params.zero_blocks {
            STATE_ZERO
        } else if self.params.fixed {
            // Already a multiple of 1 MiB (`ROUND_UP(data_file_offset + sector_num * 512, MiB)`).
            (self.data_offset + block * self.block_size()) | STATE_FULLY_PRESENT
        } else {
            STATE_NOT_PRESENT
        }
    }
}

/// Stores `v` little endian at `at` of `b`.
fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// Stores the CRC-32C of `b` (with the field zero) at `field`.
fn seal(b: &mut [u8], field: usize) {
    put(b, field, &[0; 4]);
    let sum = crc32c(b);
    put(b, field, &sum.to_le_bytes());
}

/// The start of the file type identifier (spec 2.2.1): the signature, then the creator in UTF-16
/// without a terminator (as `vhdx_co_create` writes "QEMU v" QEMU_VERSION).
pub fn file_identifier(creator: &str) -> Vec<u8> {
    let mut b = FILE_SIGNATURE.to_vec();
    for u in creator.encode_utf16().take(256) {
        b.extend_from_slice(&u.to_le_bytes());
    }
    b
}

/// One sealed 4 KiB header (spec 2.2.2) as `vhdx_create_new_headers` fills it: an empty log (GUID
/// zero) of `log_length` bytes at 1 MiB, log version 0, version 1.
pub fn header_block(
    sequence_number: u64,
    file_write_guid: Guid,
    data_write_guid: Guid,
    log_length: u32,
) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_SIZE];
    put(&mut b, 0, HEADER_SIGNATURE);
    put(&mut b, 8, &sequence_number.to_le_bytes());
    put(&mut b, 16, &file_write_guid.0);
    put(&mut b, 32, &data_write_guid.0);
    put(&mut b, 66, &HEADER_VERSION.to_le_bytes());
    put(&mut b, 68, &log_length.to_le_bytes());
    put(&mut b, 72, &LOG_OFFSET.to_le_bytes());
    seal(&mut b, 4);
    b
}

/// The sealed 64 KiB region table (spec 2.2.3) of `vhdx_create_new_region_table`: the BAT then
/// the metadata region, neither flagged required (qemu leaves the flags zero).
pub fn region_table(l: &Layout) -> Vec<u8> {
    let mut b = vec![0u8; REGION_TABLE_SIZE];
    put(&mut b, 0, REGION_SIGNATURE);
    put(&mut b, 8, &2u32.to_le_bytes());
    let entries = [
        (guid::BAT, l.bat_offset, l.bat_length),
        (guid::METADATA, l.metadata_offset, METADATA_REGION_LENGTH),
    ];
    for (i, (g, offset, length)) in entries.iter().enumerate() {
        let at = 16 + 32 * i;
        put(&mut b, at, &g.0);
        put(&mut b, at + 16, &offset.to_le_bytes());
        put(&mut b, at + 24, &length.to_le_bytes());
    }
    seal(&mut b, 4);
    b
}

/// The 64 KiB metadata table (spec 2.6.1) of `vhdx_create_new_metadata`: five entries whose items
/// follow one another from 64 KiB into the region. File Parameters is required; the others are
/// required and virtual-disk items.
pub fn metadata_table() -> Vec<u8> {
    let mut b = vec![0u8; METADATA_TABLE_SIZE];
    put(&mut b, 0, METADATA_SIGNATURE);
    put(&mut b, 10, &5u16.to_le_bytes());
    let items: [(Guid, u32, u32); 5] = [
        (guid::FILE_PARAMETERS, 8, 4),
        (guid::VIRTUAL_DISK_SIZE, 8, 6),
        (guid::PAGE83, 16, 6),
        (guid::LOGICAL_SECTOR_SIZE, 4, 6),
        (guid::PHYSICAL_SECTOR_SIZE, 4, 6),
    ];
    let mut offset = 64 * 1024u32;
    for (i, (g, length, flags)) in items.iter().enumerate() {
        let at = 32 * (i + 1);
        put(&mut b, at, &g.0);
        put(&mut b, at + 16, &offset.to_le_bytes());
        put(&mut b, at + 20, &length.to_le_bytes());
        put(&mut b, at + 24, &flags.to_le_bytes());
        offset += length;
    }
    b
}

/// The five metadata items (spec 2.6.2): block size and flags (LeaveBlocksAllocated for a fixed
/// image), virtual size, the page 83 identity, logical and physical sector size (both 512).
pub fn metadata_items(l: &Layout, page83: Guid) -> [u8; METADATA_ITEMS_SIZE] {
    let mut b = [0u8; METADATA_ITEMS_SIZE];
    let flags = if l.params.fixed {
        PARAMS_LEAVE_BLOCKS_ALLOCATED
    } else {
        0
    };
    put(&mut b, 0, &l.params.block_size.to_le_bytes());
    put(&mut b, 4, &flags.to_le_bytes());
    put(&mut b, 8, &l.params.size.to_le_bytes());
    put(&mut b, 16, &page83.0);
    put(&mut b, 32, &LOGICAL_SECTOR_SIZE.to_le_bytes());
    put(&mut b, 36, &LOGICAL_SECTOR_SIZE.to_le_bytes());
    b
}
