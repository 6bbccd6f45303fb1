//! Writing a new qcow2 image in one streaming pass (`qemu-img create -f qcow2`, `convert -O qcow2
//! [-c]`), following QEMU's docs/interop/qcow2.txt ("Header", "Cluster mapping", "Host cluster
//! management", "Compressed Clusters Descriptor", "Extended L2 Entries", "External data files").
//!
//! The layout is qemu's: header, refcount table, first refcount block, L1 table, then for each
//! guest region its L2 table followed by its data clusters in the order they arrive (compressed
//! clusters packed byte by byte). The refcount table is reserved at its largest possible size; each
//! L2 table and refcount block is reserved before the clusters it describes, kept in memory (one of
//! each; a few more L2 tables when writes come out of order) and written when the writes leave its
//! range (see `refcount`). `finish` writes the last tables, the L1 table and, last of all, the
//! header: until then cluster 0 is zeros and the file lives under [`OutputFile`]'s temporary name,
//! so an interrupted write leaves nothing qemu-img accepts. Memory is a few clusters plus one L1
//! entry per written region and one refcount table entry per refcount block, whatever the virtual
//! size.

mod compress;
pub(crate) mod file;
mod finish;
mod layout;
mod put;
mod refcount;
mod settings;

#[cfg(test)]
mod compress_tests;
#[cfg(test)]
mod order_tests;
#[cfg(test)]
mod parity_tests;
#[cfg(test)]
mod random_tests;
#[cfg(test)]
mod tests;

pub use compress::ClusterEncoder;
pub use settings::{
    formatting_options, CompressionType, Prealloc, Settings, CREATE_OPTIONS, DEFAULT_CLUSTER_SIZE,
};

