//! The byte range a filesystem lives in, read with bounds checks: every read of a filesystem
//! structure or of file data goes through [`Device::read`], which refuses ranges outside the
//! device (so a block number from a damaged filesystem never reads outside its partition).

use std::path::Path;
use std::sync::Arc;
use vdisk_core::{Error, ImageReader, Result};

/// A filesystem's device and the name its errors carry (`ext4`, `vfat`).
#[derive(Clone)]
pub struct Device {
    reader: Arc<dyn ImageReader>,
    size: u64,
    name: &'static str,
}

impl Device {
    pub fn new(reader: Arc<dyn ImageReader>, name: &'static str) -> Device {
        let size = reader.virtual_size();
        Device { reader, size, name }
    }

    /// The reader under the device.
    pub fn reader(&self) -> Arc<dyn ImageReader> {
        self.reader.clone()
    }

    /// The device size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The name errors carry in place of a path.
    pub fn path(&self) -> &Path {
        Path::new(self.name)
    }

    /// Fills `buf` from `offset`; a range outside the device is a corruption of `what`.
    pub fn read(&self, offset: u64, buf: &mut [u8], what: &str) -> Result<()> {
        match offset.checked_add(buf.len() as u64) {
            Some(end) if end <= self.size => self.reader.read_at(buf, offset),
            _ => Err(self.corrupt(
                Some(offset),
                format!(
                    "{what}: {} bytes at offset {offset} lie outside the filesystem's {} bytes",
                    buf.len(),
                    self.size
                ),
            )),
        }
    }

    /// `len` bytes at `offset` (the caller bounds `len`).
    pub fn read_vec(&self, offset: u64, len: usize, what: &str) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.read(offset, &mut v, what)?;
        Ok(v)
    }

    /// A corruption error naming this filesystem.
    pub fn corrupt(&self, offset: Option<u64>, what: impl Into<String>) -> Error {
        Error::corrupt(self.path(), offset, what)
    }

    /// An unsupported-feature error naming this filesystem.
    pub fn unsupported(&self, what: impl Into<String>) -> Error {
        Error::unsupported(self.path(), what)
    }

    /// A named limit exceeded.
    pub fn limit(&self, what: &'static str, value: u64, limit: u64) -> Error {
        Error::limit(self.path(), what, value, limit)
    }
}
