//! Shared harness for the vdisk fuzz targets: a bounded "use the image like a client would" driver
//! (block status over the whole disk, reads of what it says is data, info, check), a file opener that
//! serves in-memory extent files, and a global allocator that turns any huge allocation into a crash
//! that libFuzzer records (without a sanitizer, `-malloc_limit_mb` cannot see single allocations, and
//! a zeroed `vec![0; huge]` never touches its pages, so `-rss_limit_mb` would not see it either).

pub mod paged;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use vdisk_core::storage::FileOpener;
use vdisk_core::{Error, ExtentKind, ImageReader, MemStorage, Result, Storage};

/// The largest single allocation a parser may make on fuzz-sized input (the inputs are at most a few
/// hundred KiB; the biggest legitimate buffers are the named caches of 16-64 MiB, filled lazily).
pub const MAX_ONE_ALLOCATION: usize = 128 << 20;

/// The most memory the harness and the parser may hold at once.
pub const MAX_LIVE_BYTES: usize = 512 << 20;

/// How many block-status calls `exercise` makes at most (a hostile map can be fragmented anywhere).
pub const MAX_STATUS_CALLS: usize = 4096;

/// How many guest bytes `exercise` reads at most per input.
pub const READ_BUDGET: u64 = 4 << 20;

/// Bytes per read call.
const CHUNK: usize = 64 << 10;

/// Bytes of a zero or unallocated extent read back to check that it reads as zeros.
const ZERO_SAMPLE: u64 = 4096;

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, failing (so that Rust aborts with "memory allocation of N bytes failed")
/// on any allocation beyond [`MAX_ONE_ALLOCATION`] or beyond [`MAX_LIVE_BYTES`] in total.
pub struct BoundedAlloc;

