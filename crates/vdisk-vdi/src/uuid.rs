//! VirtualBox UUIDs (`RTUUID` in IPRT, stored in VDI headers): 16 bytes whose first three fields
//! (time_low, time_mid, time_hi_and_version) are little-endian, unlike RFC 4122's network order. QEMU's
//! block/vdi.c byte-swaps exactly these fields (`uuid_convert`); VirtualBox prints them with
//! `RTUuidToStr` in the usual 8-4-4-4-12 form.

use std::fmt;
use vdisk_core::{Error, Result};

/// A UUID as VirtualBox stores it (`RTUUID`): the first three fields little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// The all-zero UUID.
    pub fn is_null(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }

    /// A random (version 4, RFC 4122 variant) UUID in VirtualBox's byte order.
    pub fn random() -> Result<Uuid> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b)
            .map_err(|e| Error::Other(format!("cannot get random bytes for a UUID: {e}")))?;
        // Byte 7 holds the high byte of the little-endian time_hi_and_version field.
        b[7] = (b[7] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Ok(Uuid(b))
    }
}

impl fmt::Display for Uuid {
    /// The 8-4-4-4-12 form VirtualBox prints (`RTUuidToStr`): the first three fields are read as
    /// little-endian integers, the last eight bytes in order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}
