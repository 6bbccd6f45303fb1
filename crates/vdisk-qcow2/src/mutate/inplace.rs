//! Writing guest data into an existing qcow2 image (`convert -n`, `rebase`, `commit`), crash-safe
//! in the shadow-paged way of [`super::txn`]: data goes to NEW host clusters past the end of the
//! file (never to a cluster the committed state references, so clusters shared with snapshots or
//! being replaced stay intact), the changed L2 tables are kept in memory and written by one
//! transaction in `finish`, whose single header write switches states. Follows qcow2.txt "Cluster
//! mapping", "Standard Cluster Descriptor" (zero flag, v3) and "Extended L2 Entries".
//!
//! Memory: one cluster per L2 table touched (at most the image's L2 count: `l1_size` tables of one
//! cluster each, the same bound the check run at opening already has) plus the list of clusters
//! past the end of the file that could not be used; no guest data is kept.
//!
//! With an external data file, guest data is written in place there, at its guest offset
//! (qcow2.txt "External data file"), as QEMU does: only the L2 changes are shadow-paged, so an
//! interrupted write into clusters already allocated leaves them partly written.
//!
//! A writer dropped without `finish` leaves the old image, plus data clusters past its old end that
//! nothing references and whose refcount is 0 (free space, not a leak for `qemu-img check`).
//! The image grows by the data written (old clusters are freed in the new state, and reused by
//! later changes), where QEMU would overwrite clusters it owns alone in place.

use super::bitmaps::Bitmaps;
use super::image::{Purpose, RwImage};
use super::pack::Packer;
use super::refs::{add_l2_refs, replace_active_l1, rewrite_active};
use super::txn::Txn;
use crate::tables::{SubType, L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COPIED, OFLAG_ZERO};
use crate::tables::{L2_BITMAP_ALL_ALLOC as ALL_ALLOC, L2_BITMAP_ALL_ZERO as ALL_ZERO};
use crate::writer::{ClusterEncoder, CompressionType};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use vdisk_core::writer::{check_write_range, durable_commit};
use vdisk_core::{
    Error, FileStorage, ImageReader, ImageWriter, Payload, Result, Storage, WriterCaps,
};

/// An [`ImageWriter`] over the existing qcow2 image in `storage`. A write of part of a cluster
/// that is unallocated over a backing file is refused: [`open_writer_in_over`] takes the backing
/// image whose bytes fill the rest of such a cluster.
pub fn open_writer_in(storage: Arc<dyn Storage>) -> Result<Box<dyn ImageWriter>> {
    open_writer_in_over(storage, None)
}

/// As [`open_writer_in`], with the image's opened backing chain (`backing`): a cluster (or
/// subcluster) that is unallocated here and written in part takes its other bytes from the
/// backing image, as QEMU's copy-on-write does.
pub fn open_writer_in_over(
    storage: Arc<dyn Storage>,
    backing: Option<Arc<dyn ImageReader>>,
) -> Result<Box<dyn ImageWriter>> {
    let mut w = InplaceWriter::open(storage)?;
    w.backing = backing.filter(|_| w.has_backing);
    Ok(Box::new(w))
}

/// As [`open_writer_in`], storing each whole cluster of data compressed with the image's
/// compression type (`rebase -c`), as QEMU's `qcow2_co_pwritev_compressed_task` does: a cluster
/// that does not compress to less than a cluster is stored plain, and the last cluster of an image
/// whose size is not a multiple of the cluster size is compressed padded with zeros. Zeros and
/// partial writes are stored as without compression. An image with an external data file takes no
/// compressed data, as in QEMU: such a write fails with "Operation not supported".
pub fn open_compressing_writer_in(storage: Arc<dyn Storage>) -> Result<Box<dyn ImageWriter>> {
    let mut w = InplaceWriter::open(storage)?;
    let kind = match w.img.r.header.compression_type {
        crate::header::COMPRESSION_ZSTD => CompressionType::Zstd,
        _ => CompressionType::Zlib,
    };
    w.encoder = Some(ClusterEncoder::new(w.cs(), kind));
    Ok(Box::new(w))
}

