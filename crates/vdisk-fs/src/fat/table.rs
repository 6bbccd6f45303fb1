//! The file allocation table (fatgen103 section 4): 12-, 16- or 28-bit entries chaining each
//! cluster to the next, free (0), bad, or end of chain. Only the first FAT is read, as the
//! Linux driver reads it. Chains are followed at most as many steps as the volume has
//! clusters, so a chain that loops ends in an error.

use super::bpb::{FatType, Layout};
use crate::device::Device;
use crate::limits::FAT_CACHE_CHUNK;
use std::sync::Mutex;
use vdisk_core::Result;

/// What a FAT entry says of the cluster after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Cluster(u32),
    End,
    Free,
    Bad,
}

/// The FAT, read through a one-chunk cache.
pub struct Table {
    cache: Mutex<Option<(u64, Vec<u8>)>>,
}

impl Table {
    pub fn new() -> Table {
        Table {
            cache: Mutex::new(None),
        }
    }

    /// Bytes `off..off + n` of the FAT (n ≤ 4, inside the FAT).
    fn fat_bytes(&self, dev: &Device, l: &Layout, off: u64, out: &mut [u8]) -> Result<()> {
        for (k, o) in out.iter_mut().enumerate() {
            let at = off + k as u64;
            let chunk = at / FAT_CACHE_CHUNK;
            let mut guard = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if guard.as_ref().is_none_or(|(c, _)| *c != chunk) {
                let start = chunk * FAT_CACHE_CHUNK;
                let len = FAT_CACHE_CHUNK.min(l.fat_bytes.saturating_sub(start)) as usize;
                let data = dev.read_vec(l.fat_offset + start, len, "FAT")?;
                *guard = Some((chunk, data));
            }
            let (_, data) = guard
                .as_ref()
                .ok_or_else(|| dev.corrupt(None, "FAT cache"))?;
            *o = data
                .get((at % FAT_CACHE_CHUNK) as usize)
                .copied()
                .unwrap_or(0);
        }
        Ok(())
    }

    /// The raw entry of cluster `c`.
    pub fn entry(&self, dev: &Device, l: &Layout, c: u32) -> Result<u32> {
        let c64 = u64::from(c);
        let mut b = [0u8; 4];
        Ok(match l.fat_type {
            FatType::Fat12 => {
                self.fat_bytes(dev, l, c64 + c64 / 2, &mut b[..2])?;
                let v = u16::from_le_bytes([b[0], b[1]]);
                u32::from(if c & 1 == 1 { v >> 4 } else { v & 0xFFF })
            }
            FatType::Fat16 => {
                self.fat_bytes(dev, l, c64 * 2, &mut b[..2])?;
                u32::from(u16::from_le_bytes([b[0], b[1]]))
            }
            FatType::Fat32 => {
                self.fat_bytes(dev, l, c64 * 4, &mut b)?;
                u32::from_le_bytes(b) & 0x0FFF_FFFF
            }
        })
    }

    /// What follows cluster `c` (2 ≤ c < clusters + 2).
    pub fn next(&self, dev: &Device, l: &Layout, c: u32) -> Result<Next> {
        let v = self.entry(dev, l, c)?;
        let (bad, eoc) = match l.fat_type {
            FatType::Fat12 => (0xFF7, 0xFF8),
            FatType::Fat16 => (0xFFF7, 0xFFF8),
            FatType::Fat32 => (0x0FFF_FFF7, 0x0FFF_FFF8),
        };
        Ok(match v {
            0 => Next::Free,
            v if v >= eoc => Next::End,
            v if v == bad => Next::Bad,
            v if v >= 2 && u64::from(v) < l.clusters + 2 => Next::Cluster(v),
            // 1, or a cluster number past the volume: as the Linux driver, a corruption.
            _ => Next::Bad,
        })
    }

    /// Free clusters: entries 2..clusters + 2 that are 0 (what the Linux driver counts at
    /// statfs time, unless mounted with `usefree`).
    pub fn count_free(&self, dev: &Device, l: &Layout) -> Result<u64> {
        let width = match l.fat_type {
            FatType::Fat12 => {
                let mut free = 0;
                for c in 2..l.clusters + 2 {
                    if self.entry(dev, l, c as u32)? == 0 {
                        free += 1;
                    }
                }
                return Ok(free);
            }
            FatType::Fat16 => 2u64,
            FatType::Fat32 => 4u64,
        };
        // FAT16/32: whole entries, streamed in chunks.
        let (mut free, mut c) = (0u64, 2u64);
        let end = l.clusters + 2;
        while c < end {
            let n = (FAT_CACHE_CHUNK / width).min(end - c);
            let data = dev.read_vec(l.fat_offset + c * width, (n * width) as usize, "FAT")?;
            free += data
                .chunks_exact(width as usize)
                .filter(|e| match width {
                    2 => e[0] == 0 && e[1] == 0,
                    _ => u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & 0x0FFF_FFFF == 0,
                })
                .count() as u64;
            c += n;
        }
        Ok(free)
    }
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}
