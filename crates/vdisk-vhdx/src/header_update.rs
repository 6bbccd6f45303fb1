//! Writing one header as QEMU 10's `vhdx_write_header` does with `read` set (block/vhdx.c): the
//! header's 4 KiB block is read first so that its reserved bytes are kept, its first 80 bytes
//! (`sizeof(VHDXHeader)`) are replaced, the CRC-32C is computed over the whole 4 KiB block (spec
//! 2.2.2), and only those 80 bytes are written (one sector), then made durable when asked
//! (`bdrv_pwrite_sync`). Used by the in-place writer's and the log replay's header updates
//! (`vhdx_update_header`, spec 2.2.2.1).

use crate::crc32c::crc32c;
use crate::guid::Guid;
use crate::limits::{HEADER1_OFFSET, HEADER2_OFFSET, HEADER_FIELDS_SIZE, HEADER_SIZE};
use vdisk_core::{Result, Storage};

/// The 80 bytes of a header's fields.
pub(crate) type Fields = [u8; HEADER_FIELDS_SIZE];

/// `fields` with a new sequence number, FileWriteGuid, DataWriteGuid and, when given, log GUID
/// (what `vhdx_update_header` changes in the header it writes).
pub(crate) fn updated(
    fields: &Fields,
    sequence: u64,
    file_write: Guid,
    data_write: Guid,
    log: Option<Guid>,
) -> Fields {
    let mut f = *fields;
    f[8..16].copy_from_slice(&sequence.to_le_bytes());
    f[16..32].copy_from_slice(&file_write.0);
    f[32..48].copy_from_slice(&data_write.0);
    if let Some(g) = log {
        f[48..64].copy_from_slice(&g.0);
    }
    f
}

/// Writes `fields` as header `slot` (0: the one at 64 KiB, 1: at 128 KiB; anything else is taken
/// as 1), sealed with its CRC-32C, and syncs when `durable`.
pub(crate) fn write_header(
    storage: &dyn Storage,
    slot: usize,
    fields: &Fields,
    durable: bool,
) -> Result<()> {
    let at = if slot == 0 {
        HEADER1_OFFSET
    } else {
        HEADER2_OFFSET
    };
    let mut block = vec![0u8; HEADER_SIZE];
    storage.read_zero_padded(&mut block, at)?;
    block[..HEADER_FIELDS_SIZE].copy_from_slice(fields);
    block[4..8].fill(0);
    let sum = crc32c(&block);
    block[4..8].copy_from_slice(&sum.to_le_bytes());
    storage.write_at(&block[..HEADER_FIELDS_SIZE], at)?;
    if durable {
        storage.sync()?;
    }
    Ok(())
}
