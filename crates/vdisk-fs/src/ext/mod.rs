//! ext2, ext3 and ext4, read-only, following the kernel's Documentation/filesystems/ext4 ("ext4
//! Data Structures and Algorithms"): the superblock and its feature flags, block group
//! descriptors (32 and 64 bytes, meta_bg), inodes, extent trees and ext2/3 block maps, inline
//! data, linear directories (htree directories read linearly), fast and slow symlinks.
//!
//! Checksums (metadata_csum, gdt_csum) are not verified: every structure is instead checked for
//! the ranges and consistency vdisk-fs relies on, so a bad checksum over good data is read as the
//! data (as `debugfs -n` reads it; the kernel would refuse the structure). Incompatible features
//! that change how data is laid out and vdisk-fs does not read (compression, dirdata, unknown
//! bits) make `open` fail; encrypted files (fscrypt) fail one by one; casefolded directories
//! list, but looking a name up in one is refused (the match would have to fold case as the
//! kernel's utf8 tables do). A journal that needs recovery (`needs_recovery`) is replayed in
//! memory as the kernel replays it at mount ([`journal`], [`journal_overlay`]): every read,
//! the superblock's included, then sees the replayed blocks; the image is never written. With
//! [`crate::OpenOptions::ignore_journal_recovery`] the filesystem is read as it is on disk.

pub mod blockmap;
pub mod dir;
pub mod group;
pub mod inline;
pub mod inode;
mod jcrc;
pub mod journal;
pub mod journal_overlay;
pub mod superblock;
pub mod usage;

use crate::device::Device;
use crate::limits::{EXT_MAX_DIR_SIZE, MAX_DIR_ENTRIES, MAX_SYMLINK_SIZE};
use crate::{DirEntry, FileKind, Filesystem, Node, OpenOptions, Usage};
use inode::{flags, read_inode, Inode, ROOT_INO};
use std::ops::ControlFlow;
use std::sync::Arc;
use superblock::{incompat, Super, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE};
use vdisk_core::{Error, ImageReader, Result};

/// Whether `dev` holds an ext2/3/4 superblock (its magic), and blkid's name for it.
pub fn probe(dev: &dyn ImageReader) -> Result<Option<&'static str>> {
    if dev.virtual_size() < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64 {
        return Ok(None);
    }
    let mut sb = vec![0u8; SUPERBLOCK_SIZE];
    dev.read_at(&mut sb, SUPERBLOCK_OFFSET)?;
    if !Super::has_magic(&sb) {
        return Ok(None);
    }
    // A journal device carries the magic but holds no files (blkid's "jbd").
    if crate::bytes::u32_at(&sb, 0x60) & incompat::JOURNAL_DEV != 0 {
        return Ok(None);
    }
    let u = |o| crate::bytes::u32_at(&sb, o);
    Ok(Some(superblock::blkid_type(
        u(0x5C),
        u(0x60),
        u(0x64),
        u(0x160),
    )))
}

/// An opened ext2/3/4 filesystem.
pub struct Ext {
    dev: Device,
    sb: Super,
    kind: &'static str,
    replayed: Option<journal::ReplayStats>,
}

/// What a journal error says besides itself: how to read the filesystem anyway.
const JOURNAL_HINT: &str = "cannot replay the journal (the kernel would not mount this \
     filesystem either); --ignore-journal reads it as it is on disk, possibly stale";

/// A journal error with [`JOURNAL_HINT`] added.
fn journal_error(e: Error) -> Error {
    match e {
        Error::Corrupt { path, offset, what } => Error::Corrupt {
            path,
            offset,
            what: format!("{what}: {JOURNAL_HINT}"),
        },
        Error::Unsupported { path, what } => Error::Unsupported {
            path,
            what: format!("{what}: {JOURNAL_HINT}"),
        },
        Error::Limit { .. } => Error::Other(format!("{e}: {JOURNAL_HINT}")),
        other => other,
    }
}

