//! Opening a qcow2 image and reading it: header, optional external data file, snapshot table, the
//! active (or a snapshot's) L1 table, then guest reads through the L2 cache (qcow2.txt "Cluster
//! mapping") and block status with QEMU's semantics (`qcow2_co_block_status` + the block layer's
//! BDRV_BLOCK_RECURSE for metadata-preallocated images).

use crate::bitmap_dir::{check_tables, load_directory};
use crate::header::extensions::be32;
use crate::header::{Header, V2_HEADER_LEN, V3_MIN_HEADER_LEN};
use crate::limits;
use crate::refcount::Refcounts;
use crate::snapshot::{read_table, Snapshot};
use crate::tables::{Geometry, L2Cache, SubType};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use vdisk_core::reader::check_range;
use vdisk_core::storage::FileOpener;
use vdisk_core::{CheckReport, Error, Extent, ExtentKind, ImageInfo, ImageReader, Result, Storage};

/// Which internal snapshot to read instead of the active image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotSel {
    /// By name (`snapshot.name=`).
    Name(String),
    /// By id (`snapshot.id=`).
    Id(String),
    /// By id first, else by name (`-l NAME_OR_ID`).
    NameOrId(String),
}

/// How to open an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Read this internal snapshot (read-only view) instead of the active image.
    pub snapshot: Option<SnapshotSel>,
    /// Open as `qemu-img check` opens (BDRV_O_CHECK): the refcount table reads as zeros where it
    /// reaches past the end of the file, and guest reads through an L1 table there read zeros
    /// (the check reports what points past the end); an image without a refcount table opens (the
    /// check reports every cluster); an encrypted image does not (the check reads guest data, so
    /// QEMU needs the key). Any open reads the L1 and snapshot tables as QEMU does, zeros past the
    /// end of the file; without `for_check` reading guest data through such an L1 entry fails.
    pub for_check: bool,
}

/// An opened qcow2 image.
pub struct Qcow2Reader {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) path: Arc<Path>,
    pub(crate) header: Header,
    pub(crate) geo: Geometry,
    pub(crate) data: Arc<dyn Storage>,
    pub(crate) data_path: Arc<Path>,
    pub(crate) data_file: Option<PathBuf>,
    pub(crate) l1: Vec<u64>,
    pub(crate) size: u64,
    pub(crate) snapshots: Vec<Snapshot>,
    pub(crate) snapshot_table_bytes: u64,
    pub(crate) file_len: u64,
    /// Opened with `OpenOptions::for_check`.
    pub(crate) for_check: bool,
    /// Why the external data file could not be opened (only without `for_check`).
    data_error: Option<String>,
    /// Where the L1 table in use starts, and how many of its entries lie inside the file (those
    /// past it read as zeros).
    l1_offset: u64,
    l1_in_file: usize,
    cache: L2Cache,
    prealloc: OnceLock<bool>,
}

/// An external data file that could not be opened: every access fails with why.
struct Unopened {
    path: PathBuf,
    why: String,
}

