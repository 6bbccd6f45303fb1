//! A range of an image read as a disk of its own, as `qemu-img dd skip=N count=M` reads its input.

use crate::error::Result;
use crate::extent::Extent;
use crate::info::ImageInfo;
use crate::reader::{check_range, checked_block_status, checked_copy_status, ImageReader};
use crate::storage::Storage;
use std::path::Path;
use std::sync::Arc;

/// The guest bytes `start..start + len` of an image.
pub struct Window {
    inner: Arc<dyn ImageReader>,
    start: u64,
    len: u64,
}

impl Window {
    /// The range `start..start + len` of `inner`, which must lie inside it.
    pub fn new(inner: Arc<dyn ImageReader>, start: u64, len: u64) -> Result<Window> {
        check_range(inner.virtual_size(), start, len)?;
        Ok(Window { inner, start, len })
    }
}

impl ImageReader for Window {
    fn format_name(&self) -> &'static str {
        self.inner.format_name()
    }

    fn virtual_size(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.len, offset, buf.len() as u64)?;
        self.inner.read_at(buf, self.start + offset)
    }

    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        check_range(self.len, offset, 0)?;
        let max_len = max_len.min(self.len - offset);
        let mut e = checked_block_status(self.inner.as_ref(), self.start + offset, max_len)?;
        e.offset = offset;
        e.length = e.length.min(max_len);
        Ok(e)
    }

    fn copy_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        check_range(self.len, offset, 0)?;
        let max_len = max_len.min(self.len - offset);
        let mut e = checked_copy_status(self.inner.as_ref(), self.start + offset, max_len)?;
        e.offset = offset;
        e.length = e.length.min(max_len);
        Ok(e)
    }

    fn host_storage(&self, file: &Path) -> Option<Arc<dyn Storage>> {
        self.inner.host_storage(file)
    }

    fn info(&self) -> Result<ImageInfo> {
        self.inner.info()
    }

    fn ready_for_io(&self) -> Result<()> {
        self.inner.ready_for_io()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::ExtentKind;

    /// 4 KiB whose byte i is i / 512 (one value a sector), data in the first half only.
    struct Sectors;

    impl ImageReader for Sectors {
        fn format_name(&self) -> &'static str {
            "raw"
        }
        fn virtual_size(&self) -> u64 {
            4096
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            check_range(4096, offset, buf.len() as u64)?;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = ((offset + i as u64) / 512) as u8;
            }
            Ok(())
        }
        fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
            let (kind, end) = if offset < 2048 {
                (ExtentKind::Data, 2048)
            } else {
                (ExtentKind::Zero, 4096)
            };
            Ok(Extent::new(offset, (end - offset).min(max_len), kind))
        }
        fn info(&self) -> Result<ImageInfo> {
            Ok(ImageInfo::new("raw", 4096))
        }
    }

    #[test]
    fn reads_and_maps_its_range() {
        let w = Window::new(Arc::new(Sectors), 1024, 2048).unwrap();
        assert_eq!(w.virtual_size(), 2048);
        let mut b = [0u8; 4];
        w.read_at(&mut b, 1022).unwrap();
        assert_eq!(b, [3, 3, 4, 4]);
        let e = w.block_status(0, 2048).unwrap();
        assert_eq!((e.offset, e.length, e.kind), (0, 1024, ExtentKind::Data));
        let e = w.block_status(1024, 4096).unwrap();
        assert_eq!((e.offset, e.length, e.kind), (1024, 1024, ExtentKind::Zero));
        assert!(w.read_at(&mut b, 2046).is_err());
        assert!(Window::new(Arc::new(Sectors), 4000, 200).is_err());
        assert_eq!(
            Window::new(Arc::new(Sectors), 4096, 0)
                .unwrap()
                .virtual_size(),
            0
        );
    }
}
