//! Opening and reading VHDX images as QEMU 10's block/vhdx.c does on a read-only open: `vhdx_open`
//! (signature, `vhdx_parse_header`, `vhdx_parse_log`, `vhdx_open_region_tables`,
//! `vhdx_parse_metadata`, `vhdx_calc_bat_entries`, the BAT read and `vhdx_check_bat_entries`),
//! `vhdx_co_readv` (per payload block: zeros for NOT_PRESENT, UNDEFINED, ZERO and both UNMAPPED
//! states, the file for FULLY_PRESENT, EIO otherwise), block status (the driver has none, so qemu's
//! block layer reports the whole disk as data), `vhdx_co_get_info` and `vhdx_co_check`.
//! Opening never writes; a log that needs replaying is refused as qemu refuses it read-only
//! ([`crate::replay`] replays it, as qemu's read-write open does).

use crate::bat::{self, Bat, BlockState, CheckContext, Findings};
use crate::header::{self, Header};
use crate::limits::{
    qemu_file_length, BAT_ENTRY_SIZE, FILE_SIGNATURE, HEADER1_OFFSET, HEADER2_OFFSET, HEADER_SIZE,
    MAX_FILE_OFFSET, REGION_TABLE_OFFSET, REGION_TABLE_SIZE,
};
use crate::log::{self, LogState};
use crate::metadata::{self, Metadata};
use crate::pread::pread;
use crate::region::{self, RegionTable, Regions};
use std::path::Path;
use std::sync::Arc;
use vdisk_core::reader::check_range;
use vdisk_core::{
    CheckReport, ChildFile, Error, Extent, ExtentKind, ImageInfo, ImageReader, Result, Storage,
};

/// An opened VHDX image.
pub struct VhdxReader {
    storage: Arc<dyn Storage>,
    creator: String,
    header_index: usize,
    header: Header,
    log: LogState,
    regions: RegionTable,
    metadata: Metadata,
    bat: Bat,
    size: u64,
    findings: Findings,
}

/// Opens a VHDX image as `qemu-img info`, `convert` and `map` do. Never writes.
pub fn open(storage: Arc<dyn Storage>) -> Result<VhdxReader> {
    open_with(storage, true)
}

/// Opens a VHDX image as `qemu-img check` does (`BDRV_O_CHECK`): the BAT entries are not validated
/// on open, so that [`ImageReader::check`] can count what is wrong with them. Reads of such an
/// image may then reach beyond the end of the file, where they return zeros as in qemu.
pub fn open_for_check(storage: Arc<dyn Storage>) -> Result<VhdxReader> {
    open_with(storage, false)
}

fn open_with(storage: Arc<dyn Storage>, check_bat: bool) -> Result<VhdxReader> {
    let s = storage.as_ref();
    let path = s.path().to_path_buf();
    let mut ident = [0u8; 8 + 512];
    pread(s, &mut ident, 0)?;
    if &ident[..8] != FILE_SIGNATURE {
        return Err(not_vhdx(&path));
    }
    let (header_index, header, _) = read_headers(s)?;
    let mut regions = Regions::default();
    regions.register(header.log_offset, u64::from(header.log_length));
    let log = match log::detect(s, &header)? {
        Ok(LogState::NeedsReplay { .. }) => {
            let p = path.display();
            return Err(Error::Other(format!(
                "VHDX image file '{p}' opened read-only, but contains a log that needs to be \
                 replayed. To replay the log, run: vdisk check -r all '{p}' (or qemu-img check -r \
                 all '{p}')"
            )));
        }
        Ok(state) => state,
        Err(r) => return Err(r.into_error(&path)),
    };
    let mut block = vec![0u8; REGION_TABLE_SIZE];
    pread(s, &mut block, REGION_TABLE_OFFSET)?;
    let table = region::parse(&block, &mut regions).map_err(|r| r.into_error(&path))?;
    drop(block);
    let metadata =
        metadata::read(s, table.metadata.file_offset)?.map_err(|r| r.into_error(&path))?;
    let size = metadata.virtual_disk_size & !511;
    let shape = bat::shape(
        metadata.virtual_disk_size,
        metadata.block_size,
        metadata.chunk_ratio,
    )
    .map_err(|(what, v)| Error::limit(&path, what, v, crate::limits::MAX_PAYLOAD_BLOCKS))?;
    let room = u64::from(table.bat.length) / BAT_ENTRY_SIZE;
    if shape.1 > room {
        return Err(Error::corrupt(
            &path,
            None,
            format!(
                "the BAT region holds {room} entries but the disk needs {} (qemu: Invalid argument)",
                shape.1
            ),
        ));
    }
    // qemu reads the whole BAT region; beyond BDRV_MAX_LENGTH that read fails.
    if table
        .bat
        .file_offset
        .checked_add(u64::from(table.bat.length))
        .is_none_or(|e| e > MAX_FILE_OFFSET)
    {
        return Err(Error::corrupt(
            &path,
            None,
            format!(
                "the BAT region at {:#x} lies beyond the largest offset qemu reads",
                table.bat.file_offset
            ),
        ));
    }
    let ctx = CheckContext {
        block_size: u64::from(metadata.block_size),
        chunk_ratio: metadata.chunk_ratio,
        disk_bytes: size,
        file_length: qemu_file_length(s.len()?),
        regions: &regions,
    };
    let (bat, findings) = Bat::load(s, table.bat.file_offset, shape, &ctx, check_bat)?;
    Ok(VhdxReader {
        creator: header::creator(&ident),
        storage,
        header_index,
        header,
        log,
        regions: table,
        metadata,
        bat,
        size,
        findings,
    })
}