impl Storage for Unopened {
    fn path(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> Result<u64> {
        Err(Error::Other(self.why.clone()))
    }

    fn read_at(&self, _buf: &mut [u8], _offset: u64) -> Result<usize> {
        Err(Error::Other(self.why.clone()))
    }
}

/// Opens the qcow2 image in `storage`; other files it names are opened through `files`.
pub fn open(
    storage: Arc<dyn Storage>,
    files: Arc<dyn FileOpener>,
    opts: &OpenOptions,
) -> Result<Qcow2Reader> {
    let path: Arc<Path> = Arc::from(storage.path());
    let file_len = storage.len()?;
    let mut first = vec![0u8; file_len.min(4096) as usize];
    storage.read_exact_at(&mut first, 0)?;
    let cluster_bits = Header::peek_cluster_bits(&first, &path)?;
    // The first cluster, zero-padded as QEMU's block layer reads past the end of the file: a file
    // that ends after the header, among its extensions or in the backing file name, reads as if
    // zeros followed. A file shorter than the header itself stays truncated.
    let mut cluster = vec![0u8; 1 << cluster_bits];
    let inside = file_len.min(1 << cluster_bits) as usize;
    storage.read_exact_at(&mut cluster[..inside], 0)?;
    let header_len = match be32(&cluster, 4) {
        3 => (be32(&cluster, 100) as usize).max(V3_MIN_HEADER_LEN as usize),
        _ => V2_HEADER_LEN as usize,
    };
    let seen = if inside >= header_len {
        cluster.len()
    } else {
        inside
    };
    let header = Header::parse(&cluster[..seen], &path)?;
    if header.refcount_table_clusters == 0 && !opts.for_check {
        return Err(Error::corrupt(
            &path,
            Some(56),
            "Image does not contain a reference count table",
        ));
    }
    let geo = Geometry {
        cluster_bits,
        extended: header.extended_l2(),
        data_file: header.has_data_file(),
    };

    let mut data_error = None;
    let (data, data_path, data_file) = if header.has_data_file() {
        // As qemu does (and as the writer creates it): the stored name is opened as given, so a
        // relative name is taken from the working directory, not from the image's directory.
        let p = std::path::PathBuf::from(header.data_file().unwrap_or_default());
        let opened = match header.data_file() {
            None => Err(Error::Other(format!(
                "{}: Could not open data file: 'data-file' is required for this image",
                path.display()
            ))),
            Some(_) => files.open(&p),
        };
        let s: Arc<dyn Storage> = match opened {
            Ok(s) => s,
            Err(e) if !opts.for_check => {
                // `qemu-img info` opens images without I/O (BDRV_O_NO_IO) and so never opens the
                // data file: the image opens, and reading or mapping guest data fails with why.
                data_error = Some(e.to_string());
                Arc::new(Unopened {
                    path: p.clone(),
                    why: e.to_string(),
                })
            }
            Err(e) => return Err(e),
        };
        (s, Arc::from(p.as_path()), Some(p))
    } else {
        (Arc::clone(&storage), Arc::clone(&path), None)
    };

    if opts.for_check && header.crypt_method != 0 {
        return Err(Error::Other(format!(
            "Could not open '{}': Parameter 'encrypt.key-secret' is required for cipher (vdisk \
             does not decrypt images; `vdisk info` shows what is stored unencrypted)",
            path.display()
        )));
    }
    let (snapshots, snapshot_table_bytes) = read_table(
        storage.as_ref(),
        header.snapshots_offset,
        header.nb_snapshots,
        true,
    )?;
    let (l1_offset, l1_size, size) = match &opts.snapshot {
        None => (header.l1_table_offset, header.l1_size, header.size),
        Some(sel) => {
            let sn = find_snapshot(&snapshots, sel).ok_or_else(|| {
                Error::Other(format!(
                    "{}: Failed to load snapshot: Can't find snapshot",
                    path.display()
                ))
            })?;
            let bytes = u64::from(sn.l1_size) * 8;
            if bytes > limits::MAX_L1_BYTES {
                return Err(Error::limit(
                    &path,
                    "snapshot L1 table size",
                    bytes,
                    limits::MAX_L1_BYTES,
                ));
            }
            if sn.l1_table_offset % header.cluster_size() != 0 {
                return Err(Error::corrupt(
                    &path,
                    Some(sn.l1_table_offset),
                    "Snapshot L1 table offset invalid",
                ));
            }
            // QEMU reads a snapshot with the image's current size (qcow2_snapshot_load_tmp).
            (sn.l1_table_offset, sn.l1_size, header.size)
        }
    };
    if size > limits::MAX_VIRTUAL_SIZE {
        return Err(Error::limit(
            &path,
            "virtual size",
            size,
            limits::MAX_VIRTUAL_SIZE,
        ));
    }
    // The size is bounded (header validation, MAX_L1_BYTES); what lies past the end of the file
    // reads as zeros, as QEMU reads it.
    let l1 = read_u64_table_padded(storage.as_ref(), l1_offset, l1_size as usize, file_len)?;
    let l1_in_file = (file_len.saturating_sub(l1_offset) / 8).min(u64::from(l1_size)) as usize;
    // QEMU loads the persistent bitmaps when it opens an image, and fails on invalid ones.
    let sectors = header.size & !511;
    let bitmaps = load_directory(storage.as_ref(), &path, &header, file_len, sectors)?;
    let cs = header.cluster_size();
    check_tables(storage.as_ref(), &path, cs, file_len, sectors, &bitmaps)?;
    Ok(Qcow2Reader {
        cache: L2Cache::new(header.cluster_size()),
        storage,
        path,
        geo,
        data,
        data_path,
        data_file,
        l1,
        // QEMU counts the disk in 512-byte sectors, dropping a partial last sector.
        size: size & !511,
        snapshots,
        snapshot_table_bytes,
        file_len,
        for_check: opts.for_check,
        data_error,
        l1_offset,
        l1_in_file,
        prealloc: OnceLock::new(),
        header,
    })
}

fn find_snapshot<'a>(list: &'a [Snapshot], sel: &SnapshotSel) -> Option<&'a Snapshot> {
    match sel {
        SnapshotSel::Id(id) => list.iter().find(|s| &s.id == id),
        SnapshotSel::Name(n) => list.iter().find(|s| &s.name == n),
        SnapshotSel::NameOrId(x) => list
            .iter()
            .find(|s| &s.id == x)
            .or_else(|| list.iter().find(|s| &s.name == x)),
    }
}