/// Names of the incompatible features vdisk-fs refuses.
fn refused_features(bits: u32) -> String {
    let mut names = Vec::new();
    for (bit, name) in [
        (incompat::COMPRESSION, "compression"),
        (incompat::JOURNAL_DEV, "journal_dev"),
        (incompat::DIRDATA, "dirdata"),
    ] {
        if bits & bit != 0 {
            names.push(name.to_string());
        }
    }
    let known = incompat::COMPRESSION | incompat::JOURNAL_DEV | incompat::DIRDATA;
    let unknown = bits & !known;
    if unknown != 0 {
        names.push(format!("unknown incompat bits {unknown:#x}"));
    }
    names.join(", ")
}

/// Refuses the incompatible features vdisk-fs does not read.
fn refuse_features(dev: &Device, sb: &Super) -> Result<()> {
    let refused = sb.incompat & !incompat::SUPPORTED;
    if refused != 0 || sb.has_incompat(incompat::JOURNAL_DEV) {
        return Err(dev.unsupported(format!(
            "ext4 feature: {}",
            refused_features(refused | (sb.incompat & incompat::JOURNAL_DEV))
        )));
    }
    Ok(())
}

impl Ext {
    /// Opens the ext2/3/4 filesystem on `reader`.
    pub fn open(reader: Arc<dyn ImageReader>, opts: &OpenOptions) -> Result<Ext> {
        let dev = Device::new(reader, "ext");
        let sb_bytes = dev.read_vec(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, "superblock")?;
        let sb = Super::parse(&dev, &sb_bytes)?;
        let kind = sb.blkid_type();
        let dev = Device::new(dev_reader(&dev), kind);
        refuse_features(&dev, &sb)?;
        let (dev, sb, kind, replayed) = if sb.has_incompat(incompat::RECOVER)
            && !opts.ignore_journal_recovery
        {
            match journal_overlay::replay(&dev, &sb).map_err(journal_error)? {
                None => (dev, sb, kind, None),
                Some((reader, replay)) => {
                    // The kernel reads the superblock again after recovery: it may have
                    // been in the journal.
                    let rdev = Device::new(reader.clone(), kind);
                    let bytes = rdev.read_vec(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, "superblock")?;
                    let sb = Super::parse(&rdev, &bytes)?;
                    let kind = sb.blkid_type();
                    let rdev = Device::new(reader, kind);
                    refuse_features(&rdev, &sb)?;
                    (rdev, sb, kind, Some(replay))
                }
            }
        } else {
            (dev, sb, kind, None)
        };
        let fs = Ext {
            dev,
            sb,
            kind,
            replayed,
        };
        let root = fs.inode(u64::from(ROOT_INO))?;
        if root.kind() != FileKind::Directory {
            return Err(fs.dev.corrupt(None, "the root inode is not a directory"));
        }
        Ok(fs)
    }

    /// The superblock as checked at open (after the journal's replay, if it was replayed).
    pub fn superblock(&self) -> &Super {
        &self.sb
    }

    /// What the journal replay at open did: `None` when nothing was replayed (a clean
    /// filesystem, an empty journal, or [`OpenOptions::ignore_journal_recovery`]).
    pub fn journal_replay(&self) -> Option<&journal::ReplayStats> {
        self.replayed.as_ref()
    }

    fn inode(&self, id: u64) -> Result<Inode> {
        read_inode(&self.dev, &self.sb, id)
    }

    fn refuse_encrypted(&self, inode: &Inode) -> Result<()> {
        if inode.has_flag(flags::ENCRYPT) {
            return Err(self
                .dev
                .unsupported(format!("encrypted file (fscrypt): inode {}", inode.ino)));
        }
        Ok(())
    }

