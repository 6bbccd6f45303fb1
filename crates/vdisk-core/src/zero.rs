//! Zeros: fast all-zero tests on buffers, used to find zero runs inside data extents (`convert -S`),
//! and writing real zeros over a range in large pieces from one shared zero buffer.

use crate::error::{Error, Result};

/// The most zero bytes one call of [`write_zeros`]'s `write` is given.
pub const ZERO_PIECE: usize = 1 << 20;

/// Writes `len` zero bytes from `offset` on, in pieces of at most [`ZERO_PIECE`] bytes, each with
/// `write(bytes, at)` (a positional write of a file or [`crate::Storage`]). Nothing is allocated:
/// the pieces are slices of one static zero buffer.
pub fn write_zeros(
    offset: u64,
    len: u64,
    mut write: impl FnMut(&[u8], u64) -> Result<()>,
) -> Result<()> {
    static ZEROS: [u8; ZERO_PIECE] = [0u8; ZERO_PIECE];
    let end = offset
        .checked_add(len)
        .ok_or_else(|| Error::invalid("range of zeros overflows"))?;
    let mut at = offset;
    while at < end {
        let n = (end - at).min(ZERO_PIECE as u64) as usize;
        write(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Whether every byte of `buf` is zero. A short prefix is tested first (most non-zero buffers differ
/// early), then 64-byte blocks OR-reduced, which the compiler vectorises.
pub fn is_zero(buf: &[u8]) -> bool {
    let pre = buf.len().min(16);
    if buf[..pre].iter().any(|b| *b != 0) {
        return false;
    }
    let mut blocks = buf[pre..].chunks_exact(64);
    for block in &mut blocks {
        if block.iter().fold(0u8, |acc, b| acc | b) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_are_written_in_pieces_that_cover_the_range() {
        let mut seen = Vec::new();
        write_zeros(10, (ZERO_PIECE * 2 + 3) as u64, |b, at| {
            assert!(b.iter().all(|x| *x == 0));
            seen.push((at, b.len()));
            Ok(())
        })
        .unwrap();
        let p = ZERO_PIECE as u64;
        assert_eq!(
            seen,
            vec![(10, ZERO_PIECE), (10 + p, ZERO_PIECE), (10 + 2 * p, 3)]
        );
        assert!(write_zeros(u64::MAX, 2, |_, _| Ok(())).is_err());
        write_zeros(5, 0, |_, _| panic!("nothing to write")).unwrap();
    }

    #[test]
    fn detects_zero_and_nonzero() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0u8; 4096]));
        for i in [0usize, 15, 16, 63, 64, 79, 80, 4095] {
            let mut b = vec![0u8; 4096];
            b[i] = 1;
            assert!(!is_zero(&b), "byte {i}");
        }
    }
}
