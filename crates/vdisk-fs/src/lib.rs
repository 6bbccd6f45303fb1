//! vdisk-fs: reading files inside the filesystems of disk images without mounting them, read-only,
//! as libguestfs's `virt-ls`, `virt-cat`, `virt-filesystems` and `virt-df` do, but with no VM
//! appliance: ext2/ext3/ext4 (the kernel's Documentation/filesystems/ext4, "ext4 Data Structures
//! and Algorithms"), XFS v4 and v5 ("XFS Algorithms & Data Structures") and FAT12/16/32
//! (Microsoft's "FAT: General Overview of On-Disk Format", fatgen103), read through any vdisk
//! [`ImageReader`], usually a partition's [`vdisk_core::Window`].
//!
//! Everything read from the filesystem is untrusted: sizes, counts, offsets and block numbers are
//! checked before use, allocations are bounded by the named limits of [`limits`], and loops in
//! directory trees, extent trees, FAT chains and symlink chains end with an error.

pub mod bytes;
pub mod device;
pub mod ext;
pub mod fat;
pub mod limits;
pub mod resolve;
pub mod walk;
pub mod xfs;

#[cfg(test)]
mod test_fake;
#[cfg(test)]
mod testmem;

pub use resolve::resolve;

use std::sync::Arc;
use vdisk_core::{ImageReader, Result};

/// The type of a file, from its mode (ext) or its attributes (FAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
    /// A mode whose type bits name no POSIX file type.
    Unknown,
}

impl FileKind {
    /// The kind the `S_IFMT` bits of a POSIX mode name.
    pub fn from_mode(mode: u32) -> FileKind {
        match mode & 0o170000 {
            0o100000 => FileKind::Regular,
            0o040000 => FileKind::Directory,
            0o120000 => FileKind::Symlink,
            0o020000 => FileKind::CharDevice,
            0o060000 => FileKind::BlockDevice,
            0o010000 => FileKind::Fifo,
            0o140000 => FileKind::Socket,
            _ => FileKind::Unknown,
        }
    }
}

/// A file of a filesystem, as `stat` would describe it. `id` is the handle the other calls use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// ext: the inode number. FAT: 1 for the root directory (the Linux driver's root inode
    /// number), otherwise the byte offset in the filesystem of the file's 8.3 directory entry.
    pub id: u64,
    pub kind: FileKind,
    /// The size in bytes (`st_size`): for a symlink the length of its target.
    pub size: u64,
    /// The POSIX mode including the type bits. FAT: 0o040755 for directories, 0o100644 for
    /// files (0o100444 when read-only), as the Linux vfat driver shows them with umask 022.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    /// Modification time, seconds since the epoch, UTC (FAT's local time is taken as UTC).
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Device files: the device number as (major, minor); `None` for every other kind.
    pub rdev: Option<(u32, u32)>,
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name as stored: bytes, not necessarily UTF-8 (FAT names are converted to UTF-8).
    pub name: Vec<u8>,
    pub node: Node,
}

/// One entry of a directory as readdir lists it: its name, and its node or why the node
/// cannot be read.
#[derive(Debug)]
pub struct Listed {
    pub name: Vec<u8>,
    pub node: Result<Node>,
}

/// [`Filesystem::read_dir`] from [`Filesystem::list_dir`]: the first entry whose node cannot
/// be read fails the whole.
pub(crate) fn all_read(listed: Vec<Listed>) -> Result<Vec<DirEntry>> {
    listed
        .into_iter()
        .map(|l| {
            Ok(DirEntry {
                name: l.name,
                node: l.node?,
            })
        })
        .collect()
}

/// What `statvfs` says of the mounted filesystem (what `df` and `virt-df` show).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// `f_bsize`/`f_frsize`: the block size (FAT: the cluster size).
    pub block_size: u64,
    /// `f_blocks`: the blocks for data, without the filesystem's own overhead.
    pub blocks: u64,
    /// `f_bfree`.
    pub free_blocks: u64,
    /// `f_bavail`: free blocks less those reserved for root.
    pub available_blocks: u64,
    /// `f_files` (`None` on FAT, which has no inodes: statvfs says 0).
    pub inodes: Option<u64>,
    /// `f_ffree`.
    pub free_inodes: Option<u64>,
}

/// A stored symlink target as `readlink` returns it: the VFS copies the string the filesystem
/// gives up to its first NUL (`readlink_copy`).
pub(crate) fn up_to_nul(mut target: Vec<u8>) -> Vec<u8> {
    if let Some(i) = target.iter().position(|b| *b == 0) {
        target.truncate(i);
    }
    target
}