    /// Reads inode data (regular file or slow symlink contents) at `offset`.
    fn read_data(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.refuse_encrypted(inode)?;
        if offset >= inode.size || buf.is_empty() {
            return Ok(0);
        }
        let n = (inode.size - offset).min(buf.len() as u64) as usize;
        let buf = &mut buf[..n];
        if inode.has_flag(flags::INLINE_DATA) {
            let data = inline::inline_bytes(&self.dev, inode)?;
            let from = data
                .get(offset.min(data.len() as u64) as usize..)
                .unwrap_or(&[]);
            let k = from.len().min(n);
            buf[..k].copy_from_slice(&from[..k]);
            buf[k..].fill(0);
            return Ok(n);
        }
        let bs = self.sb.block_size;
        let mut done = 0usize;
        while done < n {
            let pos = offset + done as u64;
            let run = blockmap::map(&self.dev, &self.sb, inode, pos / bs)?;
            let within = pos % bs;
            let avail = run.len.saturating_mul(bs).saturating_sub(within);
            let take = avail.min((n - done) as u64) as usize;
            let piece = &mut buf[done..done + take];
            match run.phys {
                None => piece.fill(0),
                Some(phys) => self.dev.read(phys * bs + within, piece, "file data")?,
            }
            done += take;
        }
        Ok(n)
    }

    /// Calls `f(inode, name)` for each entry of directory `dir` (without `.` and `..`).
    fn for_each_entry(&self, dir: &Inode, f: &mut dir::EntryFn) -> Result<()> {
        if dir.kind() != FileKind::Directory {
            return Err(Error::invalid(format!(
                "inode {} is not a directory",
                dir.ino
            )));
        }
        self.refuse_encrypted(dir)?;
        let filetype = self.sb.has_incompat(incompat::FILETYPE);
        let what = || format!("directory inode {}", dir.ino);
        let ic = self.sb.inodes_count;
        let bs = self.sb.block_size;
        if dir.has_flag(flags::INLINE_DATA) {
            let ib = dir.i_block();
            let parent = crate::bytes::u32_at(ib, 0);
            if parent == 0 || parent > ic {
                return Err(self
                    .dev
                    .corrupt(None, format!("{}: parent inode {parent}", what())));
            }
            let first = crate::bytes::bytes_at(ib, 4, 56);
            if dir::for_each_record(&self.dev, first, bs, filetype, ic, &what, f)?.is_break() {
                return Ok(());
            }
            let rest = inline::system_data(&self.dev, dir)?;
            let _ = dir::for_each_record(&self.dev, rest, bs, filetype, ic, &what, f)?;
            return Ok(());
        }
        if dir.size > EXT_MAX_DIR_SIZE {
            return Err(self
                .dev
                .limit("ext directory size", dir.size, EXT_MAX_DIR_SIZE));
        }
        let blocks = dir.size.div_ceil(bs);
        let mut block = vec![0u8; bs as usize];
        let mut lblk = 0u64;
        while lblk < blocks {
            let run = blockmap::map(&self.dev, &self.sb, dir, lblk)?;
            let len = run.len.min(blocks - lblk).max(1);
            if let Some(phys) = run.phys {
                for k in 0..len {
                    self.dev
                        .read((phys + k) * bs, &mut block, "directory block")?;
                    if dir::for_each_record(&self.dev, &block, bs, filetype, ic, &what, f)?
                        .is_break()
                    {
                        return Ok(());
                    }
                }
            }
            lblk += len;
        }
        Ok(())
    }
}

/// The reader under a device (to rename the device once the kind is known).
fn dev_reader(dev: &Device) -> Arc<dyn ImageReader> {
    dev.reader()
}

impl Filesystem for Ext {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn label(&self) -> Option<Vec<u8>> {
        crate::bytes::padded_label(&self.sb.volume_name)
    }

    fn uuid(&self) -> Option<String> {
        crate::bytes::uuid_text(&self.sb.uuid)
    }

    fn usage(&self) -> Result<Usage> {
        usage::usage(&self.dev, &self.sb)
    }

