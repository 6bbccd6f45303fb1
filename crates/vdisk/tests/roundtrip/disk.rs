//! The random source disk of the round-trip properties: a raw file of a few hundred KiB to 8 MiB
//! (sometimes not a multiple of 512) built from a list of extents, each pseudo-random data,
//! compressible patterned data, data with zero runs inside, explicit zeros or a punched hole, at
//! offsets that are often unaligned, cross cluster boundaries or touch the end of the disk.

use proptest::prelude::*;
use proptest::sample::select;
use std::fmt;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

pub const K: u64 = 1024;
pub const M: u64 = 1024 * 1024;

/// What one extent holds. The bytes depend on the seed and the absolute disk offset only, so that
/// a shrunk case keeps the same content where its extents remain.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fill {
    /// Pseudo-random bytes (incompressible).
    Random(u8),
    /// One byte value per sector, stamped with the sector number (compresses well).
    Pattern(u8),
    /// Patterned data with 8 KiB zero runs every 16 KiB: zeros inside data, for `-S`.
    Gappy(u8),
    /// Explicit zero bytes, allocated in the raw file.
    Zeros,
    /// A hole punched into the raw file (reads as zeros, unallocated).
    Hole,
}

/// One extent of the source, applied in list order (later ones win).
#[derive(Clone, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    pub fill: Fill,
}

impl fmt::Debug for Extent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} @{:#x}+{:#x} (..{:#x})",
            self.fill,
            self.offset,
            self.len,
            self.offset + self.len
        )
    }
}

/// A source disk: the raw file's length (not always a multiple of 512) and its extents.
#[derive(Clone, PartialEq, Eq)]
pub struct Disk {
    pub len: u64,
    pub extents: Vec<Extent>,
}

impl fmt::Debug for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Disk {{ len: {} ({:#x}), extents: [", self.len, self.len)?;
        for e in &self.extents {
            writeln!(f, "    {e:?},")?;
        }
        write!(f, "] }}")
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The bytes of `fill` at disk offset `offset` (`buf.len()` of them).
pub fn fill_bytes(fill: Fill, offset: u64, buf: &mut [u8]) {
    match fill {
        Fill::Zeros | Fill::Hole => buf.fill(0),
        Fill::Random(seed) => {
            let key = u64::from(seed) << 56;
            let mut word = u64::MAX;
            let mut cached = 0u64;
            for (i, b) in buf.iter_mut().enumerate() {
                let pos = offset + i as u64;
                if pos / 8 != word {
                    word = pos / 8;
                    cached = splitmix(key ^ word);
                }
                *b = cached.to_le_bytes()[(pos % 8) as usize];
            }
        }
        Fill::Pattern(seed) | Fill::Gappy(seed) => {
            for (i, b) in buf.iter_mut().enumerate() {
                let pos = offset + i as u64;
                let gap = matches!(fill, Fill::Gappy(_)) && pos % (16 * K) >= 8 * K;
                *b = if gap {
                    0
                } else if pos % 512 < 8 {
                    // A stamp with the sector number, so that no two sectors are alike.
                    ((pos / 512) >> ((pos % 8) * 8)) as u8
                } else {
                    // Never 0, so that a patterned sector is never all zeros.
                    seed.wrapping_add((pos / 512) as u8) | 1
                };
            }
        }
    }
}

/// Disk lengths: mostly 512-byte multiples from 300 KiB to 8 MiB (smaller ones more often), some
/// lengths that are not multiples of 512, and lengths at and around powers of two.
pub fn disk_len() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => (600u64..4096).prop_map(|s| s * 512),
        1 => (4096u64..16384).prop_map(|s| s * 512),
        1 => 300 * K..8 * M,
        // Just at and around the sizes where tables, grains and clusters fill up.
        1 => (select(vec![512 * K, M, 2 * M, 4 * M, 8 * M]), select(vec![-512i64, -1, 0, 1, 512]))
            .prop_map(|(l, d)| l.saturating_add_signed(d)),
    ]
}

/// Where an extent starts, before it is fitted to the disk.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// Any byte offset (a fraction of the disk, in 1/65536ths).
    Byte(u64),
    /// A sector, as a fraction of the disk.
    Sector(u64),
    /// `delta` bytes from the `n`th multiple of `boundary` (cluster and grain boundaries).
    Near { boundary: u64, n: u64, delta: i64 },
    /// Ends exactly at the end of the disk.
    End,
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        3 => (0u64..65536).prop_map(Place::Byte),
        2 => (0u64..65536).prop_map(Place::Sector),
        3 => (
            select(vec![4 * K, 16 * K, 64 * K, M, 2 * M]),
            0u64..128,
            prop_oneof![Just(0i64), -2048i64..2048],
        )
            .prop_map(|(boundary, n, delta)| Place::Near { boundary, n, delta }),
        1 => Just(Place::End),
    ]
}

