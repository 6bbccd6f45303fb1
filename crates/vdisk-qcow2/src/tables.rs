//! L1/L2 table entries and the L2 table cache: how one guest (sub)cluster maps to the host, following
//! qcow2.txt "Cluster mapping", "Standard Cluster Descriptor", "Compressed Clusters Descriptor" and
//! "Extended L2 Entries", classified the way QEMU's qcow2_get_subcluster_type does.

use crate::limits;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Host offset bits of an L1 entry (bits 9-55).
pub const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Host offset bits of a standard L2 entry (bits 9-55).
pub const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Refcount is exactly one (bit 63 of L1 and L2 entries).
pub const OFLAG_COPIED: u64 = 1 << 63;
/// Compressed cluster (bit 62 of an L2 entry).
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
/// Reads as zeros (bit 0 of a standard L2 entry, v3 without extended L2).
pub const OFLAG_ZERO: u64 = 1;
/// Subclusters per cluster with extended L2 entries.
pub const SUBCLUSTERS: u32 = 32;
/// Extended L2 bitmap with every subcluster allocated (the low half: alloc bits).
pub const L2_BITMAP_ALL_ALLOC: u64 = 0xffff_ffff;
/// Extended L2 bitmap with every subcluster zero (the high half: zero bits).
pub const L2_BITMAP_ALL_ZERO: u64 = 0xffff_ffff << 32;

/// What one guest subcluster (or cluster, without extended L2) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubType {
    /// Data at this host offset (of the subcluster's first byte).
    Normal(u64),
    /// Reads as zeros, nothing allocated.
    ZeroPlain,
    /// Reads as zeros, host space preallocated at this offset.
    ZeroAlloc(u64),
    /// Not allocated: backing image or zeros.
    UnallocPlain,
    /// Not allocated, but the host cluster is (extended L2): offset of the subcluster.
    UnallocAlloc(u64),
    /// Compressed cluster: host offset and byte count of the compressed stream.
    Compressed { offset: u64, size: u64 },
    /// An entry QEMU refuses to read ("Invalid cluster entry found").
    Invalid,
}

/// How entries are laid out for one image.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub cluster_bits: u32,
    pub extended: bool,
    pub data_file: bool,
}

impl Geometry {
    /// Bytes per mapping unit: a subcluster with extended L2, else a cluster.
    pub fn unit_bits(&self) -> u32 {
        if self.extended {
            self.cluster_bits - 5
        } else {
            self.cluster_bits
        }
    }

    /// u64 words per L2 entry.
    pub fn words_per_entry(&self) -> usize {
        if self.extended {
            2
        } else {
            1
        }
    }

    /// L2 entries per table.
    pub fn l2_entries(&self) -> u64 {
        (1u64 << self.cluster_bits) / (8 * self.words_per_entry() as u64)
    }

    /// The compressed entry for `len` (> 0) bytes of compressed data at byte offset `host`
    /// (qcow2.txt "Compressed Clusters Descriptor": the offset in bits 0..x-1, the count of
    /// 512-byte sectors after the first that the data reaches in bits x..61).
    pub fn compressed_entry(&self, host: u64, len: u64) -> u64 {
        let shift = 62 - (self.cluster_bits - 8);
        let sectors = ((host + len - 1) >> 9) - (host >> 9);
        OFLAG_COMPRESSED | (sectors << shift) | host
    }

