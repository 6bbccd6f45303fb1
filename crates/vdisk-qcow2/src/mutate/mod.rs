//! Changing an existing qcow2 image without ever leaving it corrupt: internal snapshots
//! (`qemu-img snapshot -c/-a/-d`), `resize` (with preallocation), `check -r leaks|all`, `amend`
//! (compat, with zero clusters expanded for a downgrade; lazy_refcounts; data_file,
//! data_file_raw; refcount_bits; size) and `rebase -u`, following qcow2.txt and QEMU's block/qcow2-snapshot.c,
//! qcow2-refcount.c, qcow2-bitmap.c and qcow2.c for what each operation produces. Persistent
//! dirty bitmaps are kept valid ([`bitmaps`]); an external data file is resized with the image.
//!
//! Crash safety: every change is shadow-paged ([`txn`]): the tables it alters are written to clusters
//! the old state does not use, and a single header write switches states, so at every point the
//! file is either the old image or the new one (at worst with unreferenced clusters past the end).
//! Images that are encrypted, carry unknown incompatible features, are marked corrupt or dirty, or
//! fail the check (leaks are fine) are refused; `repair` is the way out. Guest data in an external
//! data file cannot be shadow-paged (it sits at its guest offset): writes into such an image go
//! there in place, as QEMU's do, and a shrink cuts the data file only after the switch.
//!
//! Where the result differs from QEMU's in layout (never in what `qemu-img check`, `info`,
//! `snapshot -l` or the guest see): a snapshot does not share the active L2 tables whose COPIED
//! flags must change; they are copied instead (QEMU clears the flags in place, which is not atomic),
//! so a snapshot costs one cluster per such L2 table at once rather than on the next write. The
//! refcount table and the changed refcount blocks move on every change. A header rewrite that
//! changes its length (`amend` of compat or data_file, `rebase -u`, a change of the bitmap
//! directory's place) is one write of the header bytes, atomic only
//! as far as the device writes that sector range atomically. No file lock is taken: the caller must
//! make sure no other process has the image open.
//!
//! The `*_in` functions work on any [`Storage`] (tests inject failures through it); the plain ones
//! open a host file read-write.

mod amend;
mod bitmap_ops;
mod bitmaps;
mod copy_bitmaps;
mod empty;
mod expand;
mod grow;
mod image;
mod inplace;
mod pack;
mod prealloc;
mod rebase;
mod refs;
mod refwidth;
mod repair;
mod resize;
mod snapshot;
mod txn;

pub use crate::limits::MAX_BITMAP_DATA_BYTES;
pub use crate::limits::MAX_PREALLOC_CLUSTERS;
pub use crate::limits::MAX_ZEROED_L2_TABLES;
pub use crate::writer::Prealloc;
pub use amend::{amend_in, amend_options, amend_over_in, check_amend_keys};
pub use bitmap_ops::{bitmap_ops_in, BitmapOp, MergeSource};
pub use copy_bitmaps::{
    add_bitmaps_in, persistent_bitmap_names, read_persistent_bitmaps, PersistentBitmap,
};
pub use empty::make_empty_in;
pub use inplace::{open_compressing_writer_in, open_writer_in, open_writer_in_over};
pub use prealloc::parse_prealloc;
pub use rebase::rebase_unsafe_in;
pub use repair::{repair_in, RepairOutcome};
pub use resize::{resize_in, resize_over_in, resize_with_in};
pub use snapshot::{snapshot_apply_in, snapshot_create_in, snapshot_delete_in};

use crate::header::Header;
use std::path::Path;
use std::sync::Arc;
use vdisk_core::{CreateOptions, FileStorage, ImageReader, ImageWriter, Result, Storage};

/// Opens the backing chain that an image's header names (`None` without one), read-only: the
/// image itself is opened once, by the change, and only its header is read before.
pub type OpenBacking<'a> = &'a dyn Fn(&Header) -> Result<Option<Arc<dyn ImageReader>>>;

fn rw(path: &Path) -> Result<Arc<dyn Storage>> {
    Ok(Arc::new(FileStorage::open_rw(path)?))
}

/// `qemu-img snapshot -c NAME PATH`.
pub fn snapshot_create(path: &Path, name: &str) -> Result<()> {
    snapshot_create_in(rw(path)?, name)
}

/// `qemu-img snapshot -a NAME_OR_ID PATH`.
pub fn snapshot_apply(path: &Path, name_or_id: &str) -> Result<()> {
    snapshot_apply_in(rw(path)?, name_or_id)
}

