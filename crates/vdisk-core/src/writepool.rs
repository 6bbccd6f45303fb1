//! Asynchronous positional writes for writers of new images: data handed to a writer is written
//! by an I/O thread, so that copying it into the page cache (the main cost of an uncompressed
//! conversion) overlaps the conversion's own work instead of blocking its writer thread, as qemu's
//! thread pool does. Writes that overlap one still queued wait for it, so the result is the same
//! as writing in call order; the first error is reported by a later call or by
//! [`WritePool::drain`]. On ext4 each write's blocks are allocated just before it
//! ([`crate::allocahead`]).

use crate::allocahead::AllocAhead;
use crate::copyrange::HostRange;
use crate::databuf::DataBuf;
use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// I/O threads per output file. Buffered writes to one file are serialised by the kernel (the
/// inode's lock, taken for the whole copy into the page cache), so a second thread only waited for
/// the first, spinning on the lock: with two, a cold 1 GiB raw->raw spent 18% of its samples in
/// `rwsem_spin_on_owner` and 1.8x qemu-img's CPU. One thread still takes the copies off the
/// conversion's writer thread, which is the gain (qemu-img too writes in order, one at a time).
const IO_THREADS: usize = 1;

/// Writes queued (not yet picked up) at most: with 2 MiB chunks, 8 MiB waiting.
const QUEUE_DEPTH: usize = 4;

struct Job {
    offset: u64,
    what: What,
}

/// What a job writes at its offset.
enum What {
    /// The bytes `range` of `data`; the buffer is freed (or goes back to its pool) once its last
    /// part is written.
    Bytes {
        data: Arc<DataBuf>,
        range: Range<usize>,
    },
    /// A range of a host file, copied by the kernel where it can (`convert -C`).
    Copy(HostRange),
}

impl What {
    fn len(&self) -> u64 {
        match self {
            What::Bytes { range, .. } => range.len() as u64,
            What::Copy(r) => r.len,
        }
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Ranges queued or being written, as (start, end).
    busy: Vec<(u64, u64)>,
    error: Option<Error>,
    failed: bool,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    path: PathBuf,
    /// Allocation of each write's blocks just before it (ext4 only).
    ahead: AllocAhead,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means an I/O thread panicked while holding it; the state is still
        // consistent (every update is a single push/pop), so keep going and report errors.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cv.wait(g).unwrap_or_else(|p| p.into_inner())
    }
}

/// A bounded queue of writes to one file, served by a few threads.
pub struct WritePool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Most jobs queued (not yet picked up) at once: bounds the memory held.
    depth: usize,
}

impl std::fmt::Debug for WritePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WritePool")
            .field("threads", &self.threads.len())
            .field("depth", &self.depth)
            .finish()
    }
}

fn taken_error(path: &Path) -> Error {
    Error::Other(format!("{}: an earlier write failed", path.display()))
}

