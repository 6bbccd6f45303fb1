//! Test doubles for the engine: an in-memory image with an explicit extent layout that records its
//! reads, and an in-memory writer that records its writes and can fail or go slowly.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vdisk_core::{
    ChunkEncoder, Encoded, Error, Extent, ExtentKind, ImageInfo, ImageReader, ImageWriter, Payload,
    Result, WriterCaps,
};

/// An image made of explicit extents over an in-memory buffer.
pub struct LayoutReader {
    pub data: Vec<u8>,
    /// (start, end, kind), covering the disk.
    pub extents: Vec<(u64, u64, ExtentKind)>,
    pub reads: Mutex<Vec<(u64, u64)>>,
    pub fail_read_at: Option<u64>,
    /// Shared with a [`MemWriter`]: how far it has written, to measure read-ahead.
    pub writer_pos: Option<Arc<AtomicU64>>,
    pub max_ahead: AtomicU64,
}

impl LayoutReader {
    /// Builds the image: Data extents get `fill(offset)` bytes, others zeros.
    pub fn new(layout: &[(u64, ExtentKind)], fill: impl Fn(u64) -> u8) -> Self {
        let mut extents = Vec::new();
        let mut data = Vec::new();
        let mut pos = 0u64;
        for &(len, kind) in layout {
            for i in 0..len {
                data.push(if kind.reads_as_zero() {
                    0
                } else {
                    fill(pos + i)
                });
            }
            extents.push((pos, pos + len, kind));
            pos += len;
        }
        LayoutReader {
            data,
            extents,
            reads: Mutex::new(Vec::new()),
            fail_read_at: None,
            writer_pos: None,
            max_ahead: AtomicU64::new(0),
        }
    }

    /// Reads that touched an extent reported as zeros.
    pub fn reads_of_zero_extents(&self) -> Vec<(u64, u64)> {
        self.reads_of_zero_granules(1)
    }

    /// Reads that touched the whole `granule`s of an extent reported as zeros (the parts of it that
    /// share a granule with data may be read).
    pub fn reads_of_zero_granules(&self, granule: u64) -> Vec<(u64, u64)> {
        let size = self.data.len() as u64;
        let reads = self.reads.lock().unwrap();
        reads
            .iter()
            .copied()
            .filter(|(a, b)| {
                self.extents.iter().any(|(s, e, k)| {
                    let s = s.div_ceil(granule) * granule;
                    let e = if *e == size {
                        *e
                    } else {
                        e / granule * granule
                    };
                    k.reads_as_zero() && s < e && *a < e && s < *b
                })
            })
            .collect()
    }
}

impl ImageReader for LayoutReader {
    fn format_name(&self) -> &'static str {
        "layout"
    }

    fn virtual_size(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        vdisk_core::reader::check_range(self.virtual_size(), offset, buf.len() as u64)?;
        let end = offset + buf.len() as u64;
        self.reads.lock().unwrap().push((offset, end));
        if let Some(f) = self.fail_read_at {
            if offset <= f && f < end {
                return Err(Error::Other(format!("injected read error at {f}")));
            }
        }
        if let Some(w) = &self.writer_pos {
            let ahead = end.saturating_sub(w.load(Ordering::SeqCst));
            self.max_ahead.fetch_max(ahead, Ordering::SeqCst);
        }
        buf.copy_from_slice(&self.data[offset as usize..end as usize]);
        Ok(())
    }

    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let (_, e, k) = self
            .extents
            .iter()
            .find(|(s, e, _)| *s <= offset && offset < *e)
            .copied()
            .ok_or_else(|| Error::invalid("outside"))?;
        Ok(Extent::new(offset, (e - offset).min(max_len), k))
    }

    fn info(&self) -> Result<ImageInfo> {
        Ok(ImageInfo::new("layout", self.virtual_size()))
    }
}

