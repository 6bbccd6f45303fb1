//! Creating VHD images (`qemu-img create -f vpc` / `convert -O vpc`) as QEMU 10's block/vpc.c makes
//! them: `vpc_co_create_opts` / `vpc_co_create` choose the size, geometry and footer,
//! `create_dynamic_disk` lays out a dynamic disk (footer copy at 0, dynamic header at 512, BAT at
//! 1536 initialised to 0xFFFFFFFF, footer after the BAT) and `create_fixed_disk` a fixed one (the
//! data area, sparse, then the footer). Data then goes where `vpc_co_pwritev` puts it: straight into
//! a fixed disk's file; into a dynamic disk's blocks, each allocated by `alloc_block` on its first
//! write at the end of the file (a sector bitmap of all ones, then the block), with the footer copy
//! moving behind the last block.

use crate::dynheader::DynHeader;
use crate::footer::{DiskType, Footer, Geometry};
use crate::geometry::{create_size, too_large};
use crate::limits::{
    bitmap_size, BAT_ENTRY_SIZE, BAT_UNUSED, CREATE_BAT_OFFSET, CREATE_BLOCK_SIZE, CREATOR_VERSION,
    DYN_HEADER_COOKIE, DYN_HEADER_SIZE, FEATURES_RESERVED, FOOTER_COOKIE, FOOTER_SIZE,
    FORMAT_VERSION, SECTOR_SIZE, TIMESTAMP_BASE,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use vdisk_core::options::OptionSpec;
use vdisk_core::writer::block_pieces;
use vdisk_core::{
    CreateOptions, Error, FileStorage, ImageWriter, OutputFile, Payload, Result, Storage,
    WritePool, WriterCaps,
};

/// The options `qemu-img create -f vpc -o help` lists, in qemu's order (`vpc_create_opts`).
pub const CREATE_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "size",
        kind: "size",
        help: "Virtual disk size",
    },
    OptionSpec {
        name: "subformat",
        kind: "str",
        help:
            "Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} ",
    },
    OptionSpec {
        name: "force_size",
        kind: "bool (on/off)",
        help: "Force disk size calculation to use the actual size specified, rather than using \
               the nearest CHS-based calculation",
    },
];

/// What file-posix's `allocate_first_block` writes at the start of a file it grows from length 0
/// (`MAX_BLOCKSIZE`; 512 bytes for files shorter than that).
const FIRST_BLOCK: u64 = 4096;

/// Where the dynamic disk header goes: right after the footer copy at offset 0.
const DYN_HEADER_AT: u64 = FOOTER_SIZE as u64;

/// A random (version 4, RFC 4122 variant) UUID, as `qemu_uuid_generate` makes one.
fn random_uuid() -> Result<[u8; 16]> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| Error::Other(format!("cannot get random bytes for a UUID: {e}")))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(b)
}

/// Seconds since 2000-01-01 UTC, cut to 32 bits as qemu's `cpu_to_be32(time(NULL) - BASE)` does.
fn timestamp_now() -> u32 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (now.saturating_sub(TIMESTAMP_BASE) & 0xffff_ffff) as u32
}

/// The footer `vpc_co_create` writes for a disk of `size` bytes (already as [`create_size`] gives
/// it) with `geometry`: creator "qemu" ("qem2" with `force_size`, telling readers to use the
/// current size), version 5.3, host "Wi2k", the data offset 512 for a dynamic disk (all ones for a
/// fixed one), the current time and a random UUID.
pub fn new_footer(
    size: u64,
    geometry: Geometry,
    disk_type: DiskType,
    force_size: bool,
) -> Result<Footer> {
    Ok(Footer {
        cookie: *FOOTER_COOKIE,
        features: FEATURES_RESERVED,
        format_version: FORMAT_VERSION,
        data_offset: if disk_type == DiskType::Fixed {
            u64::MAX
        } else {
            DYN_HEADER_AT
        },
        timestamp: timestamp_now(),
        creator_app: if force_size { *b"qem2" } else { *b"qemu" },
        creator_version: CREATOR_VERSION,
        creator_os: *b"Wi2k",
        original_size: size,
        current_size: size,
        geometry,
        disk_type,
        checksum: 0,
        uuid: random_uuid()?,
        saved_state: 0,
    })
}

/// The dynamic disk header `create_dynamic_disk` writes for `size` bytes: 2 MiB blocks, one BAT
/// entry per block (the last one possibly partly past the end), the BAT at 1536, data offset all
/// ones ("MS tools expect all 64 bits to be set").
pub fn new_dyn_header(size: u64) -> Result<DynHeader> {
    let sectors = size / SECTOR_SIZE;
    let entries = sectors.div_ceil(u64::from(CREATE_BLOCK_SIZE) / SECTOR_SIZE);
    let max_table_entries = u32::try_from(entries).map_err(|_| too_large())?;
    Ok(DynHeader {
        cookie: *DYN_HEADER_COOKIE,
        data_offset: u64::MAX,
        table_offset: CREATE_BAT_OFFSET,
        header_version: FORMAT_VERSION,
        max_table_entries,
        block_size: CREATE_BLOCK_SIZE,
        checksum: 0,
        parent_uuid: [0; 16],
        parent_timestamp: 0,
        parent_name: String::new(),
    })
}

