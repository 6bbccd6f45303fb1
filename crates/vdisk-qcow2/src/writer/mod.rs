//! Writing a new qcow2 image in one streaming pass (`qemu-img create -f qcow2`, `convert -O qcow2
//! [-c]`), following QEMU's docs/interop/qcow2.txt ("Header", "Cluster mapping", "Host cluster
//! management", "Compressed Clusters Descriptor", "Extended L2 Entries", "External data files").
//!
//! Data clusters are appended in the order they arrive; the L2 table of the current guest region is
//! the only table held in memory and is appended when the writes leave its region; refcount blocks
//! are written as the file grows past them ([`refcount`]); the L1 table, the refcount table and
//! finally the header are written by `finish`. Until then cluster 0 is zeros and the file lives
//! under [`OutputFile`]'s temporary name, so an interrupted write leaves nothing qemu-img accepts.

mod compress;
mod file;
mod layout;
mod refcount;
mod settings;

#[cfg(test)]
mod tests;

pub use compress::ClusterEncoder;
pub use settings::{CompressionType, Prealloc, Settings, CREATE_OPTIONS, DEFAULT_CLUSTER_SIZE};

use crate::header::{self, Extension, FeatureName, Header};
use file::{fallocate, write_zeros};
use layout::{Entry, L2Table, PreallocLayout};
use refcount::Refcounts;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use vdisk_core::{
    ChunkEncoder, CreateOptions, Error, ImageWriter, OutputFile, Payload, Result, WriterCaps,
};

/// Creates a qcow2 image of `size` bytes at `path` with the `-o` options of [`CREATE_OPTIONS`].
/// The image appears under `path` only when the writer's `finish` succeeds.
pub fn create(path: &Path, size: u64, opts: &CreateOptions) -> Result<Box<dyn ImageWriter>> {
    create_with(path, size, opts, false)
}

/// As [`create`]; with `compress` (`convert -c`) every data cluster is stored compressed when that
/// makes it smaller. The compression itself runs in the engine through [`ImageWriter::encoder`].
pub fn create_with(
    path: &Path,
    size: u64,
    opts: &CreateOptions,
    compress: bool,
) -> Result<Box<dyn ImageWriter>> {
    Ok(Box::new(Qcow2Writer::create(path, size, opts, compress)?))
}

/// Where guest data goes.
#[derive(Debug)]
enum Placement {
    /// Appended to the image as it arrives.
    Stream,
    /// At fixed places of a preallocated image.
    Prealloc(PreallocLayout),
    /// In the external data file at the guest offset.
    DataFile(OutputFile),
}

/// A qcow2 image being written.
#[derive(Debug)]
pub struct Qcow2Writer {
    s: Settings,
    out: OutputFile,
    placement: Placement,
    refs: Refcounts,
    /// L1 entries set so far (region -> L2 table offset); sparse, so a huge empty disk costs nothing.
    l1: BTreeMap<u64, u64>,
    l2: Option<L2Table>,
    /// The first region whose table is neither written nor skipped.
    next_region: u64,
    /// Guest bytes up to here have been written (writes come in order).
    pos: u64,
    /// A guest cluster written only in part so far: its index and bytes.
    partial: Option<(u64, Vec<u8>)>,
    /// Where the next compressed cluster may be packed, inside the last host cluster used for one.
    pack: Option<u64>,
    compress: bool,
}

fn io(path: &Path, off: u64) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, off, e)
}

