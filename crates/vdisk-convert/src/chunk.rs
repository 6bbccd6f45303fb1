//! The per-chunk work of a conversion, run on the worker threads: read a chunk of the source (and of
//! the target's backing image), find what must be written (data, zero runs, parts equal to the
//! backing image), and encode data granules with the writer's encoder (e.g. compression).

use crate::granule::{self, Fragment, Piece};
use crate::mapped::{self, MapCache};
use crate::plan::{SegKind, Segment};
use crate::sparse::{self, Run};
use std::sync::Arc;
use vdisk_core::zero::is_zero;
use vdisk_core::{BufPool, ChunkEncoder, DataBuf, HostRange, ImageReader, Payload, Result};

/// Everything a worker needs, shared by reference.
pub(crate) struct Ctx<'a> {
    pub src: &'a dyn ImageReader,
    pub backing: Option<Arc<dyn ImageReader>>,
    pub encoder: Option<Arc<dyn ChunkEncoder>>,
    pub granule: u64,
    pub size: u64,
    /// `-S` in bytes; 0 disables zero detection (everything is written as data).
    pub min_sparse: u64,
    /// Alignment of gaps, in sectors (qemu's `s->alignment`).
    pub align_sectors: u64,
    /// Zero runs need no write at all (new zero-initialised target without backing).
    pub skip_zeros: bool,
    /// Tasks follow the source's extents as qemu-img's buffers do (see [`crate::granule`]): data
    /// runs are found with qemu's rules in each task and widened to whole granules afterwards.
    pub exact: bool,
    /// `-c` was given: zeros are found in whole granules (qemu's compressed path) even when the
    /// writer has no encoder.
    pub compress: bool,
    /// Maps of the source's host files, when data tasks may be read through them.
    pub maps: Option<MapCache>,
}

/// The outcome of one task: what to hand the writer, and byte counts for the statistics.
#[derive(Debug, Default)]
pub(crate) struct Done {
    pub len: u64,
    pub payloads: Vec<(u64, Payload)>,
    /// Pieces of granules shared with the previous and the next task (exact mode).
    pub head: Option<Fragment>,
    pub tail: Option<Fragment>,
    pub read: u64,
    /// Of `read`, the bytes read through a map of their host file.
    pub mapped: u64,
    pub data: u64,
    pub zero: u64,
    pub unchanged: u64,
}

/// What one run of a chunk becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Data,
    Zero,
    /// Equal to the backing image: leave unallocated.
    Unchanged,
}

/// Whether a segment needs a buffer (and so a worker).
pub(crate) fn needs_worker(seg: &Segment, min_sparse: u64) -> bool {
    match seg.kind {
        SegKind::Data | SegKind::ZeroOverBacking => true,
        SegKind::Zero => min_sparse == 0,
        SegKind::Same => false,
    }
}

/// The buffers of one task, taken from the conversion's [`BufPool`] by the planning thread. A
/// writer drops each data buffer once it has written it, which returns it to the pool, so a
/// conversion cycles through about as many buffers as tasks in flight, and a reused buffer needs no
/// zero-filling before a read overwrites it. Buffers are first allocated by the planning thread,
/// so they all live in its malloc arena.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    data: Option<DataBuf>,
    backing: Option<DataBuf>,
}

impl Buffers {
    /// Takes what a worker task for `seg` (at most one chunk long) needs.
    pub(crate) fn reserve(pool: &Arc<BufPool>, seg: &Segment, with_backing: bool) -> Self {
        let len = (seg.end - seg.start) as usize;
        let backing = with_backing && matches!(seg.kind, SegKind::Data | SegKind::ZeroOverBacking);
        Buffers {
            data: Some(pool.take(len)),
            backing: backing.then(|| pool.take(len)),
        }
    }
}

/// `len` bytes of unspecified content in `spare` (a new zeroed buffer when there is none or it is
/// too short): for callers that overwrite all of it.
fn buffer(spare: Option<DataBuf>, len: u64) -> DataBuf {
    let len = len as usize;
    match spare {
        Some(b) if b.len() == len => b,
        _ => DataBuf::from(vec![0u8; len]),
    }
}

/// `len` zero bytes in `spare`'s memory.
fn zeroed(spare: Option<DataBuf>, len: u64) -> DataBuf {
    let mut b = buffer(spare, len);
    b.fill(0);
    b
}

