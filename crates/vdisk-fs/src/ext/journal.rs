//! The jbd2 journal of ext3/ext4, replayed in memory: the journal superblock, descriptor,
//! commit and revoke blocks of the kernel's Documentation/filesystems/ext4/journal.rst, walked
//! as the kernel's `jbd2_journal_recover` walks them (fs/jbd2/recovery.c `do_one_pass`: a scan
//! pass to find the end of the committed log, a revoke pass, a replay pass). Nothing is written:
//! the result is a map from filesystem block to the journal block that replaces it, which
//! [`super::journal_overlay`] lays over the device.
//!
//! Checksums decide as the kernel decides. csum v2/v3: a descriptor or revoke block with a bad
//! tail checksum met while scanning makes the scan compare the next commit's time with the
//! previous one's: not older is corruption (an error, the kernel refuses to mount), older ends
//! the log there (stale blocks of an earlier use of the journal). A commit block with a bad
//! checksum (neither over the whole block nor over its header: the kernel's partial check) ends
//! the log before its transaction, unless its time is older than the previous commit's (then
//! the log ends there too) or the journal has `ASYNC_COMMIT` (the scan goes on, as the kernel's
//! does). A logged block whose tag checksum is bad, or a descriptor with a bad checksum met
//! while replaying, is an error (the kernel's recovery fails and the mount with it). v1
//! (`COMPAT_CHECKSUM`): the CRC32 over each transaction's descriptor and data blocks must match
//! its commit block's, else the log ends before it.
//!
//! Every walk is bounded: a pass advances at most the journal's length in blocks (a longer walk
//! means the log runs into itself: an error where the kernel could loop); revoke records and
//! replaced blocks are bounded by named limits; logged block numbers must lie inside the device.

use super::jcrc::{crc32_be, crc32c};
use crate::device::Device;
use crate::limits::{EXT_JOURNAL_MAX_BLOCKS, EXT_JOURNAL_MAX_REPLAYED, EXT_JOURNAL_MAX_REVOKES};
use std::collections::{BTreeMap, HashMap};
use vdisk_core::Result;

/// `h_magic` of every journal metadata block.
pub const JBD2_MAGIC: u32 = 0xC03B_3998;

/// `h_blocktype`.
pub mod blocktype {
    pub const DESCRIPTOR: u32 = 1;
    pub const COMMIT: u32 = 2;
    pub const SUPERBLOCK_V1: u32 = 3;
    pub const SUPERBLOCK_V2: u32 = 4;
    pub const REVOKE: u32 = 5;
}

/// Journal superblock feature bits.
pub mod feature {
    /// `s_feature_compat`: v1 transaction checksums (CRC32 in the commit block).
    pub const COMPAT_CHECKSUM: u32 = 0x1;
    pub const INCOMPAT_REVOKE: u32 = 0x1;
    pub const INCOMPAT_64BIT: u32 = 0x2;
    pub const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
    pub const INCOMPAT_CSUM_V2: u32 = 0x8;
    pub const INCOMPAT_CSUM_V3: u32 = 0x10;
    pub const INCOMPAT_FAST_COMMIT: u32 = 0x20;
    /// The kernel's JBD2_KNOWN_INCOMPAT_FEATURES.
    pub const KNOWN_INCOMPAT: u32 = INCOMPAT_REVOKE
        | INCOMPAT_64BIT
        | INCOMPAT_ASYNC_COMMIT
        | INCOMPAT_CSUM_V2
        | INCOMPAT_CSUM_V3
        | INCOMPAT_FAST_COMMIT;
}

/// Block tag flags (`t_flags`).
mod tag_flag {
    pub const ESCAPE: u32 = 1;
    pub const SAME_UUID: u32 = 2;
    pub const LAST_TAG: u32 = 8;
}

