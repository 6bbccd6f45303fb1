//! Writing one hosted sparse extent ("Hosted Sparse Extent Header", "Grain Directories and Grain
//! Tables" of Virtual Disk Format 1.1) in qemu-img's layout: header, embedded descriptor area (20
//! sectors), redundant grain directory and tables, grain directory and tables (all preallocated), then
//! grains appended as they are written.

use crate::header::{SparseHeader, FLAG_NL_DETECT, FLAG_RGD, FLAG_ZERO_GRAIN};
use crate::limits::SECTOR;
use std::collections::BTreeMap;
use vdisk_core::{Error, FileStorage, OutputFile, Payload, Result, Storage};

/// Sectors per grain vdisk writes (64 KiB, as VMware and qemu do).
pub const GRAIN_SECTORS: u64 = 128;
/// Grain table entries per table (fixed by the spec).
pub const GTES: u64 = 512;
/// Sectors reserved for the embedded descriptor (qemu and VMware reserve 20).
pub const DESCRIPTOR_SECTORS: u64 = 20;
/// Grain table entries are u32 sector numbers: a sparse extent file cannot grow past this many sectors.
const MAX_FILE_SECTORS: u64 = u32::MAX as u64;

/// How zero runs must be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroMode {
    /// Nothing to do: unallocated grains read as zeros (no backing file).
    Skip,
    /// Mark the grain as zeroed (GTE 1, zeroed_grain=on) so it hides the backing file.
    ZeroGrain,
    /// Write zero-filled grains (backing file without zeroed-grain support).
    WriteZeros,
}

/// A sparse extent being written.
pub struct SparseOut {
    out: OutputFile,
    storage: FileStorage,
    header: SparseHeader,
    descriptor: Option<Vec<u8>>,
    rgt_start: u64,
    gt_start: u64,
    /// Grain table entries set so far, by grain table index.
    tables: BTreeMap<u64, Vec<u32>>,
    next_sector: u64,
    zero: ZeroMode,
}

impl SparseOut {
    /// Prepares a sparse extent of `capacity` sectors in `out`, with `descriptor` embedded if given.
    pub fn new(
        out: OutputFile,
        capacity: u64,
        descriptor: Option<String>,
        zero: ZeroMode,
    ) -> Result<Self> {
        let storage = out.storage();
        let gd_entries = capacity.div_ceil(GRAIN_SECTORS * GTES);
        let gd_sectors = (gd_entries * 4).div_ceil(SECTOR);
        let gt_sectors = gd_entries * GTES * 4 / SECTOR;
        let desc_sectors = match &descriptor {
            Some(d) => (d.len() as u64 + 1)
                .div_ceil(SECTOR)
                .max(DESCRIPTOR_SECTORS),
            None => DESCRIPTOR_SECTORS,
        };
        let rgd = 1 + desc_sectors;
        let rgt_start = rgd + gd_sectors;
        let gd = rgt_start + gt_sectors;
        let gt_start = gd + gd_sectors;
        let overhead = (gt_start + gt_sectors).div_ceil(GRAIN_SECTORS) * GRAIN_SECTORS;
        if overhead >= MAX_FILE_SECTORS {
            return Err(Error::invalid(format!(
                "a VMDK sparse extent of {capacity} sectors is too large (its tables would pass 2 TiB)"
            )));
        }
        let zero_grain = zero == ZeroMode::ZeroGrain;
        let header = SparseHeader {
            version: if zero_grain { 2 } else { 1 },
            flags: FLAG_NL_DETECT | FLAG_RGD | if zero_grain { FLAG_ZERO_GRAIN } else { 0 },
            capacity,
            grain_size: GRAIN_SECTORS,
            descriptor_offset: if descriptor.is_some() { 1 } else { 0 },
            descriptor_size: if descriptor.is_some() {
                desc_sectors
            } else {
                0
            },
            num_gtes_per_gt: GTES as u32,
            rgd_offset: rgd,
            gd_offset: gd,
            overhead,
            unclean_shutdown: false,
            compress_algorithm: 0,
        };
        let descriptor = descriptor.map(String::into_bytes);
        Ok(SparseOut {
            out,
            storage,
            header,
            descriptor,
            rgt_start,
            gt_start,
            tables: BTreeMap::new(),
            next_sector: overhead,
            zero,
        })
    }

