//! The two CRCs of the jbd2 journal (the kernel's Documentation/filesystems/ext4/journal.rst,
//! "Checksums"): CRC32C (Castagnoli, reflected) for csum v2/v3 as the kernel's `crc32c` computes
//! it, and the big-endian CRC32 (`crc32_be`, polynomial 0x04C11DB7) of the v1 `COMPAT_CHECKSUM`
//! transaction checksums. Neither inverts its input or output: callers pass the seed the kernel
//! passes (`~0` or the journal's UUID seed).

const fn crc32_be_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04C1_1DB7
            } else {
                c << 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC32_BE: [u32; 256] = crc32_be_table();

/// The kernel's `crc32c(crc, data, len)`: no inversion on entry or exit.
pub fn crc32c(crc: u32, data: &[u8]) -> u32 {
    vdisk_core::crc32c::crc32c_update(crc, data)
}

/// The kernel's `crc32_be(crc, data, len)`.
pub fn crc32_be(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC32_BE[(((crc >> 24) ^ u32::from(b)) & 0xFF) as usize] ^ (crc << 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // The standard check values: CRC-32C and CRC-32/MPEG-2 of "123456789" (both with
        // an initial ~0; CRC-32C with its final inversion).
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32_be(!0, b"123456789"), 0x0376_E6E7);
    }
}