/// `qemu-img snapshot -d NAME_OR_ID PATH`.
pub fn snapshot_delete(path: &Path, name_or_id: &str) -> Result<()> {
    snapshot_delete_in(rw(path)?, name_or_id)
}

/// `qemu-img resize [--shrink] PATH SIZE`.
pub fn resize(path: &Path, new_size: u64, shrink: bool) -> Result<()> {
    resize_in(rw(path)?, new_size, shrink)
}

/// `qemu-img resize [--shrink] --preallocation=MODE PATH SIZE` (`falloc` through
/// `posix_fallocate` on the file).
pub fn resize_with(path: &Path, new_size: u64, shrink: bool, prealloc: Prealloc) -> Result<()> {
    resize_over(path, new_size, shrink, prealloc, &|_| Ok(None))
}

/// As [`resize_with`], with the image's backing chain opened by `open_backing` from its header:
/// see [`resize_over_in`].
pub fn resize_over(
    path: &Path,
    new_size: u64,
    shrink: bool,
    prealloc: Prealloc,
    open_backing: OpenBacking<'_>,
) -> Result<()> {
    let s = FileStorage::open_rw(path)?;
    let file = s
        .file()
        .try_clone()
        .map_err(|e| vdisk_core::Error::io(path, 0, e))?;
    let backing = open_backing(&crate::reader::read_header(&s)?)?;
    resize_over_in(
        Arc::new(s),
        new_size,
        shrink,
        prealloc,
        Some(&file),
        backing,
    )
}

/// `qemu-img check -r leaks` (`fix_leaks`) or `-r all` (both).
pub fn repair(path: &Path, fix_leaks: bool, fix_errors: bool) -> Result<RepairOutcome> {
    repair_in(rw(path)?, fix_leaks, fix_errors)
}

/// `qemu-img bitmap`: runs `ops` on bitmap `name` of the qcow2 image at `path` (see
/// [`bitmap_ops_in`]).
pub fn bitmap_ops(
    path: &Path,
    name: &str,
    ops: &[BitmapOp],
    merge_from: Option<&MergeSource>,
) -> Result<()> {
    bitmap_ops_in(rw(path)?, name, ops, merge_from)
}

/// `convert --bitmaps`: adds `bitmaps` to the new qcow2 image at `path` (see [`add_bitmaps_in`]).
pub fn add_bitmaps(path: &Path, bitmaps: &[PersistentBitmap]) -> Result<()> {
    add_bitmaps_in(rw(path)?, bitmaps)
}

/// `qemu-img amend -o compat=...,lazy_refcounts=...,refcount_bits=...,size=... PATH` (a growing
/// size does not copy from a backing file: see [`amend_over`]).
pub fn amend(path: &Path, opts: &CreateOptions) -> Result<()> {
    amend_in(rw(path)?, opts)
}

/// As [`amend`], with the image's backing chain opened by `open_backing` from its header (a
/// growing `size` copies from it as `resize` does).
pub fn amend_over(path: &Path, opts: &CreateOptions, open_backing: OpenBacking<'_>) -> Result<()> {
    let s = rw(path)?;
    let backing = open_backing(&crate::reader::read_header(s.as_ref())?)?;
    amend_over_in(s, opts, backing)
}

/// `qemu-img rebase -u -b BACKING [-F FMT] PATH` (an empty `backing` removes it).
pub fn rebase_unsafe(path: &Path, backing: &str, backing_fmt: Option<&str>) -> Result<()> {
    rebase_unsafe_in(rw(path)?, backing, backing_fmt)
}

/// An [`ImageWriter`] over the existing qcow2 image at `path` (`convert -n`): see [`open_writer_in`].
pub fn open_writer(path: &Path) -> Result<Box<dyn ImageWriter>> {
    open_writer_in(rw(path)?)
}

/// An [`ImageWriter`] over the existing qcow2 image at `path` that stores whole clusters
/// compressed (`rebase -c`): see [`open_compressing_writer_in`].
pub fn open_compressing_writer(path: &Path) -> Result<Box<dyn ImageWriter>> {
    open_compressing_writer_in(rw(path)?)
}

/// As [`open_writer`], with the image's backing chain opened by `open_backing` from its header:
/// see [`open_writer_in_over`].
pub fn open_writer_over(
    path: &Path,
    open_backing: OpenBacking<'_>,
) -> Result<Box<dyn ImageWriter>> {
    let s = rw(path)?;
    let backing = open_backing(&crate::reader::read_header(s.as_ref())?)?;
    open_writer_in_over(s, backing)
}

/// Empties the active state of the image at `path` (`qemu-img commit` without `-d`).
pub fn make_empty(path: &Path) -> Result<()> {
    make_empty_in(rw(path)?)
}