impl WritePool {
    /// Starts the I/O threads over duplicates of `file`.
    pub fn new(file: &File, path: &Path) -> Result<Self> {
        let n = IO_THREADS;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            path: path.to_path_buf(),
            ahead: AllocAhead::for_file(file),
        });
        let mut pool = WritePool {
            shared,
            threads: Vec::with_capacity(n),
            depth: QUEUE_DEPTH,
        };
        for i in 0..n {
            let f = file.try_clone().map_err(|e| Error::io(path, 0, e))?;
            let sh = Arc::clone(&pool.shared);
            let t = std::thread::Builder::new()
                .name(format!("vdisk-io-{i}"))
                .spawn(move || serve(&sh, &f))
                .map_err(|e| Error::Other(format!("cannot start I/O threads: {e}")))?;
            pool.threads.push(t);
        }
        Ok(pool)
    }

    /// Queues `data` for writing at `offset`, waiting while the queue is full or while a write
    /// overlapping it is in flight.
    pub fn submit(&self, offset: u64, data: DataBuf) -> Result<()> {
        let len = data.len();
        self.submit_part(offset, &Arc::new(data), 0..len)
    }

    /// Queues the bytes `range` of `data` for writing at `offset` (so that one buffer can be
    /// written to several places without copying), waiting as [`WritePool::submit`] does.
    pub fn submit_part(&self, offset: u64, data: &Arc<DataBuf>, range: Range<usize>) -> Result<()> {
        if range.start > range.end || range.end > data.len() {
            return Err(Error::invalid(format!(
                "write of bytes {range:?} of a {}-byte buffer",
                data.len()
            )));
        }
        self.queue(
            offset,
            What::Bytes {
                data: Arc::clone(data),
                range,
            },
        )
    }

    /// Queues a copy of the host file range `src` to `offset`, offloaded to the kernel where it
    /// can be ([`HostRange::copy_to`]), waiting as [`WritePool::submit`] does.
    pub fn submit_copy(&self, offset: u64, src: HostRange) -> Result<()> {
        self.queue(offset, What::Copy(src))
    }

    fn queue(&self, offset: u64, what: What) -> Result<()> {
        let end = offset.saturating_add(what.len());
        let mut g = self.shared.lock();
        loop {
            if g.failed {
                return Err(g
                    .error
                    .take()
                    .unwrap_or_else(|| taken_error(&self.shared.path)));
            }
            let overlaps = g.busy.iter().any(|&(s, e)| s < end && offset < e);
            if g.queue.len() < self.depth && !overlaps {
                break;
            }
            g = self.shared.wait(g);
        }
        g.busy.push((offset, end));
        g.queue.push_back(Job { offset, what });
        drop(g);
        self.shared.cv.notify_all();
        Ok(())
    }

    /// Waits until no queued or running write overlaps `len` bytes at `offset` (so that a direct
    /// write or read of those bytes sees them in call order); returns the first error, if any.
    pub fn wait_for(&self, offset: u64, len: u64) -> Result<()> {
        let end = offset.saturating_add(len);
        let mut g = self.shared.lock();
        while !g.failed && g.busy.iter().any(|&(s, e)| s < end && offset < e) {
            g = self.shared.wait(g);
        }
        if g.failed {
            return Err(g
                .error
                .take()
                .unwrap_or_else(|| taken_error(&self.shared.path)));
        }
        Ok(())
    }

    /// Waits until every queued write is done; returns the first error, if any.
    pub fn drain(&self) -> Result<()> {
        let mut g = self.shared.lock();
        while !g.failed && !g.busy.is_empty() {
            g = self.shared.wait(g);
        }
        if g.failed {
            return Err(g
                .error
                .take()
                .unwrap_or_else(|| taken_error(&self.shared.path)));
        }
        Ok(())
    }
}

fn serve(sh: &Shared, file: &File) {
    // Cleared for good once the kernel refuses to offload a copy between these files.
    let mut offload = true;
    let mut g = sh.lock();
    loop {
        if let Some(Job { offset, what }) = g.queue.pop_front() {
            drop(g);
            sh.cv.notify_all();
            let end = offset.saturating_add(what.len());
            sh.ahead.before_write(file, offset, what.len());
            let r = match what {
                What::Bytes { data, range } => file
                    .write_all_at(&data[range], offset)
                    .map_err(|e| Error::io(&sh.path, offset, e)),
                What::Copy(src) => src.copy_to(file, &sh.path, offset, &mut offload),
            };
            g = sh.lock();
            if let Some(i) = g.busy.iter().position(|&b| b == (offset, end)) {
                g.busy.swap_remove(i);
            }
            if let Err(e) = r {
                if !g.failed {
                    g.failed = true;
                    g.error = Some(e);
                }
                g.queue.clear();
                g.busy.clear();
            }
            sh.cv.notify_all();
        } else if g.closed {
            return;
        } else {
            g = sh.wait(g);
        }
    }
}

