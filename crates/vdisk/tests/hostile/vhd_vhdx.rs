//! VHD and VHDX images cut short at every structure, and with every size, count and offset field
//! of their footers, headers, region tables, metadata and tables set to extreme values (with the
//! checksums that guard them recomputed, so that the parsers behind them are reached): never a
//! panic, hang or huge allocation, and every field at its maximum at once is an error.

use crate::util::*;
use vdisk_testutil::{qemu_available, qemu_io, Scratch};

/// The extreme values a field of `width` bytes is set to in turn.
fn extremes(width: usize) -> Vec<u64> {
    let mask = if width == 8 {
        u64::MAX
    } else {
        (1u64 << (width * 8)) - 1
    };
    let mut v: Vec<u64> = [
        u64::MAX,
        u64::MAX >> 1,
        1 << (width * 8 - 1),
        0,
        1,
        0x1000_0000,
    ]
    .iter()
    .map(|x| x & mask)
    .collect();
    v.dedup();
    v
}

fn put(img: &mut [u8], at: usize, width: usize, v: u64, big_endian: bool) {
    let bytes = if big_endian {
        v.to_be_bytes()[8 - width..].to_vec()
    } else {
        v.to_le_bytes()[..width].to_vec()
    };
    img[at..at + width].copy_from_slice(&bytes);
}

/// The VHD footer's checksum (one's complement of the byte sum, the field itself as zeros).
fn vhd_checksum(img: &mut [u8], footer_at: usize) {
    img[footer_at + 64..footer_at + 68].fill(0);
    let sum: u32 = img[footer_at..footer_at + 512]
        .iter()
        .map(|b| u32::from(*b))
        .sum();
    img[footer_at + 64..footer_at + 68].copy_from_slice(&(!sum).to_be_bytes());
}

fn vhd_images(s: &Scratch) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, opts) in [("d.vhd", "subformat=dynamic"), ("f.vhd", "subformat=fixed")] {
        qemu(s.path(), &["create", "-f", "vpc", "-o", opts, name, "4M"]);
        qemu_io(
            "vpc",
            &s.join(name),
            &["write -P 0x71 0 64k", "write -P 0x72 3M 4k"],
        );
        out.push((name, std::fs::read(s.join(name)).expect("read")));
    }
    out
}

#[test]
fn truncated_vhd_and_vhdx_never_panic() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-trunc-vhd");
    for (name, data) in vhd_images(&s) {
        // The dynamic disk's structures are in its first KiBs; the fixed disk's footer is last.
        let mut cuts: Vec<usize> = (0..8192).step_by(512).collect();
        cuts.extend([1, 8, 511, 513, 1023, 1025, 1535, 1537]);
        cuts.extend((0..data.len()).step_by(64 << 10));
        cuts.extend([data.len() - 1, data.len() - 511, data.len() - 512]);
        for n in cuts.into_iter().filter(|n| *n < data.len()) {
            let what = format!("{name} truncated to {n} bytes");
            let _ = attempt_mem("vpc", &what, data[..n].to_vec());
        }
    }
    let data = vhdx_image(&s);
    let l = VhdxLayout::of(&data);
    let mut cuts = vec![0, 1, 8, 4096, data.len() - 1];
    for at in [
        64 << 10,
        128 << 10,
        192 << 10,
        256 << 10,
        l.log,
        l.bat,
        l.metadata,
        l.metadata + (64 << 10),
    ] {
        cuts.extend([at - 1, at, at + 1, at + 79, at + 4095, at + 4096]);
    }
    cuts.extend((0..data.len()).step_by(256 << 10));
    for n in cuts.into_iter().filter(|n| *n < data.len()) {
        let what = format!("h.vhdx truncated to {n} bytes");
        let r = attempt_mem("vhdx", &what, data[..n].to_vec());
        if n < l.metadata {
            assert!(r.is_err(), "{what}: opened");
        }
    }
}

#[test]
fn maximal_vhd_fields_never_panic() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-max-vhd");
    for (name, data) in vhd_images(&s) {
        let dynamic = name == "d.vhd";
        let footer_at = if dynamic { 0 } else { data.len() - 512 };
        // (offset, width) in the footer: data offset, original and current size, geometry, type.
        let mut fields: Vec<(usize, usize, bool)> = [(16, 8), (40, 8), (48, 8), (56, 4), (60, 4)]
            .iter()
            .map(|(o, w)| (footer_at + o, *w, true))
            .collect();
        if dynamic {
            // The dynamic header at 512: data offset, table offset, max table entries, block size.
            fields.extend([
                (520, 8, false),
                (528, 8, false),
                (540, 4, false),
                (544, 4, false),
            ]);
        }
        // Some changed images must still open: the checksum is right, the parsers were reached.
        let mut opened = 0;
        for &(at, width, in_footer) in &fields {
            for v in extremes(width) {
                let mut img = data.clone();
                put(&mut img, at, width, v, true);
                if in_footer {
                    vhd_checksum(&mut img, footer_at);
                }
                let what = format!("{name} with the field at {at:#x} = {v:#x}");
                opened += usize::from(attempt_mem("vpc", &what, img).is_ok());
            }
        }
        eprintln!("{name}: {opened} changed images opened");
        assert!(opened > 0, "{name}: no changed image opened");
        let mut img = data.clone();
        for &(at, width, _) in &fields {
            img[at..at + width].fill(0xff);
        }
        vhd_checksum(&mut img, footer_at);
        let what = format!("{name} all maximal");
        assert!(attempt_mem("vpc", &what, img).is_err(), "{what}: opened");
    }
}

