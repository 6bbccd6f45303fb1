//! Comparing two images as `qemu-img compare` does (qemu-img.c `img_compare`): driven by block status
//! on both sides, ranges both report as zeros are not read; data is compared in chunks of at most
//! 2 MiB and a mismatch is reported at the start of the first differing 512-byte sector. When the
//! sizes differ, the extra part of the larger image must read as zeros. Strict mode (`-s`) also
//! requires equal sizes and equal block status.

use vdisk_core::{Extent, ExtentKind, ImageReader, Result};

/// qemu-img compare's read size (`IO_BUF_SIZE`).
const CHUNK: u64 = 2 << 20;
/// qemu's sector size: mismatches are reported at sector granularity.
const SECTOR: u64 = 512;

/// Which of the two images a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    First,
    Second,
}

/// The verdict of [`compare`], with qemu-img's messages and exit codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareOutcome {
    /// Same content ("Images are identical.", exit 0). `size_mismatch`: the sizes differ but the
    /// larger image's extra part reads as zeros ("Warning: Image size mismatch!" printed first).
    Identical { size_mismatch: bool },
    /// "Content mismatch at offset N!" (exit 1). `size_mismatch` as above: the mismatch was found in
    /// the extra part, after the warning.
    Mismatch { offset: u64, size_mismatch: bool },
    /// Strict mode: "Strict mode: Image size mismatch!" (exit 1).
    StrictSizeMismatch,
    /// Strict mode: "Strict mode: Offset N block status mismatch!" (exit 1).
    StrictStatusMismatch { offset: u64 },
    /// Block status failed: "Sector allocation test failed for FILE" on stderr (exit 3).
    StatusFailed { side: Side, error: String },
    /// A read failed: "Error while reading offset N of FILE: ERROR" on stderr (exit 4).
    ReadFailed {
        side: Side,
        offset: u64,
        error: String,
    },
}

impl CompareOutcome {
    /// qemu-img compare's exit code: 0 identical, 1 different, 3 block status error, 4 read error
    /// (2, failing to open an image, is the caller's).
    pub fn exit_code(&self) -> i32 {
        match self {
            CompareOutcome::Identical { .. } => 0,
            CompareOutcome::Mismatch { .. }
            | CompareOutcome::StrictSizeMismatch
            | CompareOutcome::StrictStatusMismatch { .. } => 1,
            CompareOutcome::StatusFailed { .. } => 3,
            CompareOutcome::ReadFailed { .. } => 4,
        }
    }

    /// The lines qemu-img prints on stdout (suppressed by `-q`).
    pub fn stdout_lines(&self) -> Vec<String> {
        let warn = "Warning: Image size mismatch!".to_string();
        match self {
            CompareOutcome::Identical { size_mismatch } => {
                let mut v = if *size_mismatch { vec![warn] } else { vec![] };
                v.push("Images are identical.".into());
                v
            }
            CompareOutcome::Mismatch {
                offset,
                size_mismatch,
            } => {
                let mut v = if *size_mismatch { vec![warn] } else { vec![] };
                v.push(format!("Content mismatch at offset {offset}!"));
                v
            }
            CompareOutcome::StrictSizeMismatch => vec!["Strict mode: Image size mismatch!".into()],
            CompareOutcome::StrictStatusMismatch { offset } => {
                vec![format!(
                    "Strict mode: Offset {offset} block status mismatch!"
                )]
            }
            CompareOutcome::StatusFailed { .. } | CompareOutcome::ReadFailed { .. } => vec![],
        }
    }

    /// The last line of [`CompareOutcome::stdout_lines`], the verdict (none when an I/O error ended
    /// the comparison): the size warning before it is printed as the comparison reaches it
    /// ([`CompareEvent::SizeMismatch`]).
    pub fn verdict_line(&self) -> Option<String> {
        self.stdout_lines().pop()
    }

    /// The error message for stderr, naming the image by `name1`/`name2`, if any.
    pub fn error_message(&self, name1: &str, name2: &str) -> Option<String> {
        let name = |s: &Side| if *s == Side::First { name1 } else { name2 };
        match self {
            CompareOutcome::StatusFailed { side, .. } => {
                Some(format!("Sector allocation test failed for {}", name(side)))
            }
            CompareOutcome::ReadFailed {
                side,
                offset,
                error,
            } => Some(format!(
                "Error while reading offset {offset} of {}: {error}",
                name(side)
            )),
            _ => None,
        }
    }
}

/// qemu's block status flags as `img_compare` compares them in strict mode.
#[derive(Debug, PartialEq, Eq)]
struct Status {
    allocated: bool,
    data: bool,
    zero: bool,
    compressed: bool,
    offset_valid: bool,
    eof: bool,
}

fn status(e: &Extent, size: u64) -> Status {
    Status {
        allocated: e.kind.is_present(),
        data: e.kind.is_data(),
        zero: e.kind.reads_as_zero(),
        compressed: e.kind == ExtentKind::Compressed,
        offset_valid: e.host.is_some(),
        eof: e.offset.saturating_add(e.length) >= size,
    }
}

/// Offset (relative to the buffers) of the first 512-byte block that differs, if any.
fn first_difference(a: &[u8], b: &[u8]) -> Option<u64> {
    a.chunks(SECTOR as usize)
        .zip(b.chunks(SECTOR as usize))
        .position(|(x, y)| x != y)
        .map(|i| i as u64 * SECTOR)
}

/// Offset (relative to the buffer) of the first 512-byte block holding a non-zero byte, if any.
fn first_nonzero(a: &[u8]) -> Option<u64> {
    a.chunks(SECTOR as usize)
        .position(|c| !vdisk_core::zero::is_zero(c))
        .map(|i| i as u64 * SECTOR)
}

enum Step {
    Go,
    Stop(CompareOutcome),
}