struct InplaceWriter {
    img: RwImage,
    /// Active L1 as stored.
    l1: Vec<u64>,
    /// Changed L2 tables by L1 index.
    fresh: HashMap<usize, Vec<u64>>,
    /// First cluster index this writer may allocate (the file's end when opened).
    first_new: u64,
    /// Next cluster index to try.
    next: u64,
    /// Clusters at or past `first_new` that were not free (leaked clusters past the end).
    skipped: BTreeSet<u64>,
    has_backing: bool,
    /// The backing image, when the caller opened it: the source of the bytes of a partly written
    /// unallocated unit.
    backing: Option<Arc<dyn ImageReader>>,
    /// The external data file (opened read-write), where guest cluster `g` is written in place at
    /// `g * cluster_size` (qcow2.txt "External data file"; nothing there can be written elsewhere
    /// first: an overwritten allocated cluster changes at once, as with QEMU).
    data: Option<FileStorage>,
    /// The data file is raw: zeros are written into it, not recorded as zero clusters.
    raw: bool,
    /// The image's persistent bitmaps: enabled ones get the bits of every write.
    bitmaps: Option<Bitmaps>,
    /// Whole clusters of data are stored compressed ([`open_compressing_writer_in`]).
    encoder: Option<ClusterEncoder>,
    /// The host cluster compressed data is being packed into.
    pack: Option<Packer>,
}

impl InplaceWriter {
    fn open(storage: Arc<dyn Storage>) -> Result<Self> {
        let img = RwImage::open(Arc::clone(&storage), Purpose::Modify)?;
        let bitmaps = Bitmaps::load(&img)?;
        let cs = img.cs();
        let first_new = storage.len()?.div_ceil(cs).max(1);
        let data = match &img.r.data_file {
            Some(p) => Some(FileStorage::open_rw(p)?),
            None => None,
        };
        Ok(InplaceWriter {
            data,
            raw: img.r.header.autoclear_features & crate::header::autoclear::DATA_FILE_RAW != 0,
            l1: img.r.l1.clone(),
            has_backing: img.r.header.backing_file.is_some(),
            backing: None,
            img,
            fresh: HashMap::new(),
            first_new,
            next: first_new,
            skipped: BTreeSet::new(),
            bitmaps,
            encoder: None,
            pack: None,
        })
    }

    fn cs(&self) -> u64 {
        self.img.cs()
    }

    fn words(&self) -> usize {
        self.img.r.geo.words_per_entry()
    }

    /// Whether host cluster `c` was allocated by this writer (and so may be rewritten).
    fn mine(&self, c: u64) -> bool {
        c >= self.first_new && c < self.next && !self.skipped.contains(&c)
    }

    fn alloc(&mut self) -> Result<u64> {
        loop {
            let c = self.next;
            if c >= crate::limits::MAX_CHECK_CLUSTERS {
                return Err(Error::limit(
                    self.img.path(),
                    "host cluster index",
                    c,
                    crate::limits::MAX_CHECK_CLUSTERS,
                ));
            }
            self.next += 1;
            let referenced = usize::try_from(c)
                .ok()
                .and_then(|i| self.img.refs.get(i))
                .is_some_and(|r| *r != 0);
            if referenced || self.img.stored_refcount(c)? != 0 {
                self.skipped.insert(c);
                continue;
            }
            return Ok(c);
        }
    }

    /// The (mutable) L2 table for L1 index `i`.
    fn table(&mut self, i: usize) -> Result<&mut Vec<u64>> {
        if !self.fresh.contains_key(&i) {
            let e = self.l1.get(i).copied().ok_or_else(|| {
                Error::invalid(format!(
                    "{}: write past the end of the L1 table",
                    self.img.path().display()
                ))
            })?;
            let l2 = e & L1E_OFFSET_MASK;
            let t = if l2 == 0 {
                vec![0u64; (self.cs() / 8) as usize]
            } else {
                self.img.read_l2(l2)?
            };
            self.fresh.insert(i, t);
        }
        self.fresh
            .get_mut(&i)
            .ok_or_else(|| Error::Other("L2 table vanished".into()))
    }

