//! Image locks as QEMU takes them: open file description (OFD) locks on bytes 100-299 of an image
//! file, following QEMU's file-posix driver (`raw_apply_lock_bytes`, `raw_check_lock_bytes`).
//!
//! Each permission a user of the image holds is a shared lock on byte `100 + n`, and each
//! permission it refuses to share with others a shared lock on byte `200 + n`, where `n` numbers the
//! permissions as QEMU's `BLK_PERM_*` bits do (0 consistent read, 1 write, 2 write unchanged,
//! 3 resize). Before it goes on, an opener tests for anyone else's lock on `200 + n` for each
//! permission it wants ("Failed to get "write" lock") and on `100 + n` for each one it will not
//! share ("Failed to get shared "write" lock"). So vdisk and QEMU (a running VM, qemu-nbd,
//! another qemu-img or vdisk) see each other: an image a VM writes cannot be read as a consistent
//! whole or changed, and a backing file under a running VM cannot be written.
//!
//! The locks live as long as the file stays open; closing it releases them. A file system without
//! OFD locks is used without them, as QEMU's `locking=auto` does.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// QEMU's `BLK_PERM_CONSISTENT_READ`: the image's content does not change under the reader.
pub const CONSISTENT_READ: u8 = 1 << 0;
/// QEMU's `BLK_PERM_WRITE`.
pub const WRITE: u8 = 1 << 1;
/// QEMU's `BLK_PERM_WRITE_UNCHANGED` (writes that keep the guest-visible content).
pub const WRITE_UNCHANGED: u8 = 1 << 2;
/// QEMU's `BLK_PERM_RESIZE`.
pub const RESIZE: u8 = 1 << 3;

/// The permission names QEMU's messages use, by bit.
const NAMES: [&str; 4] = ["consistent read", "write", "write unchanged", "resize"];
/// Byte offset of the lock that says "holds permission n".
const PERM_BASE: i64 = 100;
/// Byte offset of the lock that says "does not share permission n".
const SHARED_BASE: i64 = 200;

/// Whether images are read with `-U` (QEMU's `force-share=on`): nothing is refused to others.
static FORCE_SHARE: AtomicBool = AtomicBool::new(false);

/// Sets `-U` for this process: read-only opens then share every permission.
pub fn set_force_share(on: bool) {
    FORCE_SHARE.store(on, Ordering::Relaxed);
}

/// Whether `-U` is set.
pub fn force_share() -> bool {
    FORCE_SHARE.load(Ordering::Relaxed)
}

/// Runs `f` with `-U` set, as QEMU opens the backing file of an image it creates (to read its
/// size and format while a VM may be using it).
pub fn with_force_share<T>(f: impl FnOnce() -> T) -> T {
    let before = FORCE_SHARE.swap(true, Ordering::Relaxed);
    let out = f();
    FORCE_SHARE.store(before, Ordering::Relaxed);
    out
}

/// A lock held by someone else that refuses what an opener asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The permission's name (`write`).
    pub perm: &'static str,
    /// Whether the opener could not stop sharing it (someone else holds it).
    pub shared: bool,
}

impl Conflict {
    /// QEMU's message and hint: `Failed to get shared "write" lock` and the question after it.
    pub fn message(&self, path: &Path) -> String {
        format!(
            "Failed to get {}\"{}\" lock\nIs another process using the image [{}]?",
            if self.shared { "shared " } else { "" },
            self.perm,
            path.display()
        )
    }

    /// As an I/O error, for [`crate::Error::Open`] (its kind, `WouldBlock`, tells it apart).
    pub fn into_io(self, path: &Path) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::WouldBlock, self.message(path))
    }
}

/// A file this process opened with locks, for [`take_for_reading`] and [`take_for_writing`].
struct Opened {
    dev: u64,
    ino: u64,
    file: Weak<File>,
    writable: bool,
}

/// The files this process holds open with locks (entries whose file is closed are dropped as
/// new ones come).
static OPENED: Mutex<Vec<Opened>> = Mutex::new(Vec::new());

fn key(file: &File) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|m| (m.dev(), m.ino()))
}

/// Records `file` and drops the entries of closed files.
fn remember(list: &mut Vec<Opened>, file: &Arc<File>, (dev, ino): (u64, u64), writable: bool) {
    list.retain(|o| o.file.strong_count() > 0);
    list.push(Opened {
        dev,
        ino,
        file: Arc::downgrade(file),
        writable,
    });
}

/// Takes a reader's locks on `file`: it reads the image as a consistent whole, and nobody may
/// write or resize it meanwhile, unless `-U` is set or this process writes the file itself (a
/// command that changes an image reads it too, as QEMU's one node does under both uses).
pub fn take_for_reading(file: &Arc<File>) -> Result<(), Conflict> {
    let Some(k) = key(file) else {
        return Ok(());
    };
    let mut list = OPENED.lock().unwrap_or_else(|e| e.into_inner());
    let written_here = list
        .iter()
        .any(|o| o.writable && (o.dev, o.ino) == k && o.file.strong_count() > 0);
    let unshared = if force_share() || written_here {
        0
    } else {
        WRITE | RESIZE
    };
    take(file, CONSISTENT_READ, unshared)?;
    remember(&mut list, file, k, false);
    Ok(())
}

