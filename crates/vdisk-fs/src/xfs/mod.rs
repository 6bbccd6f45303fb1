//! XFS (versions 4 and 5), read-only, following "XFS Algorithms & Data Structures" (the
//! kernel's Documentation/filesystems/xfs and xfs-documentation's design notes): the
//! superblock's geometry, inodes found by number (AG, block, slot), data forks in extents or
//! btree format, short-form and block/leaf/node directories (their data blocks), local and
//! remote symlinks, and `statvfs`'s numbers as the kernel computes them.
//!
//! As with ext, CRCs of v5 metadata are not verified: every structure is checked for the
//! ranges and consistency vdisk-fs relies on (magic numbers, levels, counts, inode numbers
//! recorded in v3 inodes). The log is not replayed: a filesystem that was not cleanly
//! unmounted (its log needs recovery, [`log`]) is refused, as the kernel would replay the log
//! first, unless [`OpenOptions::ignore_journal_recovery`] asks to read it as it is on disk, as
//! `xfs_db` reads it (what the log holds is then missing). Files on a real-time device and
//! incompatible features vdisk-fs does not know are refused with an error.

pub mod bmap;
pub mod dir;
pub mod inode;
pub mod log;
pub mod superblock;
pub mod usage;

use crate::device::Device;
use crate::limits::{MAX_DIR_ENTRIES, XFS_MAX_DIR_SIZE, XFS_MAX_SYMLINK_SIZE};
use crate::{DirEntry, FileKind, Filesystem, Node, OpenOptions, Usage};
use bmap::Mapping;
use inode::{format, read_inode, Inode, FLAG_REALTIME};
use std::sync::Arc;
use superblock::{Super, SUPERBLOCK_SIZE};
use vdisk_core::{Error, ImageReader, Result};

/// `XSLM`: a remote symlink block of a v5 filesystem.
const SYMLINK_MAGIC: u32 = 0x5853_4c4d;
/// Its header: magic, offset, bytes, crc, uuid, owner, blkno, lsn.
const SYMLINK_HDR: usize = 56;

/// Whether `dev` holds an XFS superblock (its magic and a version this reader knows).
pub fn probe(dev: &dyn ImageReader) -> Result<Option<&'static str>> {
    if dev.virtual_size() < SUPERBLOCK_SIZE as u64 {
        return Ok(None);
    }
    let mut sb = vec![0u8; SUPERBLOCK_SIZE];
    dev.read_at(&mut sb, 0)?;
    let version = crate::bytes::be16_at(&sb, 100) & superblock::version::NUMBITS;
    Ok((Super::has_magic(&sb) && (version == 4 || version == 5)).then_some("xfs"))
}

/// An opened XFS filesystem.
pub struct Xfs {
    dev: Device,
    sb: Super,
}

impl Xfs {
    /// Opens the XFS filesystem on `reader`.
    pub fn open(reader: Arc<dyn ImageReader>, opts: &OpenOptions) -> Result<Xfs> {
        let dev = Device::new(reader, "xfs");
        let bytes = dev.read_vec(0, SUPERBLOCK_SIZE, "superblock")?;
        let sb = Super::parse(&bytes).map_err(|e| {
            if e.contains("does not read") || e.contains("are not read") {
                dev.unsupported(e)
            } else {
                dev.corrupt(Some(0), format!("superblock: {e}"))
            }
        })?;
        if !opts.ignore_journal_recovery && log::state(&dev, &sb)? == log::LogState::NeedsRecovery {
            return Err(dev.unsupported(
                "replay of the XFS log, which needs recovery (the filesystem was not cleanly \
                 unmounted: a running or crashed guest); --ignore-journal reads it as it is on \
                 disk, possibly stale",
            ));
        }
        let fs = Xfs { dev, sb };
        let root = fs.inode(fs.sb.root_ino)?;
        if root.kind() != FileKind::Directory {
            return Err(fs.dev.corrupt(None, "the root inode is not a directory"));
        }
        Ok(fs)
    }

    /// The superblock as checked at open.
    pub fn superblock(&self) -> &Super {
        &self.sb
    }

    fn inode(&self, ino: u64) -> Result<Inode> {
        read_inode(&self.dev, &self.sb, ino)
    }