    fn root(&self) -> Result<Node> {
        Ok(self.inode(u64::from(ROOT_INO))?.node())
    }

    fn read_dir(&self, dir: &Node) -> Result<Vec<DirEntry>> {
        crate::all_read(self.list_dir(dir)?)
    }

    fn list_dir(&self, dir: &Node) -> Result<Vec<crate::Listed>> {
        let inode = self.inode(dir.id)?;
        let mut raw: Vec<(u32, Vec<u8>)> = Vec::new();
        self.for_each_entry(&inode, &mut |ino, name| {
            if raw.len() >= MAX_DIR_ENTRIES {
                return Err(self.dev.limit(
                    "directory entries",
                    raw.len() as u64 + 1,
                    MAX_DIR_ENTRIES as u64,
                ));
            }
            raw.push((ino, name.to_vec()));
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(raw
            .into_iter()
            .map(|(ino, name)| crate::Listed {
                name,
                node: self.inode(u64::from(ino)).map(|i| i.node()),
            })
            .collect())
    }

    fn lookup(&self, dir: &Node, name: &[u8]) -> Result<Option<Node>> {
        let inode = self.inode(dir.id)?;
        if inode.has_flag(flags::CASEFOLD) {
            return Err(self.dev.unsupported(format!(
                "lookup in a casefolded (case-insensitive) directory: inode {}",
                inode.ino
            )));
        }
        let mut found = None;
        self.for_each_entry(&inode, &mut |ino, n| {
            if n == name {
                found = Some(ino);
                return Ok(ControlFlow::Break(()));
            }
            Ok(ControlFlow::Continue(()))
        })?;
        found
            .map(|ino| Ok(self.inode(u64::from(ino))?.node()))
            .transpose()
    }

    fn read(&self, file: &Node, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let inode = self.inode(file.id)?;
        match inode.kind() {
            FileKind::Regular => self.read_data(&inode, offset, buf),
            k => crate::read_not_regular(k, inode.ino.into()),
        }
    }

    fn read_link(&self, link: &Node) -> Result<Vec<u8>> {
        let inode = self.inode(link.id)?;
        if inode.kind() != FileKind::Symlink {
            return Err(crate::not_a_symlink(inode.ino.into()));
        }
        self.refuse_encrypted(&inode)?;
        if inode.size > MAX_SYMLINK_SIZE {
            return Err(self
                .dev
                .limit("symbolic link size", inode.size, MAX_SYMLINK_SIZE));
        }
        if self.is_fast_symlink(&inode) {
            let ib = inode.i_block();
            let size = inode.size as usize;
            let ok = size > 0 && size < ib.len() && !ib[..size].contains(&0) && ib[size] == 0;
            if !ok {
                return Err(self.dev.corrupt(
                    None,
                    format!("inode {}: bad fast symlink of size {size}", inode.ino),
                ));
            }
            return Ok(ib[..size].to_vec());
        }
        let mut out = vec![0u8; inode.size as usize];
        let n = self.read_data(&inode, 0, &mut out)?;
        out.truncate(n);
        // A slow symlink's block is not checked for NULs (ext4_get_link): the VFS stops at
        // the first.
        Ok(crate::up_to_nul(out))
    }
}

impl Ext {
    /// The kernel's ext4_inode_is_fast_symlink: the target is in `i_block` when the link owns
    /// no blocks besides an extended attribute block (and is not inline data).
    fn is_fast_symlink(&self, inode: &Inode) -> bool {
        if inode.has_flag(flags::EA_INODE) {
            return inode.size > 0 && inode.size < 60;
        }
        if inode.has_flag(flags::INLINE_DATA) {
            return false;
        }
        let ea_blocks = if inode.file_acl != 0 {
            (self.sb.block_size << self.sb.cluster_bits) / 512
        } else {
            0
        };
        inode.blocks_512.wrapping_sub(ea_blocks) == 0
    }
}