/// Takes a writer's locks on `file`: it reads, writes and resizes the image, and nobody else may
/// read it as a consistent whole, write it or resize it. This process's own readers of the file
/// stop refusing writes first (QEMU widens one node's permissions the same way).
pub fn take_for_writing(file: &Arc<File>) -> Result<(), Conflict> {
    let Some(k) = key(file) else {
        return Ok(());
    };
    let mut list = OPENED.lock().unwrap_or_else(|e| e.into_inner());
    for o in list.iter().filter(|o| !o.writable && (o.dev, o.ino) == k) {
        if let Some(reader) = o.file.upgrade() {
            for bit in [WRITE, RESIZE] {
                unlock(&reader, SHARED_BASE + i64::from(bit.trailing_zeros()));
            }
        }
    }
    take(file, CONSISTENT_READ | WRITE | RESIZE, WRITE | RESIZE)?;
    remember(&mut list, file, k, true);
    Ok(())
}

/// Takes the locks for `perm` (held) and `unshared` (refused to others) on `file`, then tests
/// for other users' locks that refuse them, in QEMU's order. `Ok(())` when the file system has no
/// OFD locks.
pub fn take(file: &File, perm: u8, unshared: u8) -> Result<(), Conflict> {
    for n in 0..NAMES.len() {
        let bit = 1u8 << n;
        for (wanted, base) in [(perm, PERM_BASE), (unshared, SHARED_BASE)] {
            if wanted & bit != 0 && !set_read_lock(file, base + n as i64)? {
                return Ok(());
            }
        }
    }
    test(file, perm, unshared)
}

/// How often, and how long apart, a conflict is tested again before it is reported. A file this
/// process has just closed stays open, locks and all, in a child process between its fork and
/// its exec (another thread starting a program): such a conflict goes away within microseconds.
const RETRIES: u32 = 5;
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Tests, without taking any lock, whether someone else's locks refuse `perm` or the refusal of
/// `unshared`, as [`take`] does after taking its own.
pub fn test(file: &File, perm: u8, unshared: u8) -> Result<(), Conflict> {
    let mut tries = 0;
    loop {
        match test_once(file, perm, unshared) {
            Err(_) if tries < RETRIES => {
                tries += 1;
                std::thread::sleep(RETRY_PAUSE);
            }
            r => return r,
        }
    }
}

fn test_once(file: &File, perm: u8, unshared: u8) -> Result<(), Conflict> {
    // QEMU tests every permission wanted first, then every one refused to others.
    for (wanted, base, shared) in [(perm, SHARED_BASE, false), (unshared, PERM_BASE, true)] {
        for (n, name) in NAMES.iter().enumerate() {
            if wanted & (1 << n) != 0 && held_by_other(file, base + n as i64) {
                return Err(Conflict { perm: name, shared });
            }
        }
    }
    Ok(())
}

/// Refuses, as QEMU's read-write open refuses it, an image that a command will change in place
/// while someone else uses it ("Could not open 'x': Failed to get "write" lock"). Only tests: the
/// command takes its own locks when it opens the image.
pub fn check_writable(path: &Path) -> crate::Result<()> {
    let Some(file) = open_to_test(path, true) else {
        return Ok(());
    };
    test(&file, CONSISTENT_READ | WRITE | RESIZE, WRITE | RESIZE).map_err(|c| crate::Error::Open {
        path: path.to_path_buf(),
        source: c.into_io(path),
    })
}

/// Refuses to replace the image at `dest` by a new file while someone (a VM, qemu-nbd, another
/// qemu-img or vdisk) uses it, as QEMU's file driver refuses to create an image over it: nobody
/// may refuse writing or resizing it, nor be resizing it. Named as qemu-img names it (`x.qcow2:
/// Failed to get "write" lock`). An image this process holds open itself is its own to replace
/// (any other user was refused when this process took its locks).
pub fn check_replaceable(dest: &Path) -> crate::Result<()> {
    // Only a regular file is replaced (a link is replaced, not what it names).
    if !std::fs::symlink_metadata(dest).is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    let Some(file) = open_to_test(dest, false) else {
        return Ok(());
    };
    let Some(k) = key(&file) else {
        return Ok(());
    };
    let list = OPENED.lock().unwrap_or_else(|e| e.into_inner());
    if list
        .iter()
        .any(|o| (o.dev, o.ino) == k && o.file.strong_count() > 0)
    {
        return Ok(());
    }
    drop(list);
    test(&file, WRITE | RESIZE, RESIZE).map_err(|c| crate::Error::Other(c.message(dest)))
}

