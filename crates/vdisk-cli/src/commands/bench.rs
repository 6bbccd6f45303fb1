//! `vdisk bench`: qemu-img bench (qemu-img.c `img_bench`, `bench_cb`). COUNT requests of SIZE
//! bytes go to the image, DEPTH at a time: the first at OFFSET, each next one STEP further,
//! wrapping to stay within the image as qemu's (fixed) `bench_cb` wraps (`offset %= image size -
//! request size`). Reads go through the backing chain on up to DEPTH threads; writes go through
//! the format's in-place writer (crash-safe as for `convert -n`), one at a time, and are committed
//! at the end. `--flush-interval N` flushes where qemu's `bench_cb` does: after each request that
//! leaves a multiple of N requests to go (the last one included); vdisk's flush commits the writer
//! (made durable, unless `-t unsafe`, whose flushes qemu skips too) and opens a new one for the
//! next requests. Requests go one at a time, so `--no-drain` changes nothing. The output is
//! qemu-img's lines, the last with the wall time.

use super::{check_cache, cvtnum, parse_format, print_out};
use crate::cli::BenchArgs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use vdisk::chain::{open_image, OpenRequest};
use vdisk::core::{Error, Format, ImageReader, Payload, Result};

/// Reader threads at most, whatever the depth.
const MAX_READERS: u64 = 16;
/// Request buffers held at once at most, in bytes (qemu-img allocates DEPTH of them).
const MAX_BUFFER_BYTES: u64 = 256 << 20;

/// An integer as qemu's `qemu_strtou64` reads it for `cvtnum_full(..., is_size = false, ...)`:
/// decimal, `0x` hexadecimal or `0` octal, no suffix.
fn cvtint(name: &str, v: &str, min: u64, max: u64) -> Result<u64> {
    let t = v.trim_start();
    // strtoull takes a minus sign and negates: "-0" is 0, any other negative number is huge.
    let (negative, t) = match t.strip_prefix('-') {
        Some(rest) if !rest.starts_with(['-', '+']) => (true, rest),
        _ => (false, t),
    };
    let parsed = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        u64::from_str_radix(&t[1..], 8)
    } else {
        t.parse::<u64>()
    };
    let parsed = parsed.map(|n| if negative { n.wrapping_neg() } else { n });
    match parsed {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => Err(Error::invalid(format!(
            "Invalid {name} specified. Must be between {min} and {max}."
        ))),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => Err(Error::invalid(format!(
            "Invalid {name} specified. Must be between {min} and {max}."
        ))),
        Err(_) => Err(Error::invalid(format!("Invalid {name} specified: '{v}'."))),
    }
}

/// The offset of request `i` (from 0): qemu's recurrence `offset += step; offset %= size - len`
/// in closed form (the first request at `first` as given).
fn offset_of(i: u64, first: u64, step: u64, image_size: u64, len: u64) -> u64 {
    if i == 0 {
        return first;
    }
    if image_size <= len {
        return 0;
    }
    let m = u128::from(image_size - len);
    ((u128::from(first) + u128::from(i) * u128::from(step)) % m) as u64
}

const INT_MAX: u64 = i32::MAX as u64;

