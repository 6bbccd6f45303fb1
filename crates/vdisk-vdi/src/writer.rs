//! Creating VDI images (`qemu-img create -f vdi` / `convert -O vdi`): a version 1.1 header laid out
//! as VirtualBox's `vdiInitHeader` does (block map and data area aligned to `VDI_DATA_ALIGN`, 1 MiB
//! blocks), then data blocks appended in guest order. Dynamic images allocate the blocks they are
//! given data for (as qemu's driver does: the conversion hands zero runs over as zeros unless `-S 0`
//! or a larger `-S` says otherwise); static images map every block to its own slot and are sized
//! in full (sparse).

use crate::bmap;
use crate::header::{
    Geometry, Header, Uuid, ORACLE_TEXT, PARSE_LEN, TYPE_DYNAMIC, TYPE_STATIC, VERSION_1_1,
};
use crate::limits::*;
use std::path::Path;
use std::sync::Arc;
use vdisk_core::options::OptionSpec;
use vdisk_core::{
    CreateOptions, Error, FileStorage, ImageWriter, OutputFile, Payload, Result, Storage,
    WritePool, WriterCaps,
};

/// The options `qemu-img create -f vdi -o help` lists, in qemu's order.
pub const CREATE_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "size",
        kind: "size",
        help: "Virtual disk size",
    },
    OptionSpec {
        name: "static",
        kind: "bool (on/off)",
        help: "VDI static (pre-allocated) image",
    },
];

/// Rounds `v` up to a multiple of `align` (a power of two), or `None` on overflow.
pub(crate) fn align_up(v: u64, align: u64) -> Option<u64> {
    v.checked_add(align - 1).map(|x| x & !(align - 1))
}

/// Block map and data offsets VirtualBox would choose for `blocks` blocks (`vdiInitHeader`).
pub(crate) fn layout(blocks: u64) -> Result<(u64, u64)> {
    let offset_bmap = align_up(PRE_HEADER_SIZE + u64::from(HEADER_SIZE_V1_PLUS), DATA_ALIGN)
        .unwrap_or(DATA_ALIGN);
    let offset_data = blocks
        .checked_mul(4)
        .and_then(|m| align_up(offset_bmap + m, DATA_ALIGN))
        .filter(|d| *d <= u64::from(u32::MAX))
        .ok_or_else(|| Error::invalid(format!("a VDI image of {blocks} blocks is too large")))?;
    Ok((offset_bmap, offset_data))
}

/// A fresh header for an image of `size` bytes (already sector-aligned).
pub fn new_header(size: u64, is_static: bool) -> Result<Header> {
    let bs = DEFAULT_BLOCK_SIZE;
    let blocks = size.div_ceil(bs);
    if blocks > MAX_BLOCKS {
        return Err(Error::invalid(format!(
            "Unsupported VDI image size (size is {size:#x}, max supported is {:#x})",
            MAX_BLOCKS * bs
        )));
    }
    let (offset_bmap, offset_data) = layout(blocks)?;
    let sector = SECTOR_SIZE as u32;
    Ok(Header {
        text: ORACLE_TEXT.to_string(),
        version: VERSION_1_1,
        header_size: HEADER_SIZE_V1_PLUS,
        image_type: if is_static { TYPE_STATIC } else { TYPE_DYNAMIC },
        flags: 0,
        description: String::new(),
        offset_bmap,
        offset_data,
        legacy_geometry: Geometry {
            sector_size: sector,
            ..Geometry::default()
        },
        disk_size: size,
        block_size: bs as u32,
        block_extra: 0,
        blocks_in_image: blocks as u32,
        blocks_allocated: if is_static { blocks as u32 } else { 0 },
        uuid_image: Uuid::random()?,
        uuid_modify: Uuid::random()?,
        uuid_link: Uuid::default(),
        uuid_parent_modify: Uuid::default(),
        lchs_geometry: Some(Geometry {
            sector_size: sector,
            ..Geometry::default()
        }),
    })
}

/// Creates a new VDI image of `size` bytes (rounded up to 512 as qemu does) at `path`. Options:
/// `static=on` for a fixed-size image. The file appears under `path` only when `finish` succeeds.
pub fn create(path: &Path, size: u64, opts: &CreateOptions) -> Result<Box<dyn ImageWriter>> {
    opts.ensure_known("vdi", CREATE_OPTIONS)?;
    let is_static = opts.get_bool("static", false)?;
    let size = align_up(size, SECTOR_SIZE)
        .ok_or_else(|| Error::invalid("Image size must be less than 8 EiB!"))?;
    let header = new_header(size, is_static)?;
    let out = OutputFile::create(path)?;
    let storage = out.storage();
    let pool = WritePool::new(out.file(), path)?;
    let blocks = header.blocks_in_image as usize;
    let map = if is_static {
        (0..header.blocks_in_image).collect()
    } else {
        vec![BLOCK_FREE; blocks]
    };
    Ok(Box::new(VdiWriter {
        out: Some(out),
        storage,
        pool: Some(pool),
        buf: vec![0u8; header.block_size as usize],
        header,
        map,
        cur: 0,
        dirty: false,
        pos: 0,
        next_slot: 0,
    }))
}