    /// (L1 index, word index of the entry) of guest cluster `g`.
    fn locate(&self, g: u64) -> (usize, usize) {
        let per = self.img.r.geo.l2_entries();
        ((g / per) as usize, (g % per) as usize * self.words())
    }

    fn entry(&mut self, g: u64) -> Result<(u64, u64)> {
        let (i, j) = self.locate(g);
        let ext = self.img.r.geo.extended;
        let t = self.table(i)?;
        let e = t.get(j).copied().unwrap_or(0);
        let b = if ext {
            t.get(j + 1).copied().unwrap_or(0)
        } else {
            0
        };
        Ok((e, b))
    }

    fn set_entry(&mut self, g: u64, e: u64, b: u64) -> Result<()> {
        let (i, j) = self.locate(g);
        let ext = self.img.r.geo.extended;
        let t = self.table(i)?;
        if let Some(w) = t.get_mut(j) {
            *w = e;
        }
        if ext {
            if let Some(w) = t.get_mut(j + 1) {
                *w = b;
            }
        }
        Ok(())
    }

    /// Stores a whole cluster of data for guest cluster `g` with subcluster alloc bits `bits`.
    fn store(&mut self, g: u64, data: &[u8], bits: u64) -> Result<()> {
        let cs = self.cs();
        if let Some(d) = &self.data {
            let len = cs.min(self.img.r.virtual_size() - g * cs) as usize;
            let mut buf = data.to_vec();
            buf.resize(len, 0);
            d.write_at(&buf, g * cs)?;
            return self.set_entry(g, (g * cs) | OFLAG_COPIED, bits);
        }
        let (e, _) = self.entry(g)?;
        let old = (e & L2E_OFFSET_MASK) >> self.img.cluster_bits();
        let host = if e & crate::tables::OFLAG_COMPRESSED == 0 && old != 0 && self.mine(old) {
            old
        } else {
            self.alloc()?
        };
        let mut buf = data.to_vec();
        buf.resize(cs as usize, 0);
        self.img.storage.write_at(&buf, host * cs)?;
        self.set_entry(g, (host * cs) | OFLAG_COPIED, bits)
    }

    /// Stores guest cluster `g` (`data`: the whole cluster, or the image's last, shorter one)
    /// compressed, or plain when it does not compress.
    fn store_compressed(&mut self, g: u64, data: &[u8], bits: u64) -> Result<()> {
        if self.data.is_some() {
            // QEMU's qcow2_co_pwritev_compressed_part: -ENOTSUP.
            return Err(Error::Other("Operation not supported".into()));
        }
        let Some(enc) = self.encoder else {
            return self.store(g, data, bits);
        };
        let cs = self.cs();
        let mut cluster = data.to_vec();
        cluster.resize(cs as usize, 0);
        let Some(blob) = enc.compress_cluster(&cluster)? else {
            return self.store(g, data, bits);
        };
        let mut pack = self.pack.take();
        let storage = Arc::clone(&self.img.storage);
        let max_refs = match 1u32 << self.img.r.header.refcount_order {
            64.. => u64::MAX,
            bits => (1u64 << bits) - 1,
        };
        let placed = Packer::place(
            &mut pack,
            &blob,
            cs,
            max_refs,
            || self.alloc(),
            |c, b| storage.write_at(b, c * cs),
        );
        self.pack = pack;
        let host = placed?;
        let entry = self.img.r.geo.compressed_entry(host, blob.len() as u64);
        self.set_entry(g, entry, 0)
    }

    /// The cluster a compressed entry this writer made points at, decompressed into `buf`.
    fn read_packed(&mut self, e: u64, buf: &mut [u8]) -> Result<()> {
        let cs = self.cs();
        if let Some(p) = &self.pack {
            let storage = Arc::clone(&self.img.storage);
            p.flush(|c, b| storage.write_at(b, c * cs))?;
        }
        let (host, len) = self.img.r.geo.compressed(e);
        let mut blob = vec![0u8; len as usize];
        self.img.storage.read_exact_at(&mut blob, host)?;
        crate::compress::decompress(self.img.r.header.compression_type, &blob, buf).map_err(|m| {
            Error::corrupt(
                self.img.path(),
                Some(host),
                format!("compressed cluster this change wrote: {m}"),
            )
        })
    }

