//! Data buffers for [`crate::Payload::Data`] that go back to the pool they came from once the
//! writer drops them, so that a conversion cycles through the same few chunk buffers instead of
//! allocating and zero-filling a fresh one per chunk (a memset of every byte converted).

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
/// Derefs to `[u8]`; `Vec<u8>` converts into one (with no pool).
#[derive(Default)]
pub struct DataBuf {
    bytes: Vec<u8>,
    home: Option<Arc<BufPool>>,
}

impl DataBuf {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// Splits off the bytes from `at` on into a new (pool-less) buffer, like `Vec::split_off`.
    /// Panics when `at > len`, as `Vec::split_off` does.
    pub fn split_off(&mut self, at: usize) -> DataBuf {
        DataBuf::from(self.bytes.split_off(at))
    }

    /// The bytes as a vector, detached from any pool.
    pub fn into_vec(mut self) -> Vec<u8> {
        self.home = None;
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
        DataBuf { bytes, home: None }
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
        &self.bytes
    }
}

impl DerefMut for DataBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl AsRef<[u8]> for DataBuf {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Clone for DataBuf {
    /// A copy of the bytes, outside any pool.
    fn clone(&self) -> Self {
        DataBuf::from(self.bytes.clone())
    }
}

impl PartialEq for DataBuf {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for DataBuf {}

impl fmt::Debug for DataBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataBuf({} bytes)", self.bytes.len())
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
