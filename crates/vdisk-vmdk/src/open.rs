//! Opening a VMDK: a hosted sparse file with its embedded descriptor, or a text descriptor whose
//! extent lines ("Extent Descriptions" of Virtual Disk Format 1.1) are laid end to end. Every extent
//! file is opened and every sparse extent read once (as qemu does, so that problems are open errors);
//! what is kept per extent is small and fixed, and open files and loaded sparse extents are bounded
//! (see `pool` and `limits`).

use crate::desc_checks::{
    qemu_create_type, qemu_descriptor_checks, qemu_parent_hint, QEMU_DESC_BYTES,
};
use crate::descriptor::{Access, Descriptor, ExtentType};
use crate::header::{sparse_kind, SparseKind};
use crate::limits::{
    GD_CACHE_ENTRIES, MAX_DESCRIPTOR_BYTES, MAX_OPEN_SPARSE, MAX_TOTAL_GD_ENTRIES,
    MAX_VIRTUAL_BYTES, SECTOR, SPARSE_SHARE,
};
use crate::pool::{FilesBuilder, Lru};
use crate::reader::{ExtentData, PlacedExtent, VmdkReader};
use crate::sparse::{read_extent_header, SparseExtent};
use std::path::PathBuf;
use std::sync::Arc;
use vdisk_core::storage::{resolve_relative, FileOpener};
use vdisk_core::{Error, Result, Storage, StoredName};

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

/// Opens the VMDK in `storage`; extent files are opened through `files`, relative to its directory.
pub fn open(storage: Arc<dyn Storage>, files: Arc<dyn FileOpener>) -> Result<VmdkReader> {
    let path = storage.path().to_path_buf();
    let mut head = [0u8; 8];
    let n = storage.read_at(&mut head, 0)?;
    // Where qemu reads the descriptor for its checks: after a sparse header's first sector,
    // whatever the header says, or the file's start.
    let (mut reader, desc_at) = match sparse_kind(head.get(..n).unwrap_or(&[])) {
        SparseKind::Hosted => (
            open_monolithic(Arc::clone(&storage), path.clone(), files)?,
            SECTOR,
        ),
        SparseKind::Cowd => {
            return Err(Error::unsupported(
                &path,
                "VMDK subformat vmfsSparse: a COWD extent is read through its descriptor file",
            ))
        }
        SparseKind::SeSparse => return Err(Error::unsupported(&path, "VMDK subformat seSparse")),
        SparseKind::Other => (
            open_descriptor(Arc::clone(&storage), path.clone(), files)?,
            0,
        ),
    };
    let mut region = vec![0u8; QEMU_DESC_BYTES];
    storage.read_zero_padded(&mut region, desc_at)?;
    qemu_descriptor_checks(&region).map_err(|m| {
        Error::corrupt(
            &path,
            Some(desc_at),
            format!("invalid VMDK descriptor: {m} (qemu-img: \"Invalid argument\")"),
        )
    })?;
    reader.parent = qemu_parent_hint(&region);
    Ok(reader)
}

fn open_monolithic(
    storage: Arc<dyn Storage>,
    path: PathBuf,
    files: Arc<dyn FileOpener>,
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
    let mut fb = FilesBuilder::new(files);
    let file = fb.add_open(Arc::clone(&storage));
    let sparse = SparseExtent::open(storage, 1)?;
    let desc = match sparse.descriptor_bytes()? {
        Some(b) => Descriptor::parse_embedded(&b)
            .map_err(|m| Error::corrupt(&path, None, format!("embedded descriptor: {m}")))?,
        None => Descriptor::parse(b"").map_err(|m| Error::corrupt(&path, None, m))?,
    };
    let len = sparse.capacity();
    let e = PlacedExtent {
        start: 0,
        len,
        data: ExtentData::Sparse {
            file,
            grain: sparse.grain_bytes(),
            compressed: sparse.header.compressed(),
            open: Some(Arc::new(sparse)),
        },
        type_name: "",
    };
    Ok(VmdkReader {
        path,
        extents: vec![e],
        size: len,
        desc,
        parent: None,
        monolithic: true,
        files: fb.finish(),
        sparse: Lru::new(1, 0),
        share: 1,
    })
}