impl BoundedAlloc {
    fn admit(size: usize) -> bool {
        if size > MAX_ONE_ALLOCATION {
            return false;
        }
        let before = LIVE.fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) > MAX_LIVE_BYTES {
            LIVE.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        true
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged, or refused with a null pointer,
// which GlobalAlloc allows; the counter only tracks sizes.
unsafe impl GlobalAlloc for BoundedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Self::admit(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc(layout);
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !Self::admit(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc_zeroed(layout);
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > MAX_ONE_ALLOCATION || (new_size > old && !Self::admit(new_size - old)) {
            return std::ptr::null_mut();
        }
        let p = System.realloc(ptr, layout, new_size);
        if p.is_null() {
            if new_size > old {
                LIVE.fetch_sub(new_size - old, Ordering::Relaxed);
            }
        } else if new_size < old {
            LIVE.fetch_sub(old - new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc;

/// An in-memory store named like an image file.
/// No corruption or check error (leaks allowed): what the targets that change images must keep
/// sound.
pub fn sound(r: &dyn ImageReader) -> bool {
    r.check()
        .is_ok_and(|c| c.corruptions == 0 && c.check_errors == 0)
}

/// `len` guest bytes at `offset` (clipped to the disk), or `None` when they do not read.
pub fn guest_bytes(r: &dyn ImageReader, offset: u64, len: u64) -> Option<Vec<u8>> {
    let end = offset.saturating_add(len).min(r.virtual_size());
    let n = usize::try_from(end.checked_sub(offset)?).ok()?;
    let mut buf = vec![0u8; n];
    r.read_at(&mut buf, offset).ok()?;
    Some(buf)
}

pub fn mem(name: &str, data: &[u8]) -> Arc<dyn Storage> {
    MemStorage::new(name, data.to_vec()).shared()
}

/// The raw device the filesystem and volume targets read: the first input byte is its length in
/// 64 KiB units (at least the rest of the input's length), the rest is its start, and zeros
/// follow, so that a short input stands for a device of up to 16 MiB whose metadata lies at
/// its start. The zeros are not stored: filling and copying 16 MiB took most of every run.
pub fn sized_device(data: &[u8]) -> Option<Arc<dyn ImageReader>> {
    let (&units, data) = data.split_first()?;
    let storage = paged::PagedStorage::zero_tail("fuzz.img", data, u64::from(units) << 16);
    let r = vdisk_raw::open(storage).ok()?;
    Some(Arc::new(r))
}

/// Serves every file an image names (VMDK extents, a qcow2 data file) with the same bytes, so that
/// one fuzz input can hold a descriptor and the extent it names.
pub struct InputFiles(pub Vec<u8>);

impl FileOpener for InputFiles {
    fn open(&self, path: &Path) -> Result<Arc<dyn Storage>> {
        let name = path
            .to_str()
            .ok_or_else(|| Error::invalid("non-UTF-8 name"))?;
        Ok(mem(name, &self.0))
    }
}

/// Splits `data` at the first `sep` (the part before, the part after); all of it and nothing when
/// `sep` does not occur. Windows are compared whole only where their first byte matches: libFuzzer
/// intercepts every memcmp, and one at each byte of the input took a quarter of `vmdk_mutate`'s
/// time.
pub fn split_at_marker<'a>(data: &'a [u8], sep: &[u8]) -> (&'a [u8], &'a [u8]) {
    let first = sep.first().copied();
    match data
        .windows(sep.len())
        .position(|w| w.first().copied() == first && w == sep)
    {
        Some(i) => (&data[..i], &data[i + sep.len()..]),
        None => (data, &[]),
    }
}

/// Uses an opened image the way a client would, within fixed bounds: info, block status over the
/// whole disk, reads of the data extents (and a sample of the zero ones, which must read as zeros),
/// reads at the edges of the disk (inside must not panic, outside must fail), and check.
///
/// Panics (a fuzzing finding) when the reader breaks the `ImageReader` contract: an extent that
/// does not start where asked, is empty or longer than asked, a zero extent reading non-zero bytes,
/// or a read outside the disk that succeeds.
pub fn exercise(r: &dyn ImageReader) {
    let size = r.virtual_size();
    let _ = r.info();
    let mut buf = vec![0u8; CHUNK];
    let mut budget = READ_BUDGET;
    let mut pos = 0u64;
    let mut calls = 0usize;
    while pos < size && calls < MAX_STATUS_CALLS {
        calls += 1;
        let Ok(e) = r.block_status(pos, size - pos) else {
            break;
        };
        assert_eq!(e.offset, pos, "block status answered for another offset");
        assert!(
            e.length > 0,
            "block status returned an empty extent at {pos}"
        );
        assert!(
            e.length <= size - pos,
            "block status extent at {pos} runs past the disk"
        );
        let zero = matches!(e.kind, ExtentKind::Zero | ExtentKind::Unallocated);
        let want = if zero {
            e.length.min(ZERO_SAMPLE)
        } else {
            e.length
        };
        let mut off = pos;
        while off < pos + want && budget > 0 {
            let n = (pos + want - off).min(CHUNK as u64).min(budget) as usize;
            budget -= n as u64;
            if r.read_at(&mut buf[..n], off).is_err() {
                break;
            }
            if zero {
                assert!(
                    buf[..n].iter().all(|b| *b == 0),
                    "a {:?} extent at {pos} reads non-zero bytes",
                    e.kind
                );
            }
            off += n as u64;
        }
        pos = e.end();
    }
    if size > 0 {
        let _ = r.read_at(&mut buf[..1], size - 1);
        let _ = r.read_at(&mut buf[..512.min(size as usize)], size - 512.min(size));
    }
    assert!(
        r.read_at(&mut buf[..1], size).is_err(),
        "a read past the disk succeeded"
    );
    assert!(
        r.read_at(&mut buf[..2], u64::MAX - 1).is_err(),
        "a read at 2^64-2 succeeded"
    );
    let _ = r.block_status(size, 1);
    let _ = r.block_status(u64::MAX, u64::MAX);
    let _ = r.check();
}