fn vhdx_image(s: &Scratch) -> Vec<u8> {
    qemu(
        s.path(),
        &[
            "create",
            "-f",
            "vhdx",
            "-o",
            "block_size=1M",
            "h.vhdx",
            "4M",
        ],
    );
    qemu_io(
        "vhdx",
        &s.join("h.vhdx"),
        &["write -P 0x71 0 64k", "write -P 0x72 3M 4k"],
    );
    std::fs::read(s.join("h.vhdx")).expect("read")
}

/// Where qemu-img put the log, the BAT and the metadata table, from the header and the region
/// table (spec 2.2 and 2.3).
struct VhdxLayout {
    log: usize,
    bat: usize,
    metadata: usize,
}

const REGIONS: usize = 192 << 10;

impl VhdxLayout {
    fn of(b: &[u8]) -> VhdxLayout {
        let le64 = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8")) as usize;
        let mut l = VhdxLayout {
            log: le64((64 << 10) + 72),
            bat: 0,
            metadata: 0,
        };
        for i in 0..2 {
            let e = REGIONS + 16 + 32 * i;
            match b[e] {
                0x66 => l.bat = le64(e + 16),
                0x06 => l.metadata = le64(e + 16),
                other => panic!("unexpected region GUID byte {other:#x}"),
            }
        }
        assert!(l.bat > 0 && l.metadata > 0 && l.log > 0);
        l
    }
}

/// Recomputes the CRC-32C of both headers (4 KiB each) and the region table (64 KiB).
fn vhdx_checksums(img: &mut [u8]) {
    for (at, len) in [(64 << 10, 4096), (128 << 10, 4096), (REGIONS, 64 << 10)] {
        img[at + 4..at + 8].fill(0);
        let c = vdisk::vhdx::crc32c::crc32c(&img[at..at + len]);
        img[at + 4..at + 8].copy_from_slice(&c.to_le_bytes());
    }
}

#[test]
fn maximal_vhdx_fields_never_panic() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-max-vhdx");
    let data = vhdx_image(&s);
    let l = VhdxLayout::of(&data);
    // (offset, width): in both headers the sequence number, log length and log offset; the region
    // table's entry count and both entries' offset and length; the metadata table's entry count
    // and every entry's offset and length; every metadata item's value (block size, flags,
    // virtual size, sector sizes: up to 8 bytes each); the first BAT entries.
    let mut fields: Vec<(usize, usize)> = Vec::new();
    for h in [64 << 10, 128 << 10] {
        fields.extend([(h + 8, 8), (h + 68, 4), (h + 72, 8)]);
    }
    fields.push((REGIONS + 8, 4));
    for i in 0..2 {
        let e = REGIONS + 16 + 32 * i;
        fields.extend([(e + 16, 8), (e + 24, 4)]);
    }
    let md = l.metadata;
    let count = u16::from_le_bytes([data[md + 10], data[md + 11]]) as usize;
    fields.push((md + 10, 2));
    for i in 0..count {
        let e = md + 32 + 32 * i;
        fields.extend([(e + 16, 4), (e + 20, 4)]);
        let item = md + u32::from_le_bytes(data[e + 16..e + 20].try_into().expect("4")) as usize;
        let len = u32::from_le_bytes(data[e + 20..e + 24].try_into().expect("4")) as usize;
        if len <= 8 {
            fields.push((item, len.min(8)));
        } else {
            fields.push((item, 4));
        }
    }
    for k in 0..4 {
        fields.push((l.bat + 8 * k, 8));
    }
    let mut opened = 0;
    for &(at, width) in &fields {
        for v in extremes(width) {
            let mut img = data.clone();
            put(&mut img, at, width, v, false);
            vhdx_checksums(&mut img);
            let what = format!("h.vhdx with the field at {at:#x} = {v:#x}");
            opened += usize::from(attempt_mem("vhdx", &what, img).is_ok());
        }
    }
    eprintln!("h.vhdx: {opened} changed images opened");
    assert!(opened > 10, "h.vhdx: only {opened} changed images opened");
    let mut img = data.clone();
    for &(at, width) in &fields {
        img[at..at + width].fill(0xff);
    }
    vhdx_checksums(&mut img);
    assert!(
        attempt_mem("vhdx", "h.vhdx all maximal", img).is_err(),
        "h.vhdx all maximal: opened"
    );
}
