//! CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of VHDX headers, region
//! tables and log entries (spec 2.2.2: "CRC-32C hash over the entire 4 KB structure, with the
//! Checksum field taking the value of zero during the computation"; QEMU's util/crc32c.c and
//! `vhdx_checksum_is_valid`).

/// A running CRC-32C: feed bytes with [`Crc32c::update`], read the checksum with
/// [`Crc32c::finish`]. Feeding a buffer in pieces gives the checksum of the whole.
#[derive(Debug, Clone, Copy)]
pub struct Crc32c(u32);

impl Default for Crc32c {
    fn default() -> Self {
        Crc32c(0xFFFF_FFFF)
    }
}

impl Crc32c {
    /// A CRC of no bytes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.0 = vdisk_core::crc32c::crc32c_update(self.0, data);
    }

    /// Adds `data` with the four bytes at `field` (the stored checksum) taken as zeros. A field
    /// that does not fit `data` is ignored.
    pub fn update_zeroing(&mut self, data: &[u8], field: usize) {
        match (data.get(..field), data.get(field + 4..)) {
            (Some(head), Some(tail)) => {
                self.update(head);
                self.update(&[0; 4]);
                self.update(tail);
            }
            _ => self.update(data),
        }
    }

    /// The checksum of everything added.
    pub fn finish(self) -> u32 {
        self.0 ^ 0xFFFF_FFFF
    }
}

/// CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = Crc32c::new();
    c.update(data);
    c.finish()
}

/// Whether the little-endian checksum stored at `field` of `data` matches the CRC-32C of `data`
/// with that field zeroed (`vhdx_checksum_is_valid`).
pub fn is_valid(data: &[u8], field: usize) -> bool {
    let stored = crate::header::le32(data, field);
    let mut c = Crc32c::new();
    c.update_zeroing(data, field);
    c.finish() == stored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // RFC 3720 (iSCSI) B.4 and the usual "123456789" check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let mut c = Crc32c::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xE306_9283);
    }

    #[test]
    fn checksum_field_taken_as_zero() {
        let mut b = vec![7u8; 64];
        b[4..8].fill(0);
        let sum = crc32c(&b);
        b[4..8].copy_from_slice(&sum.to_le_bytes());
        assert!(is_valid(&b, 4));
        b[10] ^= 1;
        assert!(!is_valid(&b, 4));
        assert!(!is_valid(&[0u8; 2], 4));
    }
}
