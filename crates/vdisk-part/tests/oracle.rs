//! Partition tables made by `sfdisk` on raw files, read by vdisk from the raw file and from
//! qemu-img's qcow2 copy of it, against `sfdisk --json` of the raw file: GPT with names,
//! attributes and every common type, MBR with a bootable primary, an extended partition and
//! logical partitions; damaged GPT headers and entry arrays (the backup used, or the MBR read as
//! "dos" when both copies are bad, as sfdisk does); no table at all.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use vdisk_core::{FileStorage, ImageReader};
use vdisk_testutil::{qemu_available, qemu_img, Scratch};

/// Whether sfdisk can be run; under CI its absence is a failure, not a skip.
fn sfdisk_available() -> bool {
    let ok = Command::new("sfdisk")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var_os("CI").is_some() {
        panic!("sfdisk is missing (util-linux's fdisk package) and CI is set");
    }
    ok && qemu_available()
}

fn raw_disk(d: &Scratch, name: &str, size: &str, script: &str) -> PathBuf {
    let p = d.join(name);
    let st = Command::new("truncate")
        .args(["-s", size])
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    let mut c = Command::new("sfdisk")
        .arg("-q")
        .arg(&p)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success(), "sfdisk {name}");
    p
}

fn sfdisk_json(p: &Path) -> Option<serde_json::Value> {
    let dir = p.parent().unwrap();
    let o = Command::new("sfdisk")
        .arg("--json")
        .arg(p.file_name().unwrap())
        .current_dir(dir)
        .output()
        .unwrap();
    // sfdisk prints its warnings on standard output, before the JSON.
    let from = o.stdout.iter().position(|b| *b == b'{').unwrap_or(0);
    o.status
        .success()
        .then(|| serde_json::from_slice(&o.stdout[from..]).unwrap())
}

fn ours(reader: &dyn ImageReader, device: &str) -> Option<serde_json::Value> {
    vdisk_part::read(reader)
        .unwrap()
        .map(|t| vdisk_part::report::sfdisk_json(&t, device, reader.virtual_size()))
}

fn raw_reader(p: &Path) -> Arc<dyn ImageReader> {
    Arc::new(vdisk_raw::open(Arc::new(FileStorage::open(p).unwrap())).unwrap())
}

fn qcow2_reader(p: &Path) -> Arc<dyn ImageReader> {
    let q = p.with_extension("qcow2");
    qemu_img(&[
        "convert",
        "-O",
        "qcow2",
        &p.to_string_lossy(),
        &q.to_string_lossy(),
    ]);
    let s = Arc::new(FileStorage::open(&q).unwrap());
    Arc::new(
        vdisk_qcow2::open(
            s,
            Arc::new(vdisk_core::storage::NoFiles),
            &Default::default(),
        )
        .unwrap(),
    )
}

/// vdisk reads `p` (raw, and as a qcow2 copy) as `sfdisk --json` reads the raw file.
fn agree(p: &Path) -> Option<serde_json::Value> {
    let name = p.file_name().unwrap().to_string_lossy().into_owned();
    let theirs = sfdisk_json(p);
    assert_eq!(ours(raw_reader(p).as_ref(), &name), theirs, "{name} (raw)");
    assert_eq!(
        ours(qcow2_reader(p).as_ref(), &name),
        theirs,
        "{name} (qcow2)"
    );
    theirs
}

const GPT: &str = "label: gpt\n\
    size=8M, type=U, name=\"EFI\"\n\
    size=16M, type=L, name=\"root fs\", attrs=\"RequiredPartition GUID:50,63\"\n\
    size=4M, type=S\n\
    size=2M, type=21686148-6449-6E6F-744E-656564454649, attrs=\"LegacyBIOSBootable\"\n\
    size=4M, type=E6D6D379-F507-44C2-A23C-238F2A3DF928, name=\"d\u{e9}j\u{e0} vu\"\n\
    type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=\"data\"\n";

const DOS: &str = "label: dos\nlabel-id: 0x12345678\n\
    ,8M,c,*\n,16M,83\n,,5\n,4M,82\n,4M,8e\n,,83\n";

#[test]
fn tables_read_as_sfdisk_reads_them() {
    if !sfdisk_available() {
        return;
    }
    let d = Scratch::new("part-oracle");
    let gpt = raw_disk(&d, "g.raw", "64M", GPT);
    let t = agree(&gpt).expect("a GPT");
    assert_eq!(
        t["partitiontable"]["partitions"].as_array().unwrap().len(),
        6
    );
    let dos = raw_disk(&d, "m.raw", "64M", DOS);
    let t = agree(&dos).expect("an MBR");
    assert_eq!(
        t["partitiontable"]["partitions"].as_array().unwrap().len(),
        6
    );
    // Only primaries; a table with no partitions; GPT with 4 entries (sfdisk's table-length).
    agree(&raw_disk(&d, "p.raw", "8M", "label: dos\n,1M,83\n,,7\n"));
    agree(&raw_disk(&d, "e.raw", "8M", "label: dos\n"));
    agree(&raw_disk(
        &d,
        "s.raw",
        "8M",
        "label: gpt\ntable-length: 4\n,1M,L\n",
    ));
    // No table.
    let none = d.join("n.raw");
    std::fs::write(&none, vec![0u8; 1 << 20]).unwrap();
    assert_eq!(agree(&none), None);
}