impl Qcow2Writer {
    /// See [`create_with`].
    pub fn create(path: &Path, size: u64, opts: &CreateOptions, compress: bool) -> Result<Self> {
        let s = Settings::parse(size, opts)?;
        if compress && (s.data_file.is_some() || s.prealloc != Prealloc::Off) {
            return Err(Error::invalid(
                "Compression is not supported with an external data file or with preallocation",
            ));
        }
        let out = OutputFile::create(path)?;
        let cs = s.cluster_size();
        let mut refs = Refcounts::new(s.cluster_bits, s.refcount_order);
        refs.alloc(1); // the header
        let placement = if let Some(name) = &s.data_file {
            // qemu-img creates and opens the data file by the name as given, i.e. relative to the
            // current directory, not to the image's.
            let data = OutputFile::create(Path::new(name))?;
            let dest = data.dest().to_path_buf();
            data.file().set_len(s.size).map_err(io(&dest, s.size))?;
            match s.prealloc {
                Prealloc::Falloc => fallocate(data.file(), &dest, 0, s.size)?,
                Prealloc::Full => write_zeros(data.file(), &dest, 0, s.size)?,
                Prealloc::Off | Prealloc::Metadata => {}
            }
            Placement::DataFile(data)
        } else if s.prealloc != Prealloc::Off {
            let l = PreallocLayout::new(&s);
            refs.alloc(l.clusters() - 1);
            let end = l.clusters() * cs;
            let dest = out.dest().to_path_buf();
            out.file().set_len(end).map_err(io(&dest, end))?;
            match s.prealloc {
                Prealloc::Falloc => fallocate(out.file(), &dest, cs, end - cs)?,
                Prealloc::Full => write_zeros(out.file(), &dest, cs, end - cs)?,
                Prealloc::Off | Prealloc::Metadata => {}
            }
            Placement::Prealloc(l)
        } else {
            Placement::Stream
        };
        Ok(Qcow2Writer {
            s,
            out,
            placement,
            refs,
            l1: BTreeMap::new(),
            l2: None,
            next_region: 0,
            pos: 0,
            partial: None,
            pack: None,
            compress,
        })
    }

    fn cs(&self) -> u64 {
        self.s.cluster_size()
    }

    fn write_image(&self, off: u64, buf: &[u8]) -> Result<()> {
        self.out
            .file()
            .write_all_at(buf, off)
            .map_err(io(self.out.dest(), off))
    }

    /// The entry a region's table starts with for guest cluster `g`, when tables are preallocated.
    fn default_entry(&self, g: u64) -> Option<Entry> {
        match &self.placement {
            Placement::Prealloc(l) => Some(Entry::preallocated(&self.s, l.data_host(g))),
            Placement::DataFile(_) if self.s.prealloc != Prealloc::Off => {
                Some(Entry::preallocated(&self.s, g << self.s.cluster_bits))
            }
            _ => None,
        }
    }

    fn new_table(&self, region: u64) -> L2Table {
        let mut t = L2Table::new(&self.s, region);
        let e = self.s.l2_entries();
        let first = region * e;
        let last = (first + e).min(self.s.guest_clusters());
        for g in first..last {
            if let Some(entry) = self.default_entry(g) {
                t.set(g - first, entry);
            }
        }
        t
    }

    /// Writes the table out (at its preallocated place, or appended) and records it in the L1.
    fn flush_table(&mut self, t: L2Table) -> Result<()> {
        if !t.is_used() {
            return Ok(());
        }
        let at = match &self.placement {
            Placement::Prealloc(l) => l.l2_host(t.region),
            _ => self.refs.alloc(1) << self.s.cluster_bits,
        };
        self.write_image(at, t.bytes())?;
        self.l1.insert(t.region, at);
        Ok(())
    }

    /// Makes `region`'s table the current one, writing out the tables before it.
    fn enter_region(&mut self, region: u64) -> Result<()> {
        if self.l2.as_ref().is_some_and(|t| t.region == region) {
            return Ok(());
        }
        if let Some(t) = self.l2.take() {
            self.flush_table(t)?;
        }
        let preallocated = self.default_entry(0).is_some();
        while self.next_region < region {
            if preallocated {
                let t = self.new_table(self.next_region);
                self.flush_table(t)?;
            }
            self.next_region += 1;
        }
        if region < self.s.l1_entries() {
            self.l2 = Some(self.new_table(region));
            self.next_region = region + 1;
        }
        Ok(())
    }

    fn set_entry(&mut self, g: u64, e: Entry) -> Result<()> {
        let per = self.s.l2_entries();
        self.enter_region(g / per)?;
        match &mut self.l2 {
            Some(t) => {
                t.set(g % per, e);
                Ok(())
            }
            None => Err(Error::Other(format!(
                "qcow2 writer: cluster {g} is past the end of the disk"
            ))),
        }
    }

