//! The conversion loop: the calling thread plans (block status only), hands chunk tasks to worker
//! threads, and writes the results, in guest order through a reorder buffer or, with `-W` and a writer
//! that allows it, as they complete. At most a fixed number of tasks (each holding at most two
//! chunk buffers) are in flight, whatever the image size. The first error cancels the rest. With
//! plain `-S` zero detection tasks follow qemu-img's buffers, unaligned to the writer's granules;
//! the writer thread joins the granules two tasks share (`granule::Assembler`) before writing them.
//! With `-C`, data tasks that are wholly stored in host files become copies of file ranges on the
//! planning thread (`chunk::offload`), which the writer has the kernel make.

use crate::chunk::{self, Ctx, Done};
use crate::granule::{Assembler, Fragment, Piece};
use crate::limits::{
    ENCODED_CHUNK_SIZE, MAX_CHUNK_SIZE, MAX_GRANULARITY, MAX_MIN_SPARSE, MAX_WORKERS,
};
use crate::mapped::MapCache;
use crate::plan::{Planner, Segment};
use crate::{ConvertOptions, ConvertStats};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;
use vdisk_core::{BufPool, ChunkEncoder, Error, ImageReader, ImageWriter, Payload, Result};

/// Engine settings derived from the options and the writer's capabilities.
struct Setup {
    /// The writer's encoder (e.g. compression), asked for once: building one can cost.
    encoder: Option<Arc<dyn ChunkEncoder>>,
    chunk: u64,
    /// Tasks follow the source's extents as qemu-img's buffers do, unaligned to the writer's
    /// granules (see [`crate::granule`]): plain `-S` zero detection into a target without backing.
    exact: bool,
    workers: usize,
    /// How many of the workers take tasks once the source has shown compressed data (see `run`):
    /// no more than there are cores.
    cpu_workers: usize,
    max_in_flight: usize,
    in_order: bool,
    /// `-C` into a writer that takes copies (see [`chunk::offload`]).
    copy_range: bool,
}

fn setup(opts: &ConvertOptions, dst: &dyn ImageWriter) -> Result<Setup> {
    let caps = dst.caps();
    let g = caps.granularity;
    if !g.is_power_of_two() || !(512..=MAX_GRANULARITY).contains(&g) {
        return Err(Error::invalid(format!(
            "writer granularity {g} is not a power of two between 512 and {MAX_GRANULARITY}"
        )));
    }
    if opts.min_sparse % 512 != 0 || opts.min_sparse > MAX_MIN_SPARSE {
        return Err(Error::invalid(format!(
            "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to {MAX_MIN_SPARSE}. \
             Select 0 to disable sparse detection (fully allocates output)."
        )));
    }
    if opts.chunk_size == 0 || opts.chunk_size > MAX_CHUNK_SIZE {
        return Err(Error::invalid(format!(
            "chunk size must be between 1 and {MAX_CHUNK_SIZE} bytes"
        )));
    }
    if opts.target_is_zero && opts.backing.is_some() {
        return Err(Error::invalid(
            "Cannot use --target-is-zero when the destination image has a backing file",
        ));
    }
    // Encoded (compressed) output holds both a chunk and its encoded clusters per task, and
    // encoding costs far more than a task's overhead: smaller tasks keep RSS down (raw->zstd qcow2
    // of the bench disk with -m 8: 75 MiB with 2 MiB chunks).
    let encoder = dst.encoder();
    let encoded = encoder.is_some();
    let wanted = if encoded {
        opts.chunk_size.min(ENCODED_CHUNK_SIZE)
    } else {
        opts.chunk_size
    };
    // Plain data into a target without backing: no encoding, no `-c`, no comparison with `-B`.
    let plain = opts.backing.is_none() && !encoded && !opts.compress;
    let exact = plain && opts.min_sparse > 0;
    // qemu's buffers are `buf_sectors` long (2 MiB for every format written here); exact-mode tasks
    // are cut the same way, in sectors. Otherwise tasks are whole granules.
    let unit = if exact { 512 } else { g };
    let chunk = wanted.div_ceil(unit) * unit;
    // Workers block in reads, so their number is also the I/O depth: with the page cache dropped,
    // 2 workers read 1 GiB from a virtio disk in 3.0 s where qemu-img's 8 requests took 1.2 s, so
    // the requested count is kept even above the number of cores. Memory is bounded instead by
    // allowing only two finished chunks beyond one per worker to wait for the writer.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = match opts.workers {
        0 => cores,
        n => n,
    }
    .clamp(1, MAX_WORKERS);
    Ok(Setup {
        encoder,
        chunk,
        exact,
        workers,
        cpu_workers: workers.min(cores),
        max_in_flight: workers + 2,
        in_order: !(opts.out_of_order && caps.out_of_order),
        // qemu-img refuses -C with -c; vdisk's -B compares content, which needs the bytes.
        copy_range: opts.copy_range && caps.copy_range && plain,
    })
}

/// Cuts planner segments into tasks of at most one chunk for the kinds that need buffers.
struct Tasks<'a> {
    planner: Planner<'a>,
    rest: Option<Segment>,
    chunk: u64,
    min_sparse: u64,
}

