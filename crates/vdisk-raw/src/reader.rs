//! Reading a raw image: the file is the disk. The virtual size is the file length rounded up to a
//! sector (as qemu's `bdrv_getlength` reports it), the bytes past the end of the file read as zeros,
//! and block status comes from the file's holes (file-posix's `raw_co_block_status`).

use crate::round_up_sector;
use std::path::Path;
use std::sync::Arc;
use vdisk_core::reader::check_range;
use vdisk_core::{ChildFile, Error, Extent, ExtentKind, ImageInfo, ImageReader, Result, Storage};

/// An opened raw image.
pub struct RawReader {
    storage: Arc<dyn Storage>,
    file: Arc<Path>,
    file_len: u64,
    size: u64,
}

/// Opens a raw image over `storage` (a file, a block device through `FileStorage`, or memory).
/// Opening never writes.
pub fn open(storage: Arc<dyn Storage>) -> Result<RawReader> {
    let file_len = storage.len()?;
    let file: Arc<Path> = Arc::from(storage.path());
    Ok(RawReader {
        storage,
        file,
        file_len,
        size: round_up_sector(file_len),
    })
}

impl RawReader {
    /// The store the image is read from.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The length of the file itself (the virtual size is this rounded up to 512 bytes).
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    fn extent(&self, offset: u64, len: u64, kind: ExtentKind) -> Extent {
        Extent::at_host(offset, len, kind, &self.file, offset)
    }
}

impl ImageReader for RawReader {
    fn format_name(&self) -> &'static str {
        "raw"
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        self.storage.read_zero_padded(buf, offset)
    }

    fn host_storage(&self, file: &Path) -> Option<Arc<dyn Storage>> {
        (file == &*self.file).then(|| Arc::clone(&self.storage))
    }

    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let end = offset
            .checked_add(max_len)
            .map(|e| e.min(self.size))
            .ok_or_else(|| Error::invalid("block status range overflows"))?;
        if offset >= end {
            return Err(Error::invalid(format!(
                "block status at offset {offset} is outside the virtual disk of {} bytes",
                self.size
            )));
        }
        if offset >= self.file_len {
            // The tail of the last sector, past the end of the file: zeros, as qemu maps it.
            return Ok(self.extent(offset, end - offset, ExtentKind::Zero));
        }
        let file_end = end.min(self.file_len);
        match self.storage.data_run(offset, file_end)? {
            Some((true, run_end)) => Ok(self.extent(offset, run_end - offset, ExtentKind::Data)),
            Some((false, run_end)) => {
                // A hole reaching the end of the file continues into the zero tail of the last sector.
                let run_end = if run_end >= self.file_len {
                    end
                } else {
                    run_end
                };
                Ok(self.extent(offset, run_end - offset, ExtentKind::Zero))
            }
            None => Ok(self.extent(offset, file_end - offset, ExtentKind::Data)),
        }
    }

    fn info(&self) -> Result<ImageInfo> {
        let mut info = ImageInfo::new("raw", self.size);
        info.children.push(ChildFile {
            name: "file".into(),
            path: self.storage.path().to_path_buf(),
        });
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdisk_core::MemStorage;

    #[test]
    fn odd_length_store_reads_as_whole_sectors() {
        let r = open(MemStorage::new("m", vec![7u8; 700]).shared()).unwrap();
        assert_eq!(r.virtual_size(), 1024);
        let mut buf = vec![1u8; 1024];
        r.read_at(&mut buf, 0).unwrap();
        assert!(buf[..700].iter().all(|b| *b == 7));
        assert!(buf[700..].iter().all(|b| *b == 0));
        assert!(r.read_at(&mut buf[..2], 1023).is_err());
        let e = r.block_status(0, 1024).unwrap();
        assert_eq!((e.offset, e.length, e.kind), (0, 700, ExtentKind::Data));
        let e = r.block_status(700, 1024).unwrap();
        assert_eq!((e.offset, e.length, e.kind), (700, 324, ExtentKind::Zero));
        assert_eq!(e.host.unwrap().offset, 700);
        assert!(r.block_status(1024, 1).is_err());
        assert!(r.block_status(5, u64::MAX).is_err());
    }

    #[test]
    fn info_names_the_file_child() {
        let r = open(MemStorage::new("disk.img", vec![0u8; 512]).shared()).unwrap();
        let i = r.info().unwrap();
        assert_eq!(i.format, "raw");
        assert_eq!(i.virtual_size, 512);
        assert_eq!(i.cluster_size, None);
        assert_eq!(
            i.children,
            vec![ChildFile {
                name: "file".into(),
                path: "disk.img".into()
            }]
        );
    }

    #[test]
    fn empty_store_is_an_empty_disk() {
        let r = open(MemStorage::new("e", vec![]).shared()).unwrap();
        assert_eq!(r.virtual_size(), 0);
        r.read_at(&mut [], 0).unwrap();
        assert!(r.block_status(0, 1).is_err());
    }
}
