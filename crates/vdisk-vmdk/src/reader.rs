//! An opened VMDK read as one disk: the extents laid end to end ("Layout Basics" and "Extent
//! Descriptions" of Virtual Disk Format 1.1), with qemu's block status and `info` output. Opening is
//! in `open`; each extent keeps a few fixed fields, its file is an id in a bounded set of open files,
//! and a sparse extent beyond the ones kept loaded is loaded on use into a bounded cache (`pool`).

use crate::descriptor::Descriptor;
use crate::pool::{Files, Lru};
use crate::sparse::{Grain, SparseExtent};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vdisk_core::reader::check_range;
use vdisk_core::{
    CheckReport, Error, Extent, ExtentKind, ImageInfo, ImageReader, Result, Storage, StoredName,
};

pub use crate::open::open;

/// What one extent is made of.
pub(crate) enum ExtentData {
    /// A sparse extent (hosted, COWD or seSparse) in file `file`, with its grain size in bytes and
    /// whether its grains are compressed; `open` when it stays loaded for the reader's life.
    Sparse {
        file: u32,
        grain: u64,
        compressed: bool,
        open: Option<Arc<SparseExtent>>,
    },
    /// Bytes of file `file` from byte `offset` on (zeros past its end).
    Flat {
        file: u32,
        offset: u64,
    },
    Zero,
}

/// One extent placed in the virtual disk.
pub(crate) struct PlacedExtent {
    pub(crate) start: u64,
    pub(crate) len: u64,
    pub(crate) data: ExtentData,
    /// qemu's extent `format` string: the descriptor type, or "" for a sparse file opened directly.
    pub(crate) type_name: &'static str,
}

impl PlacedExtent {
    /// The id of the extent's file, if it has one.
    pub(crate) fn file(&self) -> Option<u32> {
        match self.data {
            ExtentData::Sparse { file, .. } | ExtentData::Flat { file, .. } => Some(file),
            ExtentData::Zero => None,
        }
    }
}

/// An opened VMDK image.
pub struct VmdkReader {
    pub(crate) path: PathBuf,
    pub(crate) extents: Vec<PlacedExtent>,
    pub(crate) size: u64,
    pub(crate) desc: Descriptor,
    /// The parent file name as qemu reads it from the descriptor (`desc_checks::qemu_parent_hint`).
    pub(crate) parent: Option<StoredName>,
    /// Opened from a `KDMV` file (monolithicSparse / streamOptimized) rather than a text descriptor.
    pub(crate) monolithic: bool,
    /// The distinct files the extents name.
    pub(crate) files: Files,
    /// Sparse extents not kept loaded, loaded on use (keyed by extent index).
    pub(crate) sparse: Lru<Arc<SparseExtent>>,
    /// How many sparse extents share the grain caches (see `limits::SPARSE_SHARE`).
    pub(crate) share: usize,
}

impl VmdkReader {
    /// The content ID of this image (descriptor `CID`).
    pub fn cid(&self) -> u32 {
        self.desc.cid
    }

    /// The content ID the parent must have (`parentCID`; 0xffffffff when there is no parent).
    pub fn parent_cid(&self) -> u32 {
        self.desc.parent_cid
    }

    /// The parsed descriptor (embedded or standalone).
    pub fn descriptor(&self) -> &Descriptor {
        &self.desc
    }

    /// qemu's create type: for a sparse file opened directly it ignores the embedded descriptor and
    /// says streamOptimized when grains are compressed, monolithicSparse otherwise.
    pub(crate) fn create_type(&self) -> String {
        if self.monolithic {
            let compressed = self.extents.first().is_some_and(|e| {
                matches!(
                    e.data,
                    ExtentData::Sparse {
                        compressed: true,
                        ..
                    }
                )
            });
            return if compressed {
                "streamOptimized"
            } else {
                "monolithicSparse"
            }
            .to_string();
        }
        self.desc
            .create_type
            .clone()
            .unwrap_or_else(|| "monolithicSparse".to_string())
    }

    /// The index of the extent holding `offset`, and the extent.
    fn extent_at(&self, offset: u64) -> Result<(usize, &PlacedExtent)> {
        let i = self.extents.partition_point(|e| e.start <= offset);
        i.checked_sub(1)
            .and_then(|i| Some((i, self.extents.get(i)?)))
            .filter(|(_, e)| offset - e.start < e.len)
            .ok_or_else(|| Error::invalid(format!("offset {offset} is outside the virtual disk")))
    }

