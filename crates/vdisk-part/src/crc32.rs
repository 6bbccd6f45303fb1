//! CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), the checksum of GPT headers and
//! partition entry arrays (UEFI 2.10 section 5.3.2, "GPT Header": HeaderCRC32 and
//! PartitionEntryArrayCRC32).

use vdisk_core::crc32c::{reflected_table, reflected_update};

static TABLE: [u32; 256] = reflected_table(0xEDB8_8320);

/// The CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    !reflected_update(&TABLE, !0, data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_values() {
        assert_eq!(super::crc32(b""), 0);
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(super::crc32(&[0u8; 32]), 0x190A_55AD);
    }
}