    /// Guest cluster `g` reads as zeros in this layer (hiding any backing data).
    fn store_zero(&mut self, g: u64) -> Result<()> {
        let ext = self.img.r.geo.extended;
        if self.raw {
            // QEMU writes the zeros into a raw data file and keeps the cluster mapped, marked zero.
            let zeros = vec![0u8; self.cs() as usize];
            self.store(g, &zeros, 0)?;
            let host = (g * self.cs()) | OFLAG_COPIED;
            return if ext {
                self.set_entry(g, host, ALL_ZERO)
            } else {
                self.set_entry(g, host | OFLAG_ZERO, 0)
            };
        }
        if ext {
            return self.set_entry(g, 0, ALL_ZERO);
        }
        if self.img.r.header.version >= 3 {
            return self.set_entry(g, OFLAG_ZERO, 0);
        }
        if !self.has_backing {
            return self.set_entry(g, 0, 0);
        }
        let zeros = vec![0u8; self.cs() as usize];
        self.store(g, &zeros, 0)
    }

    /// The content of guest cluster `g` in this layer as the writer left it (zeros where
    /// unallocated), and the subcluster alloc bits of the result (extended L2). `touch[u]` says how
    /// much of unit `u` the write covers (0 none, 1 part, 2 all): a unit covered in part that is
    /// unallocated over a backing file is an error (its other bytes would have to come from the
    /// backing file); an untouched unallocated subcluster stays unallocated.
    fn current(&mut self, g: u64, touch: &[u8]) -> Result<(Vec<u8>, u64)> {
        let cs = self.cs();
        let (e, b) = self.entry(g)?;
        let geo = self.img.r.geo;
        let mut buf = vec![0u8; cs as usize];
        let host = e & L2E_OFFSET_MASK;
        let compressed = e & crate::tables::OFLAG_COMPRESSED != 0;
        let at = g * cs;
        let in_data = (host != 0 || e & OFLAG_COPIED != 0) && (geo.extended || e & OFLAG_ZERO == 0);
        if let Some(d) = self.data.as_ref().filter(|_| in_data) {
            // Allocated in the data file (perhaps by this writer): its bytes as they are there.
            let len = cs.min(self.img.r.virtual_size() - at) as usize;
            d.read_zero_padded(&mut buf[..len], at)?;
        } else if !compressed && host != 0 && self.mine(host >> geo.cluster_bits) {
            self.img.storage.read_exact_at(&mut buf, host)?;
        } else if compressed && self.mine(geo.compressed(e).0 >> geo.cluster_bits) {
            self.read_packed(e, &mut buf)?;
        } else {
            let at = g * cs;
            let len = cs.min(self.img.r.virtual_size().saturating_sub(at)) as usize;
            self.img.r.read_at(&mut buf[..len], at)?;
        }
        let mut bits = 0u64;
        let unit = 1usize << geo.unit_bits();
        for (sc, t) in touch.iter().enumerate() {
            let kind = geo.classify(e, b, sc as u32);
            let unalloc = matches!(kind, SubType::UnallocPlain | SubType::UnallocAlloc(_));
            if unalloc && *t == 1 && self.has_backing {
                let Some(bk) = &self.backing else {
                    return Err(Error::invalid(format!(
                        "{}: cannot write part of a cluster that is not allocated over a backing \
                         file without reading the backing file",
                        self.img.path().display()
                    )));
                };
                // Copy-on-write: the unit's other bytes are the backing image's (zeros past its end).
                let from = sc * unit;
                let start = at + from as u64;
                let n = (start + unit as u64)
                    .min(self.img.r.virtual_size())
                    .saturating_sub(start) as usize;
                super::image::read_backing(bk.as_ref(), &mut buf[from..from + n], start)?;
            }
            if !unalloc || *t != 0 {
                bits |= 1 << sc;
            }
        }
        Ok((buf, bits))
    }

