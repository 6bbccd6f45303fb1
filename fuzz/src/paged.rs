//! A sparse in-memory file built from a short fuzz input: the first byte `n` says how many MiB the
//! file goes on past its last page (0: the file ends where the last, possibly short, page ends);
//! the rest is cut into 4 KiB pages, and page `i` is placed at `PAGE_OFFSETS[i]`; everything
//! between and after the pages reads as zeros. This lets a fuzz input of a few dozen KiB
//! stand for a VHDX image whose structures lie megabytes apart (headers at 64 and 128 KiB, region
//! tables at 192 and 256 KiB, and, as qemu-img lays them out, the log at 1 MiB, the BAT at 2 MiB,
//! the metadata at 3 MiB with its items 64 KiB in, payload blocks from 4 MiB on). `zero_tail` is
//! the one-page case: the device of the filesystem and volume targets (`sized_device`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use vdisk_core::{Result, Storage};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Bytes per page of the input.
pub const PAGE: usize = 4096;

/// Where each page of the input goes in the file.
pub const PAGE_OFFSETS: [u64; 16] = [
    0,
    64 * KIB,
    128 * KIB,
    192 * KIB,
    256 * KIB,
    MIB,
    MIB + 4 * KIB,
    2 * MIB,
    3 * MIB,
    3 * MIB + 64 * KIB,
    4 * MIB,
    5 * MIB,
    6 * MIB,
    8 * MIB,
    12 * MIB,
    16 * MIB,
];

/// The sparse file: (offset, bytes) of each page, in increasing offset order.
pub struct PagedStorage {
    path: PathBuf,
    pages: Vec<(u64, Vec<u8>)>,
    len: u64,
}

impl PagedStorage {
    /// Places the pages of `data` (at most `PAGE_OFFSETS.len()` of them are used).
    pub fn new(name: &str, data: &[u8]) -> Arc<dyn Storage> {
        let (extra, data) = match data.split_first() {
            Some((n, rest)) => (u64::from(*n) * MIB, rest),
            None => (0, data),
        };
        let pages: Vec<(u64, Vec<u8>)> = data
            .chunks(PAGE)
            .zip(PAGE_OFFSETS)
            .map(|(c, off)| (off, c.to_vec()))
            .collect();
        let len = pages.last().map_or(0, |(off, b)| off + b.len() as u64) + extra;
        Arc::new(PagedStorage {
            path: PathBuf::from(name),
            pages,
            len,
        })
    }

    /// A file of `len` bytes (at least `data`'s length) that starts with `data` and reads as zeros
    /// after it: a device much larger than the input without the memory, or the time to fill it.
    pub fn zero_tail(name: &str, data: &[u8], len: u64) -> Arc<dyn Storage> {
        Arc::new(PagedStorage {
            path: PathBuf::from(name),
            pages: vec![(0, data.to_vec())],
            len: len.max(data.len() as u64),
        })
    }
}

impl Storage for PagedStorage {
    fn path(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> Result<u64> {
        Ok(self.len)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let n = (self.len - offset).min(buf.len() as u64) as usize;
        let out = &mut buf[..n];
        out.fill(0);
        let end = offset + n as u64;
        for (at, bytes) in &self.pages {
            let page_end = at + bytes.len() as u64;
            if page_end <= offset || *at >= end {
                continue;
            }
            let from = offset.max(*at);
            let to = end.min(page_end);
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
        }
        Ok(n)
    }
}
