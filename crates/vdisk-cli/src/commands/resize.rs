//! `vdisk resize`: grow or shrink raw images and grow VDI images.

use super::{parse_format, probe_path};
use std::path::Path;
use vdisk::chain::{open_image, OpenRequest};
use vdisk::core::size::parse_size_change;
use vdisk::core::{Error, Format, Result};

pub(super) fn resize(
    format: Option<String>,
    shrink: bool,
    preallocation: Option<String>,
    quiet: bool,
    filename: &Path,
    size: &str,
) -> Result<u8> {
    // qemu-img reads the size as a `size` option (qemu_opt_set), and says so when it cannot.
    let change = parse_size_change(size).map_err(|_| {
        Error::invalid(
            "Parameter 'size' expects a non-negative number below 2^64\n\
             Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n\
             and exabytes, respectively.",
        )
    })?;
    vdisk::core::locks::check_writable(filename)?;
    let fmt = match parse_format(format)? {
        Some(f) => f,
        None => probe_path(filename)?,
    };
    let current = {
        let req = OpenRequest {
            format: Some(fmt),
            snapshot: None,
            follow_backing: false,
            for_check: false,
        };
        open_image(filename, &req)?.image.virtual_size()
    };
    let new_size = change.apply(current)?;
    match fmt {
        Format::Raw => {
            let prealloc = preallocation
                .as_deref()
                .unwrap_or("off")
                .parse::<vdisk::raw::Prealloc>()?;
            vdisk::raw::resize(filename, new_size, shrink, prealloc)?;
        }
        Format::Vdi => {
            if preallocation.is_some() {
                return Err(Error::invalid("--preallocation is not supported for vdi"));
            }
            if new_size < current && !shrink {
                // What qemu-img says before it asks the format.
                return Err(Error::invalid(
                    "Use the --shrink option to perform a shrink operation.\n\
                     warning: Shrinking an image will delete all data beyond the shrunken image's end. \
                     Before performing such an operation, make sure there is no important data there.",
                ));
            }
            if new_size < current {
                return Err(Error::invalid("Shrinking VDI images is not supported"));
            }
            vdisk::vdi::resize(filename, new_size)?;
        }
        Format::Qcow2 => {
            super::mutate::resize_qcow2(filename, new_size, shrink, preallocation.as_deref())?;
        }
        // qemu-img cannot resize these either (VMDK, VHD), and says so in these words.
        _ => {
            return Err(Error::invalid(
                "Image format driver does not support resize",
            ));
        }
    }
    if !quiet {
        println!("Image resized.");
    }
    Ok(0)
}