pub(super) fn bench(a: BenchArgs) -> Result<u8> {
    let count = cvtint("request count", &a.count, 1, INT_MAX)?;
    let depth = cvtint("queue depth", &a.depth, 1, INT_MAX)?;
    let first = cvtnum("offset", &a.offset, 0, i64::MAX as u64)?;
    let len = cvtnum("buffer size", &a.size, 1, INT_MAX)?;
    let step = cvtnum("step size", &a.step, 0, INT_MAX)?;
    let pattern = cvtint("pattern byte", &a.pattern, 0, 0xff)? as u8;
    let flush = a
        .flush_interval
        .as_deref()
        .map(|f| cvtint("flush interval", f, 0, INT_MAX))
        .transpose()?
        .unwrap_or(0);
    if check_cache(&a.cache, "cache mode").is_err() {
        return Err(Error::invalid("Invalid cache mode"));
    }
    if let Some(aio) = &a.aio {
        if !["native", "threads", "io_uring"].contains(&aio.as_str()) {
            return Err(Error::invalid(format!("Invalid aio option: {aio}")));
        }
    }
    if !a.write && flush > 0 {
        return Err(Error::invalid(
            "--flush-interval is only available in write tests",
        ));
    }
    if flush > 0 && flush < depth {
        return Err(Error::invalid("Flush interval can't be smaller than depth"));
    }
    // -n and -i native ask for Linux AIO, which QEMU opens only with O_DIRECT (-i threads after
    // -n does not undo -n in qemu-img either).
    let native = a.native || a.aio.as_deref() == Some("native");
    if native && !["none", "off", "directsync"].contains(&a.cache.as_str()) {
        return Err(Error::invalid(format!(
            "Could not open '{}': aio=native was specified, but it requires cache.direct=on, which was not specified.",
            a.filename.display()
        )));
    }
    let step = if step == 0 { len } else { step };
    let format = parse_format(a.format)?;
    let req = OpenRequest {
        format,
        snapshot: None,
        follow_backing: true,
        for_check: false,
    };
    let opened = open_image(&a.filename, &req)?;
    opened.image.ready_for_io()?;
    let image_size = opened.image.virtual_size();
    let fmt = opened.top().format;
    if a.write && format.is_none() && fmt == Format::Raw {
        super::warn_probed_raw(&a.filename);
    }
    let mut writer = if a.write {
        Some(open_writer(fmt, &a.filename)?)
    } else {
        None
    };
    if a.write && a.cache == "unsafe" {
        // qemu's cache=unsafe ignores flushes; vdisk's commits then skip their fsync.
        vdisk::core::writer::set_durable_commit(false);
    }
    print_out(&format!(
        "Sending {count} {} requests, {len} bytes each, {depth} in parallel (starting at offset {first}, step size {step})\n",
        if a.write { "write" } else { "read" }
    ))?;
    if flush > 0 {
        print_out(&format!("Sending flush every {flush} requests\n"))?;
    }
    let started = Instant::now();
    let failed = |e: Error| -> Error { Error::Other(format!("Failed request: {e}")) };
    let flush_failed = |e: Error| -> Error { Error::Other(format!("Failed flush request: {e}")) };
    let eio = || Error::Other("Failed request: Input/output error".into());
    let in_range = |off: u64| off.checked_add(len).is_some_and(|e| e <= image_size);
    match writer.take() {
        Some(mut w) => {
            let data = vec![pattern; len as usize];
            for i in 0..count {
                let off = offset_of(i, first, step, image_size, len);
                if !in_range(off) {
                    return Err(eio());
                }
                w.write(off, Payload::data(data.clone())).map_err(failed)?;
                if flushes_after(i, count, flush) && i + 1 < count {
                    w.finish().map_err(flush_failed)?;
                    w = open_writer(fmt, &a.filename).map_err(flush_failed)?;
                }
            }
            writer = Some(w);
        }
        None => read_requests(opened.image.as_ref(), count, depth, len, &|i| {
            offset_of(i, first, step, image_size, len)
        })
        .map_err(|e| match e {
            Failed::PastEnd => eio(),
            Failed::Read(e) => failed(e),
        })?,
    }
    if let Some(w) = writer {
        w.finish().map_err(failed)?;
    }
    print_out(&format!(
        "Run completed in {:.3} seconds.\n",
        started.elapsed().as_secs_f64()
    ))?;
    Ok(0)
}

/// Whether qemu's `bench_cb` flushes once request `i` (from 0) of `count` completes: when the
/// requests left (`count - i - 1`) are a multiple of `interval` (0: never). With requests done one
/// at a time this is also where it flushes after draining a deeper queue.
fn flushes_after(i: u64, count: u64, interval: u64) -> bool {
    interval > 0 && (count - i - 1) % interval == 0
}