/// What a [`MemWriter`] saw.
#[derive(Default)]
pub struct Record {
    pub image: Vec<u8>,
    pub writes: Vec<(u64, u64, &'static str)>,
    pub finished: bool,
}

/// Writes into memory, shared with the test through `record`.
pub struct MemWriter {
    pub record: Arc<Mutex<Record>>,
    pub caps: WriterCaps,
    pub fail_on_write: Option<usize>,
    pub delay: Option<Duration>,
    pub pos: Arc<AtomicU64>,
    pub encoder: Option<Arc<dyn ChunkEncoder>>,
    pub count: AtomicUsize,
}

impl MemWriter {
    pub fn new(size: u64, caps: WriterCaps) -> (Self, Arc<Mutex<Record>>) {
        let record = Arc::new(Mutex::new(Record {
            image: vec![0xEEu8; size as usize],
            ..Record::default()
        }));
        if caps.zero_initialized {
            record.lock().unwrap().image.fill(0);
        }
        let w = MemWriter {
            record: Arc::clone(&record),
            caps,
            fail_on_write: None,
            delay: None,
            pos: Arc::new(AtomicU64::new(0)),
            encoder: None,
            count: AtomicUsize::new(0),
        };
        (w, record)
    }
}

pub fn caps(granularity: u64, out_of_order: bool, zero_initialized: bool) -> WriterCaps {
    WriterCaps {
        granularity,
        out_of_order,
        zero_initialized,
        copy_range: false,
    }
}

impl ImageWriter for MemWriter {
    fn caps(&self) -> WriterCaps {
        self.caps
    }

    fn encoder(&self) -> Option<Arc<dyn ChunkEncoder>> {
        self.encoder.clone()
    }

    fn write(&mut self, offset: u64, payload: Payload) -> Result<()> {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_on_write == Some(n) {
            return Err(Error::Other(format!("injected write error on write {n}")));
        }
        if let Some(d) = self.delay {
            std::thread::sleep(d);
        }
        let len = payload.len();
        let mut r = self.record.lock().unwrap();
        let end = (offset + len) as usize;
        assert!(end <= r.image.len(), "write past the end");
        let kind = match payload {
            Payload::Data(d) => {
                r.image[offset as usize..end].copy_from_slice(&d);
                "data"
            }
            Payload::Zero(_) => {
                r.image[offset as usize..end].fill(0);
                "zero"
            }
            Payload::Encoded(e) => {
                let d = decode(&e);
                assert_eq!(d.len() as u64, len);
                r.image[offset as usize..end].copy_from_slice(&d);
                "encoded"
            }
            Payload::Copy(c) => {
                assert!(
                    self.caps.copy_range,
                    "a copy handed to a writer that takes none"
                );
                c.storage
                    .read_exact_at(&mut r.image[offset as usize..end], c.offset)?;
                "copy"
            }
        };
        r.writes.push((offset, len, kind));
        self.pos.fetch_max(offset + len, Ordering::SeqCst);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.record.lock().unwrap().finished = true;
        Ok(())
    }
}

/// A toy encoder: run-length pairs (count, byte); declines when that is not smaller.
pub struct RleEncoder;

impl ChunkEncoder for RleEncoder {
    fn encode(&self, _offset: u64, data: &[u8]) -> Result<Option<Encoded>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            let mut n = 1;
            while i + n < data.len() && data[i + n] == b && n < 255 {
                n += 1;
            }
            out.push(n as u8);
            out.push(b);
            i += n;
        }
        if out.len() >= data.len() {
            return Ok(None);
        }
        Ok(Some(Encoded {
            bytes: out,
            raw_len: data.len() as u64,
        }))
    }
}

pub fn decode(e: &Encoded) -> Vec<u8> {
    let mut v = Vec::new();
    for pair in e.bytes.chunks(2) {
        v.extend(std::iter::repeat_n(pair[1], pair[0] as usize));
    }
    v
}
