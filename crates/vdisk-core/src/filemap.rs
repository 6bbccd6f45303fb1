//! Read-only memory maps of source files, so that a conversion can scan and write guest data that
//! a format stores uncompressed straight from the page cache instead of first copying it into a
//! buffer with `pread` (one kernel copy fewer per byte converted; see `benches/README.md`, session 6).
//!
//! A map covers the whole file as it was when mapped. Data handed out of it lives in
//! [`crate::DataBuf`]s that drop their pages from the process's page tables once written
//! (`MADV_DONTNEED`: the page cache keeps them), so resident memory stays bounded by what is in
//! flight, as with buffers. A file that shrinks while mapped makes reading past its new end raise
//! `SIGBUS`; the `vdisk` command turns that into an error message (see `vdisk-cli`).

use crate::error::{Error, Result};
use crate::storage::Storage;
use std::collections::HashMap;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Files shorter than this are read, not mapped: a map costs a few system calls and page faults.
const MIN_MAPPED: u64 = 1 << 20;

/// Pages leave the page tables in aligned blocks of this size (x86-64's PMD size), each once no
/// held range touches it. Releasing a range's own pages inside a block that a neighbouring range
/// still being written shares made that range's write fault in its source mid-copy (likely: the
/// kernel maps such a block with one huge entry and a partial release unmaps it whole), and ext4
/// then zeroed and copied the rest of the destination folio again (session 6, cold vdi->raw: 9%
/// of the samples in memset).
const RELEASE_BLOCK: usize = 2 << 20;

/// A read-only, shared map of a whole host file.
pub struct FileMap {
    ptr: *const u8,
    len: usize,
    path: PathBuf,
    /// How many held ranges touch each [`RELEASE_BLOCK`] (by index) that one touches. Ranges
    /// need not start on block or even page boundaries (VDI data starts 512 bytes into a page,
    /// VMDK grains lie at any sector), so neighbouring ranges share blocks.
    held: Mutex<HashMap<usize, u32>>,
}

// SAFETY: the map is read-only memory owned by this value until `Drop`; any thread may read it.
unsafe impl Send for FileMap {}
// SAFETY: as above; shared reads need no synchronisation.
unsafe impl Sync for FileMap {}

impl std::fmt::Debug for FileMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileMap")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish()
    }
}

