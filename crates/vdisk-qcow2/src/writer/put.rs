//! Guest data into the image: plain, compressed and zero clusters, partial clusters gathered in a
//! buffer, whole clusters copied from a host file (`convert -C`) (qcow2.txt "Cluster mapping",
//! "Compressed Clusters Descriptor", "Extended L2 Entries").

use super::file::io;
use super::layout::Entry;
use super::{Placement, Qcow2Writer};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use vdisk_core::{DataBuf, Error, HostRange, Result};

/// Bytes to store as data clusters: the writer's own (written at once), or part of a payload
/// buffer, which the writer's I/O threads write without copying.
#[derive(Clone, Copy)]
pub(super) struct Bytes<'a> {
    bytes: &'a [u8],
    /// The buffer `bytes` lie in, and where in it they start.
    owner: Option<(&'a Arc<DataBuf>, usize)>,
}

impl<'a> Bytes<'a> {
    pub(super) fn own(bytes: &'a [u8]) -> Self {
        Bytes { bytes, owner: None }
    }

    pub(super) fn shared(buf: &'a Arc<DataBuf>) -> Self {
        Bytes {
            bytes: buf,
            owner: Some((buf, 0)),
        }
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn sub(&self, r: Range<usize>) -> Bytes<'a> {
        Bytes {
            bytes: &self.bytes[r.clone()],
            owner: self.owner.map(|(b, at)| (b, at + r.start)),
        }
    }
}

/// What whole data clusters are made of: bytes in memory, or a range of a host file that the
/// kernel copies into the image (`convert -C`, qemu's `qcow2_co_copy_range_to`).
#[derive(Clone)]
pub(super) enum Src<'a> {
    Mem(Bytes<'a>),
    Host(HostRange),
}

impl Src<'_> {
    fn len(&self) -> usize {
        match self {
            Src::Mem(b) => b.len(),
            // At most one L2 region of clusters (put_copy), far below usize::MAX on 64 bits.
            Src::Host(r) => usize::try_from(r.len).unwrap_or(usize::MAX),
        }
    }

    fn sub(&self, r: Range<usize>) -> Self {
        match self {
            Src::Mem(b) => Src::Mem(b.sub(r)),
            Src::Host(h) => Src::Host(HostRange {
                storage: Arc::clone(&h.storage),
                offset: h.offset + r.start as u64,
                len: r.len() as u64,
            }),
        }
    }
}

impl Qcow2Writer {
    /// Stores `n` whole guest clusters from `g` (all in one L2 region) as plain data.
    pub(super) fn put_clusters(&mut self, g: u64, n: u64, bytes: Src<'_>) -> Result<()> {
        let bits = self.s.cluster_bits;
        self.enter_region(g / self.s.l2_entries())?;
        let hosts: Vec<u64> = match &self.placement {
            Placement::DataFile(f) => {
                // Only guest bytes go to the data file: it stays exactly the disk's size.
                let at = g << bits;
                let keep = (self.s.size - at).min(bytes.len() as u64) as usize;
                match bytes.sub(0..keep) {
                    Src::Mem(b) => f
                        .file()
                        .write_all_at(b.bytes, at)
                        .map_err(io(f.dest(), at))?,
                    Src::Host(r) => r.copy_to(f.file(), f.dest(), at, &mut self.offload)?,
                }
                (g..g + n).map(|c| c << bits).collect()
            }
            Placement::Prealloc(l) => {
                let at = l.data_host(g);
                self.write_data(at, bytes)?;
                (g..g + n).map(|c| l.data_host(c)).collect()
            }
            Placement::Stream => {
                // One cluster at a time (a refcount block may be reserved in between), written in
                // contiguous runs.
                let cs = self.cs() as usize;
                let mut hosts = Vec::with_capacity(n as usize);
                let mut run = 0usize;
                for i in 0..n as usize {
                    let h = self.refs.alloc_one() << bits;
                    if let Some(last) = hosts.last() {
                        if *last + self.cs() != h {
                            self.write_data(hosts[run], bytes.sub(run * cs..i * cs))?;
                            run = i;
                        }
                    }
                    hosts.push(h);
                }
                if let Some(first) = hosts.get(run) {
                    self.write_data(*first, bytes.sub(run * cs..bytes.len()))?;
                }
                hosts
            }
        };
        for (i, h) in hosts.into_iter().enumerate() {
            self.set_entry(g + i as u64, Entry::data(&self.s, h))?;
        }
        Ok(())
    }

