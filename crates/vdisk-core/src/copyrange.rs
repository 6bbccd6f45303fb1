//! Copy offloading (`qemu-img convert -C`): guest data stored uncompressed in a host file is copied
//! into the output file by the kernel with `copy_file_range(2)` (block/file-posix.c
//! `raw_co_copy_range_to`), so it never passes through a user-space buffer. Where the kernel cannot
//! offload (files on different filesystems, a block device, an old kernel), the range is read and
//! written through a bounce buffer instead, as qemu falls back to plain reads and writes.

use crate::error::{Error, Result};
use crate::storage::Storage;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;

/// The bounce buffer of the read/write fallback.
const FALLBACK_BUFFER: usize = 1 << 20;

/// The most one `copy_file_range` call is asked to copy (the kernel caps a call at about 2 GiB
/// anyway, `MAX_RW_COUNT`).
const MAX_CALL: u64 = 1 << 30;

/// `len` bytes of a host file at `offset`: the source of an offloaded copy.
#[derive(Clone)]
pub struct HostRange {
    /// The host file, as the reader opened it.
    pub storage: Arc<dyn Storage>,
    /// Byte offset in the host file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl std::fmt::Debug for HostRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRange")
            .field("file", &self.storage.path())
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

impl PartialEq for HostRange {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
            && self.offset == other.offset
            && self.len == other.len
    }
}

impl Eq for HostRange {}

impl HostRange {
    /// The range, when it can be offloaded: a host file (not an in-memory store) whose current
    /// length covers all of it. A range reaching past the end of its file is left to the reader,
    /// which knows what the format reads there.
    pub fn offloadable(storage: &Arc<dyn Storage>, offset: u64, len: u64) -> Result<Option<Self>> {
        if storage.as_file().is_none() {
            return Ok(None);
        }
        let end = match offset.checked_add(len) {
            Some(e) => e,
            None => return Ok(None),
        };
        if end > storage.len()? {
            return Ok(None);
        }
        Ok(Some(HostRange {
            storage: Arc::clone(storage),
            offset,
            len,
        }))
    }

    /// Copies the range to `dst_offset` in `dst` (named `dst_path` in errors), offloaded when the
    /// kernel can. `offload` is cleared at the first call the kernel refuses, so that later ranges
    /// go straight to the fallback.
    pub fn copy_to(
        &self,
        dst: &File,
        dst_path: &Path,
        dst_offset: u64,
        offload: &mut bool,
    ) -> Result<()> {
        let src = self.storage.as_file().ok_or_else(|| {
            Error::invalid(format!(
                "{}: copy offloading needs a host file",
                self.storage.path().display()
            ))
        })?;
        let mut done = 0u64;
        while done < self.len && *offload {
            let want = (self.len - done).min(MAX_CALL) as usize;
            match copy_file_range(src, self.offset + done, dst, dst_offset + done, want) {
                Ok(0) => return Err(self.ended_early(done)),
                Ok(n) => done += n as u64,
                Err(e) if cannot_offload(&e) => *offload = false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(dst_path, dst_offset + done, e)),
            }
        }
        if done < self.len {
            self.bounce(src, done, dst, dst_path, dst_offset)?;
        }
        Ok(())
    }

    /// The fallback: reads and writes what is left from `done` on through a bounce buffer.
    fn bounce(
        &self,
        src: &File,
        mut done: u64,
        dst: &File,
        dst_path: &Path,
        dst_offset: u64,
    ) -> Result<()> {
        let mut buf = vec![0u8; (self.len - done).min(FALLBACK_BUFFER as u64) as usize];
        while done < self.len {
            let n = ((self.len - done) as usize).min(buf.len());
            let at = self.offset + done;
            let got = src
                .read_at(&mut buf[..n], at)
                .map_err(|e| Error::io(self.storage.path(), at, e))?;
            if got == 0 {
                return Err(self.ended_early(done));
            }
            dst.write_all_at(&buf[..got], dst_offset + done)
                .map_err(|e| Error::io(dst_path, dst_offset + done, e))?;
            done += got as u64;
        }
        Ok(())
    }

    fn ended_early(&self, done: u64) -> Error {
        Error::Other(format!(
            "{}: the file ended at {} while {} bytes were copied from {} (was it truncated?)",
            self.storage.path().display(),
            self.offset + done,
            self.len,
            self.offset
        ))
    }
}

