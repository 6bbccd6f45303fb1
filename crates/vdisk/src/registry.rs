//! The table of formats: which crate opens, creates and lists options for each `Format`.

use std::path::Path;
use std::sync::Arc;
use vdisk_core::options::OptionSpec;
use vdisk_core::storage::{FileOpener, HostFiles};
use vdisk_core::{CreateOptions, Error, Format, ImageReader, ImageWriter, Result, Storage};
use vdisk_qcow2::mutate::Prealloc;

/// Opens one layer of `format` from `storage` (its backing image is not opened); `for_check` opens
/// it as `check` does (see `OpenRequest::for_check`).
pub fn open_layer(
    format: Format,
    storage: Arc<dyn Storage>,
    snapshot: Option<&vdisk_qcow2::SnapshotSel>,
    for_check: bool,
) -> Result<Arc<dyn ImageReader>> {
    open_layer_in(format, storage, Arc::new(HostFiles), snapshot, for_check)
}

/// [`open_layer`] of an image whose other files (VMDK extents, a qcow2 data file) `files` opens:
/// the members of an OVA package for a disk inside it.
pub fn open_layer_with(
    format: Format,
    storage: Arc<dyn Storage>,
    files: Arc<dyn FileOpener>,
    for_check: bool,
) -> Result<Arc<dyn ImageReader>> {
    open_layer_in(format, storage, files, None, for_check)
}

fn open_layer_in(
    format: Format,
    storage: Arc<dyn Storage>,
    files: Arc<dyn FileOpener>,
    snapshot: Option<&vdisk_qcow2::SnapshotSel>,
    for_check: bool,
) -> Result<Arc<dyn ImageReader>> {
    if snapshot.is_some() && format != Format::Qcow2 {
        return Err(Error::invalid(format!(
            "internal snapshots are only supported for qcow2, not {format}"
        )));
    }
    Ok(match format {
        Format::Raw => Arc::new(vdisk_raw::open(storage)?),
        Format::Qcow2 => {
            let opts = vdisk_qcow2::OpenOptions {
                snapshot: snapshot.cloned(),
                for_check,
            };
            Arc::new(vdisk_qcow2::open(storage, files, &opts)?)
        }
        Format::Vmdk => Arc::new(vdisk_vmdk::open(storage, files)?),
        Format::Vdi => Arc::new(vdisk_vdi::open(storage)?),
        Format::Vpc => Arc::new(vdisk_vhd::open(storage)?),
        // qemu-img check opens a VHDX image without validating its BAT, then counts what is wrong.
        Format::Vhdx if for_check => Arc::new(vdisk_vhdx::open_for_check(storage)?),
        Format::Vhdx => Arc::new(vdisk_vhdx::open(storage)?),
        Format::Ova => crate::ova::open(storage, for_check)?,
        Format::Other("luks") => Arc::new(crate::luks::open(storage)?),
        Format::Other(_) => {
            return Err(Error::unsupported(
                storage.path(),
                format!("format '{format}' (qemu-img reads it; vdisk does not)"),
            ))
        }
    })
}

/// The `-o` options `create` accepts for `format`.
pub fn create_options(format: Format) -> Result<&'static [OptionSpec]> {
    Ok(match format {
        Format::Raw => vdisk_raw::CREATE_OPTIONS,
        Format::Qcow2 => vdisk_qcow2::writer::CREATE_OPTIONS,
        Format::Vmdk => vdisk_vmdk::CREATE_OPTIONS,
        Format::Vdi => vdisk_vdi::CREATE_OPTIONS,
        Format::Vpc => vdisk_vhd::CREATE_OPTIONS,
        Format::Vhdx => vdisk_vhdx::CREATE_OPTIONS,
        Format::Ova | Format::Other(_) => return Err(not_writable(format)),
    })
}

fn not_writable(format: Format) -> Error {
    if format == Format::Ova {
        return Error::invalid(
            "vdisk reads OVA packages but does not write them: convert to '-O vmdk -o subformat=streamOptimized' and package that disk with its OVF descriptor",
        );
    }
    Error::invalid(format!(
        "Format driver '{format}' does not support image creation yet"
    ))
}

/// Whether `convert -c` can compress `format` with these options. qemu compresses qcow2 clusters
/// and streamOptimized VMDK grains; it accepts `-c` for other VMDK subformats but writes them
/// uncompressed, and refuses it for every other format.
pub fn compression(format: Format, opts: &CreateOptions) -> Compression {
    match format {
        Format::Qcow2 => Compression::Supported,
        Format::Vmdk if opts.get("subformat") == Some("streamOptimized") => Compression::Supported,
        Format::Vmdk if opts.get("subformat").is_some_and(|s| s.ends_with("Flat")) => {
            Compression::NoClusters
        }
        Format::Vmdk => Compression::Ignored,
        _ => Compression::Unsupported,
    }
}

