//! One sparse extent with grain directory and grain tables ("Hosted Sparse Extent Header", "Grain
//! Directories and Grain Tables" of Virtual Disk Format 1.1): hosted `KDMV` extents, ESX `COWD`
//! extents and seSparse extents (opened in `sesparse`) share the lookup, block-status and read code
//! here, including zeroed grains (Virtual Disk Format 5.0); compressed grains are decoded in `stream`.

use crate::cowd::CowdHeader;
use crate::header::{sparse_kind, HeaderError, SparseHeader, SparseKind, GD_AT_END, HEADER_SIZE};
use crate::limits::{
    GRAIN_CACHE_TOTAL_BYTES, GT_CACHE_MIN, GT_CACHE_TOTAL_BYTES, MAX_DESCRIPTOR_BYTES,
    MAX_GD_ENTRIES, MAX_STATUS_GRAINS, SECTOR,
};
use crate::sesparse::{decode_entry, SeEntry, SeSparseHeader, SESPARSE_GRAIN_SECTORS};
use crate::stream::read_footer;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use vdisk_core::{Error, Result, Storage};

/// Where one grain of the extent lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// Grain table entry 0 (or grain directory entry 0): not allocated in this layer.
    Unallocated,
    /// Zeroed grain (entry 1 with the zeroed-grain flag).
    Zero,
    /// Plain data at this byte offset of the extent file.
    Data(u64),
    /// A compressed grain (its marker, when markers are used) at this byte offset.
    Compressed(u64),
}

/// An opened sparse extent.
pub struct SparseExtent {
    pub(crate) storage: Arc<dyn Storage>,
    /// The header in effect (the footer's copy for stream-optimized files with the GD at the end).
    pub(crate) header: SparseHeader,
    /// The header as found at offset 0.
    pub(crate) first_header: SparseHeader,
    /// Grain directory: the sector of each grain table (0: none).
    pub(crate) gd: Vec<u64>,
    pub(crate) file_len: u64,
    /// The seSparse geometry, for an seSparse extent (64-bit table entries).
    pub(crate) se: Option<SeSparseHeader>,
    gt_cache: Mutex<HashMap<u64, Arc<Vec<u64>>>>,
    gt_cache_max: usize,
    pub(crate) last_grain: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
    pub(crate) keep_last_grain: bool,
}

/// Maps a header parse failure to an error naming the file.
pub fn header_error(path: &Path, e: HeaderError, offset: u64) -> Error {
    match e {
        HeaderError::BadMagic => Error::corrupt(
            path,
            Some(offset),
            "not a VMDK sparse extent (no KDMV magic)",
        ),
        HeaderError::Invalid(m) => {
            Error::corrupt(path, Some(offset), format!("invalid sparse header: {m}"))
        }
        HeaderError::Unsupported(m) => Error::unsupported(path, m),
    }
}

/// Reads the hosted sparse header at `offset` of `storage`.
pub fn read_header(storage: &dyn Storage, offset: u64) -> Result<SparseHeader> {
    let mut b = [0u8; HEADER_SIZE];
    storage.read_exact_at(&mut b, offset)?;
    SparseHeader::parse(&b).map_err(|e| header_error(storage.path(), e, offset))
}

/// Reads the first sector of a sparse extent file: a hosted sparse header, or an ESX `COWD` header
/// seen as an equivalent sparse header. seSparse is refused by name.
pub fn read_extent_header(storage: &dyn Storage) -> Result<SparseHeader> {
    let path = storage.path();
    let mut b = [0u8; HEADER_SIZE];
    storage.read_exact_at(&mut b, 0)?;
    match sparse_kind(&b) {
        SparseKind::Cowd => CowdHeader::parse(&b)
            .map(|h| h.to_sparse())
            .map_err(|e| header_error(path, e, 0)),
        SparseKind::SeSparse => Err(Error::unsupported(
            path,
            "VMDK subformat seSparse: an seSparse extent is read through its descriptor file",
        )),
        _ => SparseHeader::parse(&b).map_err(|e| header_error(path, e, 0)),
    }
}

