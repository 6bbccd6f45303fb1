//! A test-only log writer (spec 2.3.1; the layout QEMU's `vhdx_log_write` produces): an entry
//! header "loge", its descriptors "desc" (data, with the sector's first 8 and last 4 bytes) and
//! "zero", the data sectors "data" with the sequence number split around the 4084 bytes they carry,
//! and the CRC-32C over the whole entry; placed into the circular log of an image whose headers
//! are given the log GUID.

use crate::common::Layout;
use crate::fixtures::{put32, put64, reseal};

pub const SECTOR: usize = 4096;

/// The log GUID the crafted entries carry.
pub const GUID: [u8; 16] = [0x42; 16];

/// One descriptor.
#[derive(Clone)]
pub enum Desc {
    /// A 4 KiB sector for `at`.
    Data { at: u64, sector: Vec<u8> },
    /// `len` zero bytes at `at`.
    Zero { at: u64, len: u64 },
}

/// One log entry.
#[derive(Clone)]
pub struct Entry {
    pub seq: u64,
    pub descs: Vec<Desc>,
    pub flushed: u64,
    pub last: u64,
    /// Sectors of padding after the data sectors, counted in the entry's length.
    pub pad: usize,
}

impl Entry {
    /// An entry whose FlushedFileOffset and LastFileOffset are `file_len` (as qemu writes them).
    pub fn new(seq: u64, file_len: u64, descs: Vec<Desc>) -> Entry {
        Entry {
            seq,
            descs,
            flushed: file_len,
            last: file_len,
            pad: 0,
        }
    }

    /// The entry's bytes, sealed.
    pub fn encode(&self) -> Vec<u8> {
        let n = self.descs.len();
        let desc_sectors = (n + 2).div_ceil(128);
        let data = self
            .descs
            .iter()
            .filter(|d| matches!(d, Desc::Data { .. }))
            .count();
        let total = (desc_sectors + data + self.pad) * SECTOR;
        let mut e = vec![0u8; total];
        e[..4].copy_from_slice(b"loge");
        put32(&mut e, 8, total as u32);
        put64(&mut e, 16, self.seq);
        put32(&mut e, 24, n as u32);
        e[32..48].copy_from_slice(&GUID);
        put64(&mut e, 48, self.flushed);
        put64(&mut e, 56, self.last);
        let mut k = 0;
        for (i, d) in self.descs.iter().enumerate() {
            let o = 64 + 32 * i;
            match d {
                Desc::Data { at, sector } => {
                    assert_eq!(sector.len(), SECTOR);
                    e[o..o + 4].copy_from_slice(b"desc");
                    e[o + 4..o + 8].copy_from_slice(&sector[SECTOR - 4..]);
                    e[o + 8..o + 16].copy_from_slice(&sector[..8]);
                    put64(&mut e, o + 16, *at);
                    let s = (desc_sectors + k) * SECTOR;
                    e[s..s + 4].copy_from_slice(b"data");
                    put32(&mut e, s + 4, (self.seq >> 32) as u32);
                    e[s + 8..s + SECTOR - 4].copy_from_slice(&sector[8..SECTOR - 4]);
                    put32(&mut e, s + SECTOR - 4, self.seq as u32);
                    k += 1;
                }
                Desc::Zero { at, len } => {
                    e[o..o + 4].copy_from_slice(b"zero");
                    put64(&mut e, o + 8, *len);
                    put64(&mut e, o + 16, *at);
                }
            }
            put64(&mut e, o + 24, self.seq);
        }
        reseal(&mut e, 0, total);
        e
    }
}

/// Sets both headers' log GUID to [`GUID`] (resealed).
pub fn set_log_guid(file: &mut [u8]) {
    for h in [64 << 10, 128 << 10] {
        file[h + 48..h + 64].copy_from_slice(&GUID);
        reseal(file, h, 4096);
    }
}

/// The offset of the header qemu uses (64 KiB or 128 KiB) and of the other one.
pub fn header_offsets(file: &[u8]) -> (usize, usize) {
    let (h1, h2) = (&file[64 << 10..68 << 10], &file[128 << 10..132 << 10]);
    let (i, _) = vdisk_vhdx::header::choose(h1, h2).unwrap();
    if i == 0 {
        (64 << 10, 128 << 10)
    } else {
        (128 << 10, 64 << 10)
    }
}

/// Sets only the current header's log GUID to [`GUID`] (resealed): the other one keeps a zero log
/// GUID, as a header from before the log was started would.
pub fn set_current_log_guid(file: &mut [u8]) {
    let h = header_offsets(file).0;
    file[h + 48..h + 64].copy_from_slice(&GUID);
    reseal(file, h, 4096);
}

/// Writes `bytes` into the circular log (at `log` in the file, `len` long) from `at`, wrapping.
pub fn put_in_log(file: &mut [u8], log: usize, len: usize, at: usize, bytes: &[u8]) {
    for (i, chunk) in bytes.chunks(SECTOR).enumerate() {
        let pos = log + (at + i * SECTOR) % len;
        file[pos..pos + chunk.len()].copy_from_slice(chunk);
    }
}

/// A 4 KiB sector whose every byte is `b`, with distinct first 8 and last 4 bytes (so that a
/// replay that forgot to restore them from the descriptor shows).
pub fn sector(b: u8) -> Vec<u8> {
    let mut s = vec![b; SECTOR];
    s[..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, b]);
    s[SECTOR - 4..].copy_from_slice(&[9, 8, 7, b]);
    s
}

/// The base image's bytes with `entries` placed in the log at the given log offsets and the
/// headers' log GUID set.
pub fn with_log(base: &[u8], l: &Layout, entries: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let mut b = base.to_vec();
    set_log_guid(&mut b);
    for (at, e) in entries {
        put_in_log(&mut b, l.log, l.log_len, *at, e);
    }
    b
}
