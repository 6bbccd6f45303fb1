//! Named limits and fixed offsets of the VHDX format, each with its source: the MS-VHDX
//! specification (sections 2.1 to 2.6) and the constants and checks of QEMU's block/vhdx.h,
//! block/vhdx.c (`vhdx_open`, `vhdx_parse_header`, `vhdx_open_region_tables`, `vhdx_parse_metadata`,
//! `vhdx_calc_bat_entries`) and block/vhdx-log.c (`vhdx_parse_log`).

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The file type identifier at offset 0 (spec 2.2.1; `vhdx_open` compares 8 bytes).
pub const FILE_SIGNATURE: &[u8; 8] = b"vhdxfile";

/// Each structure of the 1 MiB header section sits in its own 64 KiB block (vhdx.h
/// `VHDX_HEADER_BLOCK_SIZE`); the region table's checksum covers one whole block.
pub const HEADER_BLOCK_SIZE: u64 = 64 * KIB;

/// The two headers (spec 2.2.2; vhdx.h `VHDX_HEADER1_OFFSET`, `VHDX_HEADER2_OFFSET`).
pub const HEADER1_OFFSET: u64 = HEADER_BLOCK_SIZE;
pub const HEADER2_OFFSET: u64 = 2 * HEADER_BLOCK_SIZE;

/// The region table qemu reads (spec 2.2.3; `VHDX_REGION_TABLE_OFFSET`). The spec's second copy at
/// 256 KiB is never read by qemu: a damaged first table fails the open.
pub const REGION_TABLE_OFFSET: u64 = 3 * HEADER_BLOCK_SIZE;

/// Bytes a header's CRC-32C covers (spec 2.2.2: "the entire 4 KB structure"; `VHDX_HEADER_SIZE`).
pub const HEADER_SIZE: usize = 4096;

/// Bytes of the header's fields (`sizeof(VHDXHeader)`): qemu compares this much of two headers
/// with equal sequence numbers.
pub const HEADER_FIELDS_SIZE: usize = 80;

/// Signatures of the header, region table, metadata table and log entries.
pub const HEADER_SIGNATURE: &[u8; 4] = b"head";
pub const REGION_SIGNATURE: &[u8; 4] = b"regi";
pub const METADATA_SIGNATURE: &[u8; 8] = b"metadata";
pub const LOG_SIGNATURE: &[u8; 4] = b"loge";
pub const LOG_DESC_SIGNATURE: &[u8; 4] = b"desc";
pub const LOG_ZERO_SIGNATURE: &[u8; 4] = b"zero";

/// The only header version qemu accepts (`vhdx_parse_header`: `version == 1`).
pub const HEADER_VERSION: u16 = 1;

/// Bytes the region table's CRC-32C covers, and the size qemu reads (spec 2.2.3: 64 KiB).
pub const REGION_TABLE_SIZE: usize = 64 * 1024;

/// Most region table entries (spec 2.2.3.1: "must be less than or equal to 2047";
/// `vhdx_open_region_tables` fails with EINVAL above it).
pub const MAX_REGION_ENTRIES: u32 = 2047;

/// Bytes of the region table header and of each entry.
pub const REGION_HEADER_SIZE: usize = 16;
pub const REGION_ENTRY_SIZE: usize = 32;

/// A region the reader must understand to open the file (spec 2.2.3.2 `Required`;
/// `VHDX_REGION_ENTRY_REQUIRED`).
pub const REGION_REQUIRED: u32 = 1;

/// Size of the metadata table that qemu reads whole (vhdx.h `VHDX_METADATA_TABLE_MAX_SIZE`:
/// a 32-byte header and at most 2047 entries of 32 bytes).
pub const METADATA_TABLE_SIZE: usize = 32 * 2048;

/// Bytes of the metadata table header and of each entry.
pub const METADATA_ENTRY_SIZE: usize = 32;

/// Most metadata entries (spec 2.6.1.1: at most 2047; `vhdx_parse_metadata` fails with EINVAL
/// when the entries would not fit the 64 KiB table).
pub const MAX_METADATA_ENTRIES: u64 = 2047;

/// A metadata item the reader must understand (spec 2.6.1.2 `IsRequired`;
/// `VHDX_META_FLAGS_IS_REQUIRED`): unknown ones make qemu fail with ENOTSUP.
pub const METADATA_REQUIRED: u32 = 4;

/// File Parameters flags (spec 2.6.2.1; `VHDX_PARAMS_LEAVE_BLOCKS_ALLOCED`, `_HAS_PARENT`).
pub const PARAMS_LEAVE_BLOCKS_ALLOCATED: u32 = 1;
pub const PARAMS_HAS_PARENT: u32 = 2;

/// Block size range (spec 2.6.2.1: a power of two from 1 MiB to 256 MiB; vhdx.h
/// `VHDX_BLOCK_SIZE_MIN`/`_MAX`, checked in `vhdx_parse_metadata`).
pub const MIN_BLOCK_SIZE: u32 = MIB as u32;
pub const MAX_BLOCK_SIZE: u32 = 256 * MIB as u32;

/// The only logical sector size qemu reads (`vhdx_parse_metadata`: "Currently we only support
/// 512", ENOTSUP otherwise; the spec also allows 4096).
pub const LOGICAL_SECTOR_SIZE: u32 = 512;

