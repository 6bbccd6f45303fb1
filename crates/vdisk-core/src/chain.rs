//! A backing chain: an overlay layer over its backing image, resolved the way qemu's block layer does
//! (`bdrv_block_status_above`): ranges unallocated in the overlay come from the backing image, and
//! reads past the end of a shorter backing image return zeros.

use crate::error::Result;
use crate::extent::{Extent, ExtentKind};
use crate::info::{CheckReport, ImageInfo};
use crate::reader::{check_range, ImageReader};
use crate::storage::Storage;
use std::path::Path;
use std::sync::Arc;

/// An image layer with its (already opened) backing image, itself possibly a chain.
pub struct Chain {
    top: Arc<dyn ImageReader>,
    backing: Arc<dyn ImageReader>,
}

impl Chain {
    /// Stacks `top` over `backing`.
    pub fn new(top: Arc<dyn ImageReader>, backing: Arc<dyn ImageReader>) -> Self {
        Chain { top, backing }
    }

    /// The overlay layer.
    pub fn top(&self) -> &Arc<dyn ImageReader> {
        &self.top
    }

    /// The backing image.
    pub fn backing(&self) -> &Arc<dyn ImageReader> {
        &self.backing
    }
}

/// One layer's status query: `block_status` or `copy_status`.
type StatusFn = dyn Fn(&dyn ImageReader, u64, u64) -> Result<Extent>;

impl Chain {
    /// The status of the chain from `query` on each layer: the top layer's, or where that is
    /// unallocated the backing image's (one level deeper).
    fn status(&self, offset: u64, max_len: u64, query: &StatusFn) -> Result<Extent> {
        let e = query(self.top.as_ref(), offset, max_len)?;
        if e.kind != ExtentKind::Unallocated {
            return Ok(e);
        }
        let bsize = self.backing.virtual_size();
        if offset >= bsize {
            // Past the end of the backing image: unallocated, reads as zeros, answered by this layer.
            return Ok(e);
        }
        let mut b = query(self.backing.as_ref(), offset, e.length.min(bsize - offset))?;
        b.truncate(e.length);
        b.depth += 1;
        Ok(b)
    }
}

impl ImageReader for Chain {
    fn format_name(&self) -> &'static str {
        self.top.format_name()
    }

    fn ready_for_io(&self) -> Result<()> {
        self.top.ready_for_io()?;
        self.backing.ready_for_io()
    }

    fn virtual_size(&self) -> u64 {
        self.top.virtual_size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.virtual_size(), offset, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let want = (buf.len() - done) as u64;
            let e = self.top.block_status(pos, want)?;
            let n = e.length.min(want).max(1) as usize;
            let n = n.min(buf.len() - done);
            let chunk = &mut buf[done..done + n];
            if e.kind == ExtentKind::Unallocated {
                let bsize = self.backing.virtual_size();
                if pos >= bsize {
                    chunk.fill(0);
                } else {
                    let inside = ((bsize - pos).min(n as u64)) as usize;
                    self.backing.read_at(&mut chunk[..inside], pos)?;
                    chunk[inside..].fill(0);
                }
            } else {
                self.top.read_at(chunk, pos)?;
            }
            done += n;
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        self.status(offset, max_len, &|r, o, l| r.block_status(o, l))
    }

    fn copy_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        self.status(offset, max_len, &|r, o, l| r.copy_status(o, l))
    }

    fn host_storage(&self, file: &Path) -> Option<Arc<dyn Storage>> {
        self.top
            .host_storage(file)
            .or_else(|| self.backing.host_storage(file))
    }

    fn info(&self) -> Result<ImageInfo> {
        self.top.info()
    }

    fn check(&self) -> Result<CheckReport> {
        self.top.check()
    }
}
