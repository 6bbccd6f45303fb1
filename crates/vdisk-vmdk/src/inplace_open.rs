//! Opening an existing VMDK for the in-place writer: which subformats and extents it takes, the
//! crate's parsing and `check` run first, and what it keeps of each hosted sparse extent ("Hosted
//! Sparse Extent Header", "Grain Directories and Grain Tables" of Virtual Disk Format 1.1), and
//! the descriptor's CID, which the first write replaces ("The Descriptor File").

use super::{Ext, InplaceWriter, SparseMeta, Target};
use crate::descriptor::{Access, ExtentType, NO_PARENT_CID};
use crate::limits::{MAX_GTES_PER_GT, SECTOR};
use crate::reader::{ExtentData, VmdkReader};
use crate::sparse::read_u32s;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vdisk_core::storage::FileOpener;
use vdisk_core::{Error, FileStorage, Result, Storage};

/// The subformats this writer handles.
const WRITABLE: &[&str] = &[
    "monolithicSparse",
    "twoGbMaxExtentSparse",
    "monolithicFlat",
    "twoGbMaxExtentFlat",
];

/// Opens extent files for reading and writing.
struct RwFiles;

impl FileOpener for RwFiles {
    fn open(&self, path: &Path) -> Result<Arc<dyn Storage>> {
        // As the read-only opener does: no FIFOs or sockets, whose reads would wait forever.
        use std::os::unix::fs::FileTypeExt;
        let t = std::fs::metadata(path)
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?
            .file_type();
        if !(t.is_file() || t.is_block_device()) {
            return Err(Error::unsupported(
                path,
                "a VMDK extent that is not a regular file or block device",
            ));
        }
        Ok(Arc::new(FileStorage::open_rw(path)?))
    }
}

fn refuse(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::unsupported(
        path,
        format!("convert -n into {what} (only monolithicSparse, twoGbMaxExtentSparse, monolithicFlat and twoGbMaxExtentFlat are written in place)"),
    )
}

/// The file at `path` and an opener of its extents, all read-write (what `open_writer` writes
/// through).
pub(super) fn host_rw(path: &Path) -> Result<(Arc<dyn Storage>, Arc<dyn FileOpener>)> {
    Ok((RwFiles.open(path)?, Arc::new(RwFiles)))
}

impl InplaceWriter {
    pub(crate) fn open(storage: Arc<dyn Storage>, files: Arc<dyn FileOpener>) -> Result<Self> {
        let path = &storage.path().to_path_buf();
        let reader = crate::open(Arc::clone(&storage), files)?;
        let ct = reader.create_type();
        if !WRITABLE.contains(&ct.as_str()) {
            return Err(refuse(path, format!("a VMDK image of subformat {ct}")));
        }
        let desc = reader.descriptor();
        if desc.parent_cid != NO_PARENT_CID || desc.parent_hint.is_some() {
            return Err(Error::unsupported(
                path,
                "convert -n into a VMDK delta image with a parent (parentCID / parentFileNameHint)",
            ));
        }
        if !reader.monolithic {
            if let Some(l) = desc.extents.iter().find(|l| l.access != Access::ReadWrite) {
                return Err(refuse(
                    path,
                    format!("a VMDK {} extent that is not RW", l.kind.name()),
                ));
            }
            if let Some(l) = desc
                .extents
                .iter()
                .find(|l| !matches!(l.kind, ExtentType::Flat | ExtentType::Sparse))
            {
                return Err(refuse(path, format!("a VMDK {} extent", l.kind.name())));
            }
        }
        let report = crate::check::check(&reader)?;
        if report.corruptions > 0 || report.check_errors > 0 {
            return Err(Error::corrupt(
                path,
                None,
                format!(
                    "{} errors found by check ({}); refusing to write into it",
                    report.corruptions + report.check_errors,
                    report.messages.join("; ")
                ),
            ));
        }
        let mut exts = Vec::with_capacity(reader.extents.len());
        let mut sparse = Vec::new();
        for (i, e) in reader.extents.iter().enumerate() {
            let target = match &e.data {
                ExtentData::Flat { file, offset } => Target::Flat {
                    file: *file,
                    offset: *offset,
                },
                ExtentData::Sparse { compressed, .. } => {
                    if *compressed {
                        return Err(refuse(path, "a VMDK extent with compressed grains"));
                    }
                    sparse.push(sparse_meta(&reader, i)?);
                    Target::Sparse(sparse.len() - 1)
                }
                ExtentData::Zero => return Err(refuse(path, "a VMDK ZERO extent")),
            };
            exts.push(Ext {
                start: e.start,
                len: e.len,
                target,
            });
        }
        files_apart(path, &reader, &*storage)?;
        let cid = cid_place(storage, reader.cid())?;
        Ok(InplaceWriter {
            path: path.to_path_buf(),
            reader,
            exts,
            sparse,
            tables: HashMap::new(),
            dirty_files: BTreeSet::new(),
            cid,
            cid_dirty: None,
            max_tables: super::MAX_DIRTY_TABLES,
        })
    }
}

