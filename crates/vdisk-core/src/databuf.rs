//! Data buffers for [`crate::Payload::Data`] that go back to the pool they came from once the
//! writer drops them, so that a conversion cycles through the same few chunk buffers instead of
//! allocating and zero-filling a fresh one per chunk (a memset of every byte converted).

use crate::error::Result;
use crate::filemap::FileMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

/// Freed buffers kept for reuse, at most `max_kept` of them.
pub struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
    max_kept: usize,
}

impl fmt::Debug for BufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept = self.free.lock().map(|v| v.len()).unwrap_or(0);
        f.debug_struct("BufPool")
            .field("kept", &kept)
            .field("max_kept", &self.max_kept)
            .finish()
    }
}

impl BufPool {
    /// A pool keeping at most `max_kept` freed buffers (the rest are freed for real).
    pub fn new(max_kept: usize) -> Arc<Self> {
        Arc::new(BufPool {
            free: Mutex::new(Vec::new()),
            max_kept,
        })
    }

    /// A buffer of `len` bytes whose contents are left over from earlier use (zeros when it is
    /// new): for callers that overwrite all of it, such as a positional read.
    pub fn take(self: &Arc<Self>, len: usize) -> DataBuf {
        // The most recently freed buffer that fits: its memory is the likeliest to still be in
        // the CPU caches, which the kernel's copy into it then need not fetch from memory.
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            free.iter()
                .rposition(|v| v.capacity() >= len)
                .map(|i| free.remove(i))
        };
        let bytes = match reused {
            Some(mut v) => {
                // Only bytes the buffer never held are initialised here.
                v.resize(len, 0);
                v
            }
            None => vec![0u8; len],
        };
        DataBuf {
            bytes,
            home: Some(Arc::clone(self)),
            mapped: None,
        }
    }

    /// A buffer of `len` zero bytes.
    pub fn take_zeroed(self: &Arc<Self>, len: usize) -> DataBuf {
        let mut b = self.take(len);
        b.fill(0);
        b
    }

    /// How many freed buffers are kept now.
    pub fn kept(&self) -> usize {
        self.free.lock().map(|v| v.len()).unwrap_or(0)
    }

    fn put(&self, v: Vec<u8>) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.max_kept {
            free.push(v);
        }
    }
}

/// Bytes to write, owned; when taken from a [`BufPool`], dropping them returns the memory there.
/// Derefs to `[u8]`; `Vec<u8>` converts into one (with no pool). A buffer may instead show bytes
/// of a mapped file ([`DataBuf::mapped`]), read-only until written to, when it copies them.
#[derive(Default)]
pub struct DataBuf {
    bytes: Vec<u8>,
    home: Option<Arc<BufPool>>,
    mapped: Option<Mapped>,
}

/// File bytes `start..start + len` inside a mapped `region` (checked to lie inside the map when
/// the region was made).
struct Mapped {
    region: Arc<Region>,
    start: usize,
    len: usize,
}

impl Mapped {
    fn bytes(&self) -> &[u8] {
        // Inside the region, which was checked against the map (whose length never changes).
        self.region
            .map
            .bytes(self.start, self.len)
            .unwrap_or_default()
    }

    fn view(&self, from: usize, len: usize) -> Mapped {
        Mapped {
            region: Arc::clone(&self.region),
            start: self.start + from,
            len,
        }
    }
}

/// A range of a map handed out as one buffer; its pages leave the page tables when the last view
/// of it (the buffer and the pieces split or sliced from it) is dropped, not before: a piece
/// written after its parent was dropped must not fault its pages in again.
struct Region {
    map: Arc<FileMap>,
    start: usize,
    len: usize,
}

impl Drop for Region {
    fn drop(&mut self) {
        self.map.release(self.start, self.len);
    }
}

impl DataBuf {
    /// The bytes `start..start + len` of a mapped file, without copying them; once the buffer and
    /// every piece split or sliced from it are dropped, their pages leave the process's page
    /// tables. Fails when the range is outside the map.
    pub fn mapped(map: Arc<FileMap>, start: usize, len: usize) -> Result<DataBuf> {
        map.bytes(start, len)?;
        map.hold(start, len);
        let region = Arc::new(Region { map, start, len });
        Ok(DataBuf::of_map(Mapped { region, start, len }))
    }

    fn of_map(m: Mapped) -> DataBuf {
        DataBuf {
            bytes: Vec::new(),
            home: None,
            mapped: Some(m),
        }
    }

    /// Whether the bytes are a view of a mapped file.
    pub fn is_mapped(&self) -> bool {
        self.mapped.is_some()
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.mapped {
            Some(m) => m.bytes(),
            None => &self.bytes,
        }
    }

