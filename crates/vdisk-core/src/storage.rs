//! The bytes behind an image: a host file or an in-memory buffer, read and written positionally so
//! that many threads may share one handle. Errors carry the file name and offset.

use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// A positional byte store holding (part of) an image.
pub trait Storage: Send + Sync {
    /// The name used in messages and in `qemu-img map`'s File column.
    fn path(&self) -> &Path;

    /// Current length in bytes.
    fn len(&self) -> Result<u64>;

    /// Whether the store is empty.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (less only at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize>;

    /// Reads exactly `buf.len()` bytes at `offset`, failing with a corruption error past the end.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset
                .checked_add(done as u64)
                .ok_or_else(|| Error::corrupt(self.path(), Some(offset), "offset overflows"))?;
            let n = self.read_at(&mut buf[done..], at)?;
            if n == 0 {
                return Err(Error::corrupt(
                    self.path(),
                    Some(at),
                    format!(
                        "unexpected end of file reading {} bytes at {offset:#x}",
                        buf.len()
                    ),
                ));
            }
            done += n;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset`, filling with zeros whatever lies past the end of the store.
    fn read_zero_padded(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_at(&mut buf[done..], offset.saturating_add(done as u64))?;
            if n == 0 {
                buf[done..].fill(0);
                break;
            }
            done += n;
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        let _ = (buf, offset);
        Err(Error::Other(format!(
            "{}: opened read-only",
            self.path().display()
        )))
    }

    /// Writes `len` zero bytes at `offset` ([`crate::zero::write_zeros`] through `write_at`).
    fn write_zeros(&self, offset: u64, len: u64) -> Result<()> {
        crate::zero::write_zeros(offset, len, |b, at| self.write_at(b, at))
    }

    /// Sets the length of the store.
    fn set_len(&self, len: u64) -> Result<()> {
        let _ = len;
        Err(Error::Other(format!(
            "{}: opened read-only",
            self.path().display()
        )))
    }

    /// Flushes written data to stable storage.
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    /// For a file with holes: whether `offset` is in data (`true`) or a hole (`false`), and where that
    /// run ends (at most `end`). `None` when the store cannot tell (then everything is data).
    fn data_run(&self, offset: u64, end: u64) -> Result<Option<(bool, u64)>> {
        let _ = (offset, end);
        Ok(None)
    }

    /// Bytes the store occupies on disk (qemu's `actual-size`), when known.
    fn allocated_bytes(&self) -> Option<u64> {
        None
    }

    /// The host file behind the store, when there is one (for copy offloading, `convert -C`).
    fn as_file(&self) -> Option<&File> {
        None
    }
}

/// A host file or block device.
#[derive(Debug)]
pub struct FileStorage {
    /// Shared with the [`crate::OutputFile`] being written, when made by its `storage`.
    file: Arc<File>,
    path: PathBuf,
    writable: bool,
}

impl FileStorage {
    /// Opens `path` read-only. Opening for inspection never modifies the file.
    ///
    /// FIFOs and sockets are refused: an image can name any path as its backing file or extent, and
    /// opening a FIFO for reading would wait for a writer forever. The file is opened non-blocking
    /// for that check (which changes nothing for regular files and block devices), then switched
    /// back to blocking reads.
    pub fn open(path: &Path) -> Result<Self> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let open_err = |source| Error::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(open_err)?;
        let kind = file.metadata().map_err(open_err)?.file_type();
        if kind.is_dir() {
            // qemu's file driver refuses it when it opens (a directory opens, and only reads fail).
            let what = format!(
                "'file' driver requires '{}' to be a regular file",
                path.display()
            );
            return Err(open_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                what,
            )));
        }
        if kind.is_fifo() || kind.is_socket() {
            let what = "Not a regular file or block device (a FIFO or socket)";
            return Err(open_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                what,
            )));
        }
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own, only reading and setting its status flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
            return Err(open_err(std::io::Error::last_os_error()));
        }
        // Read as a consistent whole: others may read, not write or resize (unless `-U`).
        let file = Arc::new(file);
        crate::locks::take_for_reading(&file).map_err(|c| open_err(c.into_io(path)))?;
        Ok(Self::from_shared(file, path, false))
    }

    /// Opens an existing `path` for reading and writing, with QEMU's locks for a writer: nobody
    /// else may read it as a consistent whole, write it or resize it meanwhile.
    pub fn open_rw(path: &Path) -> Result<Self> {
        let open_err = |source| Error::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(open_err)?;
        let file = Arc::new(file);
        crate::locks::take_for_writing(&file).map_err(|c| open_err(c.into_io(path)))?;
        Ok(Self::from_shared(file, path, true))
    }

    /// Wraps an already open file.
    pub fn from_file(file: File, path: &Path, writable: bool) -> Self {
        Self::from_shared(Arc::new(file), path, writable)
    }

    /// Wraps an open file that others hold too (no descriptor is duplicated).
    pub fn from_shared(file: Arc<File>, path: &Path, writable: bool) -> Self {
        FileStorage {
            file,
            path: path.to_path_buf(),
            writable,
        }
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    fn seek(&self, offset: u64, whence: libc::c_int) -> Result<Option<u64>> {
        let off = i64::try_from(offset).map_err(|_| Error::invalid("offset out of range"))?;
        // SAFETY: lseek on a file descriptor we own; it only moves the file position, which positional
        // reads and writes never use.
        let r = unsafe { libc::lseek(self.file.as_raw_fd(), off, whence) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                return Ok(None);
            }
            return Err(Error::io(&self.path, offset, e));
        }
        Ok(Some(r as u64))
    }
}

impl Storage for FileStorage {
    fn path(&self) -> &Path {
        &self.path
    }

    fn as_file(&self) -> Option<&File> {
        Some(&self.file)
    }

    fn len(&self) -> Result<u64> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, 0, e))?;
        if meta.file_type().is_file() {
            return Ok(meta.len());
        }
        // Block devices report length 0 in metadata: ask the device by seeking to its end.
        Ok(self.seek(0, libc::SEEK_END)?.unwrap_or(0))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(&self.path, offset, e)),
            }
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        if !self.writable {
            return Err(Error::Other(format!(
                "{}: opened read-only",
                self.path.display()
            )));
        }
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| Error::io(&self.path, offset, e))
    }

    fn set_len(&self, len: u64) -> Result<()> {
        if !self.writable {
            return Err(Error::Other(format!(
                "{}: opened read-only",
                self.path.display()
            )));
        }
        self.file
            .set_len(len)
            .map_err(|e| Error::io(&self.path, len, e))
    }

    fn sync(&self) -> Result<()> {
        if self.writable {
            self.file
                .sync_all()
                .map_err(|e| Error::io(&self.path, 0, e))?;
        }
        Ok(())
    }

    fn data_run(&self, offset: u64, end: u64) -> Result<Option<(bool, u64)>> {
        if offset >= end {
            return Ok(Some((true, end)));
        }
        let Ok(meta) = self.file.metadata() else {
            return Ok(None);
        };
        if !meta.file_type().is_file() {
            return Ok(None);
        }
        let data = match self.seek(offset, libc::SEEK_DATA) {
            Ok(Some(d)) => d,
            // ENXIO: no data at or after offset, so the rest up to end is a hole.
            Ok(None) => return Ok(Some((false, end))),
            // Filesystems without SEEK_DATA support: treat as all data.
            Err(_) => return Ok(None),
        };
        if data > offset {
            return Ok(Some((false, data.min(end))));
        }
        let hole = self.seek(offset, libc::SEEK_HOLE)?.unwrap_or(end);
        Ok(Some((true, hole.clamp(offset + 1, end))))
    }

    fn allocated_bytes(&self) -> Option<u64> {
        self.file.metadata().ok().map(|m| m.blocks() * 512)
    }
}

/// An image held in memory: fuzzing, tests, and small scratch images.
#[derive(Debug)]
pub struct MemStorage {
    data: RwLock<Vec<u8>>,
    path: PathBuf,
}

impl MemStorage {
    /// A store holding `data`, named `name` in messages.
    pub fn new(name: &str, data: Vec<u8>) -> Self {
        MemStorage {
            data: RwLock::new(data),
            path: PathBuf::from(name),
        }
    }

    /// A copy of the current contents.
    pub fn contents(&self) -> Vec<u8> {
        self.data.read().map(|d| d.clone()).unwrap_or_default()
    }

    /// Wraps the store for sharing.
    pub fn shared(self) -> Arc<dyn Storage> {
        Arc::new(self)
    }
}

impl Storage for MemStorage {
    fn path(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> Result<u64> {
        Ok(self.data.read().map(|d| d.len() as u64).unwrap_or(0))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let data = self
            .data
            .read()
            .map_err(|_| Error::Other("memory store poisoned".into()))?;
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= data.len() {
            return Ok(0);
        }
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        let mut data = self
            .data
            .write()
            .map_err(|_| Error::Other("memory store poisoned".into()))?;
        let start = usize::try_from(offset).map_err(|_| Error::invalid("offset out of range"))?;
        let end = start
            .checked_add(buf.len())
            .ok_or_else(|| Error::invalid("offset out of range"))?;
        if end > data.len() {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(buf);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<()> {
        let mut data = self
            .data
            .write()
            .map_err(|_| Error::Other("memory store poisoned".into()))?;
        let len = usize::try_from(len).map_err(|_| Error::invalid("length out of range"))?;
        data.resize(len, 0);
        Ok(())
    }
}

/// Opens host files by path. Formats whose images span several files (external data files, VMDK
/// extents, backing images) open them through this, so that tests and fuzzers can refuse or fake them.
pub trait FileOpener: Send + Sync {
    /// Opens `path` for reading.
    fn open(&self, path: &Path) -> Result<Arc<dyn Storage>>;
}

/// Opens real files from the host file system, read-only.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostFiles;

impl FileOpener for HostFiles {
    fn open(&self, path: &Path) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(FileStorage::open(path)?))
    }
}

/// Refuses every file: for fuzzing and for parsing a lone in-memory image.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFiles;

impl FileOpener for NoFiles {
    fn open(&self, path: &Path) -> Result<Arc<dyn Storage>> {
        Err(Error::Open {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory"),
        })
    }
}

/// Resolves a file name stored inside an image (backing file, extent, data file) the way qemu does:
/// absolute names stay, relative names are taken from the directory of the image that names them.
pub fn resolve_relative(image: &Path, name: impl AsRef<Path>) -> PathBuf {
    let p = name.as_ref();
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match image.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_storage_reads_and_pads() {
        let m = MemStorage::new("m", vec![1, 2, 3]);
        let mut b = [9u8; 5];
        assert_eq!(m.read_at(&mut b, 1).unwrap(), 2);
        assert!(m.read_exact_at(&mut b, 0).is_err());
        m.read_zero_padded(&mut b, 1).unwrap();
        assert_eq!(b, [2, 3, 0, 0, 0]);
        assert_eq!(m.read_at(&mut b, u64::MAX).unwrap(), 0);
    }

    #[test]
    fn relative_names_resolve_from_image_dir() {
        assert_eq!(
            resolve_relative(Path::new("/a/b/top.qcow2"), "base.raw"),
            PathBuf::from("/a/b/base.raw")
        );
        assert_eq!(
            resolve_relative(Path::new("top.qcow2"), "base.raw"),
            PathBuf::from("base.raw")
        );
        assert_eq!(
            resolve_relative(Path::new("/a/top"), "/x/base"),
            PathBuf::from("/x/base")
        );
    }

    #[test]
    fn fifos_are_refused_without_waiting_for_a_writer() {
        let path = std::env::temp_dir().join(format!("vdisk-core-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let r = FileStorage::open(&path);
        std::fs::remove_file(&path).unwrap();
        let e = r.unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        // Regular files still read normally, and blocking, after the non-blocking open.
        let f = std::env::temp_dir().join(format!("vdisk-core-plain-{}", std::process::id()));
        std::fs::write(&f, b"abc").unwrap();
        let s = FileStorage::open(&f).unwrap();
        let mut b = [0u8; 3];
        s.read_exact_at(&mut b, 0).unwrap();
        std::fs::remove_file(&f).unwrap();
        assert_eq!(&b, b"abc");
        // SAFETY: reading the status flags of a descriptor the store owns.
        let flags = unsafe { libc::fcntl(s.file().as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
    }

    #[test]
    fn file_storage_finds_holes() {
        let path = std::env::temp_dir().join(format!("vdisk-core-holes-{}", std::process::id()));
        let f = File::create(&path).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&[1u8; 4096], 4 << 20).unwrap();
        f.sync_all().unwrap();
        let s = FileStorage::open(&path).unwrap();
        let runs = [
            s.data_run(0, 8 << 20),
            s.data_run(4 << 20, 8 << 20),
            s.data_run((4 << 20) + 4096, 8 << 20),
        ];
        std::fs::remove_file(&path).unwrap();
        let runs: Vec<_> = runs
            .into_iter()
            .map(|r| r.unwrap().expect("SEEK_DATA supported"))
            .collect();
        assert_eq!(runs[0], (false, 4 << 20));
        assert!(runs[1].0 && runs[1].1 >= (4 << 20) + 4096);
        assert_eq!(runs[2], (false, 8 << 20));
    }
}