/// Reads `count` big-endian u64 entries at `offset` (the caller has bounded `count`).
pub(crate) fn read_u64_table(
    s: &dyn Storage,
    offset: u64,
    count: usize,
    what: &str,
) -> Result<Vec<u64>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    // Nothing is allocated for a table that cannot be inside the file.
    let bytes = count as u64 * 8;
    if offset
        .checked_add(bytes)
        .is_none_or(|end| end > s.len().unwrap_or(0))
    {
        let what = format!("{what} extends past the end of the file");
        return Err(Error::corrupt(s.path(), Some(offset), what));
    }
    let mut raw = vec![0u8; count * 8];
    s.read_exact_at(&mut raw, offset)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

/// Reads `count` big-endian u64 entries at `offset` (the caller has bounded `count`), what lies
/// past the end of the file (`file_len`) as zeros.
pub(crate) fn read_u64_table_padded(
    s: &dyn Storage,
    offset: u64,
    count: usize,
    file_len: u64,
) -> Result<Vec<u64>> {
    let mut raw = vec![0u8; count * 8];
    crate::refcount::read_block(s, &mut raw, offset, file_len)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

impl Qcow2Reader {
    /// Refuses to map guest data through L1 entry `index` when it lies past the end of the file
    /// (QEMU reads it as zero, so as unallocated): a difference to QEMU, except under `check`.
    pub(crate) fn l1_entry_in_file(&self, index: u64) -> Result<()> {
        if self.for_check || index < self.l1_in_file as u64 || index >= self.l1.len() as u64 {
            return Ok(());
        }
        Err(Error::corrupt(
            &self.path,
            Some(self.l1_offset.saturating_add(index.saturating_mul(8))),
            "L1 table extends past the end of the file",
        ))
    }

    /// Reads a metadata table of `count` words as this reader was opened to: refusing one that
    /// reaches past the end of the file, or reading zeros there (`for_check`).
    pub(crate) fn read_table_words(
        &self,
        offset: u64,
        count: usize,
        what: &str,
    ) -> Result<Vec<u64>> {
        if self.for_check {
            read_u64_table_padded(self.storage.as_ref(), offset, count, self.file_len)
        } else {
            read_u64_table(self.storage.as_ref(), offset, count, what)
        }
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The internal snapshots.
    pub fn snapshots(&self) -> &[Snapshot] {
        &self.snapshots
    }

    /// Whether guest data is encrypted (reads are refused).
    pub fn encrypted(&self) -> bool {
        self.header.crypt_method != 0
    }

    /// The error opening the external data file, when it could not be (see [`Unopened`]).
    pub(crate) fn data_file_opened(&self) -> Result<()> {
        match &self.data_error {
            Some(why) => Err(Error::Other(why.clone())),
            None => Ok(()),
        }
    }

    fn refuse_encrypted(&self) -> Result<()> {
        if self.encrypted() {
            return Err(Error::unsupported(
                &self.path,
                "encryption: encrypted images are not supported",
            ));
        }
        Ok(())
    }

    fn read_host(&self, buf: &mut [u8], host: u64) -> Result<()> {
        let cs = 1u64 << self.geo.cluster_bits;
        let last_cluster = host.saturating_add((buf.len() as u64).saturating_sub(1)) & !(cs - 1);
        if self.data_file.is_none() && last_cluster >= self.file_len {
            return Err(Error::corrupt(
                &self.path,
                Some(host),
                "L2 entry points past the end of the file",
            ));
        }
        self.data.read_zero_padded(buf, host)
    }

    /// `read_at`, with runs of compressed clusters read `run_bytes` at most at a time (0 reads
    /// each compressed cluster on its own).
    pub(crate) fn read_at_batched(
        &self,
        buf: &mut [u8],
        offset: u64,
        run_bytes: u64,
    ) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        self.refuse_encrypted()?;
        self.data_file_opened()?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (t, len) = self.lookup(pos, (buf.len() - done) as u64)?;
            let mut n = (len as usize).clamp(1, buf.len() - done);
            let chunk = &mut buf[done..done + n];
            match t {
                SubType::Normal(host) => self.read_host(chunk, host)?,
                SubType::Compressed { offset: c, size } => {
                    n = self.read_compressed_run(&mut buf[done..], pos, (c, size), n, run_bytes)?
                }
                SubType::Invalid => {
                    return Err(Error::corrupt(
                        &self.path,
                        None,
                        "Invalid cluster entry found",
                    ))
                }
                _ => chunk.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    /// QEMU's qcow2_detect_metadata_preallocation: many more clusters referenced than the file
    /// occupies on disk means clusters were preallocated over holes.
    fn metadata_preallocated(&self) -> bool {
        *self.prealloc.get_or_init(|| {
            let Some(real) = self.storage.allocated_bytes() else {
                return false;
            };
            let cs = self.header.cluster_size();
            let real_clusters = real / cs;
            let threshold = (real_clusters * 10 / 9).max(real_clusters + 2);
            let Ok(mut rc) = Refcounts::load(self) else {
                return false;
            };
            let end = self.file_len.div_ceil(cs);
            let per = rc.per_block().max(1);
            let mut count = 0;
            let mut i = 0;
            while i < end && count < threshold {
                // A file extended far past its data has mostly no refcount blocks: skip each
                // missing block (all its clusters have refcount 0) instead of every cluster.
                let ti = i / per;
                if ti >= rc.table.len() as u64 {
                    break;
                }
                match rc.block_offset(ti as usize) {
                    Ok(0) => {
                        i = (ti + 1).saturating_mul(per);
                        continue;
                    }
                    Ok(_) => {}
                    Err(_) => return false,
                }
                match rc.get(i) {
                    Ok(r) if r > 0 => count += 1,
                    Ok(_) => {}
                    Err(_) => return false,
                }
                i += 1;
            }
            count >= threshold
        })
    }

    fn data_extent(&self, pos: u64, len: u64, host: u64) -> Result<Extent> {
        if self.encrypted() {
            return Ok(Extent::new(pos, len, ExtentKind::Data));
        }
        if self.metadata_preallocated() {
            let dlen = self.data.len()?;
            if host >= dlen {
                return Ok(Extent::at_host(
                    pos,
                    len,
                    ExtentKind::ZeroData,
                    &self.data_path,
                    host,
                ));
            }
            let end = host.saturating_add(len);
            if let Some((is_data, run_end)) = self.data.data_run(host, end)? {
                let n = run_end.saturating_sub(host).clamp(1, len);
                let kind = if is_data {
                    ExtentKind::Data
                } else {
                    ExtentKind::ZeroData
                };
                return Ok(Extent::at_host(pos, n, kind, &self.data_path, host));
            }
        }
        Ok(Extent::at_host(
            pos,
            len,
            ExtentKind::Data,
            &self.data_path,
            host,
        ))
    }
}

impl ImageReader for Qcow2Reader {
    fn format_name(&self) -> &'static str {
        "qcow2"
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_at_batched(buf, offset, crate::compressed_read::RUN_BUFFER_BYTES)
    }

    fn host_storage(&self, file: &Path) -> Option<Arc<dyn Storage>> {
        (file == &*self.data_path && self.data_error.is_none()).then(|| Arc::clone(&self.data))
    }

    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        if offset >= self.size || max_len == 0 {
            return Err(Error::invalid(format!(
                "block status at {offset} outside the disk of {} bytes",
                self.size
            )));
        }
        let max = max_len.min(self.size - offset);
        self.data_file_opened()?;
        let (t, len) = self.lookup(offset, max)?;
        let len = len.max(1);
        let host_ok = !self.encrypted();
        Ok(match t {
            SubType::Normal(h) => self.data_extent(offset, len, h)?,
            SubType::ZeroAlloc(h) if host_ok => {
                Extent::at_host(offset, len, ExtentKind::Zero, &self.data_path, h)
            }
            SubType::ZeroAlloc(_) | SubType::ZeroPlain => {
                Extent::new(offset, len, ExtentKind::Zero)
            }
            SubType::UnallocAlloc(h) if host_ok => {
                Extent::at_host(offset, len, ExtentKind::Unallocated, &self.data_path, h)
            }
            SubType::UnallocAlloc(_) | SubType::UnallocPlain => {
                Extent::new(offset, len, ExtentKind::Unallocated)
            }
            SubType::Compressed { .. } => Extent::new(offset, len, ExtentKind::Compressed),
            SubType::Invalid => {
                return Err(Error::corrupt(
                    &self.path,
                    None,
                    "Invalid cluster entry found",
                ))
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

#[path = "mapping.rs"]
mod mapping;

#[cfg(test)]
#[path = "reader_tests.rs"]
pub(crate) mod tests;