/// `path` opened read-only to test its locks, when it is a regular file (or a block device, if
/// `devices`). Anything else, or a file that does not open, is left to the open that follows: a
/// FIFO is not opened here (its opening could wait for a writer).
fn open_to_test(path: &Path, devices: bool) -> Option<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let meta = std::fs::metadata(path).ok()?;
    if !(meta.is_file() || devices && meta.file_type().is_block_device()) {
        return None;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()
}

fn flock(kind: libc::c_int, byte: i64) -> libc::flock {
    // SAFETY: `flock` is plain old data; all-zero is a valid value (pid 0, as OFD locks require).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte;
    fl.l_len = 1;
    fl
}

/// Takes a shared lock on one byte. `Ok(false)` when the file system has no OFD locks; a
/// conflict (someone's exclusive lock, which QEMU never takes) refuses the byte's permission.
fn set_read_lock(file: &File, byte: i64) -> Result<bool, Conflict> {
    let fl = flock(libc::F_RDLCK, byte);
    // SAFETY: F_OFD_SETLK with a valid flock on a descriptor we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) } == 0 {
        return Ok(true);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => {
            let n = (byte % 100) as usize;
            Err(Conflict {
                perm: NAMES.get(n).copied().unwrap_or("unknown"),
                shared: byte < SHARED_BASE,
            })
        }
        _ => Ok(false),
    }
}

/// Releases this descriptor's lock on `byte`.
fn unlock(file: &File, byte: i64) {
    let fl = flock(libc::F_UNLCK, byte);
    // SAFETY: F_OFD_SETLK with a valid flock on a descriptor we own.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
}

/// Whether another open file description holds a lock on `byte` (an exclusive lock would
/// conflict with it). Locks of this descriptor's own description never count.
fn held_by_other(file: &File, byte: i64) -> bool {
    let mut fl = flock(libc::F_WRLCK, byte);
    // SAFETY: F_OFD_GETLK with a valid flock on a descriptor we own; the kernel fills `fl`.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    r == 0 && fl.l_type != libc::F_UNLCK as libc::c_short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> (std::path::PathBuf, File) {
        let path =
            std::env::temp_dir().join(format!("vdisk-core-locks-{name}-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        (path, f)
    }

    fn reopen(path: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap()
    }

    #[test]
    fn readers_share_and_a_writer_is_refused_both_ways() {
        let (path, first) = file("rw");
        let reader = CONSISTENT_READ;
        let writer = CONSISTENT_READ | WRITE | RESIZE;
        take(&first, reader, WRITE | RESIZE).unwrap();
        // A second reader in the same process (another open file description) is fine.
        let second = reopen(&path);
        take(&second, reader, WRITE | RESIZE).unwrap();
        // A writer is refused: the readers do not share "write".
        let w = reopen(&path);
        let e = take(&w, writer, WRITE | RESIZE).unwrap_err();
        assert_eq!(
            e,
            Conflict {
                perm: "write",
                shared: false
            }
        );
        drop((first, second, w));
        // Once they are closed, the writer gets its locks, and a reader is refused in turn.
        let w = reopen(&path);
        take(&w, writer, WRITE | RESIZE).unwrap();
        let r = reopen(&path);
        let e = take(&r, reader, WRITE | RESIZE).unwrap_err();
        assert_eq!(
            e.message(Path::new("a.qcow2")),
            "Failed to get shared \"write\" lock\nIs another process using the image [a.qcow2]?"
        );
        // ... unless it shares everything (-U).
        let r = reopen(&path);
        take(&r, reader, 0).unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_process_reading_and_writing_one_image_shares_it_with_itself_only() {
        let (path, f) = file("self");
        drop(f);
        let open = || Arc::new(reopen(&path));
        // Read, then written, then read again, all in this process.
        let reader = open();
        take_for_reading(&reader).unwrap();
        let writer = open();
        take_for_writing(&writer).unwrap();
        let again = open();
        take_for_reading(&again).unwrap();
        // Someone else is still refused both ways (each attempt's file closed after it).
        let e = take(&reopen(&path), CONSISTENT_READ, WRITE | RESIZE).unwrap_err();
        assert_eq!((e.perm, e.shared), ("write", true));
        let e = take(&reopen(&path), CONSISTENT_READ | WRITE, 0).unwrap_err();
        assert_eq!((e.perm, e.shared), ("write", false));
        // With the writer closed, the next reader refuses writes again.
        drop((writer, reader, again));
        let reader = open();
        take_for_reading(&reader).unwrap();
        let e = take(&reopen(&path), CONSISTENT_READ | WRITE, 0).unwrap_err();
        assert_eq!((e.perm, e.shared), ("write", false));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn testing_takes_nothing() {
        let (path, f) = file("test");
        test(&f, WRITE | RESIZE, RESIZE).unwrap();
        let other = reopen(&path);
        take(&other, CONSISTENT_READ | WRITE | RESIZE, WRITE | RESIZE).unwrap();
        drop(f);
        std::fs::remove_file(&path).unwrap();
    }
}
