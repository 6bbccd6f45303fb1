//! Host file helpers for preallocation (QEMU's `preallocation=falloc|full` on the file protocol).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use vdisk_core::{Error, Result};

/// Maps an I/O error at `off` of `path` to a vdisk error.
pub fn io(path: &Path, off: u64) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, off, e)
}

/// Reserves `len` bytes at `off` with `posix_fallocate`.
pub fn fallocate(file: &File, path: &Path, off: u64, len: u64) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let (o, n) = match (i64::try_from(off), i64::try_from(len)) {
        (Ok(o), Ok(n)) => (o, n),
        _ => return Err(Error::invalid("preallocation range out of range")),
    };
    // SAFETY: posix_fallocate on a descriptor owned by `file`; it returns an errno value and touches
    // no memory of ours.
    let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), o, n) };
    if r != 0 {
        return Err(Error::io(path, off, std::io::Error::from_raw_os_error(r)));
    }
    Ok(())
}

/// Writes `len` zero bytes at `off`, 1 MiB at a time.
pub fn write_zeros(file: &File, path: &Path, off: u64, len: u64) -> Result<()> {
    vdisk_core::zero::write_zeros(off, len, |b, at| {
        file.write_all_at(b, at).map_err(|e| Error::io(path, at, e))
    })
}
