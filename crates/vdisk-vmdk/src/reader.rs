//! Opening a VMDK (a hosted sparse file with its embedded descriptor, or a text descriptor naming
//! extent files) and reading it as one disk: the extents laid end to end ("Layout Basics" and "Extent
//! Descriptions" of Virtual Disk Format 1.1), with qemu's block status and `info` output.

use crate::descriptor::{Access, Descriptor, ExtentType};
use crate::header::{sparse_kind, SparseKind};
use crate::limits::{MAX_DESCRIPTOR_BYTES, MAX_TOTAL_GD_ENTRIES, MAX_VIRTUAL_BYTES, SECTOR};
use crate::sparse::{read_extent_header, Grain, SparseExtent};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vdisk_core::reader::check_range;
use vdisk_core::storage::{resolve_relative, FileOpener};
use vdisk_core::{CheckReport, Error, Extent, ExtentKind, ImageInfo, ImageReader, Result, Storage};

/// The createType values this reader accepts in a standalone descriptor (qemu accepts the first six;
/// monolithicSparse and streamOptimized descriptors naming a separate sparse file are accepted too).
const CREATE_TYPES: &[&str] = &[
    "monolithicFlat",
    "vmfs",
    "vmfsSparse",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "seSparse",
    "monolithicSparse",
    "streamOptimized",
];