impl SparseExtent {
    /// Opens the sparse extent in `storage`, one of `siblings` sparse extents of the image (the caches
    /// are shared out among them).
    pub fn open(storage: Arc<dyn Storage>, siblings: usize) -> Result<Self> {
        let siblings = siblings.max(1);
        let path = storage.path().to_path_buf();
        let file_len = storage.len()?;
        let mut head = [0u8; HEADER_SIZE];
        storage.read_exact_at(&mut head, 0)?;
        if sparse_kind(&head) == SparseKind::SeSparse {
            return Self::open_sesparse(storage, &head, siblings, file_len);
        }
        let first_header = read_extent_header(&*storage)?;
        let header = if first_header.gd_offset == GD_AT_END {
            read_footer(&*storage, file_len)?
        } else {
            first_header.clone()
        };
        let min_len = header.overhead.saturating_mul(SECTOR);
        if file_len < min_len {
            return Err(Error::corrupt(
                &path,
                None,
                format!(
                    "file truncated, expecting at least {min_len} bytes (the header's overhead)"
                ),
            ));
        }
        let entries = header.gd_entries();
        if entries > MAX_GD_ENTRIES {
            return Err(Error::limit(
                &path,
                "grain directory entries",
                entries,
                MAX_GD_ENTRIES,
            ));
        }
        let gd_at = header.gd_offset.checked_mul(SECTOR);
        let gd_end = gd_at.and_then(|a| a.checked_add(entries * 4));
        let (Some(gd_at), Some(gd_end)) = (gd_at, gd_end) else {
            return Err(Error::corrupt(
                &path,
                None,
                "grain directory offset overflows",
            ));
        };
        if gd_at == 0 || gd_end > file_len {
            return Err(Error::corrupt(
                &path,
                Some(gd_at),
                format!(
                    "grain directory ({entries} entries at sector {}) lies outside the file",
                    header.gd_offset
                ),
            ));
        }
        let gd = read_u32s(&*storage, gd_at, entries as usize)?
            .into_iter()
            .map(u64::from)
            .collect();
        Ok(Self::assemble(
            storage,
            header,
            first_header,
            gd,
            file_len,
            None,
            siblings,
        ))
    }

    pub(crate) fn assemble(
        storage: Arc<dyn Storage>,
        header: SparseHeader,
        first_header: SparseHeader,
        gd: Vec<u64>,
        file_len: u64,
        se: Option<SeSparseHeader>,
        siblings: usize,
    ) -> Self {
        let entry = if se.is_some() { 8 } else { 4 };
        let table_bytes = (u64::from(header.num_gtes_per_gt) * entry).max(1);
        let gt_cache_max =
            ((GT_CACHE_TOTAL_BYTES / table_bytes) as usize / siblings).max(GT_CACHE_MIN);
        let keep_last_grain =
            header.grain_bytes().saturating_mul(siblings as u64) <= GRAIN_CACHE_TOTAL_BYTES;
        SparseExtent {
            storage,
            header,
            first_header,
            gd,
            file_len,
            se,
            gt_cache: Mutex::new(HashMap::new()),
            gt_cache_max,
            last_grain: Mutex::new(None),
            keep_last_grain,
        }
    }

    /// The extent file's name.
    pub fn path(&self) -> &Path {
        self.storage.path()
    }

    /// Virtual size of the extent in bytes.
    pub fn capacity(&self) -> u64 {
        self.header.capacity_bytes()
    }

    /// Grain size in bytes.
    pub fn grain_bytes(&self) -> u64 {
        self.header.grain_bytes()
    }

    /// The embedded descriptor's bytes, if the header names one.
    pub fn descriptor_bytes(&self) -> Result<Option<Vec<u8>>> {
        let h = &self.first_header;
        if h.descriptor_offset == 0 || h.descriptor_size == 0 {
            return Ok(None);
        }
        let len = h.descriptor_size.saturating_mul(SECTOR);
        if len > MAX_DESCRIPTOR_BYTES {
            return Err(Error::limit(
                self.path(),
                "embedded descriptor size",
                len,
                MAX_DESCRIPTOR_BYTES,
            ));
        }
        let at = h
            .descriptor_offset
            .checked_mul(SECTOR)
            .ok_or_else(|| Error::corrupt(self.path(), None, "descriptor offset overflows"))?;
        let mut buf = vec![0u8; len as usize];
        self.storage.read_exact_at(&mut buf, at)?;
        Ok(Some(buf))
    }

    /// The grain table that grain directory entry `gde` (a sector) points to.
    pub(crate) fn grain_table(&self, gde: u64) -> Result<Arc<Vec<u64>>> {
        if let Ok(c) = self.gt_cache.lock() {
            if let Some(t) = c.get(&gde) {
                return Ok(Arc::clone(t));
            }
        }
        let n = self.header.num_gtes_per_gt as usize;
        let esize: u64 = if self.se.is_some() { 8 } else { 4 };
        let at = gde.saturating_mul(SECTOR);
        if at
            .checked_add(n as u64 * esize)
            .is_none_or(|end| end > self.file_len)
        {
            return Err(Error::corrupt(
                self.path(),
                Some(at),
                format!("grain table at sector {gde} lies past the end of the file"),
            ));
        }
        let t = Arc::new(if self.se.is_some() {
            read_u64s(&*self.storage, at, n)?
        } else {
            read_u32s(&*self.storage, at, n)?
                .into_iter()
                .map(u64::from)
                .collect()
        });
        if let Ok(mut c) = self.gt_cache.lock() {
            if c.len() >= self.gt_cache_max {
                c.clear();
            }
            c.insert(gde, Arc::clone(&t));
        }
        Ok(t)
    }