impl Tasks<'_> {
    fn next(&mut self) -> Result<Option<Segment>> {
        let seg = match self.rest.take() {
            Some(s) => s,
            None => match self.planner.next_segment(self.chunk)? {
                Some(s) => s,
                None => return Ok(None),
            },
        };
        if chunk::needs_worker(&seg, self.min_sparse) && seg.end - seg.start > self.chunk {
            let cut = seg.start + self.chunk;
            self.rest = Some(Segment { start: cut, ..seg });
            return Ok(Some(Segment { end: cut, ..seg }));
        }
        Ok(Some(seg))
    }
}

/// Keeps freed buffers inside the process (glibc only). Chunk buffers themselves cycle through
/// the conversion's `BufPool`; the other large allocations (data copied out of a chunk around a
/// zero run, encoded clusters, a writer's staging buffers) come and go per chunk. By default glibc
/// serves an allocation of 128 KiB or more with a fresh `mmap` until its dynamic threshold adapts,
/// and trims freed memory at the top of an arena back to the kernel, so such buffers come back
/// from the kernel as fresh pages (page faults and kernel page clearing). With a fixed mmap
/// threshold above the default chunk size and a trim threshold above the in-flight bound, freed
/// memory is reused instead. This is process-wide, so a library never does it behind its
/// caller's back: programs opt in (the `vdisk` command does, before converting).
pub fn keep_buffers_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // glibc caps M_MMAP_THRESHOLD at HEAP_MAX_SIZE / 2 (32 MiB on 64-bit); bigger chunks
            // keep using mmap.
            const MMAP_THRESHOLD: libc::c_int = 32 << 20;
            const TRIM_THRESHOLD: libc::c_int = 256 << 20;
            // SAFETY: mallopt only changes allocator tuning parameters; it is thread-safe and
            // does not invalidate any existing allocation.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            }
        });
    }
}

