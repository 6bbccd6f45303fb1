//! Reader unit tests on hand-built images: layouts qemu-img does not write (small blocks, blocks
//! stored out of order, zero bitmaps), and hostile or damaged images, each handled as vpc.c does.

use super::*;
use crate::testimg::{dynamic, footer, reseal};
use vdisk_core::MemStorage;

const BS: u64 = 4096;

fn try_open(b: Vec<u8>) -> Result<VhdReader> {
    open(MemStorage::new("m.vhd", b).shared())
}

fn open_err(b: Vec<u8>) -> String {
    match try_open(b) {
        Ok(_) => panic!("opened"),
        Err(e) => e.to_string(),
    }
}

fn read(r: &VhdReader) -> Vec<u8> {
    let mut v = vec![0xeeu8; r.virtual_size() as usize];
    r.read_at(&mut v, 0).unwrap();
    v
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// 4 blocks of 4 KiB, the disk ending 512 bytes into block 3; blocks 0 and 2 allocated.
fn small() -> Vec<u8> {
    dynamic(
        3 * BS + 512,
        BS as u32,
        &[Some(0x11), None, Some(0x33), None],
    )
}

#[test]
fn small_blocks_out_of_order_with_empty_bitmaps() {
    let r = try_open(small()).unwrap();
    assert_eq!(r.virtual_size(), 3 * BS + 512);
    let v = read(&r);
    let bs = BS as usize;
    assert!(
        v[..bs].iter().all(|b| *b == 0x11),
        "bitmap ignored, as qemu does"
    );
    assert!(v[bs..2 * bs].iter().all(|b| *b == 0));
    assert!(v[2 * bs..3 * bs].iter().all(|b| *b == 0x33));
    assert!(v[3 * bs..].iter().all(|b| *b == 0));
    // Reads across block edges, in odd pieces.
    let mut piece = vec![0u8; 1000];
    r.read_at(&mut piece, BS - 500).unwrap();
    assert!(piece[..500].iter().all(|b| *b == 0x11) && piece[500..].iter().all(|b| *b == 0));
    let info = r.info().unwrap();
    assert_eq!((info.format.as_str(), info.cluster_size), ("vpc", Some(BS)));
    assert_eq!(info.children[0].name, "file");
    assert!(r.check().is_err(), "vpc has no check");
    // Block 2 is stored first (at sector 4 + its 512-byte bitmap), block 0 after it.
    let e = r.block_status(10, u64::MAX).unwrap();
    assert_eq!((e.kind, e.length), (ExtentKind::Data, BS - 10));
    assert_eq!(e.host.unwrap().offset, 2048 + (512 + BS) + 512 + 10);
    let e = r.block_status(2 * BS, u64::MAX).unwrap();
    assert_eq!(e.host.unwrap().offset, 2048 + 512);
    let e = r.block_status(BS + 7, u64::MAX).unwrap();
    assert_eq!((e.kind, e.length), (ExtentKind::Zero, BS - 7));
    let e = r.block_status(3 * BS, u64::MAX).unwrap();
    assert_eq!(
        (e.kind, e.length),
        (ExtentKind::Zero, 512),
        "clipped at the disk end"
    );
    assert!(r.block_status(3 * BS + 512, 1).is_err());
    assert!(r.read_at(&mut [0u8; 2], 3 * BS + 511).is_err());
}

#[test]
fn unallocated_runs_are_one_extent() {
    let r = try_open(dynamic(
        8 * BS,
        BS as u32,
        &[None, None, None, Some(1), None, None, None, None],
    ))
    .unwrap();
    let e = r.block_status(0, u64::MAX).unwrap();
    assert_eq!((e.kind, e.length), (ExtentKind::Zero, 3 * BS));
    let e = r.block_status(4 * BS, u64::MAX).unwrap();
    assert_eq!((e.kind, e.length), (ExtentKind::Zero, 4 * BS));
    let e = r.block_status(4 * BS, 100).unwrap();
    assert_eq!(e.length, 100);
}

#[test]
fn one_sector_blocks_have_no_bitmap() {
    // qemu's bitmap size for blocks under 4 KiB is 0: data follows the BAT entry's sector directly.
    let r = try_open(dynamic(2048, 512, &[Some(1), None, Some(3), Some(4)])).unwrap();
    let v = read(&r);
    let want: Vec<u8> = [1u8, 0, 3, 4].iter().flat_map(|b| [*b; 512]).collect();
    assert_eq!(v, want);
}

#[test]
fn many_threads_read_at_once() {
    let blocks: Vec<Option<u8>> = (0..32).map(|i| (i % 3 != 0).then_some(i as u8)).collect();
    let r = Arc::new(try_open(dynamic(32 * BS, BS as u32, &blocks)).unwrap());
    let want = read(&r);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (r, want) = (Arc::clone(&r), &want);
            s.spawn(move || {
                for i in 0..200u64 {
                    let off = (i * 7919 + t * 104729) % (32 * BS - 3000);
                    let mut b = vec![0u8; 3000];
                    r.read_at(&mut b, off).unwrap();
                    assert_eq!(&b[..], &want[off as usize..off as usize + 3000]);
                }
            });
        }
    });
}