    /// Sparse extent `i`: the one kept loaded, or one loaded now (again) into the bounded cache.
    pub(crate) fn sparse_extent(&self, i: usize) -> Result<Arc<SparseExtent>> {
        let e = self.extents.get(i);
        let Some(ExtentData::Sparse { file, open, .. }) = e.map(|e| &e.data) else {
            return Err(Error::Other(format!("extent {i} is not a sparse extent")));
        };
        if let Some(sp) = open {
            return Ok(Arc::clone(sp));
        }
        let len = e.map_or(0, |e| e.len);
        let key = u32::try_from(i).map_err(|_| Error::invalid("extent index out of range"))?;
        self.sparse.get_or_load(key, || {
            let sp = SparseExtent::open(self.files.get(*file)?, self.share)?;
            if sp.capacity() != len {
                return Err(Error::corrupt(
                    sp.path(),
                    None,
                    "the extent's capacity changed since the image was opened",
                ));
            }
            let weight = sp.gd.len() as u64;
            Ok((Arc::new(sp), weight))
        })
    }

    /// Runs `f` on sparse extent `i` (without touching the cache when it stays loaded).
    fn with_sparse<R>(&self, i: usize, f: impl FnOnce(&SparseExtent) -> Result<R>) -> Result<R> {
        match self.extents.get(i).map(|e| &e.data) {
            Some(ExtentData::Sparse { open: Some(sp), .. }) => f(sp),
            _ => f(&*self.sparse_extent(i)?),
        }
    }
}

impl ImageReader for VmdkReader {
    fn format_name(&self) -> &'static str {
        "vmdk"
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (i, e) = self.extent_at(pos)?;
            let local = pos - e.start;
            let n = ((e.len - local).min((buf.len() - done) as u64)) as usize;
            let chunk = &mut buf[done..done + n];
            match &e.data {
                ExtentData::Zero => chunk.fill(0),
                ExtentData::Flat { file, offset } => self.files.with(*file, |s| {
                    let at = offset.checked_add(local).ok_or_else(|| {
                        Error::corrupt(s.path(), None, "flat extent offset overflows")
                    })?;
                    s.read_zero_padded(chunk, at)
                })?,
                ExtentData::Sparse { .. } => self.with_sparse(i, |sp| sp.read(chunk, local))?,
            }
            done += n;
        }
        Ok(())
    }

    fn host_storage(&self, file: &Path) -> Option<Arc<dyn Storage>> {
        self.files.get(self.files.id_of(file)?).ok()
    }

    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let (i, e) = self.extent_at(offset)?;
        let local = offset - e.start;
        let max = max_len.min(e.len - local).max(1);
        let path = |file: u32| {
            self.files
                .path(file)
                .ok_or_else(|| Error::Other(format!("no extent file {file}")))
        };
        Ok(match &e.data {
            ExtentData::Zero => Extent::new(offset, max, ExtentKind::Zero),
            ExtentData::Flat { file, offset: base } => {
                let host = base.saturating_add(local);
                let run = self
                    .files
                    .with(*file, |s| s.data_run(host, host.saturating_add(max)))?;
                let (kind, len) = match run {
                    Some((false, end)) => (ExtentKind::ZeroData, end - host),
                    Some((true, end)) => (ExtentKind::Data, end - host),
                    None => (ExtentKind::Data, max),
                };
                Extent::at_host(offset, len, kind, path(*file)?, host)
            }
            ExtentData::Sparse { file, grain, .. } => {
                let (g, n) = self.with_sparse(i, |sp| sp.status(local, max))?;
                match g {
                    Grain::Unallocated => Extent::new(offset, n, ExtentKind::Unallocated),
                    Grain::Zero => Extent::new(offset, n, ExtentKind::Zero),
                    Grain::Compressed(_) => Extent::new(offset, n, ExtentKind::Compressed),
                    Grain::Data(h) => Extent::at_host(
                        offset,
                        n,
                        ExtentKind::Data,
                        path(*file)?,
                        h.saturating_add(local.checked_rem(*grain).unwrap_or(0)),
                    ),
                }
            }
        })
    }

    fn info(&self) -> Result<ImageInfo> {
        crate::info::info(self)
    }

    fn check(&self) -> Result<CheckReport> {
        crate::check::check(self)
    }
}
