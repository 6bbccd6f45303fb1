//! Allocating blocks just before a buffered write fills them (Linux `fallocate(2)` with
//! `FALLOC_FL_KEEP_SIZE`), for the writers of new images on ext4.
//!
//! ext4 delays allocation: each 4 KiB block copied into the page cache is reserved one by one
//! (`ext4_da_get_block_prep`, the extent-status tree, quota), which was 8% of a zstd qcow2->raw
//! conversion's samples and 12% with the buffer heads around it. Allocating the whole range of a
//! write with one call first turns that per-block work into one lookup of an allocated (unwritten)
//! extent. Measured on the benchmark machine (benches/README.md, session 18): system time of a
//! zstd qcow2->raw 0.36 s -> 0.23 s, wall time 6% lower.
//!
//! The range is written in full right after, so the file ends up with the data blocks it would
//! have had: holes stay holes. Its cost: ext4 places each range on its own, where delayed
//! allocation places a whole dirty run at writeback, so outputs have more extents (the zstd
//! benchmark's raw output 87 instead of 44) and, past the four an inode holds, an extent-tree
//! block. It is only done on ext4, where it was measured; on filesystems that
//! share blocks on copy (btrfs, XFS reflinks) it would allocate what a copy then shares. It never
//! changes the file's size, and its errors are ignored: the write that follows reports any that
//! matter (a full disk), and a filesystem that cannot do it is not asked again.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};

/// `EXT4_SUPER_MAGIC` from linux/magic.h (ext2 and ext3 share it; ext2 without extents refuses
/// `fallocate`, which turns allocation ahead off for that file).
#[cfg(target_os = "linux")]
const EXT4_SUPER_MAGIC: libc::c_long = 0xEF53;

/// Whether writes to one file allocate ahead; turned off for good on the first refusal.
#[derive(Debug)]
pub struct AllocAhead {
    on: AtomicBool,
}

impl AllocAhead {
    /// Allocation ahead for `file`: on when it is on ext4.
    pub fn for_file(file: &File) -> AllocAhead {
        AllocAhead {
            on: AtomicBool::new(on_ext4(file)),
        }
    }

    /// Whether it is (still) on.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Allocates the blocks of `len` bytes at `offset` of `file`, which the caller writes next.
    pub fn before_write(&self, file: &File, offset: u64, len: u64) {
        if len == 0 || !self.is_on() {
            return;
        }
        if let Err(refused) = allocate_keep_size(file, offset, len) {
            if refused {
                self.on.store(false, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn on_ext4(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: fstatfs fills the struct it is given for a descriptor owned by `file`.
    let r = unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) };
    if r != 0 {
        return false;
    }
    // SAFETY: fstatfs succeeded, so the struct is filled (it was zeroed before anyway).
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between libcs
    let magic = st.f_type as libc::c_long;
    magic == EXT4_SUPER_MAGIC
}

#[cfg(not(target_os = "linux"))]
fn on_ext4(_file: &File) -> bool {
    false
}

/// `Err(true)` when the filesystem refuses the call itself (so it is not tried again), `Err(false)`
/// on any other failure (a full disk: the write reports it).
#[cfg(target_os = "linux")]
fn allocate_keep_size(file: &File, offset: u64, len: u64) -> Result<(), bool> {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(false);
    };
    // SAFETY: a plain syscall on a descriptor owned by `file`.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, off, n) };
    if r == 0 {
        return Ok(());
    }
    let errno = std::io::Error::last_os_error().raw_os_error();
    Err(matches!(
        errno,
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL)
    ))
}

#[cfg(not(target_os = "linux"))]
fn allocate_keep_size(_file: &File, _offset: u64, _len: u64) -> Result<(), bool> {
    Err(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "vdisk-core-allocahead-{name}-{}",
            std::process::id()
        ))
    }

    #[test]
    fn keeps_the_size_and_the_holes_of_the_file() {
        let path = temp("holes");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(16 << 20).unwrap();
        let ahead = AllocAhead::for_file(&file);
        let data = vec![0xa5u8; 1 << 20];
        // Writes at 4 MiB and past the end: allocating for them changes neither the file size nor
        // the hole between; on ext4 it allocates the blocks before the write.
        for off in [4u64 << 20, 20 << 20] {
            let before = file.metadata().unwrap();
            ahead.before_write(&file, off, data.len() as u64);
            let after = file.metadata().unwrap();
            assert_eq!(after.len(), before.len(), "size changed at {off}");
            if ahead.is_on() {
                assert!(
                    after.blocks() * 512 >= before.blocks() * 512 + data.len() as u64,
                    "nothing allocated at {off}"
                );
            }
            file.write_all_at(&data, off).unwrap();
        }
        let md = file.metadata().unwrap();
        assert_eq!(md.len(), 21 << 20);
        // Two MiB of data, plus at most a few blocks of filesystem metadata: the hole between the
        // writes was not allocated (checked where allocation ahead is on: other filesystems may
        // preallocate past the end of a file on their own).
        let allocated = md.blocks() * 512;
        if ahead.is_on() {
            assert!(
                (2 << 20..(2 << 20) + 65536).contains(&allocated),
                "{allocated} bytes allocated for 2 MiB written"
            );
        }
        let got = std::fs::read(&path).unwrap();
        assert!(got[..4 << 20].iter().all(|&b| b == 0));
        assert!(got[4 << 20..5 << 20].iter().all(|&b| b == 0xa5));
        assert!(got[5 << 20..20 << 20].iter().all(|&b| b == 0));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn is_on_only_on_ext4() {
        let path = temp("fs");
        let file = File::create(&path).unwrap();
        // stat(1) names the filesystem type from the same magic number ("ext2/ext3" for 0xEF53).
        let out = std::process::Command::new("stat")
            .args(["-f", "-c", "%T"])
            .arg(&path)
            .output()
            .unwrap();
        let fs_type = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(
            AllocAhead::for_file(&file).is_on(),
            fs_type == "ext2/ext3",
            "filesystem {fs_type}"
        );
        let proc_file = File::open("/proc/self/status").unwrap();
        assert!(!AllocAhead::for_file(&proc_file).is_on());
        std::fs::remove_file(&path).unwrap();
    }
}