    /// Writes `data` (or zeros when `None`) over bytes `from..from+len` of guest cluster `g`.
    fn partial(&mut self, g: u64, from: u64, len: u64, data: Option<&[u8]>) -> Result<()> {
        let geo = self.img.r.geo;
        let unit = 1u64 << geo.unit_bits();
        let units = if geo.extended { 32 } else { 1 };
        let to = from + len;
        let touch: Vec<u8> = (0..units)
            .map(|u| {
                let (s, e) = (u * unit, (u + 1) * unit);
                if from <= s && to >= e {
                    2
                } else if from < e && to > s {
                    1
                } else {
                    0
                }
            })
            .collect();
        let (mut buf, bits) = self.current(g, &touch)?;
        let dst = &mut buf[from as usize..(from + len) as usize];
        match data {
            Some(d) => dst.copy_from_slice(d),
            None => dst.fill(0),
        }
        let bits = if geo.extended { bits } else { 0 };
        self.store(g, &buf, bits)
    }
}

impl ImageWriter for InplaceWriter {
    fn caps(&self) -> WriterCaps {
        WriterCaps {
            granularity: self.cs(),
            out_of_order: false,
            zero_initialized: false,
            copy_range: false,
        }
    }

    fn write(&mut self, offset: u64, payload: Payload) -> Result<()> {
        let size = self.img.r.virtual_size();
        let len = payload.len();
        check_write_range(self.img.path(), offset, len, size)?;
        // Cannot overflow: checked just above.
        let end = offset + len;
        let data = payload.plain("qcow2 in-place writer")?;
        if let Some(b) = self.bitmaps.as_mut() {
            b.set_dirty(&self.img, offset, len)?;
        }
        let cs = self.cs();
        let mut pos = offset;
        while pos < end {
            let g = pos / cs;
            let cstart = g * cs;
            let cend = (cstart + cs).min(end);
            let whole = pos == cstart && (cend == cstart + cs || cend == size);
            let piece = data.map(|d| &d[(pos - offset) as usize..(cend - offset) as usize]);
            match (whole, piece) {
                (true, Some(d)) => {
                    let bits = if self.img.r.geo.extended {
                        ALL_ALLOC
                    } else {
                        0
                    };
                    if self.encoder.is_some() {
                        self.store_compressed(g, d, bits)?
                    } else {
                        self.store(g, d, bits)?
                    }
                }
                (true, None) => self.store_zero(g)?,
                (false, d) => self.partial(g, pos - cstart, cend - pos, d)?,
            }
            pos = cend;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let mut me = *self;
        if me.fresh.is_empty() {
            return Ok(());
        }
        if let Some(p) = me.pack.take() {
            let (storage, cs) = (Arc::clone(&me.img.storage), me.cs());
            p.flush(|c, b| storage.write_at(b, c * cs))?;
        }
        let h = me.img.r.header.clone();
        let l1 = me.l1.clone();
        let fresh = std::mem::take(&mut me.fresh);
        let bitmaps = me.bitmaps.take();
        if let Some(d) = me.data.as_ref().filter(|_| durable_commit()) {
            d.sync()?;
        }
        let mut t = Txn::new(&mut me.img);
        for (i, table) in &fresh {
            let l2 = l1.get(*i).map_or(0, |e| e & L1E_OFFSET_MASK);
            if l2 != 0 {
                let old = t.img.read_l2(l2)?;
                add_l2_refs(&mut t, &old, -1)?;
            }
            add_l2_refs(&mut t, table, 1)?;
        }
        let active = rewrite_active(&mut t, &l1, &fresh)?;
        let l1_off = replace_active_l1(&mut t, &active)?;
        let mut nh = h;
        nh.l1_table_offset = l1_off;
        if let Some(b) = bitmaps {
            if b.write(&mut t, &mut nh)? {
                t.rewrite_whole_header();
            }
        }
        t.commit(&nh, false)
    }
}