#[test]
fn footer_only_at_the_start_is_enough_and_the_end_copy_is_ignored() {
    let mut b = small();
    let n = b.len();
    b[n - 512..].fill(0x77); // a damaged end copy: qemu never looks at it
    let r = try_open(b.clone()).unwrap();
    b.truncate(n - 512); // no end copy at all
    assert_eq!(read(&try_open(b).unwrap()), read(&r));
}

#[test]
fn truncation() {
    let good = small();
    let blocks_end = good.len() - 512;
    // Cut inside the last block: "The image has been truncated".
    for cut in [blocks_end - 512, blocks_end - 4096, 2048, 1600, 1536, 1000] {
        let e = open_err(good[..cut].to_vec());
        assert!(
            e.contains("truncated") || e.contains("Invalid header magic"),
            "{cut}: {e}"
        );
    }
    // Cut inside the last sector: qemu counts the file in whole sectors and reads zeros past its end.
    let r = try_open(good[..blocks_end - 100].to_vec()).unwrap();
    let v = read(&r);
    assert!(v[..BS as usize - 100].iter().all(|b| *b == 0x11));
    assert!(v[BS as usize - 100..BS as usize].iter().all(|b| *b == 0));
    // Short files.
    for n in [0, 1, 8, 100, 511] {
        let e = open_err(good[..n].to_vec());
        assert!(
            e.contains("too small")
                || e.contains("invalid VPC image")
                || e.contains("magic")
                || e.contains("checksum"),
            "{n}: {e}"
        );
    }
    assert!(open_err(Vec::new()).contains("File too small for a VHD header"));
}

#[test]
fn bad_footers() {
    let good = small();
    // No cookie at 0, and the end footer is dynamic: qemu wants a fixed footer there.
    let mut b = good.clone();
    b[0] = b'C';
    assert!(open_err(b).contains("invalid VPC image"));
    let mut b = good.clone();
    b[100] ^= 1;
    assert!(open_err(b).contains("Incorrect header checksum"));
    let mut b = good.clone();
    put32(&mut b, 64, 0);
    assert!(open_err(b).contains("Incorrect header checksum"));
    // Garbage, and a file of zeros.
    assert!(open_err(vec![0u8; 4096]).contains("invalid VPC image"));
}

fn with_footer(mut b: Vec<u8>, edit: impl Fn(&mut [u8; 512])) -> Vec<u8> {
    let mut f = [0u8; 512];
    f.copy_from_slice(&b[..512]);
    edit(&mut f);
    reseal(&mut f);
    b[..512].copy_from_slice(&f);
    b
}

#[test]
fn bad_dynamic_headers() {
    let good = small();
    for off in [u64::MAX, u64::MAX - 100, 1 << 62, good.len() as u64, 3] {
        let b = with_footer(good.clone(), |f| {
            f[16..24].copy_from_slice(&off.to_be_bytes())
        });
        let e = open_err(b);
        assert!(
            e.contains("Invalid header magic") || e.contains("Error reading dynamic VHD header"),
            "data offset {off:#x}: {e}"
        );
    }
    let mut b = good.clone();
    b[512] = b'X';
    assert!(open_err(b).contains("Invalid header magic"));
    for bs in [0u32, 1, 511, 4095, 0x8000_0001, u32::MAX] {
        let mut b = good.clone();
        put32(&mut b, 512 + 32, bs);
        assert!(
            open_err(b).contains(&format!("Invalid block size {bs}")),
            "{bs}"
        );
    }
    // A huge power of two: the table covers the disk, but block 0 would end far past the file.
    let mut b = good.clone();
    put32(&mut b, 512 + 32, 1 << 31);
    assert!(open_err(b).contains("truncated"));
}

