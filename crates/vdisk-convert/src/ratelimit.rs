//! `convert -r RATE`: the target's writes throttled as qemu-img throttles them. qemu-img sets a
//! `bps-write` limit of RATE on the target (qemu-img.c `set_rate_limit`), which QEMU's leaky
//! bucket enforces (util/throttle.c): the bucket leaks RATE bytes a second, a write waits while
//! it holds more than a tenth of a second's worth (the default burst, `avg / 10`), then adds the
//! guest bytes it writes. Zeros and compressed clusters count their guest bytes too.

use std::time::{Duration, Instant};
use vdisk_core::{ChunkEncoder, ImageWriter, Payload, Result, WriterCaps};

/// The leaky bucket, on a clock given in seconds (pure, so that it can be tested without waiting).
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    max: f64,
    level: f64,
    last: f64,
}

impl Bucket {
    /// A bucket leaking `rate` bytes a second (more than 0).
    pub fn new(rate: u64) -> Bucket {
        let rate = rate.max(1) as f64;
        Bucket {
            rate,
            max: rate / 10.0,
            level: 0.0,
            last: 0.0,
        }
    }

    /// A write of `bytes` asked for at time `now`: how long it must wait first.
    pub fn admit(&mut self, now: f64, bytes: u64) -> f64 {
        let now = now.max(self.last);
        self.level = (self.level - self.rate * (now - self.last)).max(0.0);
        let wait = ((self.level - self.max) / self.rate).max(0.0);
        self.level = self.level.min(self.max) + bytes as f64;
        self.last = now + wait;
        wait
    }
}

/// A writer whose writes wait as [`Bucket`] says.
pub struct RateLimited {
    inner: Box<dyn ImageWriter>,
    bucket: Bucket,
    start: Instant,
}

impl RateLimited {
    /// `inner` limited to `rate` bytes a second.
    pub fn new(inner: Box<dyn ImageWriter>, rate: u64) -> RateLimited {
        RateLimited {
            inner,
            bucket: Bucket::new(rate),
            start: Instant::now(),
        }
    }
}

fn guest_bytes(p: &Payload) -> u64 {
    match p {
        Payload::Data(b) => b.len() as u64,
        Payload::Zero(n) => *n,
        Payload::Encoded(e) => e.raw_len,
        Payload::Copy(c) => c.len,
    }
}

impl ImageWriter for RateLimited {
    fn caps(&self) -> WriterCaps {
        self.inner.caps()
    }

    fn encoder(&self) -> Option<std::sync::Arc<dyn ChunkEncoder>> {
        self.inner.encoder()
    }

    fn write(&mut self, offset: u64, payload: Payload) -> Result<()> {
        let now = self.start.elapsed().as_secs_f64();
        let wait = self.bucket.admit(now, guest_bytes(&payload));
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
        self.inner.write(offset, payload)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.inner.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_wait_until_the_bucket_is_down_to_its_burst() {
        const MIB: u64 = 1 << 20;
        let mut b = Bucket::new(MIB);
        // qemu-img -r 1M with 2 MiB chunks: the first goes at once, the second waits for 1.9 s
        // (qemu-img 10 took 1.94 s for 4 MiB).
        assert_eq!(b.admit(0.0, 2 * MIB), 0.0);
        let wait = b.admit(0.0, 2 * MIB);
        assert!((wait - 1.9).abs() < 1e-9, "{wait}");
        // The next one, asked for as soon as the second went, waits for all of the second's
        // 2 MiB to leak (the bucket then held the burst plus those 2 MiB).
        let wait = b.admit(wait, 2 * MIB);
        assert!((wait - 2.0).abs() < 1e-9, "{wait}");
        // After a long pause the bucket is empty again.
        assert_eq!(b.admit(100.0, 4096), 0.0);
        // Small writes within the burst never wait.
        let mut b = Bucket::new(MIB);
        assert!((0..25).all(|i| b.admit(i as f64 * 0.001, 4096) == 0.0));
    }
}