/// A filesystem opened for reading.
pub trait Filesystem: Send + Sync {
    /// The type as blkid's `TYPE` names it: `ext2`, `ext3`, `ext4` (or `ext4dev`), `xfs`, `vfat`.
    fn kind(&self) -> &'static str;
    /// The label as blkid's `LABEL` shows it (bytes as stored, without padding).
    fn label(&self) -> Option<Vec<u8>>;
    /// The UUID as blkid's `UUID` shows it (FAT: the volume serial number, `XXXX-XXXX`).
    fn uuid(&self) -> Option<String>;
    /// What statvfs would say once the filesystem is mounted.
    fn usage(&self) -> Result<Usage>;
    /// The root directory.
    fn root(&self) -> Result<Node>;
    /// The entries of a directory, in on-disk order, without `.` and `..`; an error when the
    /// node of any of them cannot be read (see [`Self::list_dir`]).
    fn read_dir(&self, dir: &Node) -> Result<Vec<DirEntry>>;
    /// The entries of a directory as the kernel's readdir lists them: every name, each with
    /// its node or why that node cannot be read (a damaged inode, a directory's broken
    /// cluster chain), so that one damaged entry fails `stat` of that entry, not the listing.
    /// The default takes [`Self::read_dir`]'s.
    fn list_dir(&self, dir: &Node) -> Result<Vec<Listed>> {
        Ok(self
            .read_dir(dir)?
            .into_iter()
            .map(|e| Listed {
                name: e.name,
                node: Ok(e.node),
            })
            .collect())
    }
    /// The entry `name` of a directory, if there is one.
    fn lookup(&self, dir: &Node, name: &[u8]) -> Result<Option<Node>>;
    /// Reads file bytes at `offset` into `buf`; returns how many (0 at or past the end). Holes
    /// read as zeros. Reads until `buf` is full or the file ends.
    fn read(&self, file: &Node, offset: u64, buf: &mut [u8]) -> Result<usize>;
    /// The target of a symbolic link, as the kernel's `readlink` gives it: up to its first
    /// NUL when the stored target holds one (its `st_size` still counts every stored byte).
    fn read_link(&self, link: &Node) -> Result<Vec<u8>>;
}

/// How to open a filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// ext3/ext4 whose journal needs recovery (not cleanly unmounted: a running or crashed VM):
    /// by default vdisk-fs replays the journal in memory as the kernel does when it mounts
    /// (the image is never written), and a journal that cannot be replayed is an error. With
    /// this set, the journal is not replayed and the filesystem is read as it is on disk, as
    /// `debugfs` reads it (possibly stale). XFS whose log needs recovery: vdisk-fs does not
    /// replay XFS logs, so by default such a filesystem is refused; with this set it is read as
    /// it is on disk, as `xfs_db` reads it.
    pub ignore_journal_recovery: bool,
}

/// Which filesystem the device holds, if any vdisk-fs reads: the names of [`Filesystem::kind`].
/// Only the signatures are looked at; [`open`] checks the rest.
pub fn probe(dev: &dyn ImageReader) -> Result<Option<&'static str>> {
    if let Some(kind) = ext::probe(dev)? {
        return Ok(Some(kind));
    }
    if let Some(kind) = xfs::probe(dev)? {
        return Ok(Some(kind));
    }
    fat::probe(dev)
}

/// Opens the filesystem on `dev` (the whole device: pass a [`vdisk_core::Window`] for a
/// partition) with the default [`OpenOptions`].
pub fn open(dev: Arc<dyn ImageReader>) -> Result<Box<dyn Filesystem>> {
    open_with(dev, &OpenOptions::default())
}

/// Opens the filesystem on `dev`.
pub fn open_with(dev: Arc<dyn ImageReader>, opts: &OpenOptions) -> Result<Box<dyn Filesystem>> {
    if ext::probe(dev.as_ref())?.is_some() {
        return Ok(Box::new(ext::Ext::open(dev, opts)?));
    }
    if xfs::probe(dev.as_ref())?.is_some() {
        return Ok(Box::new(xfs::Xfs::open(dev, opts)?));
    }
    if fat::probe(dev.as_ref())?.is_some() {
        return Ok(Box::new(fat::Fat::open(dev)?));
    }
    Err(vdisk_core::Error::unsupported(
        std::path::Path::new(dev.format_name()),
        "filesystem: no ext2/ext3/ext4, XFS or FAT filesystem found",
    ))
}

/// What [`Filesystem::read`] gives for a file that is not a regular file (ext and XFS): an
/// error for a directory or a symlink, no bytes for devices, fifos and sockets.
pub(crate) fn read_not_regular(kind: FileKind, ino: u64) -> Result<usize> {
    match kind {
        FileKind::Directory => Err(vdisk_core::Error::invalid(format!(
            "inode {ino} is a directory"
        ))),
        FileKind::Symlink => Err(vdisk_core::Error::invalid(format!(
            "inode {ino} is a symbolic link: read its target with read_link"
        ))),
        _ => Ok(0),
    }
}

/// The error of [`Filesystem::read_link`] on a file that is not a symbolic link.
pub(crate) fn not_a_symlink(ino: u64) -> vdisk_core::Error {
    vdisk_core::Error::invalid(format!("inode {ino} is not a symbolic link"))
}

/// Reads a whole file (at most `max` bytes: more is an error), for small files and tests.
pub fn read_all(fs: &dyn Filesystem, file: &Node, max: u64) -> Result<Vec<u8>> {
    if file.size > max {
        return Err(vdisk_core::Error::invalid(format!(
            "file of {} bytes is larger than the {max} bytes asked for",
            file.size
        )));
    }
    let mut out = vec![0u8; file.size as usize];
    let mut done = 0;
    while done < out.len() {
        let n = fs.read(file, done as u64, &mut out[done..])?;
        if n == 0 {
            break;
        }
        done += n;
    }
    out.truncate(done);
    Ok(out)
}