impl Drop for WritePool {
    fn drop(&mut self) {
        {
            let mut g = self.shared.lock();
            g.closed = true;
        }
        self.shared.cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "vdisk-core-writepool-{name}-{}",
            std::process::id()
        ))
    }

    /// An empty file at `path`, open for reading and writing.
    fn new_file(path: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap()
    }

    /// Waits for `pool`'s writes, stops it, and returns the first `len` bytes of the file at
    /// `path` (zeros past its end), removing the file.
    fn drained_contents(pool: WritePool, path: &Path, len: usize) -> Vec<u8> {
        pool.drain().unwrap();
        drop(pool);
        let mut got = std::fs::read(path).unwrap();
        got.resize(len, 0);
        std::fs::remove_file(path).unwrap();
        got
    }

    #[test]
    fn overlapping_writes_land_in_call_order() {
        let path = temp("order");
        let file = new_file(&path);
        let pool = WritePool::new(&file, &path).unwrap();
        let mut expect = vec![0u8; 1 << 20];
        // Each round rewrites ranges that overlap earlier (possibly still queued) writes.
        for round in 0..64u64 {
            let off = (round * 12_289) % ((1 << 20) - 65_536);
            let len = 4096 + (round as usize * 997) % 61_440;
            let data: Vec<u8> = (0..len).map(|i| (i as u64 ^ round) as u8).collect();
            expect[off as usize..off as usize + len].copy_from_slice(&data);
            pool.submit(off, data.into()).unwrap();
        }
        let got = drained_contents(pool, &path, expect.len());
        assert!(
            got == expect,
            "file differs from the writes applied in call order"
        );
    }

    #[test]
    fn copies_and_writes_that_overlap_land_in_call_order() {
        let src_path = temp("copy-src");
        let src: Vec<u8> = (0..1u32 << 18).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src_path, &src).unwrap();
        let storage: Arc<dyn crate::Storage> =
            Arc::new(crate::FileStorage::open(&src_path).unwrap());
        let path = temp("copy-dst");
        let file = new_file(&path);
        let pool = WritePool::new(&file, &path).unwrap();
        let mut expect = vec![0u8; 1 << 18];
        for round in 0..48u64 {
            let off = (round * 5_003) % ((1 << 18) - 40_000);
            let len = 512 + (round as usize * 1_499) % 30_000;
            if round % 2 == 0 {
                let from = (round * 7_919) % ((1 << 18) - 40_000);
                let r = HostRange::offloadable(&storage, from, len as u64)
                    .unwrap()
                    .unwrap();
                expect[off as usize..off as usize + len]
                    .copy_from_slice(&src[from as usize..from as usize + len]);
                pool.submit_copy(off, r).unwrap();
            } else {
                let data = vec![round as u8; len];
                expect[off as usize..off as usize + len].copy_from_slice(&data);
                pool.submit(off, data.into()).unwrap();
            }
        }
        let got = drained_contents(pool, &path, expect.len());
        std::fs::remove_file(&src_path).unwrap();
        assert!(
            got == expect,
            "file differs from the copies and writes in call order"
        );
    }

    #[test]
    fn a_failed_write_is_reported() {
        let path = temp("ro");
        std::fs::write(&path, b"x").unwrap();
        let ro = File::open(&path).unwrap();
        let pool = WritePool::new(&ro, &path).unwrap();
        // The first submit may be accepted before the I/O thread fails; a later call reports it.
        let first = pool.submit(0, vec![1u8; 4096].into());
        let later = pool.drain();
        std::fs::remove_file(&path).unwrap();
        let e = first.and(later).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        // Once reported, further writes keep failing instead of being silently dropped.
        assert!(pool.submit(8192, vec![2u8; 512].into()).is_err());
    }

    #[test]
    fn parts_of_one_buffer_go_to_their_places_and_the_buffer_goes_home_after_the_last() {
        let path = temp("parts");
        let file = new_file(&path);
        let pool = WritePool::new(&file, &path).unwrap();
        let bufs = crate::BufPool::new(4);
        let mut b = bufs.take(8192);
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i / 4096 + 1) as u8;
        }
        let shared = Arc::new(b);
        // The second half first, at the start of the file; then the first half after it.
        pool.submit_part(0, &shared, 4096..8192).unwrap();
        pool.submit_part(4096, &shared, 0..4096).unwrap();
        assert!(pool.submit_part(0, &shared, 4096..8193).is_err());
        drop(shared);
        pool.drain().unwrap();
        drop(pool);
        assert_eq!(bufs.kept(), 1, "the buffer went back to its pool");
        let got = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(got.len(), 8192);
        assert!(got[..4096].iter().all(|x| *x == 2) && got[4096..].iter().all(|x| *x == 1));
    }
}