    fn set_gte(&mut self, grain: u64, value: u32) {
        let t = self
            .tables
            .entry(grain / GTES)
            .or_insert_with(|| vec![0u32; GTES as usize]);
        t[(grain % GTES) as usize] = value;
    }

    fn gte(&self, grain: u64) -> u32 {
        self.tables
            .get(&(grain / GTES))
            .map_or(0, |t| t[(grain % GTES) as usize])
    }

    /// Stores one grain's worth (or the tail) of data for grain number `grain`.
    fn put_grain(&mut self, grain: u64, data: &[u8]) -> Result<()> {
        let gbytes = (GRAIN_SECTORS * SECTOR) as usize;
        let existing = self.gte(grain);
        let sector = if existing > 1 {
            u64::from(existing)
        } else {
            let s = self.next_sector;
            if s + GRAIN_SECTORS > MAX_FILE_SECTORS {
                return Err(Error::Other(format!(
                    "{}: VMDK sparse extent grew past 2 TiB",
                    self.out.dest().display()
                )));
            }
            self.next_sector += GRAIN_SECTORS;
            self.set_gte(grain, s as u32);
            s
        };
        let data: std::borrow::Cow<[u8]> = if data.len() < gbytes {
            let mut v = data.to_vec();
            v.resize(gbytes, 0);
            std::borrow::Cow::Owned(v)
        } else {
            std::borrow::Cow::Borrowed(data)
        };
        self.storage.write_at(&data, sector * SECTOR)
    }

    /// Stores `payload` at extent byte `off` (grain aligned, as the writer's granularity guarantees).
    pub fn write(&mut self, off: u64, payload: Payload) -> Result<()> {
        let g = GRAIN_SECTORS * SECTOR;
        if off % g != 0 {
            return Err(Error::invalid(format!(
                "VMDK sparse write at {off} is not grain aligned"
            )));
        }
        match payload {
            // Data is stored as data grains even when it is all zeros, as qemu's vmdk driver does:
            // the conversion hands zero runs over as `Zero` unless told not to (`-S 0`, or `-S`
            // above the grain size), and then qemu-img allocates them too.
            Payload::Data(d) => {
                for (i, chunk) in d.chunks(g as usize).enumerate() {
                    self.put_grain(off / g + i as u64, chunk)?;
                }
            }
            Payload::Zero(n) => {
                let first = off / g;
                for grain in first..first + n.div_ceil(g) {
                    match self.zero {
                        ZeroMode::Skip if self.gte(grain) == 0 => {}
                        ZeroMode::ZeroGrain if self.gte(grain) <= 1 => self.set_gte(grain, 1),
                        _ => self.put_grain(grain, &[])?,
                    }
                }
            }
            Payload::Encoded(_) => {
                return Err(Error::invalid("VMDK sparse extents take no encoded chunks"))
            }
            Payload::Copy(_) => {
                return Err(Error::invalid(
                    "VMDK sparse extents: copy offloading is not supported",
                ))
            }
        }
        Ok(())
    }

    /// Writes the tables, header and descriptor and renames the file into place.
    pub fn finish(self) -> Result<()> {
        let h = &self.header;
        let gd_entries = h.gd_entries();
        let st = &self.storage;
        let end = self.next_sector * SECTOR;
        st.set_len(end)?;
        let mut gd = Vec::with_capacity(gd_entries as usize * 4);
        let mut rgd = Vec::with_capacity(gd_entries as usize * 4);
        for i in 0..gd_entries {
            gd.extend_from_slice(&((self.gt_start + i * 4) as u32).to_le_bytes());
            rgd.extend_from_slice(&((self.rgt_start + i * 4) as u32).to_le_bytes());
        }
        st.write_at(&gd, h.gd_offset * SECTOR)?;
        st.write_at(&rgd, h.rgd_offset * SECTOR)?;
        for (idx, t) in &self.tables {
            let bytes: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
            st.write_at(&bytes, (self.gt_start + idx * 4) * SECTOR)?;
            st.write_at(&bytes, (self.rgt_start + idx * 4) * SECTOR)?;
        }
        if let Some(d) = &self.descriptor {
            st.write_at(d, SECTOR)?;
        }
        st.write_at(&h.to_bytes(), 0)?;
        self.out.commit()
    }
}
