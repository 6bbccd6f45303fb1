//! Writing a streamOptimized extent ("Stream-Optimized Compressed Sparse Extents", Virtual Disk Format
//! 1.1): version 3 header with gdOffset = GD_AT_END and the embedded descriptor, then in guest order
//! each grain as a grain marker (LBA, size) and a zlib/deflate stream padded to a sector, each grain
//! table after its grains behind a GT marker, then the GD marker and grain directory, the footer marker
//! and footer (the header with the real gdOffset), and the end-of-stream marker, as ESXi imports it.

use crate::header::{
    Marker, SparseHeader, COMPRESS_DEFLATE, FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NL_DETECT,
    GD_AT_END, GRAIN_MARKER_SIZE, MARKER_FOOTER, MARKER_GD, MARKER_GT,
};
use crate::limits::SECTOR;
use crate::sparse_out::{DESCRIPTOR_SECTORS, GRAIN_SECTORS, GTES};
use std::io::Write;
use vdisk_core::{ChunkEncoder, Encoded, Error, FileStorage, OutputFile, Payload, Result, Storage};

const GRAIN_BYTES: u64 = GRAIN_SECTORS * SECTOR;
const MAX_FILE_SECTORS: u64 = u32::MAX as u64;

/// Compresses one grain into its on-disk form: grain marker, zlib stream, zero padding to a sector.
#[derive(Debug, Default)]
pub struct StreamEncoder;

impl StreamEncoder {
    /// The marker and compressed bytes for the grain at guest `offset` (a partial tail grain is padded
    /// with zeros to the full grain, as qemu and VMware require).
    pub fn encode_grain(offset: u64, data: &[u8]) -> Result<Vec<u8>> {
        if data.len() as u64 > GRAIN_BYTES || offset % GRAIN_BYTES != 0 {
            return Err(Error::invalid(format!(
                "streamOptimized chunk at {offset} is not one grain"
            )));
        }
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        out.extend_from_slice(&[0u8; GRAIN_MARKER_SIZE]);
        let mut z = flate2::write::ZlibEncoder::new(out, flate2::Compression::default());
        let io = |e: std::io::Error| Error::Other(format!("deflate failed: {e}"));
        z.write_all(data).map_err(io)?;
        if (data.len() as u64) < GRAIN_BYTES {
            z.write_all(&vec![0u8; (GRAIN_BYTES - data.len() as u64) as usize])
                .map_err(io)?;
        }
        let mut out = z.finish().map_err(io)?;
        let size = (out.len() - GRAIN_MARKER_SIZE) as u32;
        out[..GRAIN_MARKER_SIZE].copy_from_slice(&Marker::grain_header(offset / SECTOR, size));
        out.resize(out.len().div_ceil(SECTOR as usize) * SECTOR as usize, 0);
        Ok(out)
    }
}

impl ChunkEncoder for StreamEncoder {
    fn encode(&self, offset: u64, data: &[u8]) -> Result<Option<Encoded>> {
        Ok(Some(Encoded {
            bytes: Self::encode_grain(offset, data)?,
            raw_len: data.len() as u64,
        }))
    }
}

/// A streamOptimized file being written, strictly in guest order.
pub struct StreamOut {
    out: OutputFile,
    storage: FileStorage,
    header: SparseHeader,
    gd: Vec<u32>,
    /// The grain table being filled: its index and entries.
    current: Option<(u64, Vec<u32>)>,
    next_sector: u64,
    /// Next guest offset not yet written (in-order check).
    written_to: u64,
    /// Write zero runs as compressed zero grains (there is a backing file to hide).
    write_zeros: bool,
}

impl StreamOut {
    /// Starts a stream of `capacity` sectors with `descriptor` embedded.
    pub fn new(
        out: OutputFile,
        capacity: u64,
        descriptor: String,
        write_zeros: bool,
    ) -> Result<Self> {
        let storage = out.storage();
        let desc_sectors = (descriptor.len() as u64 + 1)
            .div_ceil(SECTOR)
            .max(DESCRIPTOR_SECTORS);
        let overhead = (1 + desc_sectors).div_ceil(GRAIN_SECTORS) * GRAIN_SECTORS;
        let header = SparseHeader {
            version: 3,
            flags: FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS,
            capacity,
            grain_size: GRAIN_SECTORS,
            descriptor_offset: 1,
            descriptor_size: desc_sectors,
            num_gtes_per_gt: GTES as u32,
            rgd_offset: 0,
            gd_offset: GD_AT_END,
            overhead,
            unclean_shutdown: false,
            compress_algorithm: COMPRESS_DEFLATE,
        };
        let entries = header.gd_entries();
        if entries.saturating_mul(GTES * 4 / SECTOR + 1) >= MAX_FILE_SECTORS {
            return Err(Error::invalid(format!(
                "a streamOptimized VMDK of {capacity} sectors is too large"
            )));
        }
        storage.write_at(&header.to_bytes(), 0)?;
        storage.write_at(descriptor.as_bytes(), SECTOR)?;
        Ok(StreamOut {
            out,
            storage,
            header,
            gd: vec![0u32; entries as usize],
            current: None,
            next_sector: overhead,
            written_to: 0,
            write_zeros,
        })
    }

