//! `qemu-img rebase -u` (unsafe mode): only the backing file name and its format change in the
//! header (qcow2.txt "Header": backing_file_offset/size; "Header extensions": backing file format
//! name, 0xe2792aca); guest data is not touched, so the caller vouches that the new backing file
//! has the same content. One write of the header cluster's used bytes.

use super::amend::rewrite_header;
use super::image::{Purpose, RwImage};
use crate::header::{autoclear, Extension};
use crate::limits;
use std::sync::Arc;
use vdisk_core::{Error, Result, Storage};

/// Points the image in `storage` at `backing` (format `backing_fmt`), or at nothing when `backing`
/// is empty, without looking at either backing file.
pub fn rebase_unsafe_in(
    storage: Arc<dyn Storage>,
    backing: &str,
    backing_fmt: Option<&str>,
) -> Result<()> {
    let fail = |e: &str| {
        Error::Other(format!(
            "Could not change the backing file to '{backing}': {e}"
        ))
    };
    let img = RwImage::open(Arc::clone(&storage), Purpose::Modify)?;
    let h = img.r.header.clone();
    // A raw external data file is the whole guest disk: QEMU refuses a backing file under it.
    if !backing.is_empty() && h.autoclear_features & autoclear::DATA_FILE_RAW != 0 {
        return Err(fail("Invalid argument"));
    }
    let mut nh = h.clone();
    nh.extensions
        .retain(|e| !matches!(e, Extension::BackingFormat(_)));
    if backing.is_empty() {
        nh.backing_file = None;
    } else {
        let fmt = backing_fmt.ok_or_else(|| fail("backing format must be specified"))?;
        if backing.len() as u64 > limits::MAX_BACKING_NAME {
            return Err(fail("Backing file name too long"));
        }
        if fmt.len() as u64 > limits::MAX_BACKING_FORMAT {
            return Err(fail("Backing format name too long"));
        }
        nh.backing_file = Some(backing.into());
        nh.extensions
            .insert(0, Extension::BackingFormat(fmt.to_string()));
    }
    if nh == h {
        return Ok(());
    }
    rewrite_header(storage.as_ref(), &h, &nh).map_err(|e| fail(&e.to_string()))
}
