//! Fast all-zero tests on buffers, used to find zero runs inside data extents (`convert -S`).

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