    /// What grain table entry `gte` means.
    pub(crate) fn classify(&self, gte: u64) -> Result<Grain> {
        if let Some(se) = &self.se {
            let bad = || {
                Error::corrupt(
                    self.path(),
                    None,
                    format!("malformed seSparse grain table entry {gte:#x}"),
                )
            };
            return match decode_entry(gte).ok_or_else(bad)? {
                SeEntry::Unallocated => Ok(Grain::Unallocated),
                SeEntry::Zero => Ok(Grain::Zero),
                SeEntry::Cluster(i) => i
                    .checked_mul(SESPARSE_GRAIN_SECTORS)
                    .and_then(|s| s.checked_add(se.grains_offset))
                    .and_then(|s| s.checked_mul(SECTOR))
                    .map(Grain::Data)
                    .ok_or_else(bad),
            };
        }
        Ok(match gte {
            0 => Grain::Unallocated,
            1 if self.header.has_zero_grain() => Grain::Zero,
            s if self.header.compressed() => Grain::Compressed(s * SECTOR),
            s => Grain::Data(s * SECTOR),
        })
    }

    /// Where the grain holding extent byte `off` lives.
    pub fn lookup(&self, off: u64) -> Result<Grain> {
        let grain = off / self.grain_bytes();
        let per = u64::from(self.header.num_gtes_per_gt);
        let Some(&gde) = self.gd.get((grain / per) as usize) else {
            return Ok(Grain::Unallocated);
        };
        if gde == 0 {
            return Ok(Grain::Unallocated);
        }
        let gt = self.grain_table(gde)?;
        self.classify(gt.get((grain % per) as usize).copied().unwrap_or(0))
    }

    /// The status of extent bytes from `off`: the grain kind and how many bytes (at most `max`) share
    /// it with contiguous host placement. Scans grain tables directly, skipping whole tables that the
    /// grain directory leaves unallocated.
    pub fn status(&self, off: u64, max: u64) -> Result<(Grain, u64)> {
        let g = self.grain_bytes();
        let per = u64::from(self.header.num_gtes_per_gt);
        let first_grain = off / g;
        let scan_end = (first_grain + MAX_STATUS_GRAINS).saturating_mul(g);
        let end = off.saturating_add(max).min(self.capacity()).min(scan_end);
        let first = self.lookup(off)?;
        let continues = |next: Grain, grain: u64| match (first, next) {
            (Grain::Data(a), Grain::Data(b)) => a.checked_add((grain - first_grain) * g) == Some(b),
            (Grain::Compressed(_), Grain::Compressed(_)) => true,
            (a, b) => a == b,
        };
        let mut grain = first_grain + 1;
        'tables: while grain * g < end {
            let gd_idx = grain / per;
            let table_end = (gd_idx + 1) * per;
            let gde = self.gd.get(gd_idx as usize).copied().unwrap_or(0);
            if gde == 0 {
                if first != Grain::Unallocated {
                    break;
                }
                grain = table_end;
                continue;
            }
            let gt = self.grain_table(gde)?;
            while grain < table_end && grain * g < end {
                let gte = gt.get((grain % per) as usize).copied().unwrap_or(0);
                if !continues(self.classify(gte)?, grain) {
                    break 'tables;
                }
                grain += 1;
            }
        }
        Ok((first, (grain * g).min(end) - off))
    }

    /// Reads extent bytes at `off` (the range must lie inside the extent).
    pub fn read(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let g = self.grain_bytes();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = off + done as u64;
            let within = pos % g;
            // One run of grains with the same status (and contiguous host data): one read.
            let (grain, run) = self.status(pos, (buf.len() - done) as u64)?;
            let mut n = (run as usize).clamp(1, buf.len() - done);
            if let Grain::Compressed(_) = grain {
                n = n.min((g - within) as usize);
            }
            let chunk = &mut buf[done..done + n];
            match grain {
                Grain::Unallocated | Grain::Zero => chunk.fill(0),
                Grain::Data(h) => {
                    let at = h.checked_add(within).ok_or_else(|| {
                        Error::corrupt(self.path(), None, "grain offset overflows")
                    })?;
                    self.storage.read_zero_padded(chunk, at)?;
                }
                Grain::Compressed(h) => {
                    let data = self.compressed_grain(h, pos - within)?;
                    let w = within as usize;
                    chunk.copy_from_slice(&data[w..w + n]);
                }
            }
            done += n;
        }
        Ok(())
    }
}

/// Reads `n` little-endian u64 at `at`.
pub(crate) fn read_u64s(storage: &dyn Storage, at: u64, n: usize) -> Result<Vec<u64>> {
    let mut raw = vec![0u8; n * 8];
    storage.read_exact_at(&mut raw, at)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

/// Reads `n` little-endian u32 at `at`.
pub(crate) fn read_u32s(storage: &dyn Storage, at: u64, n: usize) -> Result<Vec<u32>> {
    let mut raw = vec![0u8; n * 4];
    storage.read_exact_at(&mut raw, at)?;
    Ok(raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}