fn open_descriptor(
    storage: Arc<dyn Storage>,
    path: PathBuf,
    files: Arc<dyn FileOpener>,
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

/// Sparse extents read so far while opening: which stay loaded, and the directory entries seen.
#[derive(Default)]
struct SparseTally {
    gd_total: u64,
    kept: usize,
    kept_gd: u64,
}

fn open_descriptor_text(
    text: &[u8],
    path: PathBuf,
    files: Arc<dyn FileOpener>,
) -> Result<VmdkReader> {
    let desc = Descriptor::parse(text)
        .map_err(|m| Error::corrupt(&path, None, format!("invalid VMDK descriptor: {m}")))?;
    // The type as qemu finds it, which a hostile text can make differ from the parsed line's.
    let ct = qemu_create_type(text).ok_or_else(|| {
        Error::corrupt(
            &path,
            None,
            "invalid VMDK descriptor: no createType=\"...\" (qemu-img: \"invalid VMDK image \
             descriptor\")",
        )
    })?;
    if !CREATE_TYPES.contains(&ct.as_str()) {
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
    let share = sparse_count.clamp(1, SPARSE_SHARE);
    let mut fb = FilesBuilder::new(files);
    let mut tally = SparseTally::default();
    let mut extents = Vec::with_capacity(desc.extents.len());
    let mut start = 0u64;
    for line in &desc.extents {
        if line.access == Access::NoAccess {
            return Err(Error::unsupported(&path, "NOACCESS extent"));
        }
        let name = line
            .file
            .as_ref()
            .map(StoredName::to_path)
            .unwrap_or_default();
        let (data, len, type_name) = match line.kind {
            ExtentType::Zero => (ExtentData::Zero, line.sectors * SECTOR, "ZERO"),
            ExtentType::Flat | ExtentType::Vmfs => {
                let (file, _) = fb.add(resolve_relative(&path, name))?;
                let data = ExtentData::Flat {
                    file,
                    offset: line.offset * SECTOR,
                };
                (data, line.sectors * SECTOR, line.kind.name())
            }
            ExtentType::Sparse | ExtentType::VmfsSparse | ExtentType::SeSparse => {
                let (file, s) = fb.add(resolve_relative(&path, name))?;
                let sp = SparseExtent::open(s, share)?;
                let (data, cap) = place_sparse(&path, sp, file, &mut tally)?;
                (data, cap, line.kind.name())
            }
            other => {
                return Err(Error::unsupported(
                    &path,
                    format!("VMDK extent type {}", other.name()),
                ))
            }
        };
        extents.push(PlacedExtent {
            start,
            len,
            data,
            type_name,
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
        parent: None,
        monolithic: false,
        files: fb.finish(),
        sparse: Lru::new(MAX_OPEN_SPARSE, GD_CACHE_ENTRIES),
        share,
    })
}

/// The extent data of a sparse extent just read: kept loaded while within the limits, otherwise
/// only its geometry (it is loaded again on use).
fn place_sparse(
    path: &std::path::Path,
    sp: SparseExtent,
    file: u32,
    tally: &mut SparseTally,
) -> Result<(ExtentData, u64)> {
    let gd = sp.gd.len() as u64;
    tally.gd_total = tally.gd_total.saturating_add(gd);
    if tally.gd_total > MAX_TOTAL_GD_ENTRIES {
        return Err(Error::limit(
            path,
            "grain directory entries of all extents",
            tally.gd_total,
            MAX_TOTAL_GD_ENTRIES,
        ));
    }
    let keep = tally.kept < MAX_OPEN_SPARSE
        && (tally.kept == 0 || tally.kept_gd.saturating_add(gd) <= GD_CACHE_ENTRIES);
    if keep {
        tally.kept += 1;
        tally.kept_gd = tally.kept_gd.saturating_add(gd);
    }
    let cap = sp.capacity();
    let data = ExtentData::Sparse {
        file,
        grain: sp.grain_bytes(),
        compressed: sp.header.compressed(),
        open: keep.then(|| Arc::new(sp)),
    };
    Ok((data, cap))
}
