//! Several images read as one disk, back to back, as `qemu-img convert SRC1 SRC2 ... DST` does.

use crate::error::{Error, Result};
use crate::extent::Extent;
use crate::info::ImageInfo;
use crate::reader::{check_range, ImageReader};
use crate::storage::Storage;
use std::path::Path;
use std::sync::Arc;

/// The concatenation of several images.
pub struct Concat {
    parts: Vec<(u64, Arc<dyn ImageReader>)>,
    size: u64,
}

impl Concat {
    /// Joins `parts` in order; fails if the total size overflows.
    pub fn new(parts: Vec<Arc<dyn ImageReader>>) -> Result<Self> {
        let mut size = 0u64;
        let mut v = Vec::with_capacity(parts.len());
        for p in parts {
            v.push((size, Arc::clone(&p)));
            size = size
                .checked_add(p.virtual_size())
                .ok_or_else(|| Error::invalid("total size of the sources overflows"))?;
        }
        Ok(Concat { parts: v, size })
    }

    fn part_at(&self, offset: u64) -> Option<&(u64, Arc<dyn ImageReader>)> {
        let i = self.parts.partition_point(|(start, _)| *start <= offset);
        self.parts[..i]
            .iter()
            .rev()
            .find(|(start, r)| offset < start + r.virtual_size())
    }
}

impl ImageReader for Concat {
    fn format_name(&self) -> &'static str {
        self.parts
            .first()
            .map(|(_, r)| r.format_name())
            .unwrap_or("raw")
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn ready_for_io(&self) -> Result<()> {
        self.parts.iter().try_for_each(|(_, r)| r.ready_for_io())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (start, r) = self
                .part_at(pos)
                .ok_or_else(|| Error::invalid("read outside the sources"))?;
            let local = pos - start;
            let n = ((r.virtual_size() - local) as usize).min(buf.len() - done);
            r.read_at(&mut buf[done..done + n], local)?;
            done += n;
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let (start, r) = self
            .part_at(offset)
            .ok_or_else(|| Error::invalid("block status outside the sources"))?;
        let local = offset - start;
        let mut e = r.block_status(local, max_len.min(r.virtual_size() - local))?;
        e.offset += start;
        Ok(e)
    }

    fn copy_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let (start, r) = self
            .part_at(offset)
            .ok_or_else(|| Error::invalid("block status outside the sources"))?;
        let local = offset - start;
        let mut e = r.copy_status(local, max_len.min(r.virtual_size() - local))?;
        e.offset += start;
        Ok(e)
    }

    fn host_storage(&self, file: &Path) -> Option<Arc<dyn Storage>> {
        self.parts.iter().find_map(|(_, r)| r.host_storage(file))
    }

    fn info(&self) -> Result<ImageInfo> {
        match self.parts.first() {
            Some((_, r)) => {
                let mut i = r.info()?;
                i.virtual_size = self.size;
                Ok(i)
            }
            None => Err(Error::invalid("no source images")),
        }
    }
}