/// `s_checksum_type` for csum v2/v3.
const CSUM_TYPE_CRC32C: u8 = 4;
/// `h_chksum_type`/`h_chksum_size` of a v1 CRC32 commit checksum.
const CRC32_CHKSUM: u8 = 1;
const CRC32_CHKSUM_SIZE: u8 = 4;
/// The journal header (`h_magic`, `h_blocktype`, `h_sequence`).
const HEADER_SIZE: usize = 12;
/// The revoke header: the journal header and `r_count`.
const REVOKE_HEADER_SIZE: usize = 16;
/// The checksum tail of descriptor and revoke blocks with csum v2/v3.
const TAIL_SIZE: usize = 4;

fn be32(b: &[u8], off: usize) -> u32 {
    match off.checked_add(4).and_then(|end| b.get(off..end)) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

fn be64(b: &[u8], off: usize) -> u64 {
    (u64::from(be32(b, off)) << 32) | u64::from(be32(b, off.saturating_add(4)))
}

fn be16(b: &[u8], off: usize) -> u16 {
    match off.checked_add(2).and_then(|end| b.get(off..end)) {
        Some(s) => u16::from_be_bytes([s[0], s[1]]),
        None => 0,
    }
}

/// The kernel's `tid_gt`: transaction IDs compared modulo 2^32.
fn tid_gt(x: u32, y: u32) -> bool {
    (x.wrapping_sub(y) as i32) > 0
}

fn tid_geq(x: u32, y: u32) -> bool {
    (x.wrapping_sub(y) as i32) >= 0
}

/// The checked journal superblock (what `load_superblock` and `jbd2_journal_load` check).
#[derive(Debug, Clone)]
pub struct JournalSuper {
    pub block_size: u32,
    /// `s_maxlen`: the log ends (and wraps) here.
    pub maxlen: u32,
    /// `s_first`: the first log block, where the log wraps to.
    pub first: u32,
    /// `s_sequence`: the first transaction expected in the log.
    pub sequence: u32,
    /// `s_start`: the log's first block; 0 when nothing needs recovery.
    pub start: u32,
    pub compat: u32,
    pub incompat: u32,
    /// The csum v2/v3 seed: CRC32C of `s_uuid` from ~0.
    pub csum_seed: u32,
}

impl JournalSuper {
    /// Parses and checks block 0 of the journal; `total_len` is the journal's length in blocks
    /// (the journal inode's size).
    pub fn parse(dev: &Device, b: &[u8], fs_block_size: u64, total_len: u64) -> Result<Self> {
        let bad = |what: String| dev.corrupt(None, format!("journal superblock: {what}"));
        if b.len() < 1024 {
            return Err(bad(format!("{} bytes", b.len())));
        }
        let magic = be32(b, 0);
        if magic != JBD2_MAGIC {
            return Err(bad(format!(
                "magic {magic:#010x}, expected {JBD2_MAGIC:#010x}"
            )));
        }
        let btype = be32(b, 4);
        let v2 = match btype {
            blocktype::SUPERBLOCK_V1 => false,
            blocktype::SUPERBLOCK_V2 => true,
            t => return Err(bad(format!("block type {t}, expected 3 or 4"))),
        };
        let block_size = be32(b, 0x0C);
        if u64::from(block_size) != fs_block_size {
            return Err(bad(format!(
                "block size {block_size}, the filesystem's is {fs_block_size}"
            )));
        }
        let maxlen = be32(b, 0x10);
        let first = be32(b, 0x14);
        if u64::from(maxlen) > total_len {
            return Err(bad(format!(
                "s_maxlen {maxlen} is more than the journal inode's {total_len} blocks"
            )));
        }
        if u64::from(maxlen) > EXT_JOURNAL_MAX_BLOCKS {
            return Err(dev.limit(
                "ext journal length (s_maxlen)",
                u64::from(maxlen),
                EXT_JOURNAL_MAX_BLOCKS,
            ));
        }
        if first == 0 || first >= maxlen {
            return Err(bad(format!("s_first {first} with s_maxlen {maxlen}")));
        }
        let (compat, incompat, ro_compat) = if v2 {
            (be32(b, 0x24), be32(b, 0x28), be32(b, 0x2C))
        } else {
            (0, 0, 0)
        };
        let unknown = incompat & !feature::KNOWN_INCOMPAT;
        if unknown != 0 || ro_compat != 0 {
            return Err(dev.unsupported(format!(
                "journal features: incompat {unknown:#x}, ro_compat {ro_compat:#x} \
                 (the kernel refuses unknown journal features)"
            )));
        }
        if incompat & feature::INCOMPAT_FAST_COMMIT != 0 {
            return Err(dev.unsupported(
                "journal feature fast_commit: replaying fast commits is not implemented",
            ));
        }
        let v2csum = incompat & feature::INCOMPAT_CSUM_V2 != 0;
        let v3csum = incompat & feature::INCOMPAT_CSUM_V3 != 0;
        if v2csum && v3csum {
            return Err(bad("both csum v2 and csum v3".into()));
        }
        let mut csum_seed = 0;
        if v2csum || v3csum {
            if compat & feature::COMPAT_CHECKSUM != 0 {
                return Err(bad("both v1 and v2/v3 checksums".into()));
            }
            let ctype = b[0x50];
            if ctype != CSUM_TYPE_CRC32C {
                return Err(bad(format!("checksum type {ctype}, expected 4 (crc32c)")));
            }
            let mut copy = b[..1024].to_vec();
            copy[0xFC..0x100].fill(0);
            let want = crc32c(!0, &copy);
            let have = be32(b, 0xFC);
            if want != have {
                return Err(bad(format!("checksum {have:#010x}, computed {want:#010x}")));
            }
            csum_seed = crc32c(!0, &b[0x30..0x40]);
        }
        Ok(JournalSuper {
            block_size,
            maxlen,
            first,
            sequence: be32(b, 0x18),
            start: be32(b, 0x1C),
            compat,
            incompat,
            csum_seed,
        })
    }

    fn has_incompat(&self, bit: u32) -> bool {
        self.incompat & bit != 0
    }

    fn csum_v2or3(&self) -> bool {
        self.has_incompat(feature::INCOMPAT_CSUM_V2) || self.has_incompat(feature::INCOMPAT_CSUM_V3)
    }

    fn v1_checksum(&self) -> bool {
        self.compat & feature::COMPAT_CHECKSUM != 0
    }

    /// The kernel's `journal_tag_bytes`.
    fn tag_bytes(&self) -> usize {
        if self.has_incompat(feature::INCOMPAT_CSUM_V3) {
            return 16;
        }
        let mut sz = 12;
        if self.has_incompat(feature::INCOMPAT_CSUM_V2) {
            sz += 2;
        }
        if self.has_incompat(feature::INCOMPAT_64BIT) {
            sz
        } else {
            sz - 4
        }
    }

    fn tail_size(&self) -> usize {
        if self.csum_v2or3() {
            TAIL_SIZE
        } else {
            0
        }
    }
}

/// Where the journal's blocks are: `read` fills a buffer with journal block `jblk` (below the
/// journal's length), `phys` names the device block that holds it.
pub trait LogSource {
    fn read(&self, jblk: u64, buf: &mut [u8]) -> Result<()>;
    fn phys(&self, jblk: u64) -> Result<u64>;
}

/// What replaces a filesystem block: the device block of its journal copy, and whether the
/// copy was escaped (its first four bytes, the journal magic, were zeroed when logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replacement {
    pub phys: u64,
    pub escaped: bool,
}