impl FileMap {
    /// Maps `storage` when it is a host file of at least [`MIN_MAPPED`] bytes; `None` for
    /// in-memory stores, small files, and files the kernel will not map (a pipe, say), which are
    /// read instead.
    pub fn of(storage: &Arc<dyn Storage>) -> Result<Option<Arc<FileMap>>> {
        let Some(file) = storage.as_file() else {
            return Ok(None);
        };
        let len = storage.len()?;
        if len < MIN_MAPPED {
            return Ok(None);
        }
        let Ok(len) = usize::try_from(len) else {
            return Ok(None);
        };
        // SAFETY: a new read-only shared mapping of a file descriptor we hold open; the kernel
        // picks the address. Failure is reported as MAP_FAILED and handled below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Ok(None);
        }
        Ok(Some(Arc::new(FileMap {
            ptr: ptr as *const u8,
            len,
            path: storage.path().to_path_buf(),
            held: Mutex::new(HashMap::new()),
        })))
    }

    /// The mapped length: the file's length when it was mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map is empty (never: empty files are not mapped).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file's bytes `start..start + len`, or an error when they lie outside the map.
    pub fn bytes(&self, start: usize, len: usize) -> Result<&[u8]> {
        match start.checked_add(len) {
            Some(end) if end <= self.len => {
                // SAFETY: `start..end` lies inside the live mapping of `self.len` bytes, which
                // stays mapped while `self` is borrowed.
                Ok(unsafe { std::slice::from_raw_parts(self.ptr.add(start), len) })
            }
            _ => Err(Error::Other(format!(
                "{}: {len} bytes at {start} lie outside its {}-byte map",
                self.path.display(),
                self.len
            ))),
        }
    }

    /// Marks `start..start + len` (inside the map, not empty) as in use until [`Self::release`].
    pub fn hold(&self, start: usize, len: usize) {
        let Some(blocks) = self.blocks(start, len) else {
            return;
        };
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for b in blocks {
            *held.entry(b).or_insert(0) += 1;
        }
    }

    /// Ends a [`Self::hold`]: each [`RELEASE_BLOCK`] of the range that no other held range
    /// touches leaves this process's page tables (`MADV_DONTNEED`; the page cache keeps the pages,
    /// and a later read maps them again).
    pub fn release(&self, start: usize, len: usize) {
        let Some(blocks) = self.blocks(start, len) else {
            return;
        };
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for b in blocks {
            let free = match held.get_mut(&b) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => true,
            };
            if free {
                held.remove(&b);
                self.drop_block(b);
            }
        }
    }

    /// The indexes of the [`RELEASE_BLOCK`]s a non-empty range inside the map touches.
    fn blocks(&self, start: usize, len: usize) -> Option<std::ops::RangeInclusive<usize>> {
        let end = start
            .checked_add(len)
            .filter(|e| *e <= self.len && len > 0)?;
        Some(start / RELEASE_BLOCK..=(end - 1) / RELEASE_BLOCK)
    }

    /// Drops block `b` (inside the map) from the page tables with `MADV_DONTNEED`; the advice is
    /// only a hint, so failure is ignored.
    fn drop_block(&self, b: usize) {
        let start = b * RELEASE_BLOCK;
        let end = start.saturating_add(RELEASE_BLOCK).min(self.len);
        if start >= end {
            return;
        }
        // SAFETY: `start..end` lies inside the mapping and `start`, a multiple of
        // RELEASE_BLOCK, is page-aligned; MADV_DONTNEED never changes what a read of a shared
        // file mapping returns.
        unsafe {
            libc::madvise(
                self.ptr.add(start) as *mut libc::c_void,
                end - start,
                libc::MADV_DONTNEED,
            );
        }
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `of`, once; no borrow of it outlives `self`.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FileStorage, MemStorage};

    fn temp_file(len: usize) -> (PathBuf, Vec<u8>) {
        let dir = std::env::temp_dir().join(format!("vdisk-filemap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("f{len}"));
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes)
    }

    #[test]
    fn a_map_reads_what_the_file_holds_and_refuses_ranges_outside_it() {
        let (path, bytes) = temp_file(3 << 20);
        let s: Arc<dyn Storage> = Arc::new(FileStorage::open(&path).unwrap());
        let m = FileMap::of(&s).unwrap().expect("a 3 MiB file is mapped");
        assert_eq!(m.len(), bytes.len());
        assert_eq!(m.bytes(12345, 70000).unwrap(), &bytes[12345..82345]);
        m.hold(0, 1 << 20);
        m.release(0, 1 << 20);
        assert_eq!(
            m.bytes(0, 4096).unwrap(),
            &bytes[..4096],
            "released pages read again"
        );
        assert!(m.bytes(bytes.len() - 10, 11).is_err());
        assert!(m.bytes(usize::MAX, 2).is_err());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn small_files_and_memory_are_not_mapped() {
        let (path, _) = temp_file(4096);
        let s: Arc<dyn Storage> = Arc::new(FileStorage::open(&path).unwrap());
        assert!(FileMap::of(&s).unwrap().is_none());
        let mem: Arc<dyn Storage> = Arc::new(MemStorage::new("mem", vec![1u8; 2 << 20]));
        assert!(FileMap::of(&mem).unwrap().is_none());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn mapped_buffers_split_into_views_and_copy_before_a_write() {
        let (path, bytes) = temp_file(2 << 20);
        let s: Arc<dyn Storage> = Arc::new(FileStorage::open(&path).unwrap());
        let m = FileMap::of(&s).unwrap().unwrap();
        assert!(crate::DataBuf::mapped(Arc::clone(&m), (2 << 20) - 4, 5).is_err());
        let mut b = crate::DataBuf::mapped(Arc::clone(&m), 1000, 9000).unwrap();
        assert!(b.is_mapped());
        assert_eq!(&b[..], &bytes[1000..10000]);
        let piece = b.slice(100..200);
        assert!(piece.is_mapped());
        assert_eq!(&piece[..], &bytes[1100..1200]);
        let tail = b.split_off(5000);
        assert!(tail.is_mapped());
        assert_eq!(
            (&b[..], &tail[..]),
            (&bytes[1000..6000], &bytes[6000..10000])
        );
        assert_eq!(b.clone().into_vec(), bytes[1000..6000].to_vec());
        b[0] ^= 0xff;
        assert!(!b.is_mapped(), "a write copies the bytes out of the map");
        assert_eq!(b[0], bytes[1000] ^ 0xff);
        assert_eq!(
            m.bytes(1000, 1).unwrap()[0],
            bytes[1000],
            "the file is untouched"
        );
        drop((b, tail, piece));
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        std::fs::remove_file(&path).unwrap();
    }

    fn page_size() -> usize {
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if n > 0 {
            n as usize
        } else {
            4096
        }
    }

    /// Whether the page holding `addr` is in this process's page tables (/proc/self/pagemap bit 63).
    fn present(addr: *const u8) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let page = page_size() as u64;
        let mut f = std::fs::File::open("/proc/self/pagemap").unwrap();
        f.seek(SeekFrom::Start(addr as u64 / page * 8)).unwrap();
        let mut e = [0u8; 8];
        f.read_exact(&mut e).unwrap();
        u64::from_le_bytes(e) >> 63 == 1
    }

    #[test]
    fn a_block_two_held_ranges_share_stays_mapped_until_both_are_released() {
        let (path, bytes) = temp_file(4 * RELEASE_BLOCK);
        let s: Arc<dyn Storage> = Arc::new(FileStorage::open(&path).unwrap());
        let m = FileMap::of(&s).unwrap().unwrap();
        let blk = RELEASE_BLOCK;
        // A ends and B starts in the middle of block 1 (ranges of a VDI start 512 bytes into a
        // page, and so into a block).
        let (a, b) = ((0, blk + blk / 2 + 512), (blk + blk / 2 + 512, blk));
        m.hold(a.0, a.1);
        m.hold(b.0, b.1);
        let all = m.bytes(0, 3 * blk).unwrap();
        assert_eq!(all, &bytes[..3 * blk]);
        // A page early in each block (the one in block 1 is A's), one of B's in block 1.
        let at = |off: usize| all[off..].as_ptr();
        let probes = [0, blk + 4096, 2 * blk - 4096, 2 * blk + 4096];
        assert!(
            probes.iter().all(|&o| present(at(o))),
            "read pages are mapped"
        );
        m.release(a.0, a.1);
        assert!(!present(at(0)), "the block only A touched is released");
        assert!(
            probes[1..].iter().all(|&o| present(at(o))),
            "the block B shares stays, A's pages in it too"
        );
        m.release(b.0, b.1);
        assert!(
            probes.iter().all(|&o| !present(at(o))),
            "B's blocks are released"
        );
        assert_eq!(m.bytes(blk, 4).unwrap(), &bytes[blk..blk + 4]);
        std::fs::remove_file(&path).unwrap();
    }
}
