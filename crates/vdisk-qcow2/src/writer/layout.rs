//! L2 entries as the writer produces them (qcow2.txt "Cluster mapping", "Extended L2 Entries",
//! "Compressed Clusters Descriptor") and where preallocated images put their clusters.

use super::settings::Settings;

/// L1/L2 entry bit 63: the cluster's refcount is exactly one.
pub const COPIED: u64 = 1 << 63;
/// L2 entry bit 62: the cluster is compressed.
pub const COMPRESSED: u64 = 1 << 62;
/// Standard L2 entry bit 0 (v3): the cluster reads as zeros.
pub const ZERO: u64 = 1;
/// Extended L2 bitmap: all 32 subclusters allocated.
pub const SUB_ALLOCATED: u64 = 0xffff_ffff;
/// Extended L2 bitmap: all 32 subclusters read as zeros.
pub const SUB_ZERO: u64 = 0xffff_ffff << 32;

/// One L2 entry: the standard 64-bit descriptor and, with extended L2, the subcluster bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    pub desc: u64,
    pub bitmap: u64,
}

impl Entry {
    /// A normal cluster at `host` (in the image, or in the external data file), fully allocated.
    pub fn data(s: &Settings, host: u64) -> Entry {
        Entry {
            desc: host | COPIED,
            bitmap: if s.extended_l2 { SUB_ALLOCATED } else { 0 },
        }
    }

    /// A cluster reading as zeros that hides the backing file. With extended L2 a preallocated host
    /// cluster (`host != 0`) stays attached, its subclusters marked zero.
    pub fn zero(s: &Settings, host: u64) -> Entry {
        if s.extended_l2 {
            Entry {
                desc: if host != 0 { host | COPIED } else { 0 },
                bitmap: SUB_ZERO,
            }
        } else {
            Entry {
                desc: ZERO,
                bitmap: 0,
            }
        }
    }

    /// A preallocated cluster not written yet. With extended L2 its subclusters are unallocated
    /// (reads go to the backing file, or zeros), as qemu's metadata preallocation leaves them; with
    /// standard entries it is a normal cluster over a hole of the file.
    pub fn preallocated(s: &Settings, host: u64) -> Entry {
        if s.extended_l2 {
            Entry {
                desc: host | COPIED,
                bitmap: 0,
            }
        } else {
            Entry::data(s, host)
        }
    }

    /// A compressed cluster of `len` bytes at byte offset `host` (qcow2.txt "Compressed Clusters
    /// Descriptor": offset in bits 0..x-1, additional 512-byte sectors in x..61, x = 62 - (bits - 8)).
    pub fn compressed(s: &Settings, host: u64, len: u64) -> Entry {
        let x = 62 - (s.cluster_bits - 8);
        let sectors = ((host + len - 1) >> 9) - (host >> 9);
        Entry {
            desc: host | (sectors << x) | COMPRESSED,
            bitmap: 0,
        }
    }
}

/// One L2 table being filled, for guest region `region` (one L1 entry's worth of clusters).
#[derive(Debug)]
pub struct L2Table {
    pub region: u64,
    /// Where the table goes in the image (reserved before the region's data).
    pub host: u64,
    bytes: Vec<u8>,
    extended: bool,
}

impl L2Table {
    /// An empty table (every cluster unallocated) to be stored at `host`.
    pub fn new(s: &Settings, region: u64, host: u64) -> L2Table {
        L2Table {
            region,
            host,
            bytes: vec![0; s.cluster_size() as usize],
            extended: s.extended_l2,
        }
    }

    /// A table read back from the image (`bytes` is one cluster).
    pub fn from_bytes(s: &Settings, region: u64, host: u64, bytes: Vec<u8>) -> L2Table {
        L2Table {
            region,
            host,
            bytes,
            extended: s.extended_l2,
        }
    }

    /// Whether entry `index` was never set.
    pub fn is_unset(&self, index: u64) -> bool {
        let w = if self.extended { 16 } else { 8 };
        let at = index as usize * w;
        self.bytes[at..at + w].iter().all(|b| *b == 0)
    }

