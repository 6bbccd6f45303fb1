//! The writer's layout, checked field by field on small images it makes, and its refusals.

use super::*;
use crate::footer::checksum;
use crate::reader::open as open_reader;
use vdisk_core::{ImageReader, Storage};

fn opts(s: &[&str]) -> CreateOptions {
    CreateOptions::parse(s).unwrap()
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn reader(p: &Path) -> crate::VhdReader {
    open_reader(Arc::new(vdisk_core::FileStorage::open(p).unwrap())).unwrap()
}

#[test]
fn empty_dynamic_disk_layout() {
    let d = vdisk_testutil::Scratch::new("empty");
    let p = d.join("e.vhd");
    let w = create(&p, 10 << 20, &opts(&[])).unwrap();
    assert_eq!(
        w.caps(),
        WriterCaps {
            granularity: 512,
            out_of_order: false,
            zero_initialized: true,
            copy_range: false
        }
    );
    w.finish().unwrap();
    let b = std::fs::read(&p).unwrap();
    // 10 MiB rounds up to 302/4/17 = 20536 sectors: 6 blocks, one BAT sector, footer at 2048.
    assert_eq!(b.len(), 2048 + 512);
    let f: [u8; 512] = b[..512].try_into().unwrap();
    assert_eq!(f[..], b[2048..]);
    let footer = Footer::parse(&f);
    assert_eq!(footer.checksum, checksum(&f));
    assert_eq!(&footer.creator_app, b"qemu");
    assert_eq!(footer.current_size, 10_514_432);
    assert_eq!(footer.data_offset, 512);
    assert_eq!(footer.disk_type, DiskType::Dynamic);
    assert_eq!(footer.uuid[6] >> 4, 4);
    let h = DynHeader::parse(b[512..1536].try_into().unwrap(), &p, 512).unwrap();
    assert_eq!(
        (h.table_offset, h.max_table_entries, h.block_size),
        (1536, 6, 2 << 20)
    );
    assert_eq!(
        h.checksum,
        crate::footer::checksum_skipping(&b[512..1536], 36)
    );
    assert!(b[1536..2048].iter().all(|x| *x == 0xff));
    let r = reader(&p);
    assert_eq!(r.virtual_size(), 10_514_432);
    assert_eq!(r.dynamic().unwrap().bat.allocated(), 0);
}

#[test]
fn blocks_are_allocated_in_write_order_behind_the_bat() {
    let d = vdisk_testutil::Scratch::new("alloc");
    let p = d.join("a.vhd");
    let mut w = create(&p, 10 << 20, &opts(&["subformat=dynamic"])).unwrap();
    let mb2 = 2u64 << 20;
    w.write(0, Payload::Zero(mb2)).unwrap();
    // Across the edge of blocks 1 and 2.
    w.write(2 * mb2 - 512, Payload::data(vec![7u8; 1024]))
        .unwrap();
    w.write(2 * mb2 + 512, Payload::Zero(mb2)).unwrap();
    // A partial sector at the end of block 3.
    w.write(4 * mb2 - 100, Payload::data(vec![9u8; 100]))
        .unwrap();
    assert!(!p.exists());
    w.finish().unwrap();
    let b = std::fs::read(&p).unwrap();
    let bat: Vec<u32> = (0..6).map(|i| be32(&b, 1536 + 4 * i)).collect();
    let slot = (512 + mb2) / 512;
    assert_eq!(
        bat,
        [
            BAT_UNUSED,
            4,
            4 + slot as u32,
            4 + 2 * slot as u32,
            BAT_UNUSED,
            BAT_UNUSED
        ]
    );
    // Each bitmap all ones; the footer copy behind the last block.
    for e in &bat[1..4] {
        let at = *e as usize * 512;
        assert!(b[at..at + 512].iter().all(|x| *x == 0xff));
    }
    let end = 2048 + 3 * (512 + mb2 as usize);
    assert_eq!(b.len(), end + 512);
    assert_eq!(b[end..], b[..512]);
    let r = reader(&p);
    let mut data = vec![0u8; r.virtual_size() as usize];
    r.read_at(&mut data, 0).unwrap();
    let mut want = vec![0u8; data.len()];
    want[2 * mb2 as usize - 512..2 * mb2 as usize + 512].fill(7);
    want[4 * mb2 as usize - 100..4 * mb2 as usize].fill(9);
    assert!(data == want);
}

#[test]
fn fixed_disk_is_data_then_footer() {
    let d = vdisk_testutil::Scratch::new("fixed");
    let p = d.join("f.vhd");
    let mut w = create(&p, 3_000_000, &opts(&["subformat=fixed"])).unwrap();
    w.write(4096, Payload::data(vec![1u8; 4096])).unwrap();
    w.write(8192, Payload::Zero(8192)).unwrap();
    w.finish().unwrap();
    let b = std::fs::read(&p).unwrap();
    assert_eq!(b.len(), 3_028_992 + 512);
    let f = Footer::parse(b[3_028_992..].try_into().unwrap());
    assert_eq!(f.disk_type, DiskType::Fixed);
    assert_eq!(f.data_offset, u64::MAX);
    assert!(b[4096..8192].iter().all(|x| *x == 1));
    let st = vdisk_core::FileStorage::open(&p).unwrap();
    assert_eq!(
        st.data_run(1 << 20, 2 << 20).unwrap().map(|r| r.0),
        Some(false)
    );
    // force_size: the exact size, creator qem2.
    let p = d.join("g.vhd");
    create(&p, 3_000_000, &opts(&["subformat=fixed", "force_size=on"]))
        .unwrap()
        .finish()
        .unwrap();
    let r = reader(&p);
    assert_eq!(r.virtual_size(), 3_000_320);
    assert_eq!(&r.footer().creator_app, b"qem2");
}

#[test]
fn refusals() {
    let d = vdisk_testutil::Scratch::new("refuse");
    let p = d.join("r.vhd");
    let e = |o: &[&str], size: u64| match create(&p, size, &opts(o)) {
        Ok(_) => panic!("{o:?} {size} accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e(&["subformat=foo"], 1 << 20)
        .contains("Parameter 'subformat' does not accept value 'foo'"));
    assert!(e(&["static=on"], 1 << 20).contains("Invalid parameter 'static'"));
    assert!(e(&["force_size=maybe"], 1 << 20).contains("force_size"));
    assert!(e(&[], 2041 << 30).contains("The image size is too large for file format 'vpc'"));
    assert!(e(&["force_size=on"], 2041 << 30).contains("too large"));
    assert!(!p.exists());
    let mut w = create(&p, 4 << 20, &opts(&[])).unwrap();
    w.write(4096, Payload::data(vec![1u8; 512])).unwrap();
    let e = w.write(0, Payload::data(vec![1u8; 512])).unwrap_err();
    assert!(e.to_string().contains("in order"), "{e}");
    let size = crate::geometry::create_size(4 << 20, false).unwrap().1;
    assert!(w.write(size - 512, Payload::data(vec![1u8; 1024])).is_err());
    assert!(w.write(size - 512, Payload::Zero(u64::MAX)).is_err());
    drop(w);
    assert!(!p.exists());
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        0,
        "no temporary file left"
    );
}
