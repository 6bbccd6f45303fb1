//! GUIDs as VHDX stores them (spec 1.3 / MS-DTYP: `Data1` u32, `Data2` and `Data3` u16 little
//! endian, then 8 bytes), and the GUIDs that name the regions and metadata items qemu knows
//! (block/vhdx.c `bat_guid`, `metadata_guid`, `file_param_guid`, ...). qemu compares GUIDs byte
//! for byte (`guid_eq`), as [`Guid`]'s equality does.

use std::fmt;

/// A GUID in its 16 stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID written `d1-d2-d3-d4[0..2]-d4[2..8]`, in its stored byte order.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// The GUID stored at `at` of `b` (zeros where `b` is too short).
    pub fn read(b: &[u8], at: usize) -> Guid {
        let mut g = [0u8; 16];
        if let Some(s) = b.get(at..at + 16) {
            g.copy_from_slice(s);
        }
        Guid(g)
    }

    /// Whether every byte is zero (a log GUID of zero means "no log", spec 2.2.2).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    /// The usual text form, `2dc27766-f623-4200-9d64-115e9bfd4a08`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-",
            u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
            u16::from_le_bytes([g[4], g[5]]),
            u16::from_le_bytes([g[6], g[7]])
        )?;
        for (i, b) in g[8..].iter().enumerate() {
            if i == 2 {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Region: the block allocation table (spec 2.2.3.2).
pub const BAT: Guid = Guid::from_fields(
    0x2DC2_7766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);

/// Region: the metadata region (spec 2.2.3.2).
pub const METADATA: Guid = Guid::from_fields(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);

/// Metadata item: File Parameters (spec 2.6.2.1).
pub const FILE_PARAMETERS: Guid = Guid::from_fields(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);

/// Metadata item: Virtual Disk Size (spec 2.6.2.2).
pub const VIRTUAL_DISK_SIZE: Guid = Guid::from_fields(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);

/// Metadata item: Page 83 Data, the SCSI identity of the disk (spec 2.6.2.3).
pub const PAGE83: Guid = Guid::from_fields(
    0xBECA_12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);

/// Metadata item: Logical Sector Size (spec 2.6.2.4).
pub const LOGICAL_SECTOR_SIZE: Guid = Guid::from_fields(
    0x8141_BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);

/// Metadata item: Physical Sector Size (spec 2.6.2.5).
pub const PHYSICAL_SECTOR_SIZE: Guid = Guid::from_fields(
    0xCDA3_48C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);

/// Metadata item: Parent Locator of a differencing disk (spec 2.6.2.6).
pub const PARENT_LOCATOR: Guid = Guid::from_fields(
    0xA8D3_5F2D,
    0xB30B,
    0x454D,
    [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_order_and_text() {
        assert_eq!(
            BAT.0,
            [
                0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd,
                0x4a, 0x08
            ]
        );
        assert_eq!(BAT.to_string(), "2dc27766-f623-4200-9d64-115e9bfd4a08");
        assert!(Guid::default().is_zero() && !METADATA.is_zero());
        assert_eq!(Guid::read(&BAT.0, 0), BAT);
        assert_eq!(Guid::read(&[1, 2], 0), Guid::default());
    }
}