/// Bytes written over a copy of the disk: (offset, bytes).
type Edits<'a> = &'a [(u64, &'a [u8])];

fn patch(p: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

#[test]
fn damaged_gpt_reads_as_sfdisk_reads_it() {
    if !sfdisk_available() {
        return;
    }
    let d = Scratch::new("part-damaged");
    let good = raw_disk(&d, "g.raw", "64M", GPT);
    let len = std::fs::metadata(&good).unwrap().len();
    let last = len - 512;
    let cases: [(&str, Edits); 6] = [
        ("primary header", &[(512 + 40, b"XX")]),
        ("primary entries", &[(1024 + 5, b"XX")]),
        ("both headers", &[(512 + 40, b"XX"), (last + 40, b"XX")]),
        ("primary signature", &[(512, b"EFI_PART")]),
        ("header size", &[(512 + 12, &[200, 0, 0, 0])]),
        ("protective MBR gone", &[(446 + 4, &[0x83])]),
    ];
    for (what, edits) in cases {
        let p = d.join(&format!("{}.raw", what.replace(' ', "-")));
        std::fs::copy(&good, &p).unwrap();
        for (at, b) in edits {
            patch(&p, *at, b);
        }
        let t = agree(&p);
        eprintln!(
            "{what}: {}",
            t.map_or("none".into(), |t| t["partitiontable"]["label"].to_string())
        );
    }
}

/// What `fuzz/partitions-parity.py` found sfdisk doing on damaged tables, each read as sfdisk
/// reads it: an extended boot record linking to itself (sfdisk lists its partition again up to
/// partition 60), one without the 0x55AA signature (read all the same), a primary entry of type
/// 0 with a byte set (listed), a logical partition of size 0 (listed), a protective MBR too large
/// for a disk whose GPT is invalid (its size "corrected" to the disk), and a disk of at most
/// 4 MiB (a grain of one sector).
#[test]
fn damaged_mbr_chains_read_as_sfdisk_reads_them() {
    if !sfdisk_available() {
        return;
    }
    let d = Scratch::new("part-quirks");
    let dos = "label: dos\nstart=2048, size=2048, type=83\nstart=4096, type=5\n\
               start=6144, size=2048, type=82\nstart=10240, size=2048, type=83\n";
    let good = raw_disk(&d, "d.raw", "8M", dos);
    // The extended partition starts at 4096; its first record links to the second.
    let ebr = 4096 * 512;
    // The second record, 2048 sectors before its partition at 10240 (where sfdisk puts it).
    let ebr2 = (10240 - 2048) * 512;
    let cases: [(&str, Edits); 9] = [
        // The first record's link (entry 1) back to the first record itself.
        ("loop", &[(ebr + 446 + 16 + 8, &[0, 0, 0, 0])]),
        // The same with both records' data entries zeroed: nothing to list.
        (
            "loop of empty records",
            &[(ebr + 446 + 16 + 8, &[0, 0, 0, 0]), (ebr + 446, &[0; 16])],
        ),
        ("no signature", &[(ebr + 510, &[0x55, 0x2f])]),
        ("type 0 with a flag", &[(446 + 48, &[0x20])]),
        ("logical of size 0", &[(ebr + 446 + 12, &[0, 0, 0, 0])]),
        // The first logical all zeros: removed, the second moved into its place.
        ("first logical empty", &[(ebr + 446, &[0; 16])]),
        // The last logical of size 0 at the chain's end: removed.
        (
            "last logical of size 0",
            &[(ebr2 + 446 + 12, &[0, 0, 0, 0])],
        ),
        // A link past the end of the disk: the chain stops there, untidied.
        (
            "link past the disk",
            &[
                (ebr + 446 + 16 + 8, &[0, 0, 1, 0]),
                (ebr + 446 + 12, &[0, 0, 0, 0]),
            ],
        ),
        ("bootable logical", &[(ebr + 446, &[0x80])]),
    ];
    for (what, edits) in cases {
        let p = d.join(&format!("{}.raw", what.replace(' ', "-")));
        std::fs::copy(&good, &p).unwrap();
        for (at, b) in edits {
            patch(&p, *at, b);
        }
        let t = agree(&p).expect(what);
        eprintln!(
            "{what}: {} partitions",
            t["partitiontable"]["partitions"].as_array().unwrap().len()
        );
    }
    // A GPT disk cut short: both headers invalid, the protective MBR read as "dos", its size
    // fitted to the disk; and a small disk's grain.
    let gpt = raw_disk(&d, "g.raw", "8M", "label: gpt\n,1M,L\n");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&gpt)
        .unwrap()
        .set_len(3 << 20)
        .unwrap();
    let t = agree(&gpt).expect("the protective MBR");
    assert_eq!(t["partitiontable"]["label"], "dos");
    assert_eq!(t["partitiontable"]["grain"], "512");
}
