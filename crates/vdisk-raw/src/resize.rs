//! Resizing a raw image (`qemu-img resize -f raw`): the checks and messages of qemu-img's `img_resize`,
//! then file-posix's truncate with its preallocation modes.

use crate::sys;
use crate::writer::Prealloc;
use std::path::Path;
use vdisk_core::{Error, Result};

/// Sets the size of the raw image at `path` to `new_size` bytes (exactly; qemu does not round here).
///
/// As `qemu-img resize`: a size of 0 is refused ("New image size must be positive"); preallocation
/// other than `off` needs a strictly larger size ("Preallocation can only be used for growing
/// images"); a smaller size needs `shrink_allowed` ("Use the --shrink option to perform a shrink
/// operation."). The current size compared against is the virtual size (file length rounded up to
/// 512). Growing with `falloc` reserves the new blocks, with `full` writes zeros to them. Block
/// devices cannot grow ("Cannot grow device files"); shrinking them leaves them as they are.
pub fn resize(path: &Path, new_size: u64, shrink_allowed: bool, prealloc: Prealloc) -> Result<()> {
    if new_size == 0 || new_size > vdisk_core::size::MAX_IMAGE_SIZE {
        return Err(Error::invalid("New image size must be positive"));
    }
    let storage = vdisk_core::FileStorage::open_rw(path)?;
    let file_len = vdisk_core::Storage::len(&storage)?;
    let current = crate::round_up_sector(file_len);
    if prealloc != Prealloc::Off && new_size <= current {
        return Err(Error::invalid(
            "Preallocation can only be used for growing images",
        ));
    }
    if new_size < current && !shrink_allowed {
        return Err(Error::invalid(
            "Use the --shrink option to perform a shrink operation.",
        ));
    }
    let file = storage.file();
    let is_file = file
        .metadata()
        .map_err(|e| Error::io(path, 0, e))?
        .file_type()
        .is_file();
    if !is_file {
        if new_size > file_len {
            return Err(Error::invalid("Cannot grow device files"));
        }
        return Ok(());
    }
    match prealloc {
        Prealloc::Off => file
            .set_len(new_size)
            .map_err(|e| Error::io(path, new_size, e))?,
        Prealloc::Falloc => {
            sys::allocate(file, path, file_len, new_size - file_len)?;
            file.set_len(new_size)
                .map_err(|e| Error::io(path, new_size, e))?;
        }
        Prealloc::Full => {
            sys::write_zeros(file, path, file_len, new_size - file_len)?;
            file.set_len(new_size)
                .map_err(|e| Error::io(path, new_size, e))?;
        }
    }
    file.sync_all().map_err(|e| Error::io(path, 0, e))
}
