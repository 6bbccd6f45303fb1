//! The internal journal of an ext3/ext4 filesystem read through its inode (`s_journal_inum`,
//! the kernel's ext4_get_journal_inode checks), replayed with [`super::journal`], and the result
//! laid over the device as an [`ImageReader`]: reads of a replaced block come from its journal
//! copy (with the jbd2 magic restored at the start of an escaped block), every other byte from
//! the device. The image is never written; only block numbers are kept, the bytes are read on
//! demand.

use super::blockmap;
use super::inode::{read_inode, Inode};
use super::journal::{recover, JournalSuper, LogSource, Replacement, ReplayStats, JBD2_MAGIC};
use super::superblock::Super;
use crate::device::Device;
use crate::FileKind;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use vdisk_core::reader::check_range;
use vdisk_core::{Extent, ExtentKind, ImageInfo, ImageReader, Result};

/// The journal inode's blocks, mapped through its extent tree or block map with the last run
/// remembered (a journal is usually one extent).
struct InodeLog<'a> {
    dev: &'a Device,
    sb: &'a Super,
    inode: Inode,
    total_len: u64,
    /// (first logical block, first physical block, length) of the last run mapped.
    run: Cell<Option<(u64, u64, u64)>>,
}

impl LogSource for InodeLog<'_> {
    fn read(&self, jblk: u64, buf: &mut [u8]) -> Result<()> {
        let phys = self.phys(jblk)?;
        let off = phys
            .checked_mul(self.sb.block_size)
            .ok_or_else(|| self.dev.corrupt(None, format!("journal block {jblk}")))?;
        self.dev.read(off, buf, "journal block")
    }

    fn phys(&self, jblk: u64) -> Result<u64> {
        if jblk >= self.total_len {
            return Err(self.dev.corrupt(
                None,
                format!(
                    "journal: block {jblk} is past the journal inode's {} blocks",
                    self.total_len
                ),
            ));
        }
        if let Some((l, p, n)) = self.run.get() {
            if jblk >= l && jblk - l < n {
                return Ok(p + (jblk - l));
            }
        }
        let run = blockmap::map(self.dev, self.sb, &self.inode, jblk)?;
        match run.phys {
            Some(p) => {
                self.run.set(Some((jblk, p, run.len.max(1))));
                Ok(p)
            }
            None => Err(self.dev.corrupt(
                None,
                format!("journal: block {jblk} of the journal inode is a hole"),
            )),
        }
    }
}

/// Replays the internal journal of the filesystem on `dev` (whose superblock, as on disk, is
/// `sb`): the device with the replayed blocks laid over it, and what the replay did. `None` when
/// the journal holds nothing to replay.
pub fn replay(dev: &Device, sb: &Super) -> Result<Option<(Arc<dyn ImageReader>, ReplayStats)>> {
    if sb.compat & super::superblock::compat::HAS_JOURNAL == 0 {
        return Err(dev.corrupt(
            None,
            "the needs_recovery flag is set but the filesystem has no journal (has_journal)",
        ));
    }
    if sb.journal_inum == 0 {
        return Err(dev.unsupported(format!(
            "external journal (s_journal_dev {:#x}): only internal journals are replayed",
            sb.journal_dev
        )));
    }
    let inode = read_inode(dev, sb, u64::from(sb.journal_inum))?;
    if inode.kind() != FileKind::Regular {
        return Err(dev.corrupt(
            None,
            format!("journal inode {} is not a regular file", sb.journal_inum),
        ));
    }
    let total_len = inode.size / sb.block_size;
    let log = InodeLog {
        dev,
        sb,
        inode,
        total_len,
        run: Cell::new(None),
    };
    if total_len == 0 {
        return Err(dev.corrupt(None, "journal inode is empty"));
    }
    let mut jsb_bytes = vec![0u8; sb.block_size as usize];
    log.read(0, &mut jsb_bytes)?;
    let jsb = JournalSuper::parse(dev, &jsb_bytes, sb.block_size, total_len)?;
    let dev_blocks = dev.size() / sb.block_size;
    let result = recover(dev, &log, &jsb, dev_blocks)?;
    if result.blocks.is_empty() {
        return Ok(None);
    }
    let stats = ReplayStats {
        transactions: result.transactions,
        revoke_hits: result.revoke_hits,
        blocks: result.blocks.len(),
    };
    let reader = Replayed::new(dev.reader(), sb.block_size, result.blocks);
    Ok(Some((Arc::new(reader), stats)))
}

/// A device with replayed blocks laid over it.
pub struct Replayed {
    inner: Arc<dyn ImageReader>,
    block_size: u64,
    blocks: BTreeMap<u64, Replacement>,
}

impl Replayed {
    /// A device `inner` with `blocks` (of `block_size` bytes) replaced.
    pub fn new(
        inner: Arc<dyn ImageReader>,
        block_size: u64,
        blocks: BTreeMap<u64, Replacement>,
    ) -> Replayed {
        Replayed {
            inner,
            block_size,
            blocks,
        }
    }
}

impl ImageReader for Replayed {
    fn format_name(&self) -> &'static str {
        self.inner.format_name()
    }

    fn virtual_size(&self) -> u64 {
        self.inner.virtual_size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let size = self.inner.virtual_size();
        check_range(size, offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let bs = self.block_size;
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        for (&blk, rep) in self.blocks.range(offset / bs..=(end - 1) / bs) {
            let bstart = blk * bs;
            if bstart > pos {
                let (a, b) = ((pos - offset) as usize, (bstart - offset) as usize);
                self.inner.read_at(&mut buf[a..b], pos)?;
                pos = bstart;
            }
            let piece_end = (bstart + bs).min(end);
            let (a, b) = ((pos - offset) as usize, (piece_end - offset) as usize);
            let within = pos - bstart;
            let src = rep
                .phys
                .checked_mul(bs)
                .and_then(|p| p.checked_add(within))
                .ok_or_else(|| {
                    vdisk_core::Error::corrupt(Path::new("ext"), None, "journal copy offset")
                })?;
            self.inner.read_at(&mut buf[a..b], src)?;
            if rep.escaped && within < 4 {
                let magic = JBD2_MAGIC.to_be_bytes();
                for k in within..(piece_end - bstart).min(4) {
                    buf[(bstart + k - offset) as usize] = magic[k as usize];
                }
            }
            pos = piece_end;
        }
        if pos < end {
            let a = (pos - offset) as usize;
            self.inner.read_at(&mut buf[a..], pos)?;
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let bs = self.block_size;
        let blk = offset / bs;
        if self.blocks.contains_key(&blk) {
            let len = (bs - offset % bs).min(max_len);
            return Ok(Extent::new(offset, len, ExtentKind::Data));
        }
        let limit = match self.blocks.range(blk..).next() {
            Some((&next, _)) => (next * bs - offset).min(max_len),
            None => max_len,
        };
        self.inner.block_status(offset, limit)
    }

    fn info(&self) -> Result<ImageInfo> {
        self.inner.info()
    }
}