/// The outcome of a replay.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Filesystem block -> its latest committed, unrevoked copy in the journal.
    pub blocks: BTreeMap<u64, Replacement>,
    /// Committed transactions found (`end_transaction - s_sequence`).
    pub transactions: u32,
    /// Logged copies skipped because a revoke record of the same or a later transaction
    /// names their block.
    pub revoke_hits: u64,
}

/// What a replay did, without its block map (which the overlay reader owns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Committed transactions found.
    pub transactions: u32,
    /// Logged copies skipped because a revoke record names their block.
    pub revoke_hits: u64,
    /// Filesystem blocks replaced.
    pub blocks: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pass {
    Scan,
    Revoke,
    Replay,
}

struct Walker<'a> {
    dev: &'a Device,
    src: &'a dyn LogSource,
    jsb: &'a JournalSuper,
    /// Device blocks: logged block numbers at or past this are refused.
    dev_blocks: u64,
    bs: usize,
    /// `end_transaction`, found by the scan.
    end: Option<u32>,
    revoked: HashMap<u64, u32>,
    out: Replay,
}

/// Replays the journal whose checked superblock is `jsb`. `dev_blocks` is the number of
/// filesystem blocks the device holds.
pub fn recover(
    dev: &Device,
    src: &dyn LogSource,
    jsb: &JournalSuper,
    dev_blocks: u64,
) -> Result<Replay> {
    if jsb.start == 0 {
        return Ok(Replay::default());
    }
    let mut w = Walker {
        dev,
        src,
        jsb,
        dev_blocks,
        bs: jsb.block_size as usize,
        end: None,
        revoked: HashMap::new(),
        out: Replay::default(),
    };
    w.pass(Pass::Scan)?;
    w.pass(Pass::Revoke)?;
    w.pass(Pass::Replay)?;
    w.out.transactions = w.end.unwrap_or(jsb.sequence).wrapping_sub(jsb.sequence);
    Ok(w.out)
}