    /// Splits a compressed entry into (host offset, compressed byte count).
    pub fn compressed(&self, entry: u64) -> (u64, u64) {
        let shift = 62 - (self.cluster_bits - 8);
        let offset = entry & ((1u64 << shift) - 1);
        let sectors = ((entry >> shift) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
        (offset, sectors * 512 - (offset & 511))
    }

    /// Classifies subcluster `sc` of an entry (`bitmap` is the second word of an extended entry).
    pub fn classify(&self, entry: u64, bitmap: u64, sc: u32) -> SubType {
        if entry & OFLAG_COMPRESSED != 0 {
            let (offset, size) = self.compressed(entry);
            return SubType::Compressed { offset, size };
        }
        let host = entry & L2E_OFFSET_MASK;
        let allocated = host != 0 || (self.data_file && entry & OFLAG_COPIED != 0);
        let sc_host = host + (u64::from(sc) << self.unit_bits());
        if !self.extended {
            // QEMU decides zero-alloc on the offset alone (COPIED does not stand for offset 0).
            return match (entry & OFLAG_ZERO != 0, allocated) {
                (true, _) if host != 0 => SubType::ZeroAlloc(host),
                (true, _) => SubType::ZeroPlain,
                (false, true) => SubType::Normal(host),
                (false, false) => SubType::UnallocPlain,
            };
        }
        let alloc_bit = bitmap & (1u64 << sc) != 0;
        let zero_bit = bitmap & (1u64 << (32 + sc)) != 0;
        if allocated {
            if (bitmap >> 32) & bitmap & 0xffff_ffff != 0 {
                SubType::Invalid
            } else if zero_bit {
                SubType::ZeroAlloc(sc_host)
            } else if alloc_bit {
                SubType::Normal(sc_host)
            } else {
                SubType::UnallocAlloc(sc_host)
            }
        } else if bitmap & 0xffff_ffff != 0 {
            SubType::Invalid
        } else if zero_bit {
            SubType::ZeroPlain
        } else {
            SubType::UnallocPlain
        }
    }
}

/// Whether `next` (for the following unit) continues the run that `cur` started `len` bytes ago.
pub fn continues(cur: SubType, len: u64, next: SubType) -> bool {
    let follows = |a: u64, b: u64| a.checked_add(len) == Some(b);
    match (cur, next) {
        (SubType::Normal(a), SubType::Normal(b))
        | (SubType::ZeroAlloc(a), SubType::ZeroAlloc(b))
        | (SubType::UnallocAlloc(a), SubType::UnallocAlloc(b)) => follows(a, b),
        (SubType::ZeroPlain, SubType::ZeroPlain)
        | (SubType::UnallocPlain, SubType::UnallocPlain) => true,
        _ => false,
    }
}

/// One L2 table as big-endian-decoded words.
pub type L2Table = Arc<[u64]>;

struct Shard {
    map: HashMap<u64, (L2Table, u64)>,
    tick: u64,
}

/// A bounded, sharded LRU cache of L2 tables keyed by their host offset. Lookups lock one shard
/// briefly; tables are loaded by the caller with no lock held.
pub struct L2Cache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl L2Cache {
    /// A cache for tables of `table_bytes` bytes within [`limits::L2_CACHE_BYTES`].
    pub fn new(table_bytes: u64) -> Self {
        let n = limits::L2_CACHE_SHARDS;
        let per_shard =
            (limits::L2_CACHE_BYTES / table_bytes.max(1) / n as u64).clamp(1, 256) as usize;
        let shards = (0..n)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::new(),
                    tick: 0,
                })
            })
            .collect();
        L2Cache { shards, per_shard }
    }

    fn shard(&self, key: u64) -> Option<&Mutex<Shard>> {
        let i = ((key >> 9).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % self.shards.len();
        self.shards.get(i)
    }

    /// The cached table at `key`, if any.
    pub fn get(&self, key: u64) -> Option<L2Table> {
        let mut s = self.shard(key)?.lock().ok()?;
        s.tick += 1;
        let t = s.tick;
        let e = s.map.get_mut(&key)?;
        e.1 = t;
        Some(Arc::clone(&e.0))
    }

    /// Stores `table` under `key`, evicting the least recently used table of its shard if full.
    pub fn insert(&self, key: u64, table: L2Table) {
        let Some(m) = self.shard(key) else { return };
        let Ok(mut s) = m.lock() else { return };
        if s.map.len() >= self.per_shard && !s.map.contains_key(&key) {
            if let Some(old) = s.map.iter().min_by_key(|(_, v)| v.1).map(|(k, _)| *k) {
                s.map.remove(&old);
            }
        }
        s.tick += 1;
        let t = s.tick;
        s.map.insert(key, (table, t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_standard_entries() {
        let g = Geometry {
            cluster_bits: 16,
            extended: false,
            data_file: false,
        };
        assert_eq!(g.classify(0, 0, 0), SubType::UnallocPlain);
        assert_eq!(g.classify(1, 0, 0), SubType::ZeroPlain);
        assert_eq!(
            g.classify(OFLAG_COPIED | 0x50000, 0, 0),
            SubType::Normal(0x50000)
        );
        assert_eq!(g.classify(0x50001, 0, 0), SubType::ZeroAlloc(0x50000));
        // 64 KiB clusters: offset in bits 0..53, (sectors - 1) in bits 54..61.
        let e = OFLAG_COMPRESSED | (3u64 << 54) | 0x1_0200;
        assert_eq!(
            g.classify(e, 0, 0),
            SubType::Compressed {
                offset: 0x1_0200,
                size: 4 * 512
            }
        );
        let d = Geometry {
            data_file: true,
            ..g
        };
        assert_eq!(d.classify(OFLAG_COPIED, 0, 0), SubType::Normal(0));
        assert_eq!(
            d.classify(OFLAG_COPIED | OFLAG_ZERO, 0, 0),
            SubType::ZeroPlain
        );
    }

    #[test]
    fn classifies_subclusters() {
        let g = Geometry {
            cluster_bits: 16,
            extended: true,
            data_file: false,
        };
        let host = 0x30000;
        let bitmap = 0b10 | (0b100u64 << 32);
        assert_eq!(g.classify(host, bitmap, 0), SubType::UnallocAlloc(host));
        assert_eq!(g.classify(host, bitmap, 1), SubType::Normal(host + 2048));
        assert_eq!(g.classify(host, bitmap, 2), SubType::ZeroAlloc(host + 4096));
        assert_eq!(g.classify(host, 1 | (1 << 32), 5), SubType::Invalid);
        assert_eq!(g.classify(0, 1, 3), SubType::Invalid);
        assert_eq!(g.classify(0, 1 << 35, 3), SubType::ZeroPlain);
        assert!(continues(SubType::Normal(100), 2048, SubType::Normal(2148)));
        assert!(!continues(
            SubType::Normal(100),
            2048,
            SubType::Normal(4096)
        ));
    }

    #[test]
    fn cache_is_bounded() {
        let c = L2Cache::new(limits::L2_CACHE_BYTES);
        for k in 0..100u64 {
            c.insert(k << 16, Arc::from(vec![k; 4]));
        }
        let held = (0..100u64).filter(|k| c.get(k << 16).is_some()).count();
        assert!(held <= limits::L2_CACHE_SHARDS, "held {held}");
        assert_eq!(c.get(99 << 16).map(|t| t[0]), Some(99));
    }
}