    /// Stores `n` whole guest clusters from `g` (all in one L2 region) as plain data.
    fn put_clusters(&mut self, g: u64, n: u64, bytes: &[u8]) -> Result<()> {
        let bits = self.s.cluster_bits;
        let hosts: Vec<u64> = match &self.placement {
            Placement::DataFile(f) => {
                // Only guest bytes go to the data file: it stays exactly the disk's size.
                let at = g << bits;
                let keep = (self.s.size - at).min(bytes.len() as u64) as usize;
                f.file()
                    .write_all_at(&bytes[..keep], at)
                    .map_err(io(f.dest(), at))?;
                (g..g + n).map(|c| c << bits).collect()
            }
            Placement::Prealloc(l) => {
                let at = l.data_host(g);
                self.write_image(at, bytes)?;
                (g..g + n).map(|c| l.data_host(c)).collect()
            }
            Placement::Stream => {
                let start = self.refs.alloc(n) << bits;
                self.write_image(start, bytes)?;
                (0..n).map(|i| start + (i << bits)).collect()
            }
        };
        for (i, h) in hosts.into_iter().enumerate() {
            self.set_entry(g + i as u64, Entry::data(&self.s, h))?;
        }
        Ok(())
    }

    /// Stores one compressed cluster, packed after the previous one when its host cluster can
    /// take another reference (QEMU's `qcow2_alloc_bytes`).
    fn put_compressed(&mut self, g: u64, bytes: &[u8]) -> Result<()> {
        let (bits, cs, len) = (self.s.cluster_bits, self.cs(), bytes.len() as u64);
        if len == 0 || len >= cs {
            return Err(Error::invalid(
                "compressed cluster must be smaller than a cluster",
            ));
        }
        let mut at = None;
        if let Some(p) = self.pack {
            let cp = p >> bits;
            let room = ((cp + 1) << bits) - p;
            if len <= room {
                if self.refs.bump(cp) {
                    at = Some(p);
                }
            } else if self.refs.next_cluster() == cp + 1 && self.refs.bump(cp) {
                self.refs.alloc(1);
                at = Some(p);
            }
        }
        let at = match at {
            Some(p) => p,
            None => self.refs.alloc(1) << bits,
        };
        self.write_image(at, bytes)?;
        let end = at + len;
        self.pack = if end % cs == 0 { None } else { Some(end) };
        self.set_entry(g, Entry::compressed(&self.s, at, len))
    }

    /// Zeros over whole clusters that must hide a backing file.
    fn put_zero_clusters(&mut self, g: u64, n: u64) -> Result<()> {
        if self.s.version >= 3 {
            for c in g..g + n {
                let host = match &self.placement {
                    Placement::Prealloc(l) => l.data_host(c),
                    _ => 0,
                };
                self.set_entry(c, Entry::zero(&self.s, host))?;
            }
            return Ok(());
        }
        // v2 has no zero clusters: write zeros.
        let per = ((1u64 << 20) >> self.s.cluster_bits).max(1);
        let zeros = vec![0u8; (per * self.cs()) as usize];
        let mut c = g;
        while c < g + n {
            let k = per.min(g + n - c).min(self.region_left(c));
            self.put_clusters(c, k, &zeros[..(k * self.cs()) as usize])?;
            c += k;
        }
        Ok(())
    }

    fn region_left(&self, g: u64) -> u64 {
        let per = self.s.l2_entries();
        per - g % per
    }

    /// Writes the partly filled cluster, zero-padded.
    fn flush_partial(&mut self) -> Result<()> {
        if let Some((g, buf)) = self.partial.take() {
            self.put_clusters(g, 1, &buf)?;
        }
        Ok(())
    }

    /// Copies `data` (or zeros when `None`) into guest cluster `g` at `within`.
    fn put_partial(&mut self, g: u64, within: u64, len: u64, data: Option<&[u8]>) -> Result<()> {
        if self.partial.as_ref().is_some_and(|(pg, _)| *pg != g) {
            self.flush_partial()?;
        }
        let cs = self.cs() as usize;
        let (_, buf) = self.partial.get_or_insert_with(|| (g, vec![0u8; cs]));
        let (a, b) = (within as usize, (within + len) as usize);
        match data {
            Some(d) => buf[a..b].copy_from_slice(d),
            None => buf[a..b].fill(0),
        }
        if b == cs {
            self.flush_partial()?;
        }
        Ok(())
    }