/// Writes a new VDI image in guest order.
pub struct VdiWriter {
    out: Option<OutputFile>,
    storage: FileStorage,
    /// Writes whole blocks straight from the payload, on several threads.
    pool: Option<WritePool>,
    header: Header,
    map: Vec<u32>,
    /// The block being assembled in `buf` and whether anything was copied into it.
    buf: Vec<u8>,
    cur: u64,
    dirty: bool,
    /// Next guest offset expected.
    pos: u64,
    /// Next free slot of a dynamic image.
    next_slot: u32,
}

impl VdiWriter {
    fn bs(&self) -> u64 {
        u64::from(self.header.block_size)
    }

    /// Stores the assembled block (data was written into it), then clears the buffer.
    fn flush_block(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        let at = self.block_host(self.cur);
        self.storage.write_at(&self.buf, at)?;
        self.buf.fill(0);
        Ok(())
    }

    /// The file offset of guest block `block`, given a slot now if the image is dynamic.
    fn block_host(&mut self, block: u64) -> u64 {
        let slot = if self.header.image_type == TYPE_STATIC {
            block as u32
        } else {
            let s = self.next_slot;
            self.next_slot += 1;
            if let Some(m) = self.map.get_mut(block as usize) {
                *m = s;
            }
            s
        };
        self.header.offset_data + u64::from(slot) * self.bs()
    }

    /// Moves to guest offset `to`, flushing blocks left behind.
    fn seek_block(&mut self, to: u64) -> Result<()> {
        let block = to / self.bs();
        if block != self.cur {
            self.flush_block()?;
            self.cur = block;
        }
        Ok(())
    }
}

impl ImageWriter for VdiWriter {
    fn caps(&self) -> WriterCaps {
        WriterCaps {
            granularity: self.bs(),
            out_of_order: false,
            zero_initialized: true,
            copy_range: false,
        }
    }

    fn write(&mut self, offset: u64, payload: Payload) -> Result<()> {
        let size = self.header.disk_size;
        let len = payload.len();
        if offset < self.pos {
            return Err(Error::invalid(format!(
                "VDI writer: write at {offset} is before {} (writes must be in order)",
                self.pos
            )));
        }
        if offset.checked_add(len).is_none_or(|e| e > size) {
            return Err(Error::invalid(format!(
                "VDI writer: write of {len} bytes at {offset} is past the disk end {size}"
            )));
        }
        match payload {
            Payload::Zero(_) => {
                self.seek_block(offset)?;
                self.pos = offset + len;
            }
            Payload::Data(data) => {
                let bs = self.bs();
                let data = Arc::new(data);
                let mut done = 0usize;
                let mut pos = offset;
                while done < data.len() {
                    self.seek_block(pos)?;
                    let in_block = (pos % bs) as usize;
                    let n = (bs as usize - in_block).min(data.len() - done);
                    let piece = &data[done..done + n];
                    if n as u64 == bs && !self.dirty {
                        // A whole block: written from the payload itself.
                        let at = self.block_host(self.cur);
                        match &self.pool {
                            Some(p) => p.submit_part(at, &data, done..done + n)?,
                            None => self.storage.write_at(piece, at)?,
                        }
                    } else {
                        self.buf[in_block..in_block + n].copy_from_slice(piece);
                        self.dirty = true;
                    }
                    done += n;
                    pos += n as u64;
                }
                self.pos = pos;
            }
            Payload::Encoded(_) | Payload::Copy(_) => {
                return Err(Error::invalid(
                    "VDI writer: encoded and copied payloads are not supported",
                ))
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.flush_block()?;
        if let Some(pool) = self.pool.take() {
            pool.drain()?;
        }
        let h = &mut self.header;
        if h.image_type != TYPE_STATIC {
            h.blocks_allocated = self.next_slot;
        }
        let allocated = u64::from(h.blocks_allocated);
        let end = h.offset_data + allocated * u64::from(h.block_size);
        self.storage.set_len(end.max(self.storage.len()?))?;
        bmap::write(&self.storage, h.offset_bmap, &self.map)?;
        let mut sector = vec![0u8; PARSE_LEN];
        h.write_v1(&mut sector)?;
        self.storage.write_at(&sector, 0)?;
        match self.out.take() {
            Some(out) => out.commit(),
            None => Err(Error::Other("VDI writer finished twice".into())),
        }
    }
}