fn extent_len() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => 1u64..4096,
        4 => 4096u64..256 * K,
        1 => 256 * K..2 * M,
    ]
}

fn fill() -> impl Strategy<Value = Fill> {
    prop_oneof![
        3 => any::<u8>().prop_map(Fill::Random),
        3 => any::<u8>().prop_map(Fill::Pattern),
        1 => any::<u8>().prop_map(Fill::Gappy),
        2 => Just(Fill::Zeros),
        2 => Just(Fill::Hole),
    ]
}

/// Fits an extent to a disk of `disk_len` bytes.
fn fit(disk_len: u64, place: Place, len: u64, fill: Fill) -> Extent {
    let offset = match place {
        Place::Byte(f) => disk_len * f / 65536,
        Place::Sector(f) => (disk_len / 512) * f / 65536 * 512,
        Place::Near { boundary, n, delta } => {
            let b = boundary * (n % (disk_len / boundary + 1));
            b.saturating_add_signed(delta)
        }
        Place::End => disk_len.saturating_sub(len),
    }
    .min(disk_len - 1);
    let len = len.min(disk_len - offset).max(1);
    Extent { offset, len, fill }
}

/// A random source disk of 1 to 14 extents.
pub fn disk() -> impl Strategy<Value = Disk> {
    (
        disk_len(),
        prop::collection::vec((place(), extent_len(), fill()), 1..14),
    )
        .prop_map(|(len, raw)| Disk {
            len,
            extents: raw.into_iter().map(|(p, l, f)| fit(len, p, l, f)).collect(),
        })
}

fn punch_hole(file: &std::fs::File, offset: u64, len: u64) -> bool {
    let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return false;
    };
    // SAFETY: fallocate on an open file descriptor with plain integer arguments.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            n,
        )
    };
    r == 0
}

impl Disk {
    /// Writes the disk as a raw file at `path`, over `base` (the content of a backing image, cut or
    /// zero-padded to this disk's length) when given, and returns the file's expected content.
    pub fn write_raw(&self, path: &Path, base: Option<&[u8]>) -> std::io::Result<Vec<u8>> {
        let len = self.len as usize;
        let file = std::fs::File::create(path)?;
        file.set_len(self.len)?;
        let mut content = vec![0u8; len];
        if let Some(base) = base {
            let n = base.len().min(len);
            content[..n].copy_from_slice(&base[..n]);
            // Copy only the non-zero blocks, so that the file stays sparse where the base is.
            for (i, block) in content.chunks(4096).enumerate() {
                if block.iter().any(|b| *b != 0) {
                    file.write_all_at(block, (i * 4096) as u64)?;
                }
            }
        }
        for e in &self.extents {
            let range = e.offset as usize..(e.offset + e.len) as usize;
            fill_bytes(e.fill, e.offset, &mut content[range.clone()]);
            if e.fill == Fill::Hole && punch_hole(&file, e.offset, e.len) {
                continue;
            }
            file.write_all_at(&content[range], e.offset)?;
        }
        file.sync_all()?;
        Ok(content)
    }
}