    /// Fills `buf` from byte `pos` of `inode`'s data fork (holes and unwritten extents read as
    /// zeros).
    fn read_mapped(&self, inode: &Inode, pos: u64, buf: &mut [u8]) -> Result<()> {
        if inode.flags & FLAG_REALTIME != 0 {
            return Err(self.dev.unsupported(format!(
                "inode {}: the file lies on the real-time device",
                inode.ino
            )));
        }
        let bs = self.sb.block_size;
        let mut done = 0usize;
        while done < buf.len() {
            let at = pos + done as u64;
            let within = at % bs;
            let want = (buf.len() - done) as u64;
            let (take, from) = match bmap::map(&self.dev, &self.sb, inode, at / bs)? {
                Mapping::Hole { len } => {
                    let avail = len.map_or(want, |l| l.saturating_mul(bs) - within);
                    (avail.min(want), None)
                }
                Mapping::Data {
                    start,
                    len,
                    unwritten,
                } => {
                    let (byte, ag_left) = self.sb.fsb_to_byte(start).ok_or_else(|| {
                        self.dev.corrupt(
                            None,
                            format!("inode {}: data block {start} out of range", inode.ino),
                        )
                    })?;
                    let avail = len.min(ag_left).saturating_mul(bs) - within;
                    (
                        avail.min(want),
                        (!unwritten).then_some(byte.saturating_add(within)),
                    )
                }
            };
            let piece = &mut buf[done..done + take as usize];
            match from {
                Some(byte) => self.dev.read(byte, piece, "file data")?,
                None => piece.fill(0),
            }
            done += take as usize;
        }
        Ok(())
    }

    /// The entries of directory `dir` (name, inode number), without `.` and `..`.
    fn entries(&self, dir: &Inode) -> Result<Vec<dir::Entry>> {
        if dir.kind() != FileKind::Directory {
            return Err(Error::invalid(format!(
                "inode {} is not a directory",
                dir.ino
            )));
        }
        if dir.format == format::LOCAL {
            let data = dir.fork.get(..dir.size as usize).ok_or_else(|| {
                self.dev.corrupt(
                    None,
                    format!(
                        "inode {}: short-form directory of {} bytes",
                        dir.ino, dir.size
                    ),
                )
            })?;
            return dir::short_form(&self.dev, &self.sb, data, dir.ino);
        }
        if dir.size > XFS_MAX_DIR_SIZE {
            return Err(self
                .dev
                .limit("xfs directory size", dir.size, XFS_MAX_DIR_SIZE));
        }
        let dbs = self.sb.dir_block_size();
        let fsbs = 1u64 << self.sb.dir_block_log;
        let mut block = vec![0u8; dbs as usize];
        let mut out = Vec::new();
        let (mut i, blocks) = (0u64, dir.size.div_ceil(dbs));
        while i < blocks {
            // Directory blocks in holes (left by removed entries) are skipped whole.
            match bmap::map(&self.dev, &self.sb, dir, i * fsbs)? {
                Mapping::Hole { len: None } => break,
                Mapping::Hole { len: Some(l) } if l >= fsbs => {
                    i += l / fsbs;
                    continue;
                }
                _ => {}
            }
            self.read_mapped(dir, i * dbs, &mut block)?;
            dir::data_block(&self.dev, &self.sb, &block, i * dbs, &mut out)?;
            i += 1;
            if out.len() > MAX_DIR_ENTRIES {
                return Err(self.dev.limit(
                    "directory entries",
                    out.len() as u64,
                    MAX_DIR_ENTRIES as u64,
                ));
            }
        }
        Ok(out)
    }

    /// The target of a symlink stored in blocks: raw (v4), or after a header at the start of
    /// each extent (v5: the kernel reads one buffer per extent, `xfs_symlink_remote_read`,
    /// and checks that its header gives the bytes it holds and their offset in the target).
    fn remote_link(&self, link: &Inode) -> Result<Vec<u8>> {
        let size = link.size as usize;
        if !self.sb.is_v5() {
            let mut out = vec![0u8; size];
            self.read_mapped(link, 0, &mut out)?;
            return Ok(out);
        }
        let bs = self.sb.block_size;
        let bad = |what: String| {
            self.dev
                .corrupt(None, format!("inode {}: remote symlink {what}", link.ino))
        };
        let mut out = Vec::with_capacity(size);
        let mut lblk = 0u64;
        while out.len() < size {
            let Mapping::Data { start, len, .. } = bmap::map(&self.dev, &self.sb, link, lblk)?
            else {
                return Err(bad(format!("block {lblk} is a hole")));
            };
            // This extent's bytes of the target (its header first), and the blocks they fill.
            let room = len.saturating_mul(bs).saturating_sub(SYMLINK_HDR as u64);
            let bytes = room.min((size - out.len()) as u64) as usize;
            let blocks = (bytes + SYMLINK_HDR).div_ceil(bs as usize);
            let mut buf = vec![0u8; blocks * bs as usize];
            self.read_mapped(link, lblk * bs, &mut buf)?;
            let ok = crate::bytes::be32_at(&buf, 0) == SYMLINK_MAGIC
                && crate::bytes::be32_at(&buf, 4) as usize == out.len()
                && crate::bytes::be32_at(&buf, 8) as usize == bytes;
            if !ok {
                return Err(bad(format!(
                    "header of the extent at file block {lblk} (filesystem block {start})"
                )));
            }
            out.extend_from_slice(&buf[SYMLINK_HDR..SYMLINK_HDR + bytes]);
            lblk += len;
        }
        Ok(out)
    }
}

