//! `convert --salvage`, qemu-img's salvaging mode (qemu-img.c `convert_co_read` and
//! `convert_iteration_sectors` with `s->salvage`): a read that fails is tried again one 512-byte
//! sector at a time, and each sector that still fails reads as zeros, with a warning naming its
//! offset; a block-status query that fails reports one sector of data (which the reads then try),
//! with a warning. The conversion goes on and succeeds. Only errors of the image's content are
//! salvaged (corrupt metadata or data, I/O errors, limits): what qemu-img refuses when it opens
//! the image for I/O, and vdisk only when it reads (an external data file that cannot be opened,
//! encryption), still fails the conversion.

use std::path::Path;
use std::sync::Arc;
use vdisk_core::{CheckReport, Error, Extent, ExtentKind, ImageInfo, ImageReader, Result, Storage};

/// The unit qemu retries in (`BDRV_SECTOR_SIZE`).
const SECTOR: u64 = 512;

/// Where a salvaging reader reports what it could not read: the message qemu-img prints after
/// "warning: ".
pub type WarnFn = dyn Fn(&str) + Send + Sync;

/// A source read in salvaging mode. Its extents carry no host location, so every byte goes through
/// `read_at` (qemu-img refuses copy offloading in this mode; the memory-mapped read path is not
/// taken either).
pub struct Salvage {
    inner: Arc<dyn ImageReader>,
    warn: Box<WarnFn>,
}

impl Salvage {
    pub fn new(inner: Arc<dyn ImageReader>, warn: Box<WarnFn>) -> Salvage {
        Salvage { inner, warn }
    }
}

/// Whether `e` is a read error qemu-img would salvage (an EIO from the driver), rather than one it
/// reports when opening the image.
fn salvageable(e: &Error) -> bool {
    matches!(
        e,
        Error::Corrupt { .. } | Error::Io { .. } | Error::Limit { .. }
    )
}

impl ImageReader for Salvage {
    fn format_name(&self) -> &'static str {
        self.inner.format_name()
    }

    fn virtual_size(&self) -> u64 {
        self.inner.virtual_size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        match self.inner.read_at(buf, offset) {
            Ok(()) => return Ok(()),
            Err(e) if !salvageable(&e) => return Err(e),
            Err(_) => {}
        }
        for (i, sector) in buf.chunks_mut(SECTOR as usize).enumerate() {
            let at = offset.saturating_add(i as u64 * SECTOR);
            match self.inner.read_at(sector, at) {
                Ok(()) => {}
                Err(e) if !salvageable(&e) => return Err(e),
                Err(e) => {
                    (self.warn)(&format!("error while reading offset {at}: {e}"));
                    sector.fill(0);
                }
            }
        }
        Ok(())
    }

    /// As qemu-img: a failed query is tried again on a quarter of the range (in whole sectors)
    /// until one sector is left; that sector is then reported as data.
    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let mut len = max_len;
        loop {
            match self.inner.block_status(offset, len) {
                Ok(mut e) => {
                    e.host = None;
                    return Ok(e);
                }
                Err(e) if !salvageable(&e) => return Err(e),
                Err(_) if len > SECTOR => len = len.div_ceil(4).next_multiple_of(SECTOR),
                Err(e) => {
                    (self.warn)(&format!(
                        "error while reading block status at offset {offset}: {e}"
                    ));
                    return Ok(Extent::new(offset, len, ExtentKind::Data));
                }
            }
        }
    }

    fn host_storage(&self, _file: &Path) -> Option<Arc<dyn Storage>> {
        None
    }

    fn info(&self) -> Result<ImageInfo> {
        self.inner.info()
    }

    fn ready_for_io(&self) -> Result<()> {
        self.inner.ready_for_io()
    }

    fn check(&self) -> Result<CheckReport> {
        self.inner.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// 4 KiB of 0x5a whose bytes 1024..1536 fail to read, and whose block status fails at 2048.
    struct Flaky;

    impl ImageReader for Flaky {
        fn format_name(&self) -> &'static str {
            "raw"
        }
        fn virtual_size(&self) -> u64 {
            4096
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            let end = offset + buf.len() as u64;
            if offset < 1536 && end > 1024 {
                return Err(Error::corrupt(
                    Path::new("flaky"),
                    Some(offset),
                    "bad sector",
                ));
            }
            buf.fill(0x5a);
            Ok(())
        }
        fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
            if offset == 2048 {
                return Err(Error::corrupt(Path::new("flaky"), None, "bad table"));
            }
            Ok(Extent::new(offset, max_len, ExtentKind::Data))
        }
        fn info(&self) -> Result<ImageInfo> {
            Ok(ImageInfo::new("raw", 4096))
        }
    }

    #[test]
    fn failing_sectors_read_as_zeros_with_a_warning_each() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let warn = Box::new(move |m: &str| log.lock().unwrap().push(m.to_string()));
        let s = Salvage::new(Arc::new(Flaky), warn);
        let mut buf = vec![1u8; 4096];
        s.read_at(&mut buf, 0).unwrap();
        assert!(buf[..1024].iter().all(|b| *b == 0x5a));
        assert!(buf[1024..1536].iter().all(|b| *b == 0));
        assert!(buf[1536..].iter().all(|b| *b == 0x5a));
        assert_eq!(
            *seen.lock().unwrap(),
            ["error while reading offset 1024: flaky: corrupt image at offset 0x400: bad sector"]
        );
        let e = s.block_status(2048, 2048).unwrap();
        assert_eq!((e.offset, e.length, e.kind), (2048, 512, ExtentKind::Data));
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert_eq!(s.block_status(2048, 100).unwrap().length, 100);
        assert_eq!(s.block_status(0, 4096).unwrap().length, 4096);
    }

    /// An image that cannot be read at all (qemu-img fails to open it for I/O).
    struct Unreadable;

    impl ImageReader for Unreadable {
        fn format_name(&self) -> &'static str {
            "qcow2"
        }
        fn virtual_size(&self) -> u64 {
            4096
        }
        fn read_at(&self, _buf: &mut [u8], _offset: u64) -> Result<()> {
            Err(Error::Other("Could not open data file".into()))
        }
        fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
            if offset > 0 {
                return Err(Error::unsupported(Path::new("u"), "encryption"));
            }
            Ok(Extent::new(offset, max_len, ExtentKind::Data))
        }
        fn info(&self) -> Result<ImageInfo> {
            Ok(ImageInfo::new("qcow2", 4096))
        }
    }

    #[test]
    fn errors_of_opening_are_not_salvaged() {
        let s = Salvage::new(
            Arc::new(Unreadable),
            Box::new(|_: &str| panic!("no warning")),
        );
        assert!(s.read_at(&mut [0u8; 1024], 0).is_err());
        assert!(s.block_status(512, 512).is_err());
    }
}