/// Errors that mean "this kernel or filesystem pair cannot offload", not "the copy failed".
fn cannot_offload(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::EBADF)
    )
}

/// One `copy_file_range` call at explicit offsets (the descriptors' positions are not used).
fn copy_file_range(
    src: &File,
    src_off: u64,
    dst: &File,
    dst_off: u64,
    len: usize,
) -> std::io::Result<usize> {
    let bad = || std::io::Error::from_raw_os_error(libc::EINVAL);
    let mut off_in = libc::loff_t::try_from(src_off).map_err(|_| bad())?;
    let mut off_out = libc::loff_t::try_from(dst_off).map_err(|_| bad())?;
    // SAFETY: both descriptors are open for the duration of the call and the offsets are local
    // variables the kernel updates; no user-space memory is read or written.
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            len,
            0,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{FileStorage, MemStorage};

    fn patterned(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    /// A directory of its own under the system's temporary directory, removed on drop.
    struct TestDir(std::path::PathBuf);

    impl TestDir {
        fn new(name: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("vdisk-copyrange-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            TestDir(p)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn source(dir: &Path, data: &[u8]) -> Arc<dyn Storage> {
        let p = dir.join("src.bin");
        std::fs::write(&p, data).unwrap();
        Arc::new(FileStorage::open(&p).unwrap())
    }

    #[test]
    fn offloaded_and_bounced_copies_write_the_same_bytes() {
        let dir = TestDir::new("same");
        let data = patterned(3 * FALLBACK_BUFFER + 12345);
        let src = source(dir.path(), &data);
        for offload in [true, false] {
            let out_path = dir.path().join(format!("out-{offload}.bin"));
            let out = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&out_path)
                .unwrap();
            let r = HostRange::offloadable(&src, 1000, data.len() as u64 - 1000)
                .unwrap()
                .unwrap();
            let mut flag = offload;
            r.copy_to(&out, &out_path, 512, &mut flag).unwrap();
            let got = std::fs::read(&out_path).unwrap();
            assert_eq!(got.len(), 512 + data.len() - 1000, "offload={offload}");
            assert!(got[..512].iter().all(|&b| b == 0));
            assert!(got[512..] == data[1000..], "offload={offload}");
        }
    }

    #[test]
    fn ranges_past_the_end_or_in_memory_are_not_offloadable() {
        let dir = TestDir::new("past");
        let src = source(dir.path(), &patterned(8192));
        assert!(HostRange::offloadable(&src, 4096, 4096).unwrap().is_some());
        assert!(HostRange::offloadable(&src, 4096, 4097).unwrap().is_none());
        assert!(HostRange::offloadable(&src, u64::MAX, 2).unwrap().is_none());
        let mem = MemStorage::new("m", patterned(8192)).shared();
        assert!(HostRange::offloadable(&mem, 0, 512).unwrap().is_none());
    }

    #[test]
    fn a_source_truncated_under_the_copy_is_an_error_not_a_short_image() {
        let dir = TestDir::new("truncated");
        let src = source(dir.path(), &patterned(1 << 16));
        let r = HostRange::offloadable(&src, 0, 1 << 16).unwrap().unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("src.bin"))
            .unwrap()
            .set_len(1 << 12)
            .unwrap();
        let out_path = dir.path().join("out.bin");
        let out = File::create(&out_path).unwrap();
        for offload in [true, false] {
            let mut flag = offload;
            let e = r.copy_to(&out, &out_path, 0, &mut flag).unwrap_err();
            assert!(e.to_string().contains("was it truncated?"), "{e}");
        }
    }
}