impl Filesystem for Xfs {
    fn kind(&self) -> &'static str {
        "xfs"
    }

    fn label(&self) -> Option<Vec<u8>> {
        crate::bytes::padded_label(&self.sb.fname)
    }

    fn uuid(&self) -> Option<String> {
        crate::bytes::uuid_text(&self.sb.uuid)
    }

    fn usage(&self) -> Result<Usage> {
        usage::usage(&self.dev, &self.sb)
    }

    fn root(&self) -> Result<Node> {
        Ok(self.inode(self.sb.root_ino)?.node())
    }

    fn read_dir(&self, dir: &Node) -> Result<Vec<DirEntry>> {
        crate::all_read(self.list_dir(dir)?)
    }

    fn list_dir(&self, dir: &Node) -> Result<Vec<crate::Listed>> {
        let inode = self.inode(dir.id)?;
        Ok(self
            .entries(&inode)?
            .into_iter()
            .map(|(name, ino)| crate::Listed {
                name,
                node: self.inode(ino).map(|i| i.node()),
            })
            .collect())
    }

    fn lookup(&self, dir: &Node, name: &[u8]) -> Result<Option<Node>> {
        let inode = self.inode(dir.id)?;
        self.entries(&inode)?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, ino)| Ok(self.inode(ino)?.node()))
            .transpose()
    }

    fn read(&self, file: &Node, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let inode = self.inode(file.id)?;
        match inode.kind() {
            FileKind::Regular => {
                if offset >= inode.size || buf.is_empty() {
                    return Ok(0);
                }
                if inode.format != format::EXTENTS && inode.format != format::BTREE {
                    return Err(self.dev.corrupt(
                        None,
                        format!(
                            "inode {}: regular file in fork format {}",
                            inode.ino, inode.format
                        ),
                    ));
                }
                let n = (inode.size - offset).min(buf.len() as u64) as usize;
                self.read_mapped(&inode, offset, &mut buf[..n])?;
                Ok(n)
            }
            k => crate::read_not_regular(k, inode.ino),
        }
    }

    fn read_link(&self, link: &Node) -> Result<Vec<u8>> {
        let inode = self.inode(link.id)?;
        if inode.kind() != FileKind::Symlink {
            return Err(crate::not_a_symlink(inode.ino));
        }
        if inode.size == 0 || inode.size > XFS_MAX_SYMLINK_SIZE {
            return Err(self.dev.corrupt(
                None,
                format!("inode {}: symbolic link of {} bytes", inode.ino, inode.size),
            ));
        }
        match inode.format {
            format::LOCAL => {
                let target = inode.fork.get(..inode.size as usize).ok_or_else(|| {
                    self.dev.corrupt(
                        None,
                        format!("inode {}: local symlink longer than its fork", inode.ino),
                    )
                })?;
                // xfs_symlink_shortform_verify: no NUL before the last byte.
                if target[..target.len() - 1].contains(&0) {
                    return Err(self.dev.corrupt(
                        None,
                        format!("inode {}: local symlink with a NUL inside", inode.ino),
                    ));
                }
                Ok(crate::up_to_nul(target.to_vec()))
            }
            // Remote blocks are not checked for NULs: the VFS stops at the first.
            format::EXTENTS | format::BTREE => self.remote_link(&inode).map(crate::up_to_nul),
            f => Err(self.dev.corrupt(
                None,
                format!("inode {}: symbolic link in fork format {f}", inode.ino),
            )),
        }
    }
}