#[test]
fn bad_tables() {
    let good = small();
    let mut b = good.clone();
    put32(&mut b, 512 + 28, 3);
    assert!(open_err(b).contains("Page table too small"));
    for n in [0x2000_0000u32, 0x7fff_ffff, 0x8000_0000, u32::MAX] {
        let mut b = good.clone();
        put32(&mut b, 512 + 28, n);
        let e = open_err(b);
        assert!(e.contains("Max Table Entries too large"), "{n:#x}: {e}");
    }
    // The most qemu accepts, but far more than the file holds: refused before allocating 2 GiB.
    let mut b = good.clone();
    put32(&mut b, 512 + 28, 0x1fff_ffff);
    assert!(open_err(b).contains("truncated"));
    for off in [
        u64::MAX,
        u64::MAX - 8,
        good.len() as u64,
        good.len() as u64 - 8,
    ] {
        let mut b = good.clone();
        put64(&mut b, 512 + 16, off);
        assert!(open_err(b).contains("truncated"), "table at {off:#x}");
    }
    // An entry past the end of the file.
    let mut b = good.clone();
    put32(&mut b, 1536 + 4, (good.len() / 512) as u32);
    assert!(open_err(b).contains("block 1"));
    let mut b = good.clone();
    put32(&mut b, 1536 + 4, 0xffff_fffe);
    assert!(open_err(b).contains("truncated"));
}

#[test]
fn entries_into_the_metadata_are_read_as_qemu_reads_them() {
    // qemu does not check that blocks stay clear of the footer, header and BAT: block 1 at sector 0
    // reads the header sectors after its 512-byte bitmap (which here is the footer).
    let mut b = small();
    put32(&mut b, 1536 + 4, 0);
    let r = try_open(b.clone()).unwrap();
    let v = read(&r);
    assert_eq!(&v[BS as usize..BS as usize + 4096], &b[512..512 + 4096]);
}

#[test]
fn differencing_disks_read_alone_as_dynamic_ones() {
    let b = with_footer(small(), |f| f[60..64].copy_from_slice(&4u32.to_be_bytes()));
    let r = try_open(b).unwrap();
    assert_eq!(read(&r), read(&try_open(small()).unwrap()));
    let info = r.info().unwrap();
    assert!(info.backing.is_none(), "qemu 10 opens no parent");
    assert_eq!(info.cluster_size, Some(BS));
    let d: std::collections::HashMap<_, _> = info.details.into_iter().collect();
    assert_eq!(d["disk-type"], "differencing");
}

#[test]
fn fixed_type_at_offset_0_reads_the_file_raw() {
    // vpc_open parses the dynamic header (the footer is at 0), but reads test the type: raw reads.
    let good = small();
    let b = with_footer(good.clone(), |f| {
        f[60..64].copy_from_slice(&2u32.to_be_bytes())
    });
    let r = try_open(b.clone()).unwrap();
    let v = read(&r);
    assert!(
        v.len() > b.len(),
        "the geometry names more than the file holds"
    );
    assert_eq!(&v[..b.len()], &b[..]);
    assert!(v[b.len()..].iter().all(|x| *x == 0));
    assert_eq!(r.info().unwrap().cluster_size, None);
    let e = r.block_status(0, u64::MAX).unwrap();
    assert_eq!((e.kind, e.host.unwrap().offset), (ExtentKind::Data, 0));
    // It still needs a valid dynamic header.
    let mut b2 = b.clone();
    b2[512] = 0;
    assert!(open_err(b2).contains("Invalid header magic"));
}

#[test]
fn fixed_disks() {
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    let mut b = data.clone();
    b.extend_from_slice(&footer(b"qemu", (1, 16, 1), 0, 2, u64::MAX));
    let r = try_open(b.clone()).unwrap();
    assert_eq!(r.virtual_size(), 8192);
    assert_eq!(read(&r), data);
    assert_eq!(r.footer_at(), FooterAt::End(8192));
    assert_eq!(r.info().unwrap().cluster_size, None);
    // A size beyond the file: the footer, then zeros, as qemu reads them.
    let mut b = data.clone();
    b.extend_from_slice(&footer(b"win ", (1, 1, 1), 16384, 2, u64::MAX));
    let r = try_open(b.clone()).unwrap();
    let v = read(&r);
    assert_eq!(&v[..8704], &b[..]);
    assert!(v[8704..].iter().all(|x| *x == 0));
    let e = r.block_status(9000, u64::MAX).unwrap();
    assert_eq!((e.kind, e.length), (ExtentKind::ZeroData, 16384 - 9000));
    // A file whose length is not a whole number of sectors: qemu looks for the footer in the last
    // whole sector of the rounded-up length, which here starts 100 bytes into the footer.
    let mut b = data.clone();
    b.extend_from_slice(&footer(b"qemu", (1, 16, 1), 0, 2, u64::MAX));
    b.extend_from_slice(&[0u8; 100]);
    assert!(open_err(b).contains("invalid VPC image"));
}