    /// Stores one compressed cluster, packed after the previous one when its host cluster can
    /// take another reference (QEMU's `qcow2_alloc_bytes`).
    pub(super) fn put_compressed(&mut self, g: u64, bytes: &[u8]) -> Result<()> {
        let (bits, cs, len) = (self.s.cluster_bits, self.cs(), bytes.len() as u64);
        if len == 0 || len >= cs {
            return Err(Error::invalid(
                "compressed cluster must be smaller than a cluster",
            ));
        }
        self.enter_region(g / self.s.l2_entries())?;
        let mut at = None;
        if let Some(p) = self.pack {
            let cp = p >> bits;
            let room = ((cp + 1) << bits) - p;
            if len <= room {
                if self.refs.bump(cp) {
                    at = Some(p);
                }
            } else if self.refs.peek_one() == Some(cp + 1) && self.refs.bump(cp) {
                self.refs.alloc_one();
                at = Some(p);
            }
        }
        let at = match at {
            Some(p) => p,
            None => self.refs.alloc_one() << bits,
        };
        self.write_image(at, bytes)?;
        let end = at + len;
        self.pack = if end % cs == 0 { None } else { Some(end) };
        self.set_entry(g, Entry::compressed(&self.s, at, len))
    }

    /// Zeros over whole clusters that must hide a backing file.
    pub(super) fn put_zero_clusters(&mut self, g: u64, n: u64) -> Result<()> {
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
            self.put_clusters(
                c,
                k,
                Src::Mem(Bytes::own(&zeros[..(k * self.cs()) as usize])),
            )?;
            c += k;
        }
        Ok(())
    }

    pub(super) fn region_left(&self, g: u64) -> u64 {
        let per = self.s.l2_entries();
        per - g % per
    }

    /// Writes the partly filled cluster, zero-padded.
    pub(super) fn flush_partial(&mut self) -> Result<()> {
        if let Some((g, buf)) = self.partial.take() {
            self.put_clusters(g, 1, Src::Mem(Bytes::own(&buf)))?;
        }
        Ok(())
    }

    /// Copies `data` (or zeros when `None`) into guest cluster `g` at `within`.
    pub(super) fn put_partial(
        &mut self,
        g: u64,
        within: u64,
        len: u64,
        data: Option<&[u8]>,
    ) -> Result<()> {
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

    pub(super) fn put_data(&mut self, offset: u64, data: Bytes<'_>) -> Result<()> {
        let (bits, cs) = (self.s.cluster_bits, self.cs());
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let (g, within) = (at >> bits, at & (cs - 1));
            if within != 0 || (rest.len() as u64) < cs {
                let n = (cs - within).min(rest.len() as u64) as usize;
                self.put_partial(g, within, n as u64, Some(&rest.bytes[..n]))?;
                at += n as u64;
                rest = rest.sub(n..rest.len());
                continue;
            }
            self.flush_partial()?;
            let n = (rest.len() as u64 / cs).min(self.region_left(g));
            let cut = (n * cs) as usize;
            self.put_clusters(g, n, Src::Mem(rest.sub(0..cut)))?;
            at += n * cs;
            rest = rest.sub(cut..rest.len());
        }
        Ok(())
    }

    /// Writes data clusters at host offset `at`: through the I/O threads when the bytes are part
    /// of a payload buffer or a host file range, else at once.
    fn write_data(&self, at: u64, src: Src<'_>) -> Result<()> {
        match (&self.pool, src) {
            (Some(p), Src::Mem(b)) => match b.owner {
                Some((buf, start)) => p.submit_part(at, buf, start..start + b.len()),
                None => self.write_image(at, b.bytes),
            },
            (None, Src::Mem(b)) => self.write_image(at, b.bytes),
            (Some(p), Src::Host(r)) => p.submit_copy(at, r),
            (None, Src::Host(r)) => r.copy_to(self.out.file(), self.out.dest(), at, &mut true),
        }
    }

    /// Stores a host file range as data (`convert -C`): whole clusters are copied by the kernel,
    /// the bytes of a cluster written only in part are read and gathered like other data.
    pub(super) fn put_copy(&mut self, offset: u64, r: HostRange) -> Result<()> {
        let (bits, cs) = (self.s.cluster_bits, self.cs());
        let end = offset.saturating_add(r.len);
        let mut at = offset;
        while at < end {
            let from = r.offset + (at - offset);
            let (g, within) = (at >> bits, at & (cs - 1));
            if within != 0 || end - at < cs {
                let n = (cs - within).min(end - at);
                let mut buf = vec![0u8; n as usize];
                r.storage.read_exact_at(&mut buf, from)?;
                self.put_partial(g, within, n, Some(&buf))?;
                at += n;
                continue;
            }
            self.flush_partial()?;
            let n = ((end - at) / cs).min(self.region_left(g));
            let part = HostRange {
                storage: Arc::clone(&r.storage),
                offset: from,
                len: n * cs,
            };
            self.put_clusters(g, n, Src::Host(part))?;
            at += n * cs;
        }
        Ok(())
    }

    pub(super) fn put_zero(&mut self, offset: u64, len: u64) -> Result<()> {
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
}