/// What identifies a file: its device and inode when it is a host file, else its name.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum FileId {
    Inode(u64, u64),
    Name(PathBuf),
}

fn file_id(s: &dyn Storage) -> FileId {
    use std::os::unix::fs::MetadataExt;
    match s.as_file().and_then(|f| f.metadata().ok()) {
        Some(m) => FileId::Inode(m.dev(), m.ino()),
        None => FileId::Name(s.path().to_path_buf()),
    }
}

/// Every extent must have a file of its own, apart from the descriptor file: a new grain goes at
/// the end of its sparse extent's file, and a write through one flat extent would change what
/// another reads where they overlap. QEMU refuses such images for writing too: it opens each
/// extent file on its own and takes write locks, so `qemu-img convert -n` fails with `Failed to
/// get "resize" lock` when a file is named twice, or names the descriptor file.
fn files_apart(path: &Path, reader: &VmdkReader, descriptor: &dyn Storage) -> Result<()> {
    let mut seen = BTreeSet::new();
    if !reader.monolithic {
        seen.insert(file_id(descriptor));
        seen.insert(FileId::Name(path.to_path_buf()));
    }
    let mut files = BTreeSet::new();
    for (i, e) in reader.extents.iter().enumerate() {
        let Some(f) = e.file() else {
            continue;
        };
        let id = reader.files.with(f, |s| Ok(file_id(s)))?;
        let name = reader.files.path(f).map(|p| p.to_path_buf());
        if !files.insert(f) || !seen.insert(id) {
            return Err(Error::unsupported(
                path,
                format!(
                    "VMDK extent {i} (file {}) shares its file with another extent or the descriptor; writing into it is not supported",
                    name.unwrap_or_default().display()
                ),
            ));
        }
    }
    Ok(())
}

/// Reads what the writer needs of sparse extent `i` of `reader` (already checked).
fn sparse_meta(reader: &VmdkReader, i: usize) -> Result<SparseMeta> {
    let sp = reader.sparse_extent(i)?;
    let h = &sp.header;
    let path = sp.path().to_path_buf();
    if h.compressed() || h.has_markers() || h.version > 2 {
        return Err(refuse(
            &path,
            format!(
                "a version {} VMDK sparse extent (streamOptimized)",
                h.version
            ),
        ));
    }
    if h.num_gtes_per_gt == 0 || h.num_gtes_per_gt > MAX_GTES_PER_GT {
        return Err(Error::corrupt(&path, None, "invalid numGTEsPerGT"));
    }
    let to_u32 = |v: u64| u32::try_from(v).ok();
    let gd: Vec<u32> = sp.gd.iter().filter_map(|v| to_u32(*v)).collect();
    if gd.len() != sp.gd.len() {
        return Err(Error::corrupt(
            &path,
            None,
            "grain directory entry above 2^32",
        ));
    }
    if let Some(k) = gd.iter().position(|s| *s == 0) {
        return Err(Error::unsupported(
            &path,
            format!("VMDK grain directory entry {k} has no grain table (tables are created with the extent by qemu-img and VMware); writing into it is not supported"),
        ));
    }
    let rgd = if h.has_rgd() {
        let at = h
            .rgd_offset
            .checked_mul(SECTOR)
            .ok_or_else(|| Error::corrupt(&path, None, "rgdOffset overflows"))?;
        let r = read_u32s(&*sp.storage, at, gd.len())?;
        if let Some(k) = r.iter().position(|s| *s == 0) {
            return Err(Error::unsupported(
                &path,
                format!("VMDK redundant grain directory entry {k} has no grain table; writing into it is not supported"),
            ));
        }
        Some(r)
    } else {
        None
    };
    metadata_apart(&path, h, &gd, rgd.as_deref())?;
    let grain = sp.grain_bytes();
    let grain_sectors = grain / SECTOR;
    // QEMU: the next grain at the file's length in sectors rounded up to a whole grain.
    let next = sp
        .file_len
        .div_ceil(SECTOR)
        .max(h.overhead)
        .checked_next_multiple_of(grain_sectors.max(1))
        .and_then(|s| s.checked_mul(SECTOR))
        .ok_or_else(|| Error::corrupt(&path, None, "extent file size overflows"))?;
    Ok(SparseMeta {
        file: reader.extents[i].file().unwrap_or(0),
        path,
        grain,
        per: u64::from(h.num_gtes_per_gt),
        zero_grain: h.has_zero_grain(),
        gd,
        rgd,
        next,
    })
}

