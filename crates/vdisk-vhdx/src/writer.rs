//! Creating VHDX images (`qemu-img create -f vhdx` / `convert -O vhdx`) as QEMU 10's block/vhdx.c
//! makes them: `vhdx_co_create` lays out the headers, region tables, BAT and metadata (see
//! [`crate::writer_layout`]), and guest data then goes where `vhdx_co_writev` puts it: a payload
//! block is allocated on its first write at the end of the file, rounded up to 1 MiB
//! (`vhdx_allocate_block`), and becomes FULLY_PRESENT; blocks never written keep their created
//! state (ZERO, NOT_PRESENT, or for a fixed image with `block_state_zero=off` FULLY_PRESENT in the
//! preallocated data area, written in place). The tables are written on `finish`, with an empty
//! log, so no replay is ever needed; the file appears under its name only then.

use crate::guid::Guid;
use crate::limits::{
    BAT_ENTRY_SIZE, HEADER1_OFFSET, HEADER2_OFFSET, HEADER_FIELDS_SIZE, REGION_TABLE_OFFSET,
};
use crate::writer_layout::{
    file_identifier, header_block, metadata_items, metadata_table, region_table, CreateParams,
    Layout, REGION_TABLE2_OFFSET, STATE_FULLY_PRESENT,
};
use std::path::Path;
use std::sync::Arc;
use vdisk_core::options::OptionSpec;
use vdisk_core::writer::block_pieces;
use vdisk_core::{
    CreateOptions, DataBuf, Error, FileStorage, ImageWriter, OutputFile, Payload, Result, Storage,
    WritePool, WriterCaps,
};

/// The options `qemu-img create -f vhdx -o help` lists, in qemu's order (`vhdx_create_opts`).
pub const CREATE_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "size",
        kind: "size",
        help: "Virtual disk size; max of 64TB.",
    },
    OptionSpec {
        name: "log_size",
        kind: "size",
        help: "Log size; min 1MB.",
    },
    OptionSpec {
        name: "block_size",
        kind: "size",
        help: "Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size.",
    },
    OptionSpec {
        name: "subformat",
        kind: "str",
        help: "VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'.",
    },
    OptionSpec {
        name: "block_state_zero",
        kind: "bool (on/off)",
        help: "Force use of payload blocks of type 'ZERO'. Non-standard, but default.  Do not \
               set to 'off' when using 'qemu-img convert' with subformat=dynamic.",
    },
];

const MIB: u64 = 1 << 20;

/// What vdisk writes as the creator (spec 2.2.1: diagnostic only; qemu writes "QEMU v<version>").
const CREATOR: &str = concat!("vdisk v", env!("CARGO_PKG_VERSION"));

/// How much of the BAT is built in memory at once on `finish`.
const BAT_CHUNK: u64 = MIB;

/// The parameters `qemu-img create -f vhdx -o OPTS NAME SIZE` would use, or its refusal in its
/// words. The `size` option itself is ignored: the size comes as `size`.
pub fn create_params(size: u64, opts: &CreateOptions) -> Result<CreateParams> {
    opts.ensure_known("vhdx", CREATE_OPTIONS)?;
    // QemuOpts parses every value first; then the QAPI visitor checks the subformat.
    let log_size = opts.get_size("log_size")?;
    let block_size = opts.get_size("block_size")?;
    let zero_blocks = opts.get_bool("block_state_zero", true)?;
    let fixed = match opts.get("subformat") {
        None | Some("dynamic") => false,
        Some("fixed") => true,
        Some(v) => {
            return Err(Error::invalid(format!(
                "Parameter 'subformat' does not accept value '{v}'"
            )))
        }
    };
    CreateParams::new(size, log_size, block_size, fixed, zero_blocks)
}

/// Creates a new VHDX image of `size` bytes (rounded up to 512) at `path`, as `qemu-img create -f
/// vhdx` would with `opts` ([`CREATE_OPTIONS`]). Data is then written in guest order; the file
/// appears under `path` only when `finish` succeeds.
pub fn create(path: &Path, size: u64, opts: &CreateOptions) -> Result<Box<dyn ImageWriter>> {
    let layout = Layout::new(create_params(size, opts)?)?;
    Ok(Box::new(VhdxWriter::new(path, layout)?))
}

/// Random bytes in the shape of `qemu_uuid_generate`'s version 4 UUID, stored as a GUID as
/// `vhdx_guid_generate` copies it.
pub(crate) fn random_guid() -> Result<Guid> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| Error::Other(format!("cannot get random bytes for a GUID: {e}")))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(Guid(b))
}