    /// Splits off the bytes from `at` on into a new (pool-less) buffer, like `Vec::split_off`
    /// (a view of the same map, for mapped bytes). Panics when `at > len`, as `Vec::split_off`
    /// does.
    pub fn split_off(&mut self, at: usize) -> DataBuf {
        if self.mapped.is_none() {
            return DataBuf::from(self.bytes.split_off(at));
        }
        let tail = self.slice(at..self.len());
        if let Some(m) = &mut self.mapped {
            m.len = at;
        }
        tail
    }

    /// The bytes `range` as a buffer of their own (outside any pool): a view of the same map for
    /// mapped bytes, a copy otherwise. Panics when `range` is out of bounds, as slicing does.
    pub fn slice(&self, range: std::ops::Range<usize>) -> DataBuf {
        match &self.mapped {
            Some(m) => {
                assert!(
                    range.start <= range.end && range.end <= m.len,
                    "slice {range:?} of {} bytes",
                    m.len
                );
                DataBuf::of_map(m.view(range.start, range.end - range.start))
            }
            None => DataBuf::from(&self.bytes[range]),
        }
    }

    /// The bytes as a vector, detached from any pool.
    pub fn into_vec(mut self) -> Vec<u8> {
        self.home = None;
        if self.mapped.is_some() {
            return self.as_slice().to_vec();
        }
        std::mem::take(&mut self.bytes)
    }
}

impl Drop for DataBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.home.take() {
            pool.put(std::mem::take(&mut self.bytes));
        }
    }
}

impl From<Vec<u8>> for DataBuf {
    fn from(bytes: Vec<u8>) -> Self {
        DataBuf {
            bytes,
            home: None,
            mapped: None,
        }
    }
}

impl From<&[u8]> for DataBuf {
    fn from(bytes: &[u8]) -> Self {
        DataBuf::from(bytes.to_vec())
    }
}

impl Deref for DataBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl DerefMut for DataBuf {
    /// Mapped bytes are copied into memory of their own first (the file is never written).
    fn deref_mut(&mut self) -> &mut [u8] {
        if let Some(m) = self.mapped.take() {
            self.bytes = m.bytes().to_vec();
        }
        &mut self.bytes
    }
}

impl AsRef<[u8]> for DataBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Clone for DataBuf {
    /// A copy of the bytes, outside any pool.
    fn clone(&self) -> Self {
        DataBuf::from(self.as_slice().to_vec())
    }
}

impl PartialEq for DataBuf {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for DataBuf {}

impl fmt::Debug for DataBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataBuf({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_buffers_return_to_their_pool_and_are_reused() {
        let pool = BufPool::new(2);
        let mut a = pool.take(4096);
        assert!(a.iter().all(|b| *b == 0), "a new buffer is zeroed");
        a.fill(7);
        let ptr = a.as_ptr();
        drop(a);
        assert_eq!(pool.kept(), 1);
        let b = pool.take(4096);
        assert_eq!(b.as_ptr(), ptr, "the same memory comes back");
        assert_eq!(pool.kept(), 0);
        // Shorter and longer requests: the length is what was asked for.
        drop(b);
        let c = pool.take(100);
        assert_eq!(c.len(), 100);
        drop(c);
        let d = pool.take(8192);
        assert_eq!(d.len(), 8192);
        assert!(d[4096..].iter().all(|b| *b == 0), "grown bytes are zero");
        assert!(pool.take_zeroed(4096).iter().all(|b| *b == 0));
    }

    #[test]
    fn the_most_recently_freed_buffer_comes_back_first() {
        let pool = BufPool::new(4);
        let bufs: Vec<DataBuf> = (0..3).map(|_| pool.take(4096)).collect();
        let ptrs: Vec<*const u8> = bufs.iter().map(|b| b.as_ptr()).collect();
        drop(bufs); // freed in order 0, 1, 2
        let first = pool.take(4096);
        let second = pool.take(4096);
        assert_eq!((first.as_ptr(), second.as_ptr()), (ptrs[2], ptrs[1]));
    }

    #[test]
    fn the_pool_keeps_at_most_its_bound_and_detached_buffers_stay_out() {
        let pool = BufPool::new(2);
        let bufs: Vec<DataBuf> = (0..5).map(|_| pool.take(64)).collect();
        drop(bufs);
        assert_eq!(pool.kept(), 2);
        let v = pool.take(64).into_vec();
        assert_eq!(v.len(), 64);
        assert_eq!(pool.kept(), 1);
        let mut e = pool.take(64);
        let tail = e.split_off(10);
        assert_eq!((e.len(), tail.len()), (10, 54));
        drop(tail);
        assert_eq!(pool.kept(), 0, "a split-off tail has no pool");
        drop(e);
        assert_eq!(pool.kept(), 1);
        let plain = DataBuf::from(vec![1u8, 2, 3]);
        assert_eq!(plain.clone(), plain);
        assert_eq!(format!("{plain:?}"), "DataBuf(3 bytes)");
    }
}