/// Runs a conversion; see [`crate::convert`].
pub(crate) fn run(
    src: &dyn ImageReader,
    mut dst: Box<dyn ImageWriter>,
    opts: &ConvertOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ConvertStats> {
    let started = Instant::now();
    let s = setup(opts, dst.as_ref())?;
    let caps = dst.caps();
    let size = src.virtual_size();
    let ctx = Ctx {
        src,
        backing: opts.backing.clone(),
        encoder: s.encoder.clone(),
        granule: caps.granularity,
        size,
        min_sparse: opts.min_sparse,
        // qemu-img.c `s.alignment`: pow2floor(min_sparse), as the target's request alignment is
        // one byte for every format written here; granules are applied afterwards.
        align_sectors: (opts.min_sparse / 512)
            .checked_ilog2()
            .map(|b| 1u64 << b)
            .unwrap_or(1),
        skip_zeros: (caps.zero_initialized || opts.target_is_zero) && opts.backing.is_none(),
        compress: opts.compress,
        maps: opts.map_source.then(MapCache::default),
        exact: s.exact,
    };
    let mut tasks = Tasks {
        planner: if s.exact {
            Planner::new(src, None, 512).with_qemu_queries()
        } else {
            Planner::new(src, opts.backing.clone(), caps.granularity)
        },
        rest: None,
        chunk: s.chunk,
        min_sparse: opts.min_sparse,
    };
    // Every task holds at most two buffers; the writer may still hold a few it has not written.
    let bufpool = BufPool::new(2 * s.max_in_flight + 2);
    let cancel = AtomicBool::new(false);
    let mut stats = ConvertStats::default();
    let mut assembler = Assembler::new(caps.granularity, size);
    let (tx, rx) = mpsc::channel::<(usize, Result<Done>)>();
    let mut failure: Option<Error> = None;
    progress(0, size);
    // The workers: each takes the next task from `jobs`, blocking (not spinning) while there is
    // none, and sends its result back; they stop when `jobs` is closed.
    let (jobs, queue) = mpsc::channel::<(usize, Segment, chunk::Buffers)>();
    let queue = Mutex::new(queue);
    // Workers numbered from this on stop taking tasks (lowered when decompressing makes the
    // conversion CPU-bound).
    let active = AtomicUsize::new(s.workers);
    let mut max_in_flight = s.max_in_flight;
    std::thread::scope(|scope| {
        let jobs = jobs;
        for i in 0..s.workers {
            let (tx, ctx, cancel, queue, active) = (tx.clone(), &ctx, &cancel, &queue, &active);
            let worker = move || loop {
                if i >= active.load(Ordering::Relaxed) {
                    break;
                }
                let job = match queue.lock() {
                    Ok(q) => q.recv(),
                    Err(_) => break,
                };
                let Ok((index, seg, bufs)) = job else { break };
                let r = if cancel.load(Ordering::Relaxed) {
                    Err(Error::Other("cancelled".into()))
                } else {
                    // A panicking reader must not leave the writer thread waiting forever.
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        chunk::run(ctx, seg, bufs)
                    }))
                    .unwrap_or_else(|_| Err(Error::Other("a conversion worker panicked".into())))
                };
                let _ = tx.send((index, r));
            };
            let started = std::thread::Builder::new()
                .name(format!("vdisk-convert-{i}"))
                .spawn_scoped(scope, worker);
            if let Err(e) = started {
                failure = Some(Error::Other(format!("cannot start worker threads: {e}")));
                return;
            }
        }
        let mut ready: BTreeMap<usize, Result<Done>> = BTreeMap::new();
        let mut next_index = 0usize;
        let mut next_write = 0usize;
        let mut in_flight = 0usize;
        let mut planned_all = false;
        let mut done_bytes = 0u64;
        loop {
            while failure.is_none() && !planned_all && in_flight < max_in_flight {
                // Decompressing is CPU work: with more busy workers than cores the kernel
                // time-slices them against the writer thread, and more tasks in flight keep more
                // chunks out of the CPU caches. From the first compressed extent on, the
                // conversion runs as with `-m` set to the number of cores (zstd qcow2->raw of the
                // bench disk on 2 cores, cold, medians of 7: 1.16 s against 1.26 s with all 8
                // workers busy; benches/README.md, session 8). Until then workers are I/O depth.
                if max_in_flight > s.cpu_workers + 2 && tasks.planner.seen_compressed() {
                    active.store(s.cpu_workers, Ordering::Relaxed);
                    max_in_flight = s.cpu_workers + 2;
                    continue;
                }
                let seg = match tasks.next() {
                    Ok(Some(seg)) => seg,
                    Ok(None) => {
                        planned_all = true;
                        break;
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                };
                let index = next_index;
                next_index += 1;
                in_flight += 1;
                stats.peak_in_flight = stats.peak_in_flight.max(in_flight);
                if s.copy_range {
                    match chunk::offload(&ctx, &seg) {
                        Ok(Some(done)) => {
                            ready.insert(index, Ok(done));
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                if chunk::needs_worker(&seg, opts.min_sparse) {
                    let bufs = chunk::Buffers::reserve(&bufpool, &seg, ctx.backing.is_some());
                    if jobs.send((index, seg, bufs)).is_err() {
                        failure = Some(Error::Other("conversion workers vanished".into()));
                        break;
                    }
                } else {
                    ready.insert(index, chunk::run(&ctx, seg, chunk::Buffers::default()));
                }
            }
            if failure.is_some() || in_flight == 0 {
                break;
            }
            // Collect what is ready to write; block for a worker only when nothing is.
            let writable = if s.in_order {
                ready.contains_key(&next_write)
            } else {
                !ready.is_empty()
            };
            if !writable {
                match rx.recv() {
                    Ok((i, r)) => {
                        ready.insert(i, r);
                    }
                    Err(_) => {
                        failure = Some(Error::Other("conversion worker vanished".into()));
                        break;
                    }
                }
                while let Ok((i, r)) = rx.try_recv() {
                    ready.insert(i, r);
                }
            }
            loop {
                let key = if s.in_order {
                    next_write
                } else {
                    match ready.keys().next() {
                        Some(k) => *k,
                        None => break,
                    }
                };
                let Some(r) = ready.remove(&key) else { break };
                next_write += 1;
                in_flight -= 1;
                let result = r.and_then(|d| {
                    stats.bytes_read += d.read;
                    stats.mapped_bytes += d.mapped;
                    stats.data_bytes_written += d.data;
                    stats.zero_bytes += d.zero;
                    stats.unchanged_bytes += d.unchanged;
                    // In offset order: the granule shared with the previous task, this task's own
                    // granules, the granule shared with the next one.
                    let joined =
                        |f: Option<Fragment>, asm: &mut Assembler, st: &mut ConvertStats| {
                            let (at, piece) = asm.add(f?)?;
                            Some(match piece {
                                Piece::Data(b) => {
                                    st.data_bytes_written += b.len() as u64;
                                    (at, Payload::Data(b))
                                }
                                Piece::Zero(n) => {
                                    st.zero_bytes += n;
                                    if ctx.skip_zeros {
                                        return None;
                                    }
                                    (at, Payload::Zero(n))
                                }
                            })
                        };
                    if let Some((off, p)) = joined(d.head, &mut assembler, &mut stats) {
                        dst.write(off, p)?;
                    }
                    for (off, p) in d.payloads {
                        dst.write(off, p)?;
                    }
                    if let Some((off, p)) = joined(d.tail, &mut assembler, &mut stats) {
                        dst.write(off, p)?;
                    }
                    Ok(d.len)
                });
                match result {
                    Ok(len) => {
                        done_bytes += len;
                        progress(done_bytes, size);
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if failure.is_some() {
                break;
            }
        }
        if failure.is_some() {
            cancel.store(true, Ordering::Relaxed);
        }
        // Closing the queue lets the workers finish; the scope waits for them.
        drop(jobs);
    });
    if let Some(e) = failure {
        // Dropping the writer unfinished removes its output.
        drop(dst);
        return Err(e);
    }
    if assembler.pending() != 0 {
        return Err(Error::Other(format!(
            "conversion ended with {} granules partly written",
            assembler.pending()
        )));
    }
    dst.finish()?;
    stats.elapsed = started.elapsed();
    Ok(stats)
}
