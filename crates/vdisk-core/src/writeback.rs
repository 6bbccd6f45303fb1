//! Early writeback for new images (Linux `sync_file_range(2)`): while images are being written,
//! one background thread asks the kernel every `WRITEBACK_INTERVAL` to start writing each of their
//! files' dirty pages to disk, so that the flush before an image is renamed into place (see
//! [`crate::OutputFile::commit`]) finds little left to do, and disk writes overlap the conversion
//! instead of following it.
//!
//! It only starts I/O (`SYNC_FILE_RANGE_WRITE`), never waits for it, and never decides durability:
//! the final `fsync` still does. Where `sync_file_range` does not exist it does nothing.
//!
//! The thread is shared by every file, and holds the files' own descriptors (no copies): a split
//! VMDK of 2 TiB has 1024 extent files, and a thread and a descriptor more for each made a convert
//! run out of open files under the usual limit of 1024.

use std::fs::File;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How often the thread starts writeback. Measured on the benchmark machine (page cache dropped,
/// 2-3 runs each, see benches/README.md): a durable zstd qcow2->raw convert took 2.29-2.38 s
/// instead of 2.59-2.61 s, qcow2->raw 2.05-2.12 s instead of 2.20-2.28 s, raw->qcow2 the same;
/// 20 ms was no better. The gain is the part of the disk's write time that now overlaps the
/// conversion.
pub const WRITEBACK_INTERVAL: Duration = Duration::from_millis(50);

/// The files being written back, by registration number.
struct Files {
    list: Vec<(u64, Arc<File>)>,
    next: u64,
    /// Whether the thread runs (it is started on the first registration and never stops).
    started: bool,
}

static FILES: Mutex<Files> = Mutex::new(Files {
    list: Vec::new(),
    next: 0,
    started: false,
});
/// Wakes the thread when a file is registered while the list was empty.
static REGISTERED: Condvar = Condvar::new();

fn files() -> MutexGuard<'static, Files> {
    // The list stays consistent whatever panicked while holding the lock.
    FILES.lock().unwrap_or_else(|p| p.into_inner())
}

/// One file's registration with the writeback thread; [`Writeback::stop`] or dropping it ends it.
#[derive(Debug)]
pub struct Writeback {
    id: Option<u64>,
}

impl Writeback {
    /// Starts early writeback of `file` (shared with its writer: no descriptor is duplicated).
    /// Returns `None` when the thread cannot be started: writeback is only an optimisation, and
    /// the final flush works without it.
    pub fn start(file: Arc<File>) -> Option<Writeback> {
        let mut f = files();
        if !f.started {
            std::thread::Builder::new()
                .name("vdisk-writeback".into())
                .spawn(run)
                .ok()?;
            f.started = true;
        }
        let id = f.next;
        f.next += 1;
        f.list.push((id, file));
        REGISTERED.notify_one();
        Some(Writeback { id: Some(id) })
    }

    /// Ends writeback of this file. A pass already under way may still ask for it once; that only
    /// starts I/O, which the caller's flush waits for anyway.
    pub fn stop(&mut self) {
        if let Some(id) = self.id.take() {
            files().list.retain(|(i, _)| *i != id);
        }
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread: every `WRITEBACK_INTERVAL`, starts writeback of each registered file; waits without
/// waking while there is none.
fn run() {
    loop {
        let batch: Vec<Arc<File>> = {
            let mut f = files();
            while f.list.is_empty() {
                f = REGISTERED.wait(f).unwrap_or_else(|p| p.into_inner());
            }
            f.list.iter().map(|(_, file)| Arc::clone(file)).collect()
        };
        for file in &batch {
            start_writeback(file);
        }
        // The descriptors of files stopped meanwhile close here, with their last owner.
        drop(batch);
        std::thread::sleep(WRITEBACK_INTERVAL);
    }
}

/// Asks the kernel to start writing every dirty page of `file` that is not already being written.
/// Errors are ignored: the final `fsync` reports any that matter.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor this thread owns; offset 0 and length 0 mean the
    // whole file.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn writeback_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter(|t| {
                let comm = t.as_ref().unwrap().path().join("comm");
                std::fs::read_to_string(comm).unwrap_or_default().trim() == "vdisk-writeback"
            })
            .count()
    }

    #[test]
    fn many_files_share_one_thread_and_are_left_as_written() {
        let dir = std::env::temp_dir().join(format!("vdisk-writeback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files: Vec<Arc<File>> = (0..32)
            .map(|i| Arc::new(File::create(dir.join(format!("f{i}"))).unwrap()))
            .collect();
        let mut regs: Vec<Writeback> = files
            .iter()
            .map(|f| Writeback::start(Arc::clone(f)).unwrap())
            .collect();
        for round in 0..8u64 {
            for (i, f) in files.iter().enumerate() {
                f.write_all_at(&[i as u8; 4096], round * 4096).unwrap();
            }
            std::thread::sleep(WRITEBACK_INTERVAL / 4);
        }
        // Counted after the writes: a new thread names itself only once it runs. Other tests of
        // this binary may register files too; all of them share the one thread.
        assert_eq!(writeback_threads(), 1, "one thread for every file");
        for r in &mut regs {
            r.stop();
        }
        for (i, f) in files.iter().enumerate() {
            f.sync_all().unwrap();
            let back = std::fs::read(dir.join(format!("f{i}"))).unwrap();
            assert_eq!(back, vec![i as u8; 8 * 4096]);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
