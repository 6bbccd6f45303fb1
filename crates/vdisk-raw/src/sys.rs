//! Thin wrappers over the Linux calls raw images need: `fallocate` (preallocation, punching holes,
//! zeroing ranges) and writing zeros where those calls are not supported.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use vdisk_core::{Error, Result};

fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> std::io::Result<()> {
    let off = libc::off_t::try_from(offset)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    let n =
        libc::off_t::try_from(len).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    loop {
        // SAFETY: fallocate on a descriptor owned by `file`; it touches no memory of ours.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), mode, off, n) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Allocates `offset..offset+len` (qemu's `preallocation=falloc`), growing the file if needed. Uses
/// `posix_fallocate` semantics: falls back to nothing else, the caller decides.
pub(crate) fn allocate(file: &File, path: &Path, offset: u64, len: u64) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let off = libc::off_t::try_from(offset).map_err(|_| Error::invalid("offset out of range"))?;
    let n = libc::off_t::try_from(len).map_err(|_| Error::invalid("length out of range"))?;
    // SAFETY: posix_fallocate on a descriptor owned by `file`; it returns an errno value.
    let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), off, n) };
    if r != 0 {
        return Err(Error::io(
            path,
            offset,
            std::io::Error::from_raw_os_error(r),
        ));
    }
    Ok(())
}

/// Writes real zeros over `offset..offset+len` in large pieces.
pub(crate) fn write_zeros(file: &File, path: &Path, offset: u64, len: u64) -> Result<()> {
    vdisk_core::zero::write_zeros(offset, len, |b, at| {
        file.write_all_at(b, at).map_err(|e| Error::io(path, at, e))
    })
}

/// Makes `offset..offset+len` read as zeros without changing the file size. With `keep_allocated` the
/// blocks stay allocated (`FALLOC_FL_ZERO_RANGE`), otherwise they are deallocated (`PUNCH_HOLE`, what
/// qemu does for `BDRV_REQ_MAY_UNMAP`). Falls back to writing zeros (block devices and file systems
/// without support).
pub(crate) fn zero_range(
    file: &File,
    path: &Path,
    offset: u64,
    len: u64,
    keep_allocated: bool,
) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let mode = if keep_allocated {
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
    } else {
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
    };
    match fallocate(file, mode, offset, len) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL | libc::ENODEV | libc::ENOTTY)
            ) =>
        {
            write_zeros(file, path, offset, len)
        }
        Err(e) => Err(Error::io(path, offset, e)),
    }
}
