//! Early writeback for new images (Linux `sync_file_range(2)`): while an image is being written, a
//! background thread asks the kernel every `WRITEBACK_INTERVAL` to start writing the file's dirty
//! pages to disk, so that the flush before the image is renamed into place (see
//! [`crate::OutputFile::commit`]) finds little left to do, and disk writes overlap the conversion
//! instead of following it.
//!
//! It only starts I/O (`SYNC_FILE_RANGE_WRITE`), never waits for it, and never decides durability:
//! the final `fsync` still does. Where `sync_file_range` does not exist it does nothing.

use std::fs::File;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the thread starts writeback. Measured on the benchmark machine (page cache dropped,
/// 2-3 runs each, see benches/README.md): a durable zstd qcow2->raw convert took 2.29-2.38 s
/// instead of 2.59-2.61 s, qcow2->raw 2.05-2.12 s instead of 2.20-2.28 s, raw->qcow2 the same;
/// 20 ms was no better. The gain is the part of the disk's write time that now overlaps the
/// conversion.
pub const WRITEBACK_INTERVAL: Duration = Duration::from_millis(50);

/// The background thread; stopping it (or dropping this) waits for its last call to return.
#[derive(Debug)]
pub struct Writeback {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Writeback {
    /// Starts writeback of `file` (its own handle, e.g. a `try_clone` of the one being written)
    /// every `interval`. Returns `None` when the thread cannot be started: writeback is only an
    /// optimisation, and the final flush works without it.
    pub fn start(file: File, interval: Duration) -> Option<Writeback> {
        let (stop, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("vdisk-writeback".into())
            // Runs until `stop` sends or drops the sender.
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                    start_writeback(&file);
                }
            })
            .ok()?;
        Some(Writeback {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        self.stop();
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

    #[test]
    fn stopping_does_not_wait_out_the_interval_and_leaves_the_file_as_written() {
        let path = std::env::temp_dir().join(format!("vdisk-writeback-{}", std::process::id()));
        let f = File::create(&path).unwrap();
        let mut wb = Writeback::start(f.try_clone().unwrap(), Duration::from_millis(1)).unwrap();
        for i in 0..64u64 {
            f.write_all_at(&[i as u8; 4096], i * 4096).unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
        wb.stop();
        // The thread waits on its channel, so stopping never sleeps out an interval (with this
        // one-hour interval the test would otherwise hang).
        let mut long = Writeback::start(f.try_clone().unwrap(), Duration::from_secs(3600)).unwrap();
        long.stop();
        f.sync_all().unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), 64 * 4096);
        for i in 0..64usize {
            assert!(back[i * 4096..(i + 1) * 4096].iter().all(|b| *b == i as u8));
        }
        std::fs::remove_file(&path).unwrap();
    }
}