use file::{fallocate, io, write_zeros};
use layout::{Entry, L2Table, PreallocLayout};
use put::Bytes;
use refcount::Refcounts;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use vdisk_core::{
    ChunkEncoder, CreateOptions, Error, ImageWriter, OutputFile, Payload, Result, WritePool,
    WriterCaps,
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

/// L2 tables kept in memory besides the current one when writes come out of order.
pub const OUT_OF_ORDER_TABLES: usize = 16;

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
    /// Whether writes may come in any order (`convert -W`): then up to [`OUT_OF_ORDER_TABLES`]
    /// other L2 tables stay in memory, and an evicted one is read back from the image when its
    /// region is written again.
    ooo: bool,
    others: Vec<L2Table>,
    /// The first region whose table is neither written nor skipped.
    next_region: u64,
    /// Guest bytes up to here have been written (writes come in order).
    pos: u64,
    /// A guest cluster written only in part so far: its index and bytes.
    partial: Option<(u64, Vec<u8>)>,
    /// Where the next compressed cluster may be packed, inside the last host cluster used for one.
    pack: Option<u64>,
    compress: bool,
    /// The L1 table's offset (0 for an empty disk) and the refcount table's offset and clusters,
    /// all reserved right after the header.
    l1_at: u64,
    reftable: (u64, u64),
    /// I/O threads writing whole data clusters straight from the payload buffers (not used with
    /// an external data file). Every other write and read of the image first waits for queued
    /// writes that overlap it, and `finish` waits for all of them.
    pool: Option<WritePool>,
    /// Whether copies into an external data file are still tried with `copy_file_range`
    /// (cleared when the kernel refuses; copies into the image go through `pool`).
    offload: bool,
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
        let bits = s.cluster_bits;
        let mut refs = Refcounts::new(bits, s.refcount_order);
        // Like qemu: header, refcount table, first refcount block, L1 table, then L2 tables and data.
        refs.alloc_run(1);
        let max_clusters =
            crate::measure::prealloc_size(s.size, cs, s.refcount_order, s.extended_l2) / cs;
        let t = refs.table_clusters_for(max_clusters + 8);
        let reftable = (refs.alloc_run(t) << bits, t);
        refs.reserve_home();
        let l1_clusters = (s.l1_entries() * 8).div_ceil(cs);
        let l1_at = if l1_clusters > 0 {
            refs.alloc_run(l1_clusters) << bits
        } else {
            0
        };
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
            refs.reserve_home();
            let contiguous = s.prealloc != Prealloc::Metadata;
            let l = PreallocLayout::new(&s, refs.next_cluster(), contiguous);
            let start = refs.alloc_run(l.clusters()) << bits;
            // Like qemu: a partial last cluster is written as zeros, or with extended L2 the file
            // ends after the last subcluster holding guest data.
            let (end, zero_tail) = match (s.guest_clusters(), s.size % cs) {
                (0, _) => (start, false),
                _ if !l.data_last() => (refs.next_cluster() << bits, false),
                (n, 0) => (l.data_host(n - 1) + cs, false),
                (n, tail) if s.extended_l2 => {
                    (l.data_host(n - 1) + tail.next_multiple_of(cs / 32), false)
                }
                (n, _) => (l.data_host(n - 1) + cs, true),
            };
            let dest = out.dest().to_path_buf();
            out.file().set_len(end).map_err(io(&dest, end))?;
            match s.prealloc {
                Prealloc::Falloc => fallocate(out.file(), &dest, start, end - start)?,
                Prealloc::Full => write_zeros(out.file(), &dest, start, end - start)?,
                Prealloc::Off | Prealloc::Metadata if zero_tail => {
                    write_zeros(out.file(), &dest, end - cs, cs)?
                }
                Prealloc::Off | Prealloc::Metadata => {}
            }
            Placement::Prealloc(l)
        } else {
            Placement::Stream
        };
        refs.reserve_home();
        let ooo = s.prealloc == Prealloc::Off && !matches!(placement, Placement::Prealloc(_));
        let mut w = Qcow2Writer {
            s,
            out,
            placement,
            refs,
            l1: BTreeMap::new(),
            l2: None,
            ooo,
            others: Vec::new(),
            next_region: 0,
            pos: 0,
            partial: None,
            pack: None,
            compress,
            l1_at,
            reftable,
            pool: None,
            offload: true,
        };
        if !matches!(w.placement, Placement::DataFile(_)) {
            w.pool = Some(WritePool::new(w.out.file(), w.out.dest())?);
        }
        w.place_refblocks()?;
        Ok(w)
    }

    fn cs(&self) -> u64 {
        self.s.cluster_size()
    }

    fn write_image(&self, off: u64, buf: &[u8]) -> Result<()> {
        if let Some(p) = &self.pool {
            p.wait_for(off, buf.len() as u64)?;
        }
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

    /// A new table for `region`, its cluster reserved before the region's data as qemu does.
    fn new_table(&mut self, region: u64) -> L2Table {
        let host = match &self.placement {
            Placement::Prealloc(l) => l.l2_host(region),
            _ => self.refs.alloc_one() << self.s.cluster_bits,
        };
        let mut t = L2Table::new(&self.s, region, host);
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

    /// Writes the table out at its reserved place and records it in the L1.
    fn flush_table(&mut self, t: L2Table) -> Result<()> {
        self.write_image(t.host, t.bytes())?;
        self.l1.insert(t.region, t.host);
        Ok(())
    }

    /// Makes `region`'s table the current one, writing out the tables before it (in order), or
    /// keeping a few recent ones (out of order).
    fn enter_region(&mut self, region: u64) -> Result<()> {
        if self.l2.as_ref().is_some_and(|t| t.region == region) {
            return Ok(());
        }
        if self.ooo {
            return self.enter_region_any_order(region);
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

    fn enter_region_any_order(&mut self, region: u64) -> Result<()> {
        if let Some(t) = self.l2.take() {
            self.others.push(t);
            if self.others.len() > OUT_OF_ORDER_TABLES {
                let oldest = self.others.remove(0);
                self.flush_table(oldest)?;
            }
        }
        if region >= self.s.l1_entries() {
            return Ok(());
        }
        let t = if let Some(i) = self.others.iter().position(|t| t.region == region) {
            self.others.remove(i)
        } else if let Some(&host) = self.l1.get(&region) {
            let mut b = vec![0u8; self.cs() as usize];
            if let Some(p) = &self.pool {
                p.wait_for(host, b.len() as u64)?;
            }
            self.out
                .file()
                .read_exact_at(&mut b, host)
                .map_err(io(self.out.dest(), host))?;
            L2Table::from_bytes(&self.s, region, host, b)
        } else {
            self.new_table(region)
        };
        self.l2 = Some(t);
        Ok(())
    }

    fn set_entry(&mut self, g: u64, e: Entry) -> Result<()> {
        let per = self.s.l2_entries();
        self.enter_region(g / per)?;
        match &mut self.l2 {
            Some(t) => {
                if self.ooo && !t.is_unset(g % per) {
                    return Err(Error::invalid(format!(
                        "qcow2 writer: guest cluster {g} written twice"
                    )));
                }
                t.set(g % per, e);
                Ok(())
            }
            None => Err(Error::Other(format!(
                "qcow2 writer: cluster {g} is past the end of the disk"
            ))),
        }
    }

    fn place_refblocks(&mut self) -> Result<()> {
        let out = &self.out;
        self.refs.place_pending(&mut |off, b| {
            out.file().write_all_at(b, off).map_err(io(out.dest(), off))
        })
    }
}

impl ImageWriter for Qcow2Writer {
    fn caps(&self) -> WriterCaps {
        WriterCaps {
            granularity: self.cs(),
            out_of_order: self.ooo,
            zero_initialized: self.s.backing_file.is_none(),
            copy_range: !self.compress,
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
        let cs = self.cs();
        let whole = offset % cs == 0 && (len % cs == 0 || end == self.s.size);
        if offset < self.pos && !(self.ooo && whole) {
            return Err(Error::invalid(if self.ooo {
                format!(
                    "qcow2 writer: a write before offset {} must cover whole clusters",
                    self.pos
                )
            } else {
                format!(
                    "qcow2 writer takes writes in order: offset {offset} is before {}",
                    self.pos
                )
            }));
        }
        match payload {
            Payload::Data(d) => {
                let d = Arc::new(d);
                self.put_data(offset, Bytes::shared(&d))?
            }
            Payload::Zero(n) => self.put_zero(offset, n)?,
            Payload::Encoded(e) => {
                let one_cluster = e.raw_len == cs || (e.raw_len < cs && end == self.s.size);
                if !self.compress || offset % cs != 0 || !one_cluster {
                    return Err(Error::invalid(
                        "encoded payloads must be whole clusters from this writer's encoder",
                    ));
                }
                self.flush_partial()?;
                self.put_compressed(offset >> self.s.cluster_bits, &e.bytes)?;
            }
            Payload::Copy(r) => self.put_copy(offset, r)?,
        }
        self.pos = self.pos.max(end);
        self.place_refblocks()
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.finish_image()
    }
}
