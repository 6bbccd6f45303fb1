//! `vdisk convert -n -O vmdk` into existing VMDK images of each writable subformat that already
//! hold other data, against qemu-img doing the same conversion into a twin image; streamOptimized
//! and damaged sparse targets are refused and left untouched.

mod common;
use common::*;
use vdisk_testutil::{assert_qemu_check_clean, qemu_available, qemu_raw_bytes, Scratch};

/// Data where the source has data, zeros and holes, and in the last grain.
const OLD: &[&str] = &[
    "write -P 0xee 0 8M",
    "write -P 0x5a 30M 3M",
    "write -P 0x77 63M 1M",
    "write -P 0x78 2000k 10k",
];

#[test]
fn convert_n_into_existing_vmdk_matches_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-n-vmdk");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    qemu_ok(d, &["convert", "-O", "qcow2", "pat.raw", "src.qcow2"]);
    for sub in [
        "monolithicSparse",
        "twoGbMaxExtentSparse",
        "monolithicFlat",
        "twoGbMaxExtentFlat",
    ] {
        let ours = format!("ours-{sub}.vmdk");
        let theirs = format!("theirs-{sub}.vmdk");
        for name in [&ours, &theirs] {
            let o = format!("subformat={sub}");
            qemu_ok(d, &["create", "-q", "-f", "vmdk", "-o", &o, name, "64M"]);
            qemu_io(d, "vmdk", name, OLD);
        }
        vdisk_ok(d, &["convert", "-n", "-O", "vmdk", "src.qcow2", &ours]);
        qemu_ok(d, &["convert", "-n", "-O", "vmdk", "src.qcow2", &theirs]);
        for name in [&ours, &theirs] {
            assert_qemu_check_clean(&d.join(name), "vmdk");
            let cmp = qemu(d, &["compare", "src.qcow2", name]);
            assert_eq!(cmp.status.code(), Some(0), "{sub} {name}: {}", out(&cmp));
        }
        assert!(
            qemu_raw_bytes(&d.join(&ours), Some("vmdk"))
                == qemu_raw_bytes(&d.join(&theirs), Some("vmdk")),
            "{sub}: vdisk and qemu-img results differ"
        );
    }
}

#[test]
fn convert_n_refuses_stream_optimized_unchanged() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-n-vmdk-stream");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    qemu_ok(
        d,
        &[
            "convert",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            "pat.raw",
            "t.vmdk",
        ],
    );
    let before = std::fs::read(d.join("t.vmdk")).unwrap();
    let o = vdisk(d, &["convert", "-n", "-O", "vmdk", "pat.raw", "t.vmdk"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("streamOptimized"), "{}", err(&o));
    assert!(!err(&o).contains("panicked"), "{}", err(&o));
    assert!(
        std::fs::read(d.join("t.vmdk")).unwrap() == before,
        "file changed"
    );
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn convert_n_refuses_damaged_sparse_vmdk_unchanged() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-n-vmdk-bad");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    type Damage = fn(&mut Vec<u8>);
    // (what, damage, words the error must contain)
    let cases: [(&str, Damage, &str); 3] = [
        (
            "GT entry past EOF",
            |b| {
                // First entry of the first primary grain table.
                let gd = u64_at(b, 56) as usize * 512;
                let gt = u32_at(b, gd) as usize * 512;
                b[gt..gt + 4].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
            },
            "points after EOF",
        ),
        (
            "GD in the header",
            |b| b[56..64].copy_from_slice(&0u64.to_le_bytes()),
            "grain directory",
        ),
        ("truncated", |b| b.truncate(70000), "after EOF"),
    ];
    for (what, damage, words) in cases {
        let _ = std::fs::remove_file(d.join("t.vmdk"));
        qemu_ok(d, &["create", "-q", "-f", "vmdk", "t.vmdk", "64M"]);
        qemu_io(d, "vmdk", "t.vmdk", OLD);
        let mut bytes = std::fs::read(d.join("t.vmdk")).unwrap();
        damage(&mut bytes);
        std::fs::write(d.join("t.vmdk"), &bytes).unwrap();
        let o = vdisk(d, &["convert", "-n", "-O", "vmdk", "pat.raw", "t.vmdk"]);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", err(&o));
        assert!(err(&o).contains(words), "{what}: {}", err(&o));
        assert!(!err(&o).contains("panicked"), "{what}: {}", err(&o));
        assert!(
            std::fs::read(d.join("t.vmdk")).unwrap() == bytes,
            "{what}: file changed"
        );
    }
}
