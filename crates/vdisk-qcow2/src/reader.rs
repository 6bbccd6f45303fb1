//! Reading an opened qcow2 image ([`open`] is in open.rs): guest reads through the L2 cache
//! (qcow2.txt "Cluster mapping") and block status with QEMU's semantics (`qcow2_co_block_status` +
//! the block layer's BDRV_BLOCK_RECURSE for metadata-preallocated images).

use crate::header::Header;
use crate::refcount::Refcounts;
use crate::snapshot::Snapshot;
use crate::tables::{Geometry, L2Cache, SubType};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use vdisk_core::reader::check_range;
use vdisk_core::{CheckReport, Error, Extent, ExtentKind, ImageInfo, ImageReader, Result, Storage};

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
    /// Where the L1 table in use starts (its entries past the end of the file read as zeros).
    l1_offset: u64,
    /// The persistent bitmaps, loaded and validated at open (see `bitmap_dir`).
    bitmaps: Vec<crate::info::BitmapInfo>,
    /// The LUKS header of a LUKS-encrypted image, checked at open as QEMU checks it.
    pub(crate) luks: Option<crate::luks::LuksHeader>,
    /// Where the LUKS header starts in the file.
    pub(crate) luks_offset: u64,
    /// The password given for an encrypted image.
    pub(crate) key: Option<vdisk_core::secrets::Key>,
    /// The payload cipher, once the password unlocked it (or why it did not).
    pub(crate) crypto: OnceLock<std::result::Result<crate::crypt::Decryptor, String>>,
    cache: L2Cache,
    prealloc: OnceLock<bool>,
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
    Ok(be_words(&raw))
}

/// `raw` as big-endian u64 words.
fn be_words(raw: &[u8]) -> Vec<u64> {
    let mut words = vec![0u64; raw.len() / 8];
    fill_be_words(raw, &mut words);
    words
}

/// The first words of `out` from `raw`'s big-endian words (as many as both hold).
fn fill_be_words(raw: &[u8], out: &mut [u64]) {
    for (w, c) in out.iter_mut().zip(raw.chunks_exact(8)) {
        *w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
    }
}

/// Reads `count` big-endian u64 entries at `offset` (the caller has bounded `count`), what lies
/// past the end of the file (`file_len`) as zeros. Only the part in the file is read and written:
/// the zeros past it are the allocator's fresh pages, never touched here, so that a hostile header
/// whose table reaches far past the end costs neither time nor resident memory.
pub(crate) fn read_u64_table_padded(
    s: &dyn Storage,
    offset: u64,
    count: usize,
    file_len: u64,
) -> Result<Vec<u64>> {
    let len = count.saturating_mul(8) as u64;
    let inside = crate::refcount::padded_request(s, offset, len, file_len)?;
    // The entry the file ends inside, if any, takes zeros for its missing bytes.
    let mut raw = vec![0u8; inside.next_multiple_of(8)];
    s.read_exact_at(&mut raw[..inside], offset)?;
    let mut words = vec![0u64; count];
    fill_be_words(&raw, &mut words);
    Ok(words)
}