/// Runs one task of at most one chunk (or any length for the bufferless kinds), in `bufs` where
/// they are big enough.
pub(crate) fn run(ctx: &Ctx<'_>, seg: Segment, bufs: Buffers) -> Result<Done> {
    let len = seg.end - seg.start;
    let mut done = Done {
        len,
        ..Done::default()
    };
    match seg.kind {
        SegKind::Same => done.unchanged = len,
        SegKind::Zero if ctx.exact => {
            let g = granule::to_granules(
                seg.start,
                seg.end,
                ctx.granule,
                ctx.size,
                &[(len, false)],
                None,
            );
            put_granules(ctx, &mut done, g);
        }
        SegKind::Zero if ctx.min_sparse == 0 => emit(
            ctx,
            &mut done,
            seg.start,
            zeroed(bufs.data, len),
            &[(len, Class::Data)],
        )?,
        SegKind::Zero => emit(
            ctx,
            &mut done,
            seg.start,
            DataBuf::default(),
            &[(len, Class::Zero)],
        )?,
        SegKind::ZeroOverBacking => {
            let bak = read_backing(ctx, seg.start, len, bufs.backing)?;
            let runs = diff_granules(ctx, seg.start, None, &bak);
            let buf = if runs.iter().any(|(_, c)| *c == Class::Data) {
                zeroed(bufs.data, len)
            } else {
                DataBuf::default()
            };
            emit(ctx, &mut done, seg.start, buf, &runs)?;
        }
        SegKind::Data => {
            let view = match &ctx.maps {
                Some(maps) => mapped::task_bytes(ctx, maps, &seg)?,
                None => None,
            };
            let buf = match view {
                Some(b) => {
                    done.mapped = len;
                    b
                }
                None => {
                    // The read overwrites every byte of the (reused) buffer.
                    let mut b = buffer(bufs.data, len);
                    ctx.src.read_at(&mut b, seg.start)?;
                    b
                }
            };
            done.read = len;
            let runs = if ctx.backing.is_some() {
                let bak = read_backing(ctx, seg.start, len, bufs.backing)?;
                diff_granules(ctx, seg.start, Some(&buf), &bak)
            } else if ctx.min_sparse == 0 {
                vec![(len, Class::Data)]
            } else if ctx.encoder.is_some() || ctx.compress {
                granule_zero_runs(ctx, seg.start, &buf)
            } else {
                // Exact mode: qemu's byte-exact decisions, then whole granules.
                let runs: Vec<(u64, bool)> =
                    sparse::split(&buf, seg.start, ctx.min_sparse, ctx.align_sectors)
                        .iter()
                        .map(|Run { len, data }| (*len as u64, *data))
                        .collect();
                let g = granule::to_granules(
                    seg.start,
                    seg.end,
                    ctx.granule,
                    ctx.size,
                    &runs,
                    Some(buf),
                );
                put_granules(ctx, &mut done, g);
                return Ok(done);
            };
            emit(ctx, &mut done, seg.start, buf, &runs)?;
        }
    }
    Ok(done)
}

/// `-C`: a data task as copies of host file ranges, merged where they are contiguous, when every
/// byte of it is data the source stores uncompressed in a host file it hands out, inside that
/// file, and the task covers whole writer granules. `None` sends the task down the read path
/// (compressed or encrypted data, zeros inside the task, in-memory sources, data past the end of
/// its file, which the reader knows how to read). Runs on the planning thread: block status only,
/// no buffers.
pub(crate) fn offload(ctx: &Ctx<'_>, seg: &Segment) -> Result<Option<Done>> {
    let aligned = |x: u64| x % ctx.granule == 0 || x == ctx.size;
    if seg.kind != SegKind::Data || !aligned(seg.start) || !aligned(seg.end) {
        return Ok(None);
    }
    let Some(runs) = mapped::host_runs(ctx, seg)? else {
        return Ok(None);
    };
    let mut payloads = Vec::with_capacity(runs.len());
    for run in runs {
        let Some(storage) = ctx.src.host_storage(&run.file) else {
            return Ok(None);
        };
        match HostRange::offloadable(&storage, run.offset, run.len)? {
            Some(r) => payloads.push((run.at, Payload::Copy(r))),
            None => return Ok(None),
        }
    }
    let len = seg.end - seg.start;
    Ok(Some(Done {
        len,
        payloads,
        read: len,
        data: len,
        ..Done::default()
    }))
}

/// Hands the whole granules of an exact-mode task to `done` (zeros only where the target needs
/// them written) and keeps its fragments for the writer thread.
fn put_granules(ctx: &Ctx<'_>, done: &mut Done, g: granule::Granules) {
    for (at, piece) in g.body {
        match piece {
            Piece::Data(b) => {
                done.data += b.len() as u64;
                done.payloads.push((at, Payload::Data(b)));
            }
            Piece::Zero(n) => {
                done.zero += n;
                if !ctx.skip_zeros {
                    done.payloads.push((at, Payload::Zero(n)));
                }
            }
        }
    }
    done.head = g.head;
    done.tail = g.tail;
}