fn read(r: &dyn ImageReader, side: Side, buf: &mut [u8], offset: u64) -> Step {
    match r.read_at(buf, offset) {
        Ok(()) => Step::Go,
        Err(e) => Step::Stop(CompareOutcome::ReadFailed {
            side,
            offset,
            error: e.to_string(),
        }),
    }
}

fn block_status(
    r: &dyn ImageReader,
    side: Side,
    offset: u64,
    size: u64,
) -> std::result::Result<Extent, CompareOutcome> {
    match r.copy_status(offset, size - offset) {
        Ok(e) if e.offset == offset && e.length > 0 => Ok(e),
        Ok(_) => Err(CompareOutcome::StatusFailed {
            side,
            error: "empty or misplaced extent".into(),
        }),
        Err(e) => Err(CompareOutcome::StatusFailed {
            side,
            error: e.to_string(),
        }),
    }
}

/// `check_empty_sectors`: the range must read as zeros.
fn check_empty(
    r: &dyn ImageReader,
    side: Side,
    buf: &mut Vec<u8>,
    offset: u64,
    len: u64,
    warned: bool,
) -> Step {
    buf.resize(len as usize, 0);
    if let Step::Stop(o) = read(r, side, buf, offset) {
        return Step::Stop(o);
    }
    match first_nonzero(buf) {
        Some(i) => Step::Stop(CompareOutcome::Mismatch {
            offset: offset + i,
            size_mismatch: warned,
        }),
        None => Step::Go,
    }
}

/// What [`compare_watched`] reports while it runs, in qemu-img's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareEvent {
    /// `bytes` more of `of` (the larger size, qemu-img's `progress_base`) were compared.
    Advanced { bytes: u64, of: u64 },
    /// The common part is done and the sizes differ: qemu-img prints "Warning: Image size
    /// mismatch!" here, before it reads the larger image's extra part.
    SizeMismatch,
}

/// Compares `a` and `b` as `qemu-img compare [-s]` does. I/O failures are reported as outcomes
/// (exit codes 3 and 4), not as errors.
pub fn compare(a: &dyn ImageReader, b: &dyn ImageReader, strict: bool) -> Result<CompareOutcome> {
    compare_watched(a, b, strict, &mut |_| {})
}

/// [`compare`], telling `watch` of each step as qemu-img's loop takes it (`compare -p` prints its
/// progress lines from these).
pub fn compare_watched(
    a: &dyn ImageReader,
    b: &dyn ImageReader,
    strict: bool,
    watch: &mut dyn FnMut(CompareEvent),
) -> Result<CompareOutcome> {
    let (size1, size2) = (a.virtual_size(), b.virtual_size());
    let base = size1.max(size2);
    if strict && size1 != size2 {
        return Ok(CompareOutcome::StrictSizeMismatch);
    }
    let common = size1.min(size2);
    let (mut buf1, mut buf2) = (Vec::new(), Vec::new());
    let mut offset = 0u64;
    while offset < common {
        let e1 = match block_status(a, Side::First, offset, size1) {
            Ok(e) => e,
            Err(o) => return Ok(o),
        };
        let e2 = match block_status(b, Side::Second, offset, size2) {
            Ok(e) => e,
            Err(o) => return Ok(o),
        };
        if strict && status(&e1, size1) != status(&e2, size2) {
            return Ok(CompareOutcome::StrictStatusMismatch { offset });
        }
        let mut chunk = e1.length.min(e2.length).min(common - offset);
        let (alloc1, alloc2) = (e1.kind.is_present(), e2.kind.is_present());
        if e1.kind.reads_as_zero() && e2.kind.reads_as_zero() {
            // Both known zeros: nothing to read.
        } else if alloc1 == alloc2 {
            if alloc1 {
                chunk = chunk.min(CHUNK);
                buf1.resize(chunk as usize, 0);
                buf2.resize(chunk as usize, 0);
                let (r1, r2) = rayon::join(
                    || read(a, Side::First, &mut buf1, offset),
                    || read(b, Side::Second, &mut buf2, offset),
                );
                for r in [r1, r2] {
                    if let Step::Stop(o) = r {
                        return Ok(o);
                    }
                }
                if let Some(i) = first_difference(&buf1, &buf2) {
                    return Ok(CompareOutcome::Mismatch {
                        offset: offset + i,
                        size_mismatch: false,
                    });
                }
            }
        } else {
            chunk = chunk.min(CHUNK);
            let (r, side) = if alloc1 {
                (a, Side::First)
            } else {
                (b, Side::Second)
            };
            if let Step::Stop(o) = check_empty(r, side, &mut buf1, offset, chunk, false) {
                return Ok(o);
            }
        }
        offset += chunk;
        watch(CompareEvent::Advanced {
            bytes: chunk,
            of: base,
        });
    }
    if size1 != size2 {
        watch(CompareEvent::SizeMismatch);
        let (r, side, size) = if size1 > size2 {
            (a, Side::First, size1)
        } else {
            (b, Side::Second, size2)
        };
        while offset < size {
            let e = match block_status(r, side, offset, size) {
                Ok(e) => e,
                Err(o) => return Ok(o),
            };
            let mut chunk = e.length.min(size - offset);
            if e.kind.is_present() && !e.kind.reads_as_zero() {
                chunk = chunk.min(CHUNK);
                if let Step::Stop(o) = check_empty(r, side, &mut buf1, offset, chunk, true) {
                    return Ok(o);
                }
            }
            offset += chunk;
            watch(CompareEvent::Advanced {
                bytes: chunk,
                of: base,
            });
        }
        return Ok(CompareOutcome::Identical {
            size_mismatch: true,
        });
    }
    Ok(CompareOutcome::Identical {
        size_mismatch: false,
    })
}