impl Qcow2Reader {
    /// Refuses to map guest data through L1 entry `index` when it lies past the end of the file
    /// (QEMU reads it as zero, so as unallocated): a difference to QEMU, except under `check`.
    pub(crate) fn l1_entry_in_file(&self, index: u64) -> Result<()> {
        let in_file = self.file_len.saturating_sub(self.l1_offset) / 8;
        if self.for_check || index < in_file || index >= self.l1.len() as u64 {
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

    /// The persistent bitmaps (the bitmap directory), as opening loaded them.
    pub(crate) fn bitmaps(&self) -> &[crate::info::BitmapInfo] {
        &self.bitmaps
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The internal snapshots.
    pub fn snapshots(&self) -> &[Snapshot] {
        &self.snapshots
    }

    /// Whether guest data is encrypted (reads are refused without the password).
    pub fn encrypted(&self) -> bool {
        self.header.crypt_method != 0
    }

    /// The payload cipher of an encrypted image, unlocked with its password on first use (None
    /// for an image that is not encrypted); QEMU's messages without a password or with a wrong
    /// one.
    fn decryptor(&self) -> Result<Option<&crate::crypt::Decryptor>> {
        if !self.encrypted() {
            return Ok(None);
        }
        let Some(key) = &self.key else {
            return Err(crate::luks::no_key(&self.path, "encrypt.key-secret"));
        };
        let unlocked = self.crypto.get_or_init(|| {
            let pw = key.password()?;
            crate::crypt::Decryptor::unlock(
                self.storage.as_ref(),
                self.header.crypt_method,
                self.luks.as_ref().map(|h| (h, self.luks_offset)),
                pw,
            )
        });
        match unlocked {
            Ok(d) => Ok(Some(d)),
            Err(why) => Err(Error::Other(format!(
                "Could not open '{}': {why}",
                self.path.display()
            ))),
        }
    }

    /// The error opening the external data file, when it could not be (see [`Unopened`]).
    pub(crate) fn data_file_opened(&self) -> Result<()> {
        match &self.data_error {
            Some(why) => Err(Error::Other(why.clone())),
            None => Ok(()),
        }
    }

    fn refuse_encrypted(&self) -> Result<()> {
        self.decryptor().map(|_| ())
    }

    /// QEMU's error for an L2 entry of no known kind.
    fn invalid_entry(&self) -> Error {
        Error::corrupt(&self.path, None, "Invalid cluster entry found")
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

    /// Reads and decrypts `buf`, stored at `host` for guest offset `guest`: the whole sectors
    /// around it, as they were encrypted (a guest offset and its host offset lie at the same place
    /// in their clusters, so in their sectors).
    fn read_decrypted(
        &self,
        c: &crate::crypt::Decryptor,
        buf: &mut [u8],
        host: u64,
        guest: u64,
    ) -> Result<()> {
        let s = crate::crypt::SECTOR;
        if host % s == 0 && buf.len() as u64 % s == 0 && guest % s == 0 {
            // Whole sectors (what convert reads): decrypted where they are read.
            self.read_host(buf, host)?;
            return c.decrypt(buf, host, guest);
        }
        let front = host % s;
        let len = (front + buf.len() as u64).div_ceil(s) * s;
        let mut whole = vec![0u8; len as usize];
        self.read_host(&mut whole, host - front)?;
        // Equal offsets in their sectors unless an L2 entry is misaligned: refused, not wrapped.
        let guest_start = guest
            .checked_sub(front)
            .filter(|g| g % s == 0)
            .ok_or_else(|| {
                Error::corrupt(&self.path, None, "encrypted cluster at an unaligned offset")
            })?;
        c.decrypt(&mut whole, host - front, guest_start)?;
        buf.copy_from_slice(&whole[front as usize..front as usize + buf.len()]);
        Ok(())
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
        self.ready_for_io()?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (t, len) = self.lookup(pos, (buf.len() - done) as u64)?;
            let mut n = (len as usize).clamp(1, buf.len() - done);
            let chunk = &mut buf[done..done + n];
            match t {
                SubType::Normal(host) => match self.decryptor()? {
                    None => self.read_host(chunk, host)?,
                    Some(c) => self.read_decrypted(c, chunk, host, pos)?,
                },
                SubType::Compressed { offset: c, size } => {
                    n = self.read_compressed_run(&mut buf[done..], pos, (c, size), n, run_bytes)?
                }
                SubType::Invalid => return Err(self.invalid_entry()),
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

    fn ready_for_io(&self) -> Result<()> {
        self.refuse_encrypted()?;
        self.data_file_opened()
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_at_batched(buf, offset, crate::compressed_read::RUN_BUFFER_BYTES)
    }

    fn host_storage(&self, file: &Path) -> Option<Arc<dyn Storage>> {
        // An encrypted image's file holds no guest bytes to copy.
        (file == &*self.data_path && self.data_error.is_none() && !self.encrypted())
            .then(|| Arc::clone(&self.data))
    }

    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let max = vdisk_core::reader::status_len(self.size, offset, max_len)?;
        // As qemu-img without the key: nothing of the guest's disk is shown, not even where it
        // is unallocated (only `info` opens an encrypted image).
        self.ready_for_io()?;
        let (t, len) = self.lookup(offset, max)?;
        let len = len.max(1);
        if self.encrypted() {
            // As QEMU: where encrypted data lies in the file is not shown (its bytes are not the
            // guest's), so nothing copies them from there.
            let kind = match t {
                SubType::Normal(_) => ExtentKind::Data,
                SubType::ZeroAlloc(_) | SubType::ZeroPlain => ExtentKind::Zero,
                SubType::UnallocAlloc(_) | SubType::UnallocPlain => ExtentKind::Unallocated,
                SubType::Compressed { .. } => ExtentKind::Compressed,
                SubType::Invalid => return Err(self.invalid_entry()),
            };
            return Ok(Extent::new(offset, len, kind));
        }
        Ok(match t {
            SubType::Normal(h) => self.data_extent(offset, len, h)?,
            SubType::ZeroAlloc(h) => {
                Extent::at_host(offset, len, ExtentKind::Zero, &self.data_path, h)
            }
            SubType::ZeroPlain => Extent::new(offset, len, ExtentKind::Zero),
            SubType::UnallocAlloc(h) => {
                Extent::at_host(offset, len, ExtentKind::Unallocated, &self.data_path, h)
            }
            SubType::UnallocPlain => Extent::new(offset, len, ExtentKind::Unallocated),
            SubType::Compressed { .. } => Extent::new(offset, len, ExtentKind::Compressed),
            SubType::Invalid => return Err(self.invalid_entry()),
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

#[path = "open.rs"]
mod open;
pub use open::{open, read_header, OpenOptions, SnapshotSel};

#[cfg(test)]
#[path = "reader_tests.rs"]
pub(crate) mod tests;