/// Reads `len` bytes of the backing image at `offset`, zeros past its end.
fn read_backing(ctx: &Ctx<'_>, offset: u64, len: u64, spare: Option<DataBuf>) -> Result<DataBuf> {
    let mut bak = buffer(spare, len);
    let mut n = 0;
    if let Some(b) = &ctx.backing {
        let bsize = b.virtual_size();
        if offset < bsize {
            n = (bsize - offset).min(len) as usize;
            b.read_at(&mut bak[..n], offset)?;
        }
    }
    bak[n..].fill(0);
    Ok(bak)
}

/// Granule by granule: equal to the backing image -> unchanged, else zero or data. `src` of `None`
/// means the source reads as zeros there.
fn diff_granules(ctx: &Ctx<'_>, offset: u64, src: Option<&[u8]>, bak: &[u8]) -> Vec<(u64, Class)> {
    let g = ctx.granule as usize;
    let mut runs: Vec<(u64, Class)> = Vec::new();
    let first = (offset % ctx.granule) as usize;
    let mut pos = 0usize;
    while pos < bak.len() {
        let end = if pos == 0 && first != 0 {
            g - first
        } else {
            pos + g
        }
        .min(bak.len());
        let b = &bak[pos..end];
        let class = match src {
            None if is_zero(b) => Class::Unchanged,
            None => Class::Zero,
            Some(s) if &s[pos..end] == b => Class::Unchanged,
            Some(s) if is_zero(&s[pos..end]) => Class::Zero,
            Some(_) => Class::Data,
        };
        let class = if class == Class::Zero && ctx.min_sparse == 0 {
            Class::Data
        } else {
            class
        };
        push_run(&mut runs, (end - pos) as u64, class);
        pos = end;
    }
    runs
}

/// Whole granules of zeros become zero runs (what qemu does for compressed output).
fn granule_zero_runs(ctx: &Ctx<'_>, offset: u64, buf: &[u8]) -> Vec<(u64, Class)> {
    let g = ctx.granule as usize;
    let first = (offset % ctx.granule) as usize;
    let mut runs = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let end = if pos == 0 && first != 0 {
            g - first
        } else {
            pos + g
        }
        .min(buf.len());
        let class = if is_zero(&buf[pos..end]) {
            Class::Zero
        } else {
            Class::Data
        };
        push_run(&mut runs, (end - pos) as u64, class);
        pos = end;
    }
    runs
}

fn push_run(runs: &mut Vec<(u64, Class)>, len: u64, class: Class) {
    match runs.last_mut() {
        Some((l, c)) if *c == class => *l += len,
        _ => runs.push((len, class)),
    }
}

/// Turns classified runs of `buf` (guest offset `offset`) into payloads.
fn emit(
    ctx: &Ctx<'_>,
    done: &mut Done,
    offset: u64,
    buf: DataBuf,
    runs: &[(u64, Class)],
) -> Result<()> {
    let whole = runs.len() == 1 && runs[0].1 == Class::Data;
    let mut buf = Some(buf);
    let mut pos = 0u64;
    for &(len, class) in runs {
        let at = offset + pos;
        match class {
            Class::Unchanged => done.unchanged += len,
            Class::Zero => {
                done.zero += len;
                if !ctx.skip_zeros {
                    done.payloads.push((at, Payload::Zero(len)));
                }
            }
            Class::Data => {
                done.data += len;
                let data = match (whole, buf.take()) {
                    (true, Some(b)) => b,
                    (_, b) => {
                        let slice = b
                            .as_ref()
                            .map(|b| b.slice(pos as usize..(pos + len) as usize));
                        buf = b;
                        slice.unwrap_or_default()
                    }
                };
                match &ctx.encoder {
                    Some(enc) => encode_granules(ctx, enc.as_ref(), done, at, data)?,
                    None => done.payloads.push((at, Payload::data(data))),
                }
            }
        }
        pos += len;
    }
    Ok(())
}

/// Hands each granule of `data` to the writer's encoder; granules it declines stay plain data.
fn encode_granules(
    ctx: &Ctx<'_>,
    enc: &dyn ChunkEncoder,
    done: &mut Done,
    at: u64,
    data: DataBuf,
) -> Result<()> {
    let g = ctx.granule as usize;
    let first = (at % ctx.granule) as usize;
    let mut pos = 0usize;
    while pos < data.len() {
        let end = if pos == 0 && first != 0 {
            g - first
        } else {
            pos + g
        }
        .min(data.len());
        let off = at + pos as u64;
        let piece = &data[pos..end];
        let payload = match enc.encode(off, piece)? {
            Some(e) => Payload::Encoded(e),
            None => Payload::data(piece.to_vec()),
        };
        done.payloads.push((off, payload));
        pos = end;
    }
    Ok(())
}