/// Sectors described by one sector bitmap block (spec 2.5: the chunk ratio is
/// 2^23 * logical sector size / block size; vhdx.h `VHDX_MAX_SECTORS_PER_BLOCK`).
pub const SECTORS_PER_CHUNK: u64 = 1 << 23;

/// The spec's largest virtual disk (2.6.2.2: 64 TiB; vhdx.h `VHDX_MAX_IMAGE_SIZE`). qemu only
/// enforces it when creating: it opens larger images whose BAT region is big enough. Shown by
/// `info`, not enforced.
pub const SPEC_MAX_VIRTUAL_SIZE: u64 = 64 << 40;

/// Most payload blocks: qemu counts them in a `uint32_t` (`vhdx_calc_bat_entries`). A virtual size
/// needing more would wrap qemu's count and make it read past its table, so vdisk refuses it.
pub const MAX_PAYLOAD_BLOCKS: u64 = u32::MAX as u64;

/// Bytes of a BAT entry (spec 2.5.1: 64 bits).
pub const BAT_ENTRY_SIZE: u64 = 8;

/// The state bits and the file offset bits of a BAT entry (spec 2.5.1: bits 0-2 state, bits 20-63
/// the offset in MiB; vhdx.h `VHDX_BAT_STATE_BIT_MASK`, `VHDX_BAT_FILE_OFF_MASK`).
pub const BAT_STATE_MASK: u64 = 0x7;
pub const BAT_OFFSET_MASK: u64 = 0xFFFF_FFFF_FFF0_0000;

/// How many BAT entries vdisk reads from the file at once while checking them.
pub const BAT_READ_CHUNK_ENTRIES: usize = 128 * 1024;

/// The largest offset + length a qemu read may reach (block-common.h `BDRV_MAX_LENGTH`: `INT64_MAX`
/// aligned down to 1 GiB); `bdrv_check_qiov_request` fails a read beyond it with EIO. Below it, reads
/// past the end of the file return zeros.
pub const MAX_FILE_OFFSET: u64 = (i64::MAX as u64) & !((1 << 30) - 1);

/// The log's offset and length unit (spec 2.3: multiples of 1 MiB; vhdx.h `VHDX_LOG_MIN_SIZE`):
/// `vhdx_parse_log` fails with EINVAL on a log offset below or not a multiple of it, and on a
/// non-empty log whose length is not a multiple of it.
pub const LOG_ALIGN: u64 = MIB;

/// Log sectors (spec 2.3.1: 4 KiB; `VHDX_LOG_SECTOR_SIZE`), log entry header and descriptor sizes.
pub const LOG_SECTOR_SIZE: u64 = 4096;
pub const LOG_HEADER_SIZE: usize = 64;
pub const LOG_DESC_SIZE: usize = 32;

/// How many times the log's length the log search may read before vdisk gives up. qemu's
/// `vhdx_log_search` reads each sector about once when it finds nothing and at most about twice
/// with valid entries; a crafted log can make it read far more (or loop forever), which vdisk
/// refuses instead of spending the time.
pub const LOG_SEARCH_BUDGET_FACTOR: u64 = 4;

/// Largest file offset qemu's lengths are rounded to: `bdrv_getlength` counts whole 512-byte sectors.
pub fn qemu_file_length(len: u64) -> u64 {
    len.div_ceil(512).saturating_mul(512)
}

/// Most finding lines `check` keeps (it counts every finding; a hostile BAT could otherwise produce
/// gigabytes of text).
pub const MAX_CHECK_MESSAGES: usize = 10_000;

/// Most descriptors of a log entry qemu can read: those that share the first 4 KiB sector with
/// the entry header (4096 / 32 - 2). `vhdx_log_read_sectors` (block/vhdx-log.c) never advances its
/// buffer, so `vhdx_log_read_desc` reads every descriptor sector into the buffer's first 4 KiB and
/// then checks descriptors 126 and on in memory it never filled: an entry with more fails the open
/// (EINVAL), in the log search as in the replay, whatever the log holds. vdisk refuses it the same
/// way rather than replay what qemu cannot.
pub const LOG_MAX_DESCRIPTORS: u32 = 126;

/// Offsets of the log entry header's fields (spec 2.3.1.1; `VHDXLogEntryHeader`).
pub const LOG_ENTRY_FLUSHED_FILE_OFFSET: usize = 48;
pub const LOG_ENTRY_LAST_FILE_OFFSET: usize = 56;

/// Most bytes a log replay may add to the file: its descriptors' writes and the entries'
/// LastFileOffset together. qemu sets no limit (a LastFileOffset near 2^64 even wraps its rounding to
/// 0 and makes it truncate the file to nothing); a replay that would grow the file more is refused
/// before anything is written. A real log grows the file by a few payload blocks at most.
pub const REPLAY_MAX_GROWTH: u64 = 64 << 30;

/// Most zero bytes a log replay's zero descriptors may write in all (qemu writes each as real zeros,
/// 4 KiB at a time, with no limit); a replay asking for more is refused before anything is written.
pub const REPLAY_MAX_ZERO_BYTES: u64 = 16 << 30;