    fn put_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let (bits, cs) = (self.s.cluster_bits, self.cs());
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let (g, within) = (at >> bits, at & (cs - 1));
            if within != 0 || (rest.len() as u64) < cs {
                let n = (cs - within).min(rest.len() as u64);
                self.put_partial(g, within, n, Some(&rest[..n as usize]))?;
                at += n;
                rest = &rest[n as usize..];
                continue;
            }
            self.flush_partial()?;
            let n = (rest.len() as u64 / cs).min(self.region_left(g));
            let (now, later) = rest.split_at((n * cs) as usize);
            self.put_clusters(g, n, now)?;
            at += n * cs;
            rest = later;
        }
        Ok(())
    }

    fn put_zero(&mut self, offset: u64, len: u64) -> Result<()> {
        let (bits, cs) = (self.s.cluster_bits, self.cs());
        let hide = self.s.backing_file.is_some();
        let end = offset + len;
        let mut at = offset;
        while at < end {
            let (g, within) = (at >> bits, at & (cs - 1));
            let n = (cs - within).min(end - at);
            let in_partial = self.partial.as_ref().is_some_and(|(pg, _)| *pg == g);
            if within != 0 || n < cs || in_partial {
                // Inside a partly written cluster the zeros are already in its buffer; elsewhere
                // they only matter when they must hide the backing file.
                if hide || in_partial {
                    self.put_partial(g, within, n, None)?;
                }
                at += n;
                continue;
            }
            self.flush_partial()?;
            let whole = (end - at) / cs;
            if hide {
                let k = whole.min(self.region_left(g));
                self.put_zero_clusters(g, k)?;
                at += k * cs;
            } else {
                at += whole * cs;
            }
        }
        Ok(())
    }

    fn place_refblocks(&mut self) -> Result<()> {
        let out = &self.out;
        self.refs.place_pending(&mut |off, b| {
            out.file().write_all_at(b, off).map_err(io(out.dest(), off))
        })
    }

    fn header(&self, l1_offset: u64, reftable: (u64, u32)) -> Header {
        let s = &self.s;
        let v3 = s.version >= 3;
        let mut extensions = Vec::new();
        if let Some(f) = &s.backing_fmt {
            extensions.push(Extension::BackingFormat(f.clone()));
        }
        if let Some(d) = &s.data_file {
            extensions.push(Extension::DataFile(d.clone()));
        }
        if v3 {
            let names = [
                (0, 0, "dirty bit"),
                (0, 1, "corrupt bit"),
                (0, 2, "external data file"),
                (0, 3, "compression type"),
                (0, 4, "extended L2 entries"),
                (1, 0, "lazy refcounts"),
                (2, 0, "bitmaps"),
                (2, 1, "raw external data"),
            ];
            extensions.push(Extension::FeatureTable(
                names
                    .iter()
                    .map(|(kind, bit, n)| FeatureName {
                        kind: *kind,
                        bit: *bit,
                        name: n.to_string(),
                    })
                    .collect(),
            ));
        }
        let mut incompat = 0;
        if s.data_file.is_some() {
            incompat |= header::incompat::DATA_FILE;
        }
        if s.compression == CompressionType::Zstd {
            incompat |= header::incompat::COMPRESSION;
        }
        if s.extended_l2 {
            incompat |= header::incompat::EXTL2;
        }
        Header {
            version: s.version,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits: s.cluster_bits,
            size: s.size,
            crypt_method: 0,
            l1_size: s.l1_entries() as u32,
            l1_table_offset: l1_offset,
            refcount_table_offset: reftable.0,
            refcount_table_clusters: reftable.1,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible_features: incompat,
            compatible_features: if s.lazy_refcounts {
                header::compat::LAZY_REFCOUNTS
            } else {
                0
            },
            autoclear_features: if s.data_file_raw {
                header::autoclear::DATA_FILE_RAW
            } else {
                0
            },
            refcount_order: s.refcount_order,
            header_length: if v3 { 112 } else { header::V2_HEADER_LEN },
            compression_type: match s.compression {
                CompressionType::Zlib => header::COMPRESSION_ZLIB,
                CompressionType::Zstd => header::COMPRESSION_ZSTD,
            },
            extensions,
            backing_file: s.backing_file.clone(),
        }
    }

    /// Writes the L1 table (only its non-zero entries; the rest of its clusters are holes).
    fn write_l1(&mut self) -> Result<u64> {
        let entries = self.s.l1_entries();
        if entries == 0 {
            return Ok(0);
        }
        let (bits, cs) = (self.s.cluster_bits, self.cs());
        let clusters = (entries * 8).div_ceil(cs);
        let at = self.refs.alloc(clusters) << bits;
        let per = cs / 8;
        let mut chunk: Option<(u64, Vec<u8>)> = None;
        for (&region, &l2) in &self.l1 {
            let c = region / per;
            if chunk.as_ref().is_some_and(|(cc, _)| *cc != c) {
                if let Some((cc, buf)) = chunk.take() {
                    self.write_image(at + cc * cs, &buf)?;
                }
            }
            let (_, buf) = chunk.get_or_insert_with(|| (c, vec![0u8; cs as usize]));
            let i = ((region % per) * 8) as usize;
            buf[i..i + 8].copy_from_slice(&(l2 | layout::COPIED).to_be_bytes());
        }
        if let Some((cc, buf)) = chunk {
            self.write_image(at + cc * cs, &buf)?;
        }
        Ok(at)
    }

    fn finish_image(mut self) -> Result<()> {
        self.flush_partial()?;
        let regions = self.s.l1_entries();
        self.enter_region(regions)?;
        if let Some(t) = self.l2.take() {
            self.flush_table(t)?;
        }
        self.place_refblocks()?;
        let l1 = self.write_l1()?;
        let out = &self.out;
        let reftable = self
            .refs
            .finish(&mut |off, b| out.file().write_all_at(b, off).map_err(io(out.dest(), off)))?;
        let h = self.header(l1, reftable).serialize();
        if h.len() as u64 > self.cs() {
            return Err(Error::invalid(
                "qcow2 header and backing file name do not fit in the first cluster",
            ));
        }
        // The header goes last: until now cluster 0 was zeros, not an image.
        self.write_image(0, &h)?;
        let Qcow2Writer { out, placement, .. } = self;
        if let Placement::DataFile(d) = placement {
            d.commit()?;
        }
        out.commit()
    }
}