/// The in-place writer `-w` writes through (what `convert -n` writes into).
fn open_writer(fmt: Format, path: &std::path::Path) -> Result<Box<dyn vdisk::ImageWriter>> {
    match fmt {
        Format::Raw | Format::Qcow2 | Format::Vdi | Format::Vmdk | Format::Vpc | Format::Vhdx => {
            vdisk::open_existing_writer(fmt, path)
        }
        other => Err(Error::invalid(format!(
            "bench -w: writing into {other} images is not supported"
        ))),
    }
}

/// Why a request failed: it reached past the end of the image (qemu's EIO), or the read failed.
enum Failed {
    PastEnd,
    Read(Error),
}

/// Reads requests 0..count (at `offset(i)`) on up to `depth` threads, each with its own buffer;
/// stops at the first failure.
fn read_requests(
    image: &dyn ImageReader,
    count: u64,
    depth: u64,
    len: u64,
    offset: &(dyn Fn(u64) -> u64 + Sync),
) -> std::result::Result<(), Failed> {
    let threads = depth
        .min(MAX_READERS)
        .min((MAX_BUFFER_BYTES / len).max(1))
        .min(count);
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let error: Mutex<Option<Failed>> = Mutex::new(None);
    let size = image.virtual_size();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buf = vec![0u8; len as usize];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count || stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let off = offset(i);
                    let r = if off.checked_add(len).is_none_or(|e| e > size) {
                        Err(Failed::PastEnd)
                    } else {
                        image.read_at(&mut buf, off).map_err(Failed::Read)
                    };
                    if let Err(e) = r {
                        stop.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = error.lock() {
                            slot.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    match error.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_qemus_recurrence() {
        // The recurrence itself, step by step, against the closed form.
        let (first, step, size, len) = (12_288u64, 8192u64, 1 << 20, 4096u64);
        let mut o = first;
        for i in 0..1000 {
            assert_eq!(offset_of(i, first, step, size, len), o, "request {i}");
            o = (o + step) % (size - len);
        }
        // A request as large as the image: every one at 0 after the first.
        assert_eq!(offset_of(5, 512, 4096, 4096, 4096), 0);
    }

    #[test]
    fn flushes_come_where_qemus_bench_cb_puts_them() {
        // qemu's bench_cb: after a completion, `remaining = n - in_flight` (before both drop by
        // one) is what is left to do; it flushes when that is a multiple of the interval.
        for (count, interval) in [(4u64, 2u64), (5, 2), (7, 3), (3, 1), (10, 10), (9, 10)] {
            let mut n = count;
            let mut expected = Vec::new();
            for i in 0..count {
                let remaining = n - 1;
                n -= 1;
                if remaining % interval == 0 {
                    expected.push(i);
                }
            }
            let got: Vec<u64> = (0..count)
                .filter(|&i| flushes_after(i, count, interval))
                .collect();
            assert_eq!(got, expected, "count {count} interval {interval}");
        }
        assert_eq!(
            (0..5)
                .filter(|&i| flushes_after(i, 5, 2))
                .collect::<Vec<_>>(),
            [0, 2, 4]
        );
        assert!(!(0..5).any(|i| flushes_after(i, 5, 0)));
    }

    #[test]
    fn integers_read_as_strtou64_reads_them() {
        assert_eq!(cvtint("x", "0x10", 0, 100).unwrap(), 16);
        assert_eq!(cvtint("x", "010", 0, 100).unwrap(), 8);
        assert_eq!(cvtint("x", "0", 0, 100).unwrap(), 0);
        assert_eq!(cvtint("x", "-0", 0, 100).unwrap(), 0);
        assert_eq!(
            cvtint("flush interval", "-1", 0, 5)
                .unwrap_err()
                .to_string(),
            "Invalid flush interval specified. Must be between 0 and 5."
        );
        assert_eq!(
            cvtint("request count", "1k", 1, 5).unwrap_err().to_string(),
            "Invalid request count specified: '1k'."
        );
        assert_eq!(
            cvtint("request count", "0", 1, 5).unwrap_err().to_string(),
            "Invalid request count specified. Must be between 1 and 5."
        );
    }
}
