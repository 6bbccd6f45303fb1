//! Reading VDI images (dynamic and static base images, VirtualBox's VDI.cpp read path and QEMU's
//! block/vdi.c `vdi_co_preadv` / `vdi_co_block_status`): guest block `b` is found through the block
//! map; free and zero entries read as zeros, slots are read from the data area.

use crate::bmap::{self, Entry};
use crate::header::{Header, PARSE_LEN, TYPE_STATIC};
use std::path::Path;
use std::sync::Arc;
use vdisk_core::reader::check_range;
use vdisk_core::{
    CheckReport, ChildFile, Error, Extent, ExtentKind, ImageInfo, ImageReader, Result, Storage,
};

/// An opened VDI image.
pub struct VdiReader {
    storage: Arc<dyn Storage>,
    header: Header,
    bmap: Vec<u32>,
    file_len: u64,
    file: Arc<Path>,
}

/// Opens a VDI image: parses and validates the header, reads the block map. Never writes.
pub fn open(storage: Arc<dyn Storage>) -> Result<VdiReader> {
    let path = storage.path().to_path_buf();
    let file_len = storage.len()?;
    let mut buf = vec![0u8; PARSE_LEN.min(usize::try_from(file_len).unwrap_or(PARSE_LEN))];
    storage.read_exact_at(&mut buf, 0)?;
    let header = Header::parse(&buf, &path)?;
    header.validate(&path, file_len)?;
    let bmap = bmap::read(storage.as_ref(), &header)?;
    let file: Arc<Path> = Arc::from(path.as_path());
    Ok(VdiReader {
        storage,
        header,
        bmap,
        file_len,
        file,
    })
}

impl VdiReader {
    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The raw block map entries.
    pub fn block_map(&self) -> &[u32] {
        &self.bmap
    }

    /// Length of the image file when it was opened.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    fn block_size(&self) -> u64 {
        u64::from(self.header.block_size)
    }

    fn entry(&self, block: u64) -> Result<Entry> {
        usize::try_from(block)
            .ok()
            .and_then(|i| self.bmap.get(i))
            .map(|raw| Entry::decode(*raw))
            .ok_or_else(|| Error::Other(format!("VDI block {block} outside the block map")))
    }

    /// Host offset of `len` guest bytes at `in_block` within `block`'s slot, checked against the file.
    fn host_range(&self, block: u64, slot: u32, in_block: u64, len: u64) -> Result<u64> {
        let path = self.storage.path();
        let host = bmap::slot_offset(&self.header, path, block, slot)? + in_block;
        match host.checked_add(len) {
            Some(end) if end <= self.file_len => Ok(host),
            _ => Err(Error::corrupt(
                path,
                Some(host),
                format!(
                    "data of block {block} (slot {slot}) lies past the end of the file ({} bytes)",
                    self.file_len
                ),
            )),
        }
    }
}

impl ImageReader for VdiReader {
    fn format_name(&self) -> &'static str {
        "vdi"
    }

    fn virtual_size(&self) -> u64 {
        self.header.virtual_size()
    }

    fn host_storage(&self, file: &Path) -> Option<Arc<dyn Storage>> {
        (file == &*self.file).then(|| Arc::clone(&self.storage))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.virtual_size(), offset, buf.len() as u64)?;
        let bs = self.block_size();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (block, in_block) = (pos / bs, pos % bs);
            let n = ((bs - in_block) as usize).min(buf.len() - done);
            let chunk = &mut buf[done..done + n];
            match self.entry(block)? {
                Entry::Free | Entry::Zero => chunk.fill(0),
                Entry::Slot(slot) => {
                    let host = self.host_range(block, slot, in_block, n as u64)?;
                    self.storage.read_exact_at(chunk, host)?;
                }
            }
            done += n;
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let size = self.virtual_size();
        let limit = vdisk_core::reader::status_len(size, offset, max_len)?;
        let bs = self.block_size();
        let (block, in_block) = (offset / bs, offset % bs);
        let first = (bs - in_block).min(limit);
        match self.entry(block)? {
            Entry::Free | Entry::Zero => {
                // qemu: an unallocated block of a VDI image (which has no backing) reads as zeros.
                let mut len = first;
                let mut next = block + 1;
                while len < limit && matches!(self.entry(next), Ok(Entry::Free | Entry::Zero)) {
                    len = (len + bs).min(limit);
                    next += 1;
                }
                Ok(Extent::new(offset, len, ExtentKind::Zero))
            }
            Entry::Slot(slot) => {
                let host = self.host_range(block, slot, in_block, first)?;
                // As qemu does, ask the file whether the data area is a hole (a sparse static image).
                let (kind, len) = match self.storage.data_run(host, host + first)? {
                    Some((true, end)) => (ExtentKind::Data, end - host),
                    Some((false, end)) => (ExtentKind::ZeroData, end - host),
                    None => (ExtentKind::Data, first),
                };
                Ok(Extent::at_host(
                    offset,
                    len.clamp(1, first),
                    kind,
                    &self.file,
                    host,
                ))
            }
        }
    }

    fn info(&self) -> Result<ImageInfo> {
        let h = &self.header;
        let mut info = ImageInfo::new("vdi", self.virtual_size());
        info.cluster_size = Some(self.block_size());
        info.children = vec![ChildFile {
            name: "file".into(),
            path: self.storage.path().to_path_buf(),
        }];
        let kind = if h.image_type == TYPE_STATIC {
            "static"
        } else {
            "dynamic"
        };
        let d = &mut info.details;
        d.push(("uuid".into(), h.uuid_image.to_string().into()));
        d.push(("modification-uuid".into(), h.uuid_modify.to_string().into()));
        d.push(("parent-uuid".into(), h.uuid_link.to_string().into()));
        d.push(("image-type".into(), kind.into()));
        let version = format!("{}.{}", h.version >> 16, h.version & 0xffff);
        d.push(("header-version".into(), version.into()));
        d.push(("block-size".into(), u64::from(h.block_size).into()));
        d.push((
            "allocated-blocks".into(),
            u64::from(h.blocks_allocated).into(),
        ));
        d.push(("total-blocks".into(), u64::from(h.blocks_in_image).into()));
        d.push(("block-map-offset".into(), h.offset_bmap.into()));
        d.push(("data-offset".into(), h.offset_data.into()));
        if h.block_extra != 0 {
            d.push(("block-extra".into(), u64::from(h.block_extra).into()));
        }
        if !h.description.is_empty() {
            d.push(("description".into(), h.description.clone().into()));
        }
        Ok(info)
    }

    fn check(&self) -> Result<CheckReport> {
        Ok(crate::check::check_map(
            &self.header,
            &self.bmap,
            self.file_len,
        ))
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
