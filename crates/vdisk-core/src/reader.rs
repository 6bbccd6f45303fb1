//! The image-reading trait every format implements: virtual size, thread-safe positional reads, and a
//! block-status query for one layer (the image itself; [`crate::Chain`] adds backing images).

use crate::error::{Error, Result};
use crate::extent::Extent;
use crate::info::{CheckReport, ImageInfo};
use crate::storage::Storage;
use std::path::Path;
use std::sync::Arc;

/// One opened image layer.
///
/// Implementations are `Send + Sync`: `read_at` and `block_status` may be called from many threads at
/// once. A layer on its own reads unallocated ranges as zeros; wrap it in a [`crate::Chain`] to read
/// them from its backing image instead.
pub trait ImageReader: Send + Sync {
    /// The format name as qemu-img spells it: `raw`, `qcow2`, `vmdk`, `vdi`, ...
    fn format_name(&self) -> &'static str;

    /// Virtual size in bytes.
    fn virtual_size(&self) -> u64;

    /// Reads exactly `buf.len()` guest bytes at `offset`. The range must lie within the virtual size.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// The status of the guest range starting at `offset`, in this layer only: one extent that starts at
    /// `offset` and is at most `max_len` bytes long (never 0 when `max_len > 0` and `offset` is inside
    /// the disk). Callers loop to cover a range. The extent's `depth` is 0.
    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent>;

    /// The status of the range as a copy (`convert`, `compare`) may use it: like
    /// [`ImageReader::block_status`], but where that reports ranges as data only because qemu-img
    /// does (QEMU has no block status for the format, so `qemu-img map` shows everything as data),
    /// a reader may say here what it knows reads as zeros, so that copies skip reading it. It must
    /// never call zero what reads otherwise. By default, `block_status`.
    fn copy_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        self.block_status(offset, max_len)
    }

    /// The host file named `file` in an extent's [`crate::HostLocation`], as this image (or, for a
    /// chain, any of its layers) opened it: the source of offloaded copies (`convert -C`). `None`
    /// when the reader does not hand out its files; the data is then read with `read_at`.
    fn host_storage(&self, file: &Path) -> Option<Arc<dyn Storage>> {
        let _ = file;
        None
    }

    /// What `info` shows about this image (without the backing chain).
    fn info(&self) -> Result<ImageInfo>;

    /// Whether the image can be read at all: what qemu checks when it opens an image for I/O
    /// (`convert`, `map`, `compare`) but not for `info` (an external data file that could not be
    /// opened, the raw data file bit without a data file, encryption). vdisk opens such an image,
    /// so that `info` shows it, and its reads fail; commands call this after opening to fail
    /// where qemu-img fails, with its exit code. A chain answers for all its layers.
    fn ready_for_io(&self) -> Result<()> {
        Ok(())
    }

    /// Checks the image's metadata (`qemu-img check`). Formats without a check return
    /// [`Error::Unsupported`], which the CLI reports with exit code 63 as qemu-img does.
    fn check(&self) -> Result<CheckReport> {
        Err(Error::unsupported(
            std::path::Path::new(self.format_name()),
            "check: this image format does not support checks",
        ))
    }
}

/// Checks that `offset..offset+len` lies within `size`, with an error naming the request.
pub fn check_range(size: u64, offset: u64, len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::invalid(format!(
            "read of {len} bytes at offset {offset} is outside the virtual disk of {size} bytes"
        ))),
    }
}

/// The length a block-status query at `offset` for up to `max_len` bytes may answer on a disk of
/// `size` bytes; an error for a query that starts outside the disk or asks for nothing.
pub fn status_len(size: u64, offset: u64, max_len: u64) -> Result<u64> {
    if offset >= size || max_len == 0 {
        return Err(Error::invalid(format!(
            "block status at {offset} outside the virtual disk of {size} bytes"
        )));
    }
    Ok(max_len.min(size - offset))
}

/// `reader.block_status(pos, max_len)`, checked to start at `pos` and to be non-empty (a reader that
/// breaks this would make a caller's loop stall or skip bytes).
pub fn checked_block_status(reader: &dyn ImageReader, pos: u64, max_len: u64) -> Result<Extent> {
    let e = reader.block_status(pos, max_len)?;
    if e.length == 0 || e.offset != pos {
        return Err(Error::Other(format!(
            "{} block status returned an empty or misplaced extent at {pos}",
            reader.format_name()
        )));
    }
    Ok(e)
}

/// `reader.copy_status(pos, max_len)`, checked as [`checked_block_status`] checks block status.
pub fn checked_copy_status(reader: &dyn ImageReader, pos: u64, max_len: u64) -> Result<Extent> {
    let e = reader.copy_status(pos, max_len)?;
    if e.length == 0 || e.offset != pos {
        return Err(Error::Other(format!(
            "{} copy status returned an empty or misplaced extent at {pos}",
            reader.format_name()
        )));
    }
    Ok(e)
}

/// Calls `f` for each extent of `reader` covering `offset..offset+len`, merging neighbours that
/// [`Extent::can_merge`] allows, the way `qemu-img map` reports them.
pub fn for_each_extent(
    reader: &dyn ImageReader,
    offset: u64,
    len: u64,
    mut f: impl FnMut(Extent) -> Result<()>,
) -> Result<()> {
    let end = offset
        .checked_add(len)
        .filter(|e| *e <= reader.virtual_size())
        .ok_or_else(|| Error::invalid("block status range outside the virtual disk"))?;
    let mut pos = offset;
    let mut pending: Option<Extent> = None;
    while pos < end {
        let mut e = checked_block_status(reader, pos, end - pos)?;
        e.truncate(end - pos);
        pos += e.length;
        match &mut pending {
            Some(p) if p.can_merge(&e) => p.length += e.length,
            _ => {
                if let Some(p) = pending.replace(e) {
                    f(p)?;
                }
            }
        }
    }
    if let Some(p) = pending {
        f(p)?;
    }
    Ok(())
}

/// All extents of `reader`, merged. Convenience for tests and small images; streaming callers use
/// [`for_each_extent`].
pub fn collect_extents(reader: &dyn ImageReader) -> Result<Vec<Extent>> {
    let mut v = Vec::new();
    for_each_extent(reader, 0, reader.virtual_size(), |e| {
        v.push(e);
        Ok(())
    })?;
    Ok(v)
}