/// A random 32-bit sequence number (`g_random_int`).
fn random_u32() -> Result<u32> {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).map_err(|e| Error::Other(format!("cannot get random bytes: {e}")))?;
    Ok(u32::from_le_bytes(b))
}

/// Writes a new VHDX image in guest order.
pub struct VhdxWriter {
    out: Option<OutputFile>,
    storage: FileStorage,
    /// Writes the data on I/O threads.
    pool: Option<WritePool>,
    layout: Layout,
    /// Next guest offset a write may start at.
    pos: u64,
    /// One bit per payload block: allocated by a write (empty for in-place images).
    allocated: Vec<u64>,
    /// Blocks allocated so far; the next goes at `alloc_base + count * block_size`.
    count: u64,
    /// Where the first allocated block goes: the created file's length rounded up to 1 MiB.
    alloc_base: u64,
    /// The block most recently allocated and its file offset.
    current: Option<(u64, u64)>,
    /// The file's length: as created, then up to the end of the last allocated block.
    file_len: u64,
}

impl VhdxWriter {
    /// Starts writing an image with `layout` at `path`.
    pub fn new(path: &Path, layout: Layout) -> Result<VhdxWriter> {
        let file_len = layout.created_length()?;
        let alloc_base = file_len
            .checked_next_multiple_of(MIB)
            .ok_or_else(|| Error::invalid("VHDX writer: the file length overflows"))?;
        let words = if layout.in_place() {
            0
        } else {
            usize::try_from(layout.payload_blocks.div_ceil(64))
                .map_err(|_| Error::invalid("VHDX writer: too many payload blocks"))?
        };
        let out = OutputFile::create(path)?;
        let storage = out.storage();
        let pool = WritePool::new(out.file(), path)?;
        Ok(VhdxWriter {
            out: Some(out),
            storage,
            pool: Some(pool),
            layout,
            pos: 0,
            allocated: vec![0; words],
            count: 0,
            alloc_base,
            current: None,
            file_len,
        })
    }

