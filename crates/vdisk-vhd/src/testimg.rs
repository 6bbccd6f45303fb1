//! Test-only builders of VHD images in memory: footers with correct checksums and small dynamic disks
//! laid out as qemu lays them out (footer, header at 512, BAT at 1536, blocks, footer copy).

use crate::footer::checksum;
use crate::limits::{bitmap_size, BAT_UNUSED};

/// A footer with the given creator, geometry, current size, type and data offset, checksummed.
pub fn footer(
    app: &[u8; 4],
    chs: (u16, u8, u8),
    current: u64,
    ty: u32,
    data_offset: u64,
) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[..8].copy_from_slice(b"conectix");
    b[8..12].copy_from_slice(&2u32.to_be_bytes());
    b[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    b[16..24].copy_from_slice(&data_offset.to_be_bytes());
    b[28..32].copy_from_slice(app);
    b[32..36].copy_from_slice(&0x0005_0003u32.to_be_bytes());
    b[36..40].copy_from_slice(b"Wi2k");
    b[40..48].copy_from_slice(&current.to_be_bytes());
    b[48..56].copy_from_slice(&current.to_be_bytes());
    b[56..58].copy_from_slice(&chs.0.to_be_bytes());
    b[58] = chs.1;
    b[59] = chs.2;
    b[60..64].copy_from_slice(&ty.to_be_bytes());
    b[68..84].copy_from_slice(&[0x5a; 16]);
    reseal(&mut b);
    b
}

/// Recomputes the checksum of a footer after an edit.
pub fn reseal(b: &mut [u8; 512]) {
    let c = checksum(b);
    b[64..68].copy_from_slice(&c.to_be_bytes());
}

/// A dynamic disk of `size` bytes (sized by current size: creator "win ") with `block_size`-byte
/// blocks; `blocks[i]` is `Some(fill)` for an allocated block full of `fill`. Each block's sector
/// bitmap is left all zeros ("no sector present"), which qemu ignores. Blocks are stored in reverse
/// order, so that guest order and file order differ.
pub fn dynamic(size: u64, block_size: u32, blocks: &[Option<u8>]) -> Vec<u8> {
    let entries = blocks.len();
    let bat_at = 1536usize;
    let data_at = bat_at + (entries * 4).next_multiple_of(512);
    let f = footer(b"win ", (1, 1, 1), size, 3, 512);
    let mut img = f.to_vec();
    let mut h = [0u8; 1024];
    h[..8].copy_from_slice(b"cxsparse");
    h[8..16].fill(0xff);
    h[16..24].copy_from_slice(&(bat_at as u64).to_be_bytes());
    h[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    h[28..32].copy_from_slice(&(entries as u32).to_be_bytes());
    h[32..36].copy_from_slice(&block_size.to_be_bytes());
    img.extend_from_slice(&h);
    img.resize(data_at, 0);
    let bitmap = bitmap_size(block_size) as usize;
    let slot = bitmap + block_size as usize;
    let mut bat = vec![BAT_UNUSED; entries];
    for (i, fill) in blocks.iter().enumerate().rev() {
        if let Some(fill) = fill {
            bat[i] = (img.len() / 512) as u32;
            img.resize(img.len() + bitmap, 0);
            img.resize(img.len() + slot - bitmap, *fill);
            img.resize(img.len().next_multiple_of(512), 0);
        }
    }
    for (i, e) in bat.iter().enumerate() {
        img[bat_at + 4 * i..bat_at + 4 * i + 4].copy_from_slice(&e.to_be_bytes());
    }
    img.extend_from_slice(&f);
    img
}