/// What `-c` means for an output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// The output is compressed.
    Supported,
    /// Accepted but written uncompressed, as qemu-img does.
    Ignored,
    /// "Compression not supported for this file format".
    Unsupported,
    /// The format has no clusters to compress (flat VMDK): qemu-img says "invalid cluster size".
    NoClusters,
}

/// Starts a writer for a new image of `format` at `path` with virtual size `size`; `compress` asks
/// for compressed clusters (`convert -c`).
pub fn create_image(
    format: Format,
    path: &Path,
    size: u64,
    opts: &CreateOptions,
    compress: bool,
) -> Result<Box<dyn ImageWriter>> {
    let own = create_options(format)?;
    opts.ensure_known(format.name(), own)?;
    // The file protocol's preallocation, under a format that has none of its own (raw among
    // them, whose writer then honours it): checked as the file is created, as file-posix.c
    // checks it.
    if !own.iter().any(|s| s.name == "preallocation") {
        if let Some(v) = opts.get("preallocation") {
            vdisk_core::options::protocol_prealloc(v)?;
        }
    }
    if compress {
        match compression(format, opts) {
            Compression::Unsupported => {
                return Err(Error::invalid(
                    "Compression not supported for this file format",
                ))
            }
            Compression::NoClusters => return Err(Error::invalid("invalid cluster size")),
            Compression::Supported | Compression::Ignored => {}
        }
    }
    match format {
        Format::Raw => vdisk_raw::create(path, size, opts),
        Format::Qcow2 => vdisk_qcow2::writer::create_with(path, size, opts, compress),
        Format::Vmdk => vdisk_vmdk::create(path, size, opts),
        Format::Vdi => vdisk_vdi::create(path, size, opts),
        Format::Vpc => vdisk_vhd::create(path, size, opts),
        Format::Vhdx => vdisk_vhdx::create(path, size, opts),
        Format::Ova | Format::Other(_) => Err(not_writable(format)),
    }
}

/// Opens an existing image for `convert -n` (write into it in place).
pub fn open_existing_writer(format: Format, path: &Path) -> Result<Box<dyn ImageWriter>> {
    match format {
        Format::Raw => vdisk_raw::open_writer(path),
        Format::Qcow2 => qcow2_writer_over_backing(path),
        Format::Vdi => vdisk_vdi::open_writer(path),
        Format::Vmdk => vdisk_vmdk::open_writer(path),
        Format::Vpc => vdisk_vhd::open_writer(path),
        Format::Vhdx => vdisk_vhdx::open_writer(path),
        other => Err(Error::invalid(format!(
            "convert -n into an existing {other} image is not supported yet; use a raw target or drop -n"
        ))),
    }
}

/// The in-place writer of the qcow2 image at `path`, with its backing chain opened (read-only) so
/// that a cluster written in part over the backing file takes its other bytes from there.
pub(crate) fn qcow2_writer_over_backing(path: &Path) -> Result<Box<dyn ImageWriter>> {
    vdisk_qcow2::mutate::open_writer_over(path, &|h| qcow2_backing_chain(path, h))
}

/// `qemu-img resize [--shrink] [--preallocation=MODE] PATH SIZE` of a qcow2 image, with its
/// backing chain opened (read-only): growing over a backing file that reaches past the old end
/// copies the head of the cluster holding the old end from there, as QEMU does.
pub fn resize_qcow2(path: &Path, new_size: u64, shrink: bool, prealloc: Prealloc) -> Result<()> {
    vdisk_qcow2::mutate::resize_over(path, new_size, shrink, prealloc, &|h| {
        qcow2_backing_chain(path, h)
    })
}

/// `qemu-img amend -o OPTS PATH` of a qcow2 image, with its backing chain opened (read-only) for
/// a growing `size`, as [`resize_qcow2`] opens it.
pub fn amend_qcow2(path: &Path, opts: &vdisk_core::CreateOptions) -> Result<()> {
    vdisk_qcow2::mutate::amend_over(path, opts, &|h| qcow2_backing_chain(path, h))
}

/// The backing chain that the header `h` of the qcow2 image at `path` names, opened read-only
/// (None without a backing file).
fn qcow2_backing_chain(
    path: &Path,
    h: &vdisk_qcow2::header::Header,
) -> Result<Option<Arc<dyn ImageReader>>> {
    match &h.backing_file {
        // An empty name means no backing file to QEMU.
        Some(name) if !name.is_empty() => {
            let fmt = h.backing_format().map(str::parse::<Format>).transpose()?;
            Ok(Some(
                crate::chain::open_backing_for(path, name.to_path(), fmt)?.image,
            ))
        }
        _ => Ok(None),
    }
}
