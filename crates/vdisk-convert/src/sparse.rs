//! Zero-run detection inside data that was read (`convert -S`), with the semantics of qemu-img's
//! `is_allocated_sectors` / `is_allocated_sectors_min` (qemu-img.c): the buffer is judged in 512-byte
//! sectors; a zero run at the start of a buffer is a gap (its end pulled back to an alignment
//! boundary, or turned into data when it ends before one); after data, zero runs shorter than
//! `min` sectors stay data; data runs are extended to the next alignment boundary.

use vdisk_core::zero::is_zero;

/// qemu's sector size, the unit of `-S` decisions.
pub const SECTOR: usize = 512;

/// One run of a buffer: `len` bytes, data or a gap that may be left unwritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub len: usize,
    pub data: bool,
}

/// Per-sector zero flags of `buf` (the last sector may be partial).
fn zero_sectors(buf: &[u8]) -> Vec<bool> {
    buf.chunks(SECTOR).map(is_zero).collect()
}

/// `is_allocated_sectors`: the kind of the first sector and how many sectors share it, adjusted so
/// that the run ends on an `align` boundary (counted from absolute sector `sector`).
fn first_run(zeros: &[bool], sector: u64, align: u64) -> (bool, usize) {
    let n = zeros.len();
    if n == 0 {
        return (false, 0);
    }
    let mut is_zero = zeros[0];
    let mut i = zeros.iter().position(|z| *z != is_zero).unwrap_or(n);
    if i == n {
        return (!is_zero, n);
    }
    let tail = ((sector + i as u64) & (align - 1)) as usize;
    if tail != 0 {
        if is_zero && i <= tail {
            // The data that follows rewrites this partial block anyway: write it as data now.
            is_zero = false;
        }
        if !is_zero {
            i = (i + (align as usize - tail)).min(n);
        } else {
            i -= tail;
        }
    }
    (!is_zero, i)
}

/// `is_allocated_sectors_min`: like [`first_run`], but once the buffer starts with data, zero runs
/// shorter than `min` sectors are swallowed into it.
fn first_run_min(zeros: &[bool], sector: u64, min: usize, align: u64) -> (bool, usize) {
    let min = min.min(zeros.len());
    let (data, n) = first_run(zeros, sector, align);
    if !data {
        return (false, n);
    }
    let mut used = n;
    let mut checked = n;
    while checked < zeros.len() {
        let (d, k) = first_run(&zeros[checked..], sector + checked as u64, align);
        checked += k;
        if d {
            used = checked;
        } else if k >= min {
            break;
        }
    }
    (true, used)
}

/// Splits `buf`, which starts at guest byte `offset` (a multiple of 512 except where the caller's
/// granularity says otherwise), into data runs and gaps as `qemu-img convert -S` would: `min_sparse`
/// is the `-S` size in bytes (a multiple of 512, not 0), `align_sectors` the write alignment in
/// sectors (a power of two). Consecutive runs of the same kind are merged.
pub fn split(buf: &[u8], offset: u64, min_sparse: u64, align_sectors: u64) -> Vec<Run> {
    let zeros = zero_sectors(buf);
    let min = ((min_sparse / SECTOR as u64) as usize).max(1);
    let align = align_sectors.max(1);
    let mut runs: Vec<Run> = Vec::new();
    let mut s = 0usize;
    let base = offset / SECTOR as u64;
    while s < zeros.len() {
        let (data, k) = first_run_min(&zeros[s..], base + s as u64, min, align);
        let k = k.max(1);
        let start = s * SECTOR;
        let end = ((s + k) * SECTOR).min(buf.len());
        match runs.last_mut() {
            Some(r) if r.data == data => r.len += end - start,
            _ => runs.push(Run {
                len: end - start,
                data,
            }),
        }
        s += k;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(pattern: &[(usize, u8)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (sectors, byte) in pattern {
            v.extend(std::iter::repeat_n(*byte, sectors * SECTOR));
        }
        v
    }

    fn kinds(runs: &[Run]) -> Vec<(usize, bool)> {
        runs.iter().map(|r| (r.len / SECTOR, r.data)).collect()
    }

    #[test]
    fn short_zero_runs_inside_data_stay_data() {
        // 8 data, 4 zero (< min 8), 8 data: all data.
        let b = buf(&[(8, 1), (4, 0), (8, 1)]);
        assert_eq!(kinds(&split(&b, 0, 4096, 8)), vec![(20, true)]);
    }

    #[test]
    fn long_aligned_zero_runs_become_gaps() {
        let b = buf(&[(8, 1), (16, 0), (8, 1)]);
        assert_eq!(
            kinds(&split(&b, 0, 4096, 8)),
            vec![(8, true), (16, false), (8, true)]
        );
    }

    #[test]
    fn gaps_are_pulled_to_alignment() {
        // Data 3 sectors, zeros 17, data 4: data extends to sector 8, the gap is 8..16, and 16..20
        // zeros (before the next data, shorter than the tail) become data.
        let b = buf(&[(3, 1), (17, 0), (4, 1)]);
        assert_eq!(
            kinds(&split(&b, 0, 4096, 8)),
            vec![(8, true), (8, false), (8, true)]
        );
    }

    #[test]
    fn leading_and_trailing_zeros_are_gaps_whatever_their_length() {
        let b = buf(&[(8, 0), (8, 1), (8, 0)]);
        assert_eq!(
            kinds(&split(&b, 0, 65536, 8)),
            vec![(8, false), (8, true), (8, false)]
        );
        let z = buf(&[(3, 0)]);
        assert_eq!(kinds(&split(&z, 0, 4096, 8)), vec![(3, false)]);
    }

    #[test]
    fn partial_last_sector_counts() {
        let mut b = buf(&[(8, 1), (8, 0)]);
        b.extend([0u8; 100]);
        let r = split(&b, 0, 4096, 8);
        assert_eq!(r.iter().map(|r| r.len).sum::<usize>(), b.len());
        assert_eq!(
            r,
            vec![
                Run {
                    len: 4096,
                    data: true
                },
                Run {
                    len: 4096 + 100,
                    data: false
                }
            ]
        );
    }
}