/// Bytes of the BAT as written: whole sectors, the padding after the last entry all ones too.
fn bat_bytes(entries: u64) -> u64 {
    (entries * BAT_ENTRY_SIZE).next_multiple_of(SECTOR_SIZE)
}

/// Creates a new VHD image of `size` bytes at `path`, sized as `qemu-img create -f vpc` sizes it
/// (whole sectors, then the next CHS geometry unless `force_size=on`). Options: `subformat=dynamic`
/// (the default) or `fixed`, `force_size=on|off`. The file appears under `path` only when
/// `finish` succeeds.
pub fn create(path: &Path, size: u64, opts: &CreateOptions) -> Result<Box<dyn ImageWriter>> {
    opts.ensure_known("vpc", CREATE_OPTIONS)?;
    let disk_type = match opts.get("subformat") {
        None | Some("dynamic") => DiskType::Dynamic,
        Some("fixed") => DiskType::Fixed,
        Some(v) => {
            return Err(Error::invalid(format!(
                "Parameter 'subformat' does not accept value '{v}'"
            )))
        }
    };
    let force_size = opts.get_bool("force_size", false)?;
    let (geometry, size) = create_size(size, force_size)?;
    let footer = new_footer(size, geometry, disk_type, force_size)?.to_bytes();
    let dynamic = match disk_type {
        DiskType::Fixed => None,
        _ => {
            let header = new_dyn_header(size)?;
            let entries = u64::from(header.max_table_entries);
            // Blocks go after the BAT, where `create_dynamic_disk` put the footer copy.
            let next = CREATE_BAT_OFFSET + bat_bytes(entries);
            // At most 0xff000000 / 4096 entries: a 4 MiB table.
            let len = usize::try_from(entries).map_err(|_| too_large())?;
            Some(Dynamic {
                bitmap: vec![0xff; bitmap_size(header.block_size) as usize],
                header,
                bat: vec![BAT_UNUSED; len],
                next,
            })
        }
    };
    let out = OutputFile::create(path)?;
    let storage = out.storage();
    if dynamic.is_none() {
        // create_fixed_disk grows the empty file to its full length with `blk_co_truncate`, and
        // file-posix then allocates the first block of a file grown from nothing
        // (`allocate_first_block`): zeros, 512 bytes if the file is under 4 KiB, else 4 KiB. Data
        // written later overwrites them; `qemu-img map` shows them as data, not a hole.
        let file_len = size.checked_add(FOOTER_SIZE as u64).ok_or_else(too_large)?;
        let first = if file_len < FIRST_BLOCK {
            SECTOR_SIZE
        } else {
            FIRST_BLOCK
        };
        storage.write_zeros(0, first)?;
    }
    let pool = WritePool::new(out.file(), path)?;
    Ok(Box::new(VhdWriter {
        out: Some(out),
        storage,
        pool: Some(pool),
        footer,
        size,
        pos: 0,
        dynamic,
    }))
}

/// The state of a dynamic disk being written.
struct Dynamic {
    header: DynHeader,
    /// The block allocation table: sector of each block's bitmap, or [`BAT_UNUSED`].
    bat: Vec<u32>,
    /// A sector bitmap with every sector marked present (`alloc_block`: memset 0xff).
    bitmap: Vec<u8>,
    /// Where the next block goes and the footer copy sits (`free_data_block_offset`).
    next: u64,
}

/// Writes a new VHD image in guest order.
pub struct VhdWriter {
    out: Option<OutputFile>,
    storage: FileStorage,
    /// Writes the data on an I/O thread.
    pool: Option<WritePool>,
    /// The sealed footer, written at offset 0 (dynamic) and at the end.
    footer: [u8; FOOTER_SIZE],
    /// The virtual size in bytes.
    size: u64,
    /// Next guest offset a write may start at.
    pos: u64,
    /// `None` for a fixed disk.
    dynamic: Option<Dynamic>,
}

impl VhdWriter {
    /// Queues `range` of `data` for writing at file offset `at`.
    fn submit(
        &self,
        at: u64,
        data: &Arc<vdisk_core::DataBuf>,
        range: std::ops::Range<usize>,
    ) -> Result<()> {
        match &self.pool {
            Some(p) => p.submit_part(at, data, range),
            None => self.storage.write_at(&data[range], at),
        }
    }