/// The header, embedded descriptor, both grain directories and every grain table must lie apart
/// and inside the metadata area (below `overhead`, where `check` has found no grain): this
/// writer rewrites whole grain tables, which must then never land on other metadata, and puts
/// new grains past the end of the file.
fn metadata_apart(
    path: &Path,
    h: &crate::header::SparseHeader,
    gd: &[u32],
    rgd: Option<&[u32]>,
) -> Result<()> {
    let bad = |m: String| Error::corrupt(path, None, format!("{m}; refusing to write into it"));
    let table = u64::from(h.num_gtes_per_gt) * 4;
    let dir = gd.len() as u64 * 4;
    let sectors = |s: u64, len: u64, what: &str| {
        s.checked_mul(SECTOR)
            .and_then(|a| Some((a, a.checked_add(len)?)))
            .ok_or_else(|| bad(format!("{what} offset overflows")))
    };
    let mut spans: Vec<(u64, u64, &str, usize)> = vec![(0, SECTOR, "header", 0)];
    if h.descriptor_offset != 0 {
        let len = h.descriptor_size.saturating_mul(SECTOR);
        let (a, b) = sectors(h.descriptor_offset, len, "descriptor")?;
        spans.push((a, b, "embedded descriptor", 0));
    }
    let (a, b) = sectors(h.gd_offset, dir, "grain directory")?;
    spans.push((a, b, "grain directory", 0));
    for (i, &t) in gd.iter().enumerate() {
        let (a, b) = sectors(u64::from(t), table, "grain table")?;
        spans.push((a, b, "grain table", i));
    }
    if let Some(rgd) = rgd {
        let (a, b) = sectors(h.rgd_offset, dir, "redundant grain directory")?;
        spans.push((a, b, "redundant grain directory", 0));
        for (i, &t) in rgd.iter().enumerate() {
            let (a, b) = sectors(u64::from(t), table, "redundant grain table")?;
            spans.push((a, b, "redundant grain table", i));
        }
    }
    let overhead = h.overhead.saturating_mul(SECTOR);
    if let Some((_, _, what, i)) = spans.iter().find(|s| s.1 > overhead) {
        return Err(bad(format!(
            "VMDK {what} {i} reaches past the metadata area ({} sectors)",
            h.overhead
        )));
    }
    spans.sort_unstable();
    if let Some(w) = spans.windows(2).find(|w| w[1].0 < w[0].1) {
        let (x, y) = (w[1], w[0]);
        return Err(bad(format!(
            "VMDK {} {} overlaps the {} {}",
            x.2, x.3, y.2, y.3
        )));
    }
    Ok(())
}

/// Where the hex digits of the descriptor's `CID=` line lie in `file` (the embedded descriptor's
/// sectors of a sparse file, or the whole descriptor file), and how many there are (QEMU writes
/// `%x`: fewer than eight when the CID starts with zeros), if the line is the only one and names
/// `cid`, the CID the parser read.
#[allow(clippy::type_complexity)]
fn cid_place(file: Arc<dyn Storage>, cid: u32) -> Result<Option<(Arc<dyn Storage>, u64, usize)>> {
    let len = file.len()?;
    let mut head = [0u8; crate::header::HEADER_SIZE];
    let (start, size) = if len >= head.len() as u64 && {
        file.read_exact_at(&mut head, 0)?;
        crate::header::sparse_kind(&head) == crate::header::SparseKind::Hosted
    } {
        let h = crate::sparse::read_header(&*file, 0)?;
        let start = h.descriptor_offset.saturating_mul(SECTOR);
        (start, h.descriptor_size.saturating_mul(SECTOR))
    } else {
        (0, len)
    };
    let size = size
        .min(len.saturating_sub(start))
        .min(crate::limits::MAX_DESCRIPTOR_BYTES);
    if start == 0 && size != len {
        return Ok(None);
    }
    let mut text = vec![0u8; size as usize];
    file.read_exact_at(&mut text, start)?;
    let mut found = None;
    let mut line_start = 0usize;
    for line in text.split(|b| *b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"CID=") {
            let n = rest.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            let end_ok = matches!(rest.get(n), None | Some(b'\r' | b'\0' | b' ' | b'\t'));
            let v = std::str::from_utf8(&rest[..n])
                .ok()
                .and_then(|t| u32::from_str_radix(t, 16).ok());
            if found.is_some() || !end_ok || !(1..=8).contains(&n) || v != Some(cid) {
                return Ok(None);
            }
            found = Some((start + line_start as u64 + 4, n));
        }
        line_start += line.len() + 1;
    }
    Ok(found.map(|(at, n)| (file, at, n)))
}

impl InplaceWriter {
    /// Gives the descriptor a new CID (once, before the first write changes anything else).
    pub(super) fn new_cid(&mut self) -> Result<()> {
        let Some((file, at, digits)) = self.cid.take() else {
            return Ok(());
        };
        let old = self.reader.cid();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        // A mix of the seed (splitmix64's finaliser) that fits the digits there are, so that the
        // descriptor keeps its length; never the old CID nor "no parent".
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let mask = u64::MAX >> (64 - 4 * digits.clamp(1, 8) as u32);
        let mut cid = ((z ^ (z >> 31)) & mask) as u32;
        while cid == old || cid == crate::descriptor::NO_PARENT_CID {
            cid = (u64::from(cid).wrapping_add(1) & mask) as u32;
        }
        file.write_at(format!("{cid:0digits$x}").as_bytes(), at)?;
        self.cid_dirty = Some(file);
        Ok(())
    }
}
