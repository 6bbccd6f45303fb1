//! The writer's layout, option refusals and round trips through vdisk's own reader (the qemu-img
//! comparisons are in tests/oracle/write.rs).

use super::*;
use crate::bat::BlockState;
use crate::writer_layout::default_block_size;
use vdisk_core::ImageReader;

fn opts(s: &[&str]) -> CreateOptions {
    CreateOptions::parse(s).unwrap()
}

fn refusal(size: u64, o: &[&str]) -> String {
    create_params(size, &opts(o)).unwrap_err().to_string()
}

fn open(p: &Path) -> crate::VhdxReader {
    crate::open(Arc::new(FileStorage::open(p).unwrap())).unwrap()
}

#[test]
fn default_layout_of_a_small_image() {
    let p = create_params(1000, &opts(&[])).unwrap();
    assert_eq!(
        p,
        CreateParams {
            size: 1024,
            log_size: 1 << 20,
            block_size: 8 << 20,
            fixed: false,
            zero_blocks: true
        }
    );
    let l = Layout::new(p).unwrap();
    assert_eq!(
        (l.chunk_ratio, l.payload_blocks, l.bat_entries),
        (512, 1, 1)
    );
    assert_eq!((l.bat_offset, l.bat_length), (2 << 20, 1 << 20));
    assert_eq!((l.metadata_offset, l.data_offset), (3 << 20, 8 << 20));
    // An empty disk still has qemu's 0xffffffff >> chunk_bits entries.
    let e = Layout::new(create_params(0, &opts(&["block_size=1M"])).unwrap()).unwrap();
    assert_eq!((e.bat_entries, e.bat_length), (0xfffff, 8 << 20));
}

#[test]
fn options_are_rounded_as_qemu_rounds_them() {
    let p = create_params(
        5 << 20,
        &opts(&["log_size=5000,block_size=1000,subformat=fixed,block_state_zero=off"]),
    )
    .unwrap();
    assert_eq!((p.log_size, p.block_size), (1 << 20, 1 << 20));
    assert!(p.fixed && !p.zero_blocks);
    let big = create_params(1 << 20, &opts(&["block_size=512M"])).unwrap();
    assert_eq!(big.block_size, 256 << 20);
    let auto = create_params(1 << 20, &opts(&["block_size=0"])).unwrap();
    assert_eq!(auto.block_size, 8 << 20);
    for (size, mib) in [
        (1u64 << 30, 8),
        ((1 << 30) + 512, 16),
        (100 << 30, 16),
        ((100 << 30) + 512, 32),
        (32 << 40, 32),
        ((32 << 40) + 512, 64),
    ] {
        assert_eq!(default_block_size(size), mib << 20, "{size}");
    }
    assert!(create_params(64 << 40, &opts(&[])).is_ok());
}

#[test]
fn refusals_use_qemus_words() {
    let cases: &[(u64, &[&str], &str)] = &[
        (
            1 << 20,
            &["block_size=3M"],
            "Block size must be a power of two",
        ),
        (
            1 << 20,
            &["log_size=0"],
            "Log size must be a multiple of 1 MB",
        ),
        (
            1 << 20,
            &["log_size=4G"],
            "Log size must be smaller than 4 GB",
        ),
        ((64 << 40) + 1, &[], "Image size too large; max of 64TB"),
        (
            1 << 20,
            &["subformat=foo"],
            "Parameter 'subformat' does not accept value 'foo'",
        ),
        (
            1 << 20,
            &["block_state_zero=maybe"],
            "Parameter 'block_state_zero' expects 'on' or 'off'",
        ),
        (
            1 << 20,
            &["block_size=-1"],
            "Value '-1' is out of range for parameter 'block_size'",
        ),
        (
            1 << 20,
            &["block_size=abc"],
            "Parameter 'block_size' expects a non-negative number below 2^64\nOptional suffix k, \
             M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.",
        ),
    ];
    for (size, o, want) in cases {
        assert_eq!(refusal(*size, o), *want, "{o:?}");
    }
    assert!(refusal(1, &["bogus=1"]).starts_with("Invalid parameter 'bogus'"));
}