impl Walker<'_> {
    fn corrupt(&self, what: String) -> vdisk_core::Error {
        self.dev.corrupt(None, format!("journal: {what}"))
    }

    /// The kernel's `wrap`.
    fn wrap(&self, b: u64) -> u64 {
        let (first, last) = (u64::from(self.jsb.first), u64::from(self.jsb.maxlen));
        if b >= last {
            b - (last - first)
        } else {
            b
        }
    }

    /// Journal blocks past `s_maxlen` are corruption (the kernel's `jread`).
    fn in_log(&self, jblk: u64) -> Result<()> {
        if jblk >= u64::from(self.jsb.maxlen) {
            return Err(self.corrupt(format!(
                "log block {jblk} is past s_maxlen {}",
                self.jsb.maxlen
            )));
        }
        Ok(())
    }

    /// The kernel's `jread`.
    fn read(&self, jblk: u64, buf: &mut [u8]) -> Result<()> {
        self.in_log(jblk)?;
        self.src.read(jblk, buf)
    }

    /// Whether a descriptor or revoke block's tail checksum is right (always without csum
    /// v2/v3).
    fn tail_ok(&self, b: &[u8]) -> bool {
        if !self.jsb.csum_v2or3() {
            return true;
        }
        let at = self.bs - TAIL_SIZE;
        let mut copy = b.to_vec();
        copy[at..].fill(0);
        be32(b, at) == crc32c(self.jsb.csum_seed, &copy)
    }

    /// The kernel's `jbd2_commit_block_csum_verify` and `..._verify_partial`.
    fn commit_ok(&self, b: &[u8]) -> bool {
        if !self.jsb.csum_v2or3() {
            return true;
        }
        let have = be32(b, 16);
        let mut copy = b.to_vec();
        copy[16..20].fill(0);
        if have == crc32c(self.jsb.csum_seed, &copy) {
            return true;
        }
        // The header alone (struct commit_header, 60 bytes), the rest zero.
        copy[60..].fill(0);
        have == crc32c(self.jsb.csum_seed, &copy)
    }

    /// The tags of a descriptor block, as the kernel's loops read them: (fs block, flags,
    /// byte offset of the tag).
    fn tags(&self, b: &[u8]) -> Vec<(u64, u32, usize)> {
        let tag_bytes = self.jsb.tag_bytes();
        let room = self.bs - self.jsb.tail_size();
        let wide = self.jsb.has_incompat(feature::INCOMPAT_64BIT);
        let mut v = Vec::new();
        let mut at = HEADER_SIZE;
        while at + tag_bytes <= room {
            let flags = u32::from(be16(b, at + 6));
            let mut block = u64::from(be32(b, at));
            if wide {
                block |= u64::from(be32(b, at + 8)) << 32;
            }
            v.push((block, flags, at));
            at += tag_bytes;
            if flags & tag_flag::SAME_UUID == 0 {
                at += 16;
            }
            if flags & tag_flag::LAST_TAG != 0 {
                break;
            }
        }
        v
    }

    /// The kernel's `jbd2_block_tag_csum_verify`.
    fn tag_csum_ok(&self, desc: &[u8], tag_at: usize, data: &[u8], seq: u32) -> bool {
        if !self.jsb.csum_v2or3() {
            return true;
        }
        let c = crc32c(self.jsb.csum_seed, &seq.to_be_bytes());
        let c = crc32c(c, data);
        if self.jsb.has_incompat(feature::INCOMPAT_CSUM_V3) {
            be32(desc, tag_at + 12) == c
        } else {
            be16(desc, tag_at + 4) == c as u16
        }
    }

    /// One pass of `do_one_pass`.
    fn pass(&mut self, pass: Pass) -> Result<()> {
        let jsb = self.jsb;
        let mut next_id = jsb.sequence;
        let mut block = u64::from(jsb.start);
        let mut crc32_sum: u32 = !0;
        let mut need_check_commit_time = false;
        let mut last_commit_time: u64 = 0;
        // Blocks advanced over: at most the log's length (s_maxlen - s_first) plus the one
        // read that finds the end.
        let mut advanced: u64 = 0;
        let log_len = u64::from(jsb.maxlen - jsb.first);
        let mut buf = vec![0u8; self.bs];
        let mut data = vec![0u8; self.bs];
        loop {
            if pass != Pass::Scan && self.end.is_some_and(|end| tid_geq(next_id, end)) {
                break;
            }
            if advanced > log_len {
                return Err(self.corrupt(format!(
                    "the log runs on past the journal's {log_len} blocks (transaction \
                     {next_id} at log block {block})"
                )));
            }
            self.read(block, &mut buf)?;
            advanced += 1;
            block = self.wrap(block + 1);
            if be32(&buf, 0) != JBD2_MAGIC || be32(&buf, 8) != next_id {
                break;
            }
            match be32(&buf, 4) {
                blocktype::DESCRIPTOR => {
                    if !self.tail_ok(&buf) {
                        if pass != Pass::Scan {
                            return Err(self.corrupt(format!(
                                "descriptor block of transaction {next_id}: bad checksum"
                            )));
                        }
                        need_check_commit_time = true;
                    }
                    let tags = self.tags(&buf);
                    if pass == Pass::Replay {
                        for (fs_block, flags, at) in tags {
                            let io_block = block;
                            block = self.wrap(block + 1);
                            advanced += 1;
                            self.replay_one(
                                &buf, at, io_block, fs_block, flags, next_id, &mut data,
                            )?;
                        }
                        continue;
                    }
                    if pass == Pass::Scan && jsb.v1_checksum() && self.end.is_none() {
                        crc32_sum = crc32_be(crc32_sum, &buf);
                        for _ in 0..tags.len() {
                            let io_block = block;
                            block = self.wrap(block + 1);
                            advanced += 1;
                            self.read(io_block, &mut data)?;
                            crc32_sum = crc32_be(crc32_sum, &data);
                        }
                        continue;
                    }
                    let n = tags.len() as u64;
                    block = self.wrap(block + n);
                    advanced += n;
                }
                blocktype::COMMIT => {
                    if pass != Pass::Scan {
                        next_id = next_id.wrapping_add(1);
                        continue;
                    }
                    let commit_time = be64(&buf, 0x30);
                    if need_check_commit_time {
                        if commit_time >= last_commit_time {
                            return Err(
                                self.corrupt(format!("bad checksum in transaction {next_id}"))
                            );
                        }
                        // Stale blocks of an earlier use of the journal: the log ends here.
                        break;
                    }
                    let ok = if jsb.v1_checksum() {
                        if self.end.is_some() {
                            break;
                        }
                        let found = be32(&buf, 16);
                        let (ctype, csize) = (buf[12], buf[13]);
                        let ok = (crc32_sum == found
                            && ctype == CRC32_CHKSUM
                            && csize == CRC32_CHKSUM_SIZE)
                            || (ctype == 0 && csize == 0 && found == 0);
                        crc32_sum = !0;
                        ok
                    } else {
                        self.commit_ok(&buf)
                    };
                    if !ok {
                        if commit_time < last_commit_time {
                            break;
                        }
                        self.end = Some(next_id);
                        if !jsb.has_incompat(feature::INCOMPAT_ASYNC_COMMIT) {
                            break;
                        }
                    }
                    last_commit_time = commit_time;
                    next_id = next_id.wrapping_add(1);
                }
                blocktype::REVOKE => {
                    if pass == Pass::Replay {
                        continue;
                    }
                    if pass == Pass::Scan && !self.tail_ok(&buf) {
                        need_check_commit_time = true;
                    }
                    self.revoke_records(&buf, pass, next_id)?;
                }
                _ => break,
            }
        }
        match pass {
            Pass::Scan => {
                if self.end.is_none() {
                    self.end = Some(next_id);
                }
            }
            _ => {
                if self.end != Some(next_id) {
                    return Err(self.corrupt(format!(
                        "recovery pass {pass:?} ended at transaction {next_id}, expected {:?}",
                        self.end
                    )));
                }
            }
        }
        Ok(())
    }

    /// The kernel's `scan_revoke_records`.
    fn revoke_records(&mut self, b: &[u8], pass: Pass, seq: u32) -> Result<()> {
        let rcount = be32(b, 12) as usize;
        if rcount > self.bs - self.jsb.tail_size() {
            return Err(self.corrupt(format!(
                "revoke block of transaction {seq}: r_count {rcount} is more than the block"
            )));
        }
        if pass != Pass::Revoke {
            return Ok(());
        }
        let len = if self.jsb.has_incompat(feature::INCOMPAT_64BIT) {
            8
        } else {
            4
        };
        let mut at = REVOKE_HEADER_SIZE;
        while at + len <= rcount {
            let block = if len == 8 {
                be64(b, at)
            } else {
                u64::from(be32(b, at))
            };
            at += len;
            match self.revoked.get_mut(&block) {
                Some(s) => {
                    if tid_gt(seq, *s) {
                        *s = seq;
                    }
                }
                None => {
                    if self.revoked.len() as u64 >= EXT_JOURNAL_MAX_REVOKES {
                        return Err(self.dev.limit(
                            "ext journal revoke records",
                            self.revoked.len() as u64 + 1,
                            EXT_JOURNAL_MAX_REVOKES,
                        ));
                    }
                    self.revoked.insert(block, seq);
                }
            }
        }
        Ok(())
    }

    /// One tag of a descriptor in the replay pass.
    #[allow(clippy::too_many_arguments)]
    fn replay_one(
        &mut self,
        desc: &[u8],
        tag_at: usize,
        io_block: u64,
        fs_block: u64,
        flags: u32,
        seq: u32,
        data: &mut [u8],
    ) -> Result<()> {
        // The kernel's jbd2_journal_test_revoke: revoked by a record of this transaction or a
        // later one.
        if self
            .revoked
            .get(&fs_block)
            .is_some_and(|&rseq| !tid_gt(seq, rseq))
        {
            self.out.revoke_hits += 1;
            return Ok(());
        }
        if self.jsb.csum_v2or3() {
            self.read(io_block, data)?;
            if !self.tag_csum_ok(desc, tag_at, data, seq) {
                return Err(self.corrupt(format!(
                    "bad checksum of the copy of block {fs_block} in log block {io_block} \
                     (transaction {seq})"
                )));
            }
        } else {
            self.in_log(io_block)?;
        }
        if fs_block >= self.dev_blocks {
            return Err(self.corrupt(format!(
                "transaction {seq} logs block {fs_block}, past the device's {} blocks",
                self.dev_blocks
            )));
        }
        let phys = self.src.phys(io_block)?;
        let rep = Replacement {
            phys,
            escaped: flags & tag_flag::ESCAPE != 0,
        };
        if !self.out.blocks.contains_key(&fs_block)
            && self.out.blocks.len() as u64 >= EXT_JOURNAL_MAX_REPLAYED
        {
            return Err(self.dev.limit(
                "ext journal blocks replayed",
                self.out.blocks.len() as u64 + 1,
                EXT_JOURNAL_MAX_REPLAYED,
            ));
        }
        self.out.blocks.insert(fs_block, rep);
        Ok(())
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