    /// Appends `bytes` (a whole number of sectors) and returns the sector they start at.
    fn append(&mut self, bytes: &[u8]) -> Result<u64> {
        let at = self.next_sector;
        let sectors = (bytes.len() as u64).div_ceil(SECTOR);
        if at + sectors >= MAX_FILE_SECTORS {
            return Err(Error::Other(format!(
                "{}: streamOptimized VMDK grew past 2 TiB",
                self.out.dest().display()
            )));
        }
        self.storage.write_at(bytes, at * SECTOR)?;
        self.next_sector += sectors;
        Ok(at)
    }

    fn flush_table(&mut self) -> Result<()> {
        if let Some((idx, t)) = self.current.take() {
            let table: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
            let sectors = table.len() as u64 / SECTOR;
            self.append(&Marker::metadata_sector(sectors, MARKER_GT))?;
            let at = self.append(&table)?;
            if let Some(e) = self.gd.get_mut(idx as usize) {
                *e = at as u32;
            }
        }
        Ok(())
    }

    fn put_encoded(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        let grain = offset / GRAIN_BYTES;
        let gt = grain / GTES;
        if self.current.as_ref().is_some_and(|(i, _)| *i != gt) {
            self.flush_table()?;
        }
        let at = self.append(bytes)?;
        let entry = &mut self
            .current
            .get_or_insert_with(|| (gt, vec![0u32; GTES as usize]))
            .1;
        entry[(grain % GTES) as usize] = at as u32;
        Ok(())
    }

    /// Stores `payload` at guest `offset`; offsets must come in increasing order, grain aligned.
    pub fn write(&mut self, offset: u64, payload: Payload) -> Result<()> {
        if offset < self.written_to || offset % GRAIN_BYTES != 0 {
            return Err(Error::invalid(format!(
                "streamOptimized VMDK writes must be in order and grain aligned (write at {offset}, next {})",
                self.written_to
            )));
        }
        let len = payload.len();
        match payload {
            Payload::Encoded(e) => self.put_encoded(offset, &e.bytes)?,
            Payload::Data(d) => {
                for (i, chunk) in d.chunks(GRAIN_BYTES as usize).enumerate() {
                    if !self.write_zeros && vdisk_core::zero::is_zero(chunk) {
                        continue;
                    }
                    let at = offset + i as u64 * GRAIN_BYTES;
                    self.put_encoded(at, &StreamEncoder::encode_grain(at, chunk)?)?;
                }
            }
            Payload::Zero(n) if self.write_zeros => {
                let zero = vec![0u8; GRAIN_BYTES as usize];
                let mut at = offset;
                while at < offset + n {
                    let k = GRAIN_BYTES.min(offset + n - at) as usize;
                    self.put_encoded(at, &StreamEncoder::encode_grain(at, &zero[..k])?)?;
                    at += GRAIN_BYTES;
                }
            }
            Payload::Zero(_) => {}
            Payload::Copy(_) => {
                return Err(Error::invalid(
                    "streamOptimized VMDK writer: copy offloading is not supported",
                ))
            }
        }
        self.written_to = offset + len;
        Ok(())
    }

    /// Writes the last grain table, the grain directory, footer and end-of-stream marker.
    pub fn finish(mut self) -> Result<()> {
        self.flush_table()?;
        let mut gd: Vec<u8> = self.gd.iter().flat_map(|v| v.to_le_bytes()).collect();
        gd.resize(gd.len().div_ceil(SECTOR as usize) * SECTOR as usize, 0);
        self.append(&Marker::metadata_sector(
            gd.len() as u64 / SECTOR,
            MARKER_GD,
        ))?;
        let gd_at = self.append(&gd)?;
        let mut footer = self.header.clone();
        footer.gd_offset = gd_at;
        self.append(&Marker::metadata_sector(1, MARKER_FOOTER))?;
        self.append(&footer.to_bytes())?;
        self.append(&[0u8; SECTOR as usize])?;
        self.storage.set_len(self.next_sector * SECTOR)?;
        self.out.commit()
    }
}