/// What one extent is made of.
pub(crate) enum ExtentData {
    Sparse(Box<SparseExtent>),
    Flat {
        storage: Arc<dyn Storage>,
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
    pub(crate) file: Option<Arc<Path>>,
}

/// An opened VMDK image.
pub struct VmdkReader {
    pub(crate) path: PathBuf,
    pub(crate) extents: Vec<PlacedExtent>,
    pub(crate) size: u64,
    pub(crate) desc: Descriptor,
    /// Opened from a `KDMV` file (monolithicSparse / streamOptimized) rather than a text descriptor.
    pub(crate) monolithic: bool,
}

/// Opens the VMDK in `storage`; extent files are opened through `files`, relative to its directory.
pub fn open(storage: Arc<dyn Storage>, files: Arc<dyn FileOpener>) -> Result<VmdkReader> {
    let path = storage.path().to_path_buf();
    let mut head = [0u8; 8];
    let n = storage.read_at(&mut head, 0)?;
    match sparse_kind(&head[..n]) {
        SparseKind::Hosted => open_monolithic(storage, path, &*files),
        SparseKind::Cowd => Err(Error::unsupported(
            &path,
            "VMDK subformat vmfsSparse: a COWD extent is read through its descriptor file",
        )),
        SparseKind::SeSparse => Err(Error::unsupported(&path, "VMDK subformat seSparse")),
        SparseKind::Other => open_descriptor(storage, path, &*files),
    }
}

fn open_monolithic(
    storage: Arc<dyn Storage>,
    path: PathBuf,
    files: &dyn FileOpener,
) -> Result<VmdkReader> {
    let h = read_extent_header(&*storage)?;
    if h.capacity == 0 && h.descriptor_offset != 0 {
        // qemu: a sparse header of capacity 0 only wraps a descriptor file naming the extents.
        let at = h.descriptor_offset.saturating_mul(SECTOR);
        let len = storage.len()?.saturating_sub(at).min(MAX_DESCRIPTOR_BYTES);
        let mut text = vec![0u8; len as usize];
        storage.read_exact_at(&mut text, at)?;
        return open_descriptor_text(&text, path, files);
    }
    let sparse = SparseExtent::open(storage, 1)?;
    let desc = match sparse.descriptor_bytes()? {
        Some(b) => Descriptor::parse_embedded(&b)
            .map_err(|m| Error::corrupt(&path, None, format!("embedded descriptor: {m}")))?,
        None => Descriptor::parse(b"").map_err(|m| Error::corrupt(&path, None, m))?,
    };
    let len = sparse.capacity();
    let file: Arc<Path> = Arc::from(path.as_path());
    let e = PlacedExtent {
        start: 0,
        len,
        data: ExtentData::Sparse(Box::new(sparse)),
        type_name: "",
        file: Some(file),
    };
    Ok(VmdkReader {
        path,
        extents: vec![e],
        size: len,
        desc,
        monolithic: true,
    })
}

fn open_descriptor(
    storage: Arc<dyn Storage>,
    path: PathBuf,
    files: &dyn FileOpener,
) -> Result<VmdkReader> {
    let len = storage.len()?;
    if len > MAX_DESCRIPTOR_BYTES {
        return Err(Error::limit(
            &path,
            "descriptor file size (not a VMDK sparse file)",
            len,
            MAX_DESCRIPTOR_BYTES,
        ));
    }
    let mut text = vec![0u8; len as usize];
    storage.read_exact_at(&mut text, 0)?;
    open_descriptor_text(&text, path, files)
}

fn open_descriptor_text(text: &[u8], path: PathBuf, files: &dyn FileOpener) -> Result<VmdkReader> {
    let desc = Descriptor::parse(text)
        .map_err(|m| Error::corrupt(&path, None, format!("invalid VMDK descriptor: {m}")))?;
    let ct = desc
        .create_type
        .as_deref()
        .ok_or_else(|| Error::corrupt(&path, None, "invalid VMDK descriptor: no createType"))?;
    if !CREATE_TYPES.contains(&ct) {
        return Err(Error::unsupported(
            &path,
            format!("VMDK create type '{ct}'"),
        ));
    }
    if desc.extents.is_empty() {
        return Err(Error::corrupt(
            &path,
            None,
            "invalid VMDK descriptor: no extents",
        ));
    }
    let sparse_count = desc
        .extents
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                ExtentType::Sparse | ExtentType::VmfsSparse | ExtentType::SeSparse
            )
        })
        .count();
    let mut gd_total = 0u64;
    let mut extents = Vec::with_capacity(desc.extents.len());
    let mut start = 0u64;
    for line in &desc.extents {
        if line.access == Access::NoAccess {
            return Err(Error::unsupported(&path, "NOACCESS extent"));
        }
        let name = line.file.as_deref().unwrap_or("");
        let (data, len, type_name) = match line.kind {
            ExtentType::Zero => (ExtentData::Zero, line.sectors * SECTOR, "ZERO"),
            ExtentType::Flat | ExtentType::Vmfs => {
                let s = files.open(&resolve_relative(&path, name))?;
                let type_name = if line.kind == ExtentType::Flat {
                    "FLAT"
                } else {
                    "VMFS"
                };
                (
                    ExtentData::Flat {
                        storage: s,
                        offset: line.offset * SECTOR,
                    },
                    line.sectors * SECTOR,
                    type_name,
                )
            }
            ExtentType::Sparse | ExtentType::VmfsSparse | ExtentType::SeSparse => {
                let s = files.open(&resolve_relative(&path, name))?;
                let sp = SparseExtent::open(s, sparse_count)?;
                gd_total += sp.gd.len() as u64;
                if gd_total > MAX_TOTAL_GD_ENTRIES {
                    return Err(Error::limit(
                        &path,
                        "grain directory entries of all extents",
                        gd_total,
                        MAX_TOTAL_GD_ENTRIES,
                    ));
                }
                let type_name = line.kind.name();
                let cap = sp.capacity();
                (ExtentData::Sparse(Box::new(sp)), cap, type_name)
            }
            other => {
                return Err(Error::unsupported(
                    &path,
                    format!("VMDK extent type {}", other.name()),
                ))
            }
        };
        let file = match &data {
            ExtentData::Sparse(sp) => Some(Arc::from(sp.path())),
            ExtentData::Flat { storage, .. } => Some(Arc::from(storage.path())),
            ExtentData::Zero => None,
        };
        extents.push(PlacedExtent {
            start,
            len,
            data,
            type_name,
            file,
        });
        start = start
            .checked_add(len)
            .filter(|s| *s <= MAX_VIRTUAL_BYTES)
            .ok_or_else(|| {
                Error::corrupt(&path, None, "the extents add up to more than 2^63 bytes")
            })?;
    }
    Ok(VmdkReader {
        path,
        extents,
        size: start,
        desc,
        monolithic: false,
    })
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
            let compressed = self.extents.first().is_some_and(
                |e| matches!(&e.data, ExtentData::Sparse(sp) if sp.header.compressed()),
            );
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

    fn extent_at(&self, offset: u64) -> Result<&PlacedExtent> {
        let i = self.extents.partition_point(|e| e.start <= offset);
        i.checked_sub(1)
            .and_then(|i| self.extents.get(i))
            .filter(|e| offset - e.start < e.len)
            .ok_or_else(|| Error::invalid(format!("offset {offset} is outside the virtual disk")))
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
            let e = self.extent_at(pos)?;
            let local = pos - e.start;
            let n = ((e.len - local).min((buf.len() - done) as u64)) as usize;
            let chunk = &mut buf[done..done + n];
            match &e.data {
                ExtentData::Zero => chunk.fill(0),
                ExtentData::Flat { storage, offset } => {
                    let at = offset.checked_add(local).ok_or_else(|| {
                        Error::corrupt(storage.path(), None, "flat extent offset overflows")
                    })?;
                    storage.read_zero_padded(chunk, at)?;
                }
                ExtentData::Sparse(sp) => sp.read(chunk, local)?,
            }
            done += n;
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let e = self.extent_at(offset)?;
        let local = offset - e.start;
        let max = max_len.min(e.len - local).max(1);
        Ok(match &e.data {
            ExtentData::Zero => Extent::new(offset, max, ExtentKind::Zero),
            ExtentData::Flat {
                storage,
                offset: base,
            } => {
                let host = base.saturating_add(local);
                let file: Arc<Path> = Arc::from(storage.path());
                match storage.data_run(host, host.saturating_add(max))? {
                    Some((false, end)) => {
                        Extent::at_host(offset, end - host, ExtentKind::ZeroData, &file, host)
                    }
                    Some((true, end)) => {
                        Extent::at_host(offset, end - host, ExtentKind::Data, &file, host)
                    }
                    None => Extent::at_host(offset, max, ExtentKind::Data, &file, host),
                }
            }
            ExtentData::Sparse(sp) => {
                let (g, n) = sp.status(local, max)?;
                match g {
                    Grain::Unallocated => Extent::new(offset, n, ExtentKind::Unallocated),
                    Grain::Zero => Extent::new(offset, n, ExtentKind::Zero),
                    Grain::Compressed(_) => Extent::new(offset, n, ExtentKind::Compressed),
                    Grain::Data(h) => {
                        let file: Arc<Path> = Arc::from(sp.path());
                        Extent::at_host(
                            offset,
                            n,
                            ExtentKind::Data,
                            &file,
                            h.saturating_add(local % sp.grain_bytes()),
                        )
                    }
                }
            }
        })
    }

    fn info(&self) -> Result<ImageInfo> {
        Ok(crate::info::info(self))
    }

    fn check(&self) -> Result<CheckReport> {
        crate::check::check(self)
    }
}
