//! CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), shared by the formats that seal
//! structures with it: VHDX headers, region tables, metadata and log entries ([MS-VHDX] 2.2.2),
//! and the ext4/jbd2 journal's csum v2/v3 (the kernel's Documentation/filesystems/ext4). The
//! table-driven reflected CRC behind it ([`reflected_table`], [`reflected_update`]) also serves
//! the GPT's CRC-32 (vdisk-part).

/// The byte table of a reflected (LSB-first) CRC-32 with reflected polynomial `poly`.
pub const fn reflected_table(poly: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u32; 256] = reflected_table(0x82F6_3B78);

/// The raw register update of a reflected CRC with byte table `table`: no inversion on entry or
/// exit.
pub fn reflected_update(table: &[u32; 256], mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// The raw register update, as the Linux kernel's `crc32c(crc, data, len)`: no inversion on entry
/// or exit (callers seed with `!0` and invert at the end for the standard CRC-32C).
pub fn crc32c_update(crc: u32, data: &[u8]) -> u32 {
    reflected_update(&TABLE, crc, data)
}

/// The standard CRC-32C of `data` (initial `!0`, final inversion).
pub fn crc32c(data: &[u8]) -> u32 {
    !crc32c_update(!0, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        // The CRC catalogue's check value of CRC-32/ISCSI over "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        let split = crc32c_update(crc32c_update(!0, b"1234"), b"56789");
        assert_eq!(!split, 0xE306_9283);
    }
}