impl ImageWriter for Qcow2Writer {
    fn caps(&self) -> WriterCaps {
        WriterCaps {
            granularity: self.cs(),
            out_of_order: false,
            zero_initialized: self.s.backing_file.is_none(),
        }
    }

    fn encoder(&self) -> Option<Arc<dyn ChunkEncoder>> {
        if self.compress {
            Some(Arc::new(ClusterEncoder::new(self.cs(), self.s.compression)))
        } else {
            None
        }
    }

    fn write(&mut self, offset: u64, payload: Payload) -> Result<()> {
        let len = payload.len();
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= self.s.size)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "write of {len} bytes at {offset} is past the end of the disk"
                ))
            })?;
        if offset < self.pos {
            return Err(Error::invalid(format!(
                "qcow2 writer takes writes in order: offset {offset} is before {}",
                self.pos
            )));
        }
        match payload {
            Payload::Data(d) => self.put_data(offset, &d)?,
            Payload::Zero(n) => self.put_zero(offset, n)?,
            Payload::Encoded(e) => {
                let cs = self.cs();
                if !self.compress || offset % cs != 0 || (e.raw_len != cs && end != self.s.size) {
                    return Err(Error::invalid(
                        "encoded payloads must be whole clusters from this writer's encoder",
                    ));
                }
                self.flush_partial()?;
                self.put_compressed(offset >> self.s.cluster_bits, &e.bytes)?;
            }
        }
        self.pos = end;
        self.place_refblocks()
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.finish_image()
    }
}