    /// The layout being written.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn is_allocated(&self, block: u64) -> bool {
        usize::try_from(block / 64)
            .ok()
            .and_then(|w| self.allocated.get(w))
            .is_some_and(|w| w & (1 << (block % 64)) != 0)
    }

    /// The file offset of guest offset `pos`, allocating its block on its first write as
    /// `vhdx_allocate_block` does.
    fn place(&mut self, pos: u64) -> Result<u64> {
        let l = &self.layout;
        let overflow = || Error::invalid("VHDX writer: the file length overflows");
        if l.in_place() {
            return l.data_offset.checked_add(pos).ok_or_else(overflow);
        }
        let bs = l.block_size();
        let (block, in_block) = (pos / bs, pos % bs);
        match self.current {
            Some((b, at)) if b == block => return Ok(at + in_block),
            _ => {}
        }
        if self.is_allocated(block) {
            return Err(Error::Other(format!(
                "VHDX writer: block {block} written again after a later block"
            )));
        }
        let at = self
            .count
            .checked_mul(bs)
            .and_then(|o| o.checked_add(self.alloc_base))
            .ok_or_else(overflow)?;
        let end = at.checked_add(bs).ok_or_else(overflow)?;
        let word = usize::try_from(block / 64)
            .ok()
            .and_then(|w| self.allocated.get_mut(w))
            .ok_or_else(|| Error::invalid(format!("VHDX writer: block {block} is past the BAT")))?;
        *word |= 1 << (block % 64);
        self.count += 1;
        self.current = Some((block, at));
        self.file_len = self.file_len.max(end);
        Ok(at + in_block)
    }

    /// Queues `range` of `data` for writing at file offset `at`.
    fn submit(&self, at: u64, data: &Arc<DataBuf>, range: std::ops::Range<usize>) -> Result<()> {
        match &self.pool {
            Some(p) => p.submit_part(at, data, range),
            None => self.storage.write_at(&data[range], at),
        }
    }

    /// Writes the BAT a chunk at a time: the entries of allocated blocks (their offsets follow
    /// the order of allocation, which is block order), the created state for the rest, zeros for
    /// sector bitmap entries and the padding. Where qemu leaves the table to the sparse file
    /// (dynamic, `block_state_zero=off`), only 4 KiB pieces holding an entry are written.
    fn write_bat(&self) -> Result<()> {
        let l = &self.layout;
        let total = u64::from(l.bat_length);
        let bs = l.block_size();
        let mut buf = vec![0u8; BAT_CHUNK.min(total) as usize];
        let (mut block, mut rank) = (0u64, 0u64);
        let mut start = 0u64;
        while start < total {
            let n = (total - start).min(BAT_CHUNK);
            let chunk = &mut buf[..n as usize];
            chunk.fill(0);
            while block < l.payload_blocks {
                let at = l.bat_index(block) * BAT_ENTRY_SIZE;
                if at >= start + n {
                    break;
                }
                let entry = if self.is_allocated(block) {
                    // The offset `place` gave this block (computed there with checks).
                    let at = rank
                        .checked_mul(bs)
                        .and_then(|o| o.checked_add(self.alloc_base))
                        .ok_or_else(|| Error::invalid("VHDX writer: the BAT overflows"))?;
                    rank += 1;
                    at | STATE_FULLY_PRESENT
                } else {
                    l.unwritten_entry(block)
                };
                let i = (at - start) as usize;
                chunk[i..i + 8].copy_from_slice(&entry.to_le_bytes());
                block += 1;
            }
            if l.writes_bat() {
                self.storage.write_at(chunk, l.bat_offset + start)?;
            } else {
                for (k, piece) in chunk.chunks(4096).enumerate() {
                    if piece.iter().any(|b| *b != 0) {
                        let at = l.bat_offset + start + (k as u64) * 4096;
                        self.storage.write_at(piece, at)?;
                    }
                }
            }
            start += n;
        }
        Ok(())
    }

    /// Writes every structure `vhdx_co_create` writes, with the BAT as the writes left it.
    fn write_structures(&self) -> Result<()> {
        let l = &self.layout;
        let s = &self.storage;
        s.write_at(&file_identifier(CREATOR), 0)?;
        // vhdx_create_new_headers: one random sequence number, the second header one higher
        // (current); both with the same fresh GUIDs. qemu writes only the fields.
        let seq = u64::from(random_u32()?);
        let (file_guid, data_guid) = (random_guid()?, random_guid()?);
        for (i, at) in [HEADER1_OFFSET, HEADER2_OFFSET].into_iter().enumerate() {
            let h = header_block(seq + i as u64, file_guid, data_guid, l.params.log_size);
            s.write_at(&h[..HEADER_FIELDS_SIZE], at)?;
        }
        let rt = region_table(l);
        s.write_at(&rt, REGION_TABLE_OFFSET)?;
        s.write_at(&rt, REGION_TABLE2_OFFSET)?;
        self.write_bat()?;
        s.write_at(&metadata_table(), l.metadata_offset)?;
        s.write_at(
            &metadata_items(l, random_guid()?),
            l.metadata_offset + 64 * 1024,
        )?;
        s.set_len(self.file_len)
    }
}

impl ImageWriter for VhdxWriter {
    fn caps(&self) -> WriterCaps {
        WriterCaps {
            // Data goes to the file as it comes.
            granularity: 512,
            // Blocks are placed in the order of their first write, as qemu-img convert (in order
            // by default) places them.
            out_of_order: false,
            // Unwritten blocks read as zeros, and so does the sparse data area of a fixed image
            // (`vhdx_has_zero_init`).
            zero_initialized: true,
            copy_range: false,
        }
    }

    fn write(&mut self, offset: u64, payload: Payload) -> Result<()> {
        let len = payload.len();
        if offset < self.pos {
            return Err(Error::invalid(format!(
                "VHDX writer: write at {offset} is before {} (writes must be in order)",
                self.pos
            )));
        }
        let size = self.layout.params.size;
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= size)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "VHDX writer: write of {len} bytes at {offset} is past the disk end {size}"
                ))
            })?;
        match payload {
            // Reads as zeros already: an unwritten block stays unallocated (qemu-img convert
            // skips zeros on a zero-initialised target), a hole in an allocated block is zeros.
            Payload::Zero(_) => {}
            Payload::Data(data) => {
                let data = Arc::new(data);
                let bs = self.layout.block_size();
                for (_, _, range) in block_pieces(offset, data.len() as u64, bs) {
                    let at = self.place(offset + range.start as u64)?;
                    self.submit(at, &data, range)?;
                }
            }
            Payload::Encoded(_) | Payload::Copy(_) => {
                return Err(Error::invalid(
                    "VHDX writer: encoded and copied payloads are not supported",
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
        self.write_structures()?;
        match self.out.take() {
            Some(out) => out.commit(),
            None => Err(Error::Other("VHDX writer finished twice".into())),
        }
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