    /// Sets entry `index` (< entries per table).
    pub fn set(&mut self, index: u64, e: Entry) {
        let w = if self.extended { 16 } else { 8 };
        let at = index as usize * w;
        self.bytes[at..at + 8].copy_from_slice(&e.desc.to_be_bytes());
        if self.extended {
            self.bytes[at + 8..at + 16].copy_from_slice(&e.bitmap.to_be_bytes());
        }
    }

    /// The table as stored.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Where a preallocated image (no external data file) keeps its clusters, from cluster `base` on.
/// As in qemu's own images: with `preallocation=metadata` each region's L2 table is followed by the
/// region's data clusters; with `falloc` and `full` the data of the whole disk is one contiguous
/// run, followed by the L2 tables.
#[derive(Debug, Clone, Copy)]
pub struct PreallocLayout {
    pub cluster_bits: u32,
    pub base: u64,
    pub entries: u64,
    pub regions: u64,
    pub guest_clusters: u64,
    pub contiguous: bool,
}

impl PreallocLayout {
    pub fn new(s: &Settings, base: u64, contiguous: bool) -> Self {
        PreallocLayout {
            cluster_bits: s.cluster_bits,
            base,
            entries: s.l2_entries(),
            regions: s.l1_entries(),
            guest_clusters: s.guest_clusters(),
            contiguous,
        }
    }

    /// Host offset of guest cluster `g`'s data.
    pub fn data_host(&self, g: u64) -> u64 {
        let c = if self.contiguous {
            self.base + g
        } else {
            self.base + 1 + g / self.entries + g
        };
        c << self.cluster_bits
    }

    /// Host offset of region `r`'s L2 table.
    pub fn l2_host(&self, r: u64) -> u64 {
        let c = if self.contiguous {
            self.base + self.guest_clusters + r
        } else {
            self.base + r * (1 + self.entries)
        };
        c << self.cluster_bits
    }

    /// Clusters the layout occupies.
    pub fn clusters(&self) -> u64 {
        self.regions + self.guest_clusters
    }

    /// Whether the last guest cluster's data ends the layout.
    pub fn data_last(&self) -> bool {
        !self.contiguous
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdisk_core::CreateOptions;

    #[test]
    fn compressed_descriptor_counts_extra_sectors() {
        let s = Settings::parse(1 << 20, &CreateOptions::new()).unwrap();
        // 64 KiB clusters: x = 54.
        let e = Entry::compressed(&s, 0x10000 + 500, 20);
        assert_eq!(e.desc, COMPRESSED | (1 << 54) | (0x10000 + 500));
        assert_eq!(
            Entry::compressed(&s, 0x10000, 512).desc,
            COMPRESSED | 0x10000
        );
    }

    #[test]
    fn prealloc_layout_interleaves_tables_and_data() {
        let s = Settings::parse(
            3 << 20,
            &CreateOptions::parse(&["cluster_size=4k"]).unwrap(),
        )
        .unwrap();
        // qemu-img map of `create -o preallocation=metadata,cluster_size=4k` (3 MiB) shows the data
        // of guest cluster 0 at 20480 after header, refcount table, refcount block, L1 and L2, and
        // that of guest cluster 512 at 2121728, after the second L2 table.
        let l = PreallocLayout::new(&s, 4, false);
        assert_eq!(l.l2_host(0), 16384);
        assert_eq!(l.data_host(0), 20480);
        assert_eq!(l.data_host(512), 2121728);
        assert_eq!(l.l2_host(1), 2121728 - 4096);
        assert_eq!(l.clusters(), 2 + 768);
        // With falloc, qemu's data is one run and the L2 tables follow.
        let l = PreallocLayout::new(&s, 5, true);
        assert_eq!(l.data_host(0), 20480);
        assert_eq!(l.data_host(767), 20480 + 767 * 4096);
        assert_eq!(l.l2_host(0), 20480 + 768 * 4096);
    }
}