    /// File offset of the first data byte of dynamic block `block`, allocating it as `alloc_block`
    /// does when it has none: the block goes at `free_data_block_offset`, its bitmap all ones.
    fn block_data(&mut self, block: u64) -> Result<u64> {
        let Some(d) = self.dynamic.as_mut() else {
            return Err(Error::Other("VHD writer: not a dynamic disk".into()));
        };
        let idx = usize::try_from(block)
            .ok()
            .filter(|i| *i < d.bat.len())
            .ok_or_else(|| Error::invalid(format!("VHD writer: block {block} is past the BAT")))?;
        let bitmap = d.bitmap.len() as u64;
        if d.bat[idx] == BAT_UNUSED {
            // Below 2^32 - 1 for every size create accepts (2040 GiB of blocks and bitmaps).
            let at_sector = d.next / SECTOR_SIZE;
            let sector = u32::try_from(at_sector)
                .ok()
                .filter(|s| *s != BAT_UNUSED)
                .ok_or_else(|| {
                    Error::limit(
                        self.storage.path(),
                        "block offset in sectors",
                        at_sector,
                        u64::from(BAT_UNUSED) - 1,
                    )
                })?;
            let next = d
                .next
                .checked_add(bitmap)
                .and_then(|n| n.checked_add(u64::from(d.header.block_size)))
                .ok_or_else(|| Error::Other("VHD writer: file offset overflows".into()))?;
            self.storage.write_at(&d.bitmap, d.next)?;
            d.bat[idx] = sector;
            d.next = next;
        }
        Ok(u64::from(d.bat[idx]) * SECTOR_SIZE + bitmap)
    }

    /// The BAT as stored: big-endian entries, padded with all ones to whole sectors.
    fn bat_image(d: &Dynamic) -> Vec<u8> {
        let entries = d.bat.len() as u64;
        let mut b = vec![0xffu8; bat_bytes(entries) as usize];
        for (slot, e) in b.chunks_exact_mut(4).zip(&d.bat) {
            slot.copy_from_slice(&e.to_be_bytes());
        }
        b
    }
}

impl ImageWriter for VhdWriter {
    fn caps(&self) -> WriterCaps {
        WriterCaps {
            // Data goes to the file as it comes, whatever its alignment.
            granularity: SECTOR_SIZE,
            // Dynamic blocks are placed in the order of their first write, as qemu-img convert
            // (in order by default) places them.
            out_of_order: false,
            // Unallocated blocks and a fixed disk's sparse data area read as zeros
            // (`vpc_has_zero_init`).
            zero_initialized: true,
            copy_range: false,
        }
    }

    fn write(&mut self, offset: u64, payload: Payload) -> Result<()> {
        let len = payload.len();
        if offset < self.pos {
            return Err(Error::invalid(format!(
                "VHD writer: write at {offset} is before {} (writes must be in order)",
                self.pos
            )));
        }
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= self.size)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "VHD writer: write of {len} bytes at {offset} is past the disk end {}",
                    self.size
                ))
            })?;
        match payload {
            // The range was never written and reads as zeros already; an unallocated block stays
            // unallocated (qemu-img convert skips zeros on a zero-initialised target).
            Payload::Zero(_) => {}
            Payload::Data(data) => {
                let data = Arc::new(data);
                let bs = self
                    .dynamic
                    .as_ref()
                    .map(|d| u64::from(d.header.block_size));
                match bs {
                    None => self.submit(offset, &data, 0..data.len())?,
                    Some(bs) => {
                        for (block, in_block, range) in block_pieces(offset, data.len() as u64, bs)
                        {
                            let at = self.block_data(block)? + in_block;
                            self.submit(at, &data, range)?;
                        }
                    }
                }
            }
            Payload::Encoded(_) | Payload::Copy(_) => {
                return Err(Error::invalid(
                    "VHD writer: encoded and copied payloads are not supported",
                ))
            }
        }
        self.pos = end;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        if let Some(pool) = self.pool.take() {
            pool.drain()?;
        }
        match &self.dynamic {
            None => {
                // create_fixed_disk: the data area (sparse where nothing was written), then the
                // footer.
                self.storage.write_at(&self.footer, self.size)?;
            }
            Some(d) => {
                // The footer copy behind the last block (rewrite_footer), the BAT, the dynamic
                // header and the footer at offset 0 (create_dynamic_disk).
                self.storage.write_at(&self.footer, d.next)?;
                self.storage
                    .write_at(&Self::bat_image(d), d.header.table_offset)?;
                let header: [u8; DYN_HEADER_SIZE] = d.header.to_bytes();
                self.storage.write_at(&header, DYN_HEADER_AT)?;
                self.storage.write_at(&self.footer, 0)?;
            }
        }
        match self.out.take() {
            Some(out) => out.commit(),
            None => Err(Error::Other("VHD writer finished twice".into())),
        }
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