#[test]
fn dropped_writer_leaves_no_file() {
    let d = vdisk_testutil::Scratch::new("drop");
    let p = d.join("x.vhdx");
    let mut w = create(&p, 4 << 20, &opts(&[])).unwrap();
    w.write(0, Payload::data(vec![1u8; 4096])).unwrap();
    drop(w);
    assert!(!p.exists());
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
}

#[test]
fn writes_out_of_order_or_past_the_end_are_refused() {
    let d = vdisk_testutil::Scratch::new("order");
    let p = d.join("x.vhdx");
    let mut w = create(&p, 3 << 20, &opts(&["block_size=1M"])).unwrap();
    w.write(1 << 20, Payload::Zero(4096)).unwrap();
    assert!(w.write(0, Payload::data(vec![1u8; 512])).is_err());
    assert!(w.write(3 << 20, Payload::data(vec![1u8; 512])).is_err());
    assert!(w.write((3 << 20) - 512, Payload::Zero(1024)).is_err());
}

/// Writes `data` (whole 4 KiB granules; all-zero ones as zero payloads) into a new image.
fn write_image(p: &Path, data: &[u8], o: &[&str]) {
    let mut w = create(p, data.len() as u64, &opts(o)).unwrap();
    for (i, g) in data.chunks(4096).enumerate() {
        let at = (i * 4096) as u64;
        let payload = if g.iter().all(|b| *b == 0) {
            Payload::Zero(g.len() as u64)
        } else {
            Payload::data(g.to_vec())
        };
        w.write(at, payload).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn round_trips_through_the_reader_in_every_subformat() {
    let d = vdisk_testutil::Scratch::new("rt");
    // 5 MiB + 1000 bytes of 1 MiB blocks: data in blocks 0, 2 and the partial tail block 5.
    let mut data = vec![0u8; (5 << 20) + 1000];
    data[..70_000].fill(0xaa);
    data[(2 << 20) + 8192..(2 << 20) + 12_288].fill(0xbb);
    let n = data.len();
    data[n - 100..].fill(0xcc);
    let cases: &[(&[&str], [BlockState; 6])] = &[
        (&["block_size=1M"], {
            use BlockState::*;
            [FullyPresent, Zero, FullyPresent, Zero, Zero, FullyPresent]
        }),
        (&["block_size=1M,block_state_zero=off"], {
            use BlockState::*;
            [
                FullyPresent,
                NotPresent,
                FullyPresent,
                NotPresent,
                NotPresent,
                FullyPresent,
            ]
        }),
        (&["block_size=1M,subformat=fixed"], {
            use BlockState::*;
            [FullyPresent, Zero, FullyPresent, Zero, Zero, FullyPresent]
        }),
        (&["block_size=1M,subformat=fixed,block_state_zero=off"], {
            [BlockState::FullyPresent; 6]
        }),
    ];
    for (i, (o, states)) in cases.iter().enumerate() {
        let p = d.join(&format!("{i}.vhdx"));
        write_image(&p, &data, o);
        let r = open(&p);
        assert_eq!(r.virtual_size(), (5 << 20) + 1024, "{o:?}");
        let mut back = vec![0u8; (5 << 20) + 1024];
        r.read_at(&mut back, 0).unwrap();
        assert_eq!(&back[..n], &data[..], "{o:?}");
        assert!(back[n..].iter().all(|b| *b == 0));
        let got: Vec<BlockState> = (0..6)
            .map(|b| BlockState::of(r.bat().payload_entry(b)))
            .collect();
        assert_eq!(&got, states, "{o:?}");
        assert_eq!(r.check().unwrap().corruptions, 0, "{o:?}");
    }
}
