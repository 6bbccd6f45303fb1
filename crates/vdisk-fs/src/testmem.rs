//! An in-memory device for unit tests.

use std::sync::Arc;
use vdisk_core::reader::check_range;
use vdisk_core::{Extent, ExtentKind, ImageInfo, ImageReader, Result};

pub struct Mem(pub Vec<u8>);

impl ImageReader for Mem {
    fn format_name(&self) -> &'static str {
        "raw"
    }
    fn virtual_size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.0.len() as u64, offset, buf.len() as u64)?;
        let o = offset as usize;
        buf.copy_from_slice(&self.0[o..o + buf.len()]);
        Ok(())
    }
    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        Ok(Extent::new(offset, max_len, ExtentKind::Data))
    }
    fn info(&self) -> Result<ImageInfo> {
        Ok(ImageInfo::new("raw", self.0.len() as u64))
    }
}

pub fn device(bytes: Vec<u8>) -> crate::device::Device {
    crate::device::Device::new(Arc::new(Mem(bytes)), "test")
}