/// The error for a file without the "vhdxfile" signature (qemu: EINVAL).
pub(crate) fn not_vhdx(path: &Path) -> Error {
    Error::corrupt(
        path,
        Some(0),
        "no \"vhdxfile\" signature: not a VHDX image (qemu: Invalid argument)",
    )
}

/// `vhdx_parse_header`: the current header's index (0: at 64 KiB, 1: at 128 KiB) and fields, and
/// both 4 KiB header blocks as stored; "No valid VHDX header found" without one.
pub(crate) fn read_headers(s: &dyn Storage) -> Result<(usize, Header, [Vec<u8>; 2])> {
    let (mut h1, mut h2) = (vec![0u8; HEADER_SIZE], vec![0u8; HEADER_SIZE]);
    pread(s, &mut h1, HEADER1_OFFSET)?;
    pread(s, &mut h2, HEADER2_OFFSET)?;
    let (index, header) = header::choose(&h1, &h2).map_err(|why| {
        Error::corrupt(
            s.path(),
            None,
            format!("No valid VHDX header found ({why})"),
        )
    })?;
    Ok((index, header, [h1, h2]))
}

impl VhdxReader {
    /// The header qemu uses and its index (0: at 64 KiB, 1: at 128 KiB).
    pub fn header(&self) -> (usize, &Header) {
        (self.header_index, &self.header)
    }

    /// The region table.
    pub fn regions(&self) -> &RegionTable {
        &self.regions
    }

    /// The system metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The block allocation table.
    pub fn bat(&self) -> &Bat {
        &self.bat
    }

    /// The log's state (always empty in an opened image).
    pub fn log_state(&self) -> &LogState {
        &self.log
    }

    fn eio(&self, pos: u64, block: u64, state: BlockState) -> Error {
        Error::io(
            self.storage.path(),
            pos,
            std::io::Error::other(format!(
                "Input/output error: payload block {block} is in state {} ({}), which qemu \
                 fails to read",
                state.name(),
                self.bat.payload_entry(block) & 7
            )),
        )
    }
}

impl ImageReader for VhdxReader {
    fn format_name(&self) -> &'static str {
        "vhdx"
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let bs = u64::from(self.metadata.block_size);
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (block, in_block) = (pos / bs, pos % bs);
            let n = (bs - in_block).min((buf.len() - done) as u64) as usize;
            let chunk = &mut buf[done..done + n];
            let entry = self.bat.payload_entry(block);
            match BlockState::of(entry) {
                BlockState::FullyPresent => {
                    // vhdx_block_translate adds the offset in the block only to a non-zero
                    // block offset: an entry with offset 0 reads from the start of the file.
                    let base = bat::entry_offset(entry);
                    // An image opened for check may hold any offset: an impossible sum fails
                    // as qemu's read beyond BDRV_MAX_LENGTH fails.
                    let host = if base == 0 {
                        0
                    } else {
                        base.saturating_add(in_block)
                    };
                    pread(self.storage.as_ref(), chunk, host)?;
                }
                s @ (BlockState::Reserved4 | BlockState::PartiallyPresent) => {
                    return Err(self.eio(pos, block, s));
                }
                _ => chunk.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        // The vhdx driver has no block-status function: qemu's block layer then reports every
        // byte as allocated data without a host offset (`qemu-img map` shows one data extent).
        Ok(Extent::new(
            offset,
            vdisk_core::reader::status_len(self.size, offset, max_len)?,
            ExtentKind::Data,
        ))
    }

    /// What the BAT says: blocks in the states that read as zeros (NOT_PRESENT, UNDEFINED, ZERO,
    /// both UNMAPPED) are zero to a copy, so `convert` and `compare` skip them; the others are
    /// data (and read, or fail, as `read_at` does). `block_status` keeps qemu's answer.
    fn copy_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        if offset >= self.size || max_len == 0 {
            return Err(Error::invalid(format!(
                "copy status at {offset} outside the virtual disk of {} bytes",
                self.size
            )));
        }
        let bs = u64::from(self.metadata.block_size);
        let end = offset.saturating_add(max_len.min(self.size - offset));
        let zero = |block: u64| {
            !matches!(
                BlockState::of(self.bat.payload_entry(block)),
                BlockState::FullyPresent | BlockState::Reserved4 | BlockState::PartiallyPresent
            )
        };
        let first = zero(offset / bs);
        let mut pos = ((offset / bs).saturating_add(1))
            .saturating_mul(bs)
            .min(end);
        while pos < end && zero(pos / bs) == first {
            pos = pos.saturating_add(bs).min(end);
        }
        let kind = if first {
            ExtentKind::Zero
        } else {
            ExtentKind::Data
        };
        Ok(Extent::new(offset, pos - offset, kind))
    }

    fn info(&self) -> Result<ImageInfo> {
        let mut info = ImageInfo::new("vhdx", self.size);
        info.cluster_size = Some(u64::from(self.metadata.block_size));
        info.children = vec![ChildFile {
            name: "file".into(),
            path: self.storage.path().to_path_buf(),
        }];
        crate::reader_info::details(self, &mut info.details);
        Ok(info)
    }

    fn check(&self) -> Result<CheckReport> {
        // vhdx_co_check: the BAT entry check, counting. A log replayed on a read-write open counts
        // as one corruption fixed; a reader never replays (see `crate::repair`).
        Ok(CheckReport {
            corruptions: self.findings.count,
            messages: self.findings.messages.clone(),
            ..Default::default()
        })
    }
}

impl VhdxReader {
    /// The creator named in the file type identifier (diagnostic only).
    pub fn creator(&self) -> &str {
        &self.creator
    }

    /// The virtual disk size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The path of the image file.
    pub fn path(&self) -> &Path {
        self.storage.path()
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
