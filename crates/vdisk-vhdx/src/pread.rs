//! Reads from the image file as QEMU's `bdrv_pread` does them for the vhdx driver: past the end of
//! the file they return zeros (block/io.c `bdrv_aligned_preadv` pads them), and a request reaching
//! beyond `BDRV_MAX_LENGTH` fails (`bdrv_check_qiov_request`: EIO) instead of being attempted.

use crate::limits::MAX_FILE_OFFSET;
use vdisk_core::{Error, Result, Storage};

/// Fills `buf` from `offset`, with zeros for whatever lies past the end of the file.
pub fn pread(storage: &dyn Storage, buf: &mut [u8], offset: u64) -> Result<()> {
    let end = offset.checked_add(buf.len() as u64);
    if end.is_none_or(|e| e > MAX_FILE_OFFSET) {
        return Err(Error::io(
            storage.path(),
            offset,
            std::io::Error::other(format!(
                "read of {} bytes exceeds the largest offset qemu reads ({MAX_FILE_OFFSET})",
                buf.len()
            )),
        ));
    }
    storage.read_zero_padded(buf, offset)
}
