//! The FAT boot sector's BIOS Parameter Block (fatgen103 section 3: the common BPB, then the
//! FAT12/16 or FAT32 extended fields) and the layout it implies: reserved sectors, the FATs,
//! the FAT12/16 root directory region, the data region and its clusters. The FAT type is chosen
//! as the Linux driver chooses it: FAT32 when `BPB_FATSz16` is 0, else FAT12 below 4085
//! clusters (fatgen103's rule) and FAT16 from there.

use crate::bytes::{bytes_at, u16_at, u32_at, u8_at};
use crate::device::Device;
use crate::limits::{FAT32_MAX_CLUSTERS, FAT_MAX_SECTOR_SIZE};
use vdisk_core::Result;

/// FAT entry width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

/// The checked layout of a FAT volume, in bytes where it says so.
#[derive(Debug, Clone)]
pub struct Layout {
    pub fat_type: FatType,
    pub sector_size: u64,
    pub cluster_size: u64,
    /// Byte offset of the first FAT, and its length in bytes.
    pub fat_offset: u64,
    pub fat_bytes: u64,
    /// FAT12/16: the root directory region (byte offset, entries). FAT32: unused.
    pub root_offset: u64,
    pub root_entries: u64,
    /// FAT32: the root directory's first cluster.
    pub root_cluster: u32,
    /// Byte offset of cluster 2.
    pub data_offset: u64,
    /// Clusters in the data region (valid cluster numbers are 2..clusters + 2).
    pub clusters: u64,
    pub serial: u32,
    /// `BS_VolLab`, the boot sector's label (blkid's LABEL_FATBOOT).
    pub boot_label: [u8; 11],
}

/// Whether a media byte is one FAT allows (0xF0, 0xF8-0xFF).
fn valid_media(m: u8) -> bool {
    m == 0xF0 || m >= 0xF8
}

/// Whether sector 0 looks like a FAT boot sector: the 0x55AA signature and a plausible BPB
/// (sizes powers of two, reserved sectors and FATs present, a valid media byte).
pub fn looks_like_fat(b: &[u8]) -> bool {
    let ss = u16_at(b, 11);
    let spc = u8_at(b, 13);
    u16_at(b, 510) == 0xAA55
        && ss.is_power_of_two()
        && (512..=FAT_MAX_SECTOR_SIZE as u16).contains(&ss)
        && spc.is_power_of_two()
        && u16_at(b, 14) != 0
        && u8_at(b, 16) != 0
        && valid_media(u8_at(b, 21))
        && (u16_at(b, 22) != 0 || u32_at(b, 36) != 0)
}

impl Layout {
    /// Parses and checks the boot sector `b` (at least 512 bytes) of a device of `dev.size()`.
    pub fn parse(dev: &Device, b: &[u8]) -> Result<Layout> {
        let bad = |what: String| dev.corrupt(Some(0), format!("boot sector: {what}"));
        if !looks_like_fat(b) {
            return Err(bad("no FAT BIOS parameter block".into()));
        }
        let sector_size = u64::from(u16_at(b, 11));
        let spc = u64::from(u8_at(b, 13));
        let reserved = u64::from(u16_at(b, 14));
        let fats = u64::from(u8_at(b, 16));
        let root_entries = u64::from(u16_at(b, 17));
        let tot16 = u64::from(u16_at(b, 19));
        let fat16_len = u64::from(u16_at(b, 22));
        let tot32 = u64::from(u32_at(b, 32));
        let fat32_len = u64::from(u32_at(b, 36));
        let is32 = fat16_len == 0;
        let fat_len = if is32 { fat32_len } else { fat16_len };
        let total = if tot16 != 0 { tot16 } else { tot32 };
        let root_bytes = root_entries * 32;
        if is32 && root_entries != 0 {
            return Err(bad(format!("FAT32 with {root_entries} root entries")));
        }
        if !is32 && (root_entries == 0 || root_bytes % sector_size != 0) {
            return Err(bad(format!("{root_entries} root directory entries")));
        }
        let fat_offset = reserved * sector_size;
        let root_offset = fat_offset + fats * fat_len * sector_size;
        let data_offset = root_offset + root_bytes;
        let total_bytes = total * sector_size;
        if data_offset >= total_bytes {
            return Err(bad(format!(
                "the data region starts at byte {data_offset}, past the volume's {total_bytes}"
            )));
        }
        if total_bytes > dev.size() {
            return Err(bad(format!(
                "{total} sectors of {sector_size} bytes do not fit in the device's {} bytes",
                dev.size()
            )));
        }
        let cluster_size = sector_size * spc;
        let clusters = (total_bytes - data_offset) / cluster_size;
        let fat_type = if is32 {
            FatType::Fat32
        } else if clusters <= 4084 {
            FatType::Fat12
        } else {
            FatType::Fat16
        };
        let max = match fat_type {
            FatType::Fat12 => 4084,
            FatType::Fat16 => 65524,
            FatType::Fat32 => FAT32_MAX_CLUSTERS,
        };
        if clusters == 0 || clusters > max {
            return Err(bad(format!("{clusters} clusters for {fat_type:?}")));
        }
        // The FAT must have an entry for every cluster (and the two reserved ones).
        let fat_bytes = fat_len * sector_size;
        let bits = match fat_type {
            FatType::Fat12 => 12,
            FatType::Fat16 => 16,
            FatType::Fat32 => 32,
        };
        if fat_bytes * 8 / bits < clusters + 2 {
            return Err(bad(format!(
                "a FAT of {fat_bytes} bytes is too small for {clusters} clusters"
            )));
        }
        let (serial_at, label_at) = if is32 { (67, 71) } else { (39, 43) };
        let mut boot_label = [0u8; 11];
        boot_label.copy_from_slice(bytes_at(b, label_at, 11));
        let root_cluster = if is32 { u32_at(b, 44) } else { 0 };
        if is32 && (root_cluster < 2 || u64::from(root_cluster) >= clusters + 2) {
            return Err(bad(format!("root cluster {root_cluster}")));
        }
        Ok(Layout {
            fat_type,
            sector_size,
            cluster_size,
            fat_offset,
            fat_bytes,
            root_offset,
            root_entries,
            root_cluster,
            data_offset,
            clusters,
            serial: u32_at(b, serial_at),
            boot_label,
        })
    }

    /// The byte offset of cluster `c` (2 ≤ c < clusters + 2).
    pub fn cluster_offset(&self, c: u32) -> u64 {
        self.data_offset + (u64::from(c) - 2) * self.cluster_size
    }
}
