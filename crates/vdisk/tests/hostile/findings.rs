//! Regression tests for the findings of fuzzing (fuzz/README.md): each minimized input, embedded or
//! built in code, must now give an error (or a correct answer) instead of a panic, a hang or a huge
//! allocation.

use crate::util::assert_fails;
use vdisk_testutil::{qemu_available, Scratch};

/// FINDING (vdisk-vdi, fixed): a VDI header declaring 0x3fff0000 blocks and a 1 PiB disk over a
/// sparse 4 GiB file (4 KiB on disk) made `open` read and hold a 4 GiB block map (3.8 GB RSS, over
/// two minutes). QEMU refuses the size ("Unsupported VDI image size"); so does vdisk now, before
/// reading the map.
#[test]
fn vdi_sparse_file_with_a_4_gib_block_map_is_refused_quickly() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("finding-vdi-bmap");
    crate::util::qemu(s.path(), &["create", "-f", "vdi", "small.vdi", "1M"]);
    let mut h = std::fs::read(s.join("small.vdi")).expect("read");
    h.truncate(512);
    let blocks = 0x3fff_0000u32;
    h[0x180..0x184].copy_from_slice(&blocks.to_le_bytes());
    h[0x170..0x178].copy_from_slice(&(u64::from(blocks) << 20).to_le_bytes());
    let bmap = u64::from(crate::util::le32(&h, 0x154));
    let data = (bmap + u64::from(blocks) * 4).next_multiple_of(512);
    h[0x158..0x15c].copy_from_slice(&(data as u32).to_le_bytes());
    let p = s.join("huge-map.vdi");
    std::fs::write(&p, &h).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&p)
        .expect("open")
        .set_len(data)
        .expect("sparse");
    let start = std::time::Instant::now();
    let msg = assert_fails(&p, s.path());
    assert!(msg.contains("VDI image size"), "{msg}");
    assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
}

/// FINDING (vdisk-core, fixed): an image whose backing file (or VMDK extent) is a FIFO hung
/// `vdisk map`/`convert` forever in open(2), waiting for a writer (qemu-img hangs too). The FIFO is
/// now refused at once.
#[test]
fn backing_file_that_is_a_fifo_is_refused_without_hanging() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("finding-fifo");
    let fifo = s.join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let args = [
        "create",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "fifo",
        "-F",
        "raw",
        "top.qcow2",
        "1M",
    ];
    crate::util::qemu(s.path(), &args);
    let msg = assert_fails(&s.join("top.qcow2"), s.path());
    assert!(msg.contains("FIFO"), "{msg}");
    // A VMDK whose flat extent is the FIFO.
    let desc = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
                createType=\"monolithicFlat\"\n\nRW 8 FLAT \"fifo\" 0\n";
    std::fs::write(s.join("d.vmdk"), desc).expect("write");
    let msg = assert_fails(&s.join("d.vmdk"), s.path());
    assert!(msg.contains("FIFO"), "{msg}");
    // The FIFO itself as the image.
    assert_fails(&fifo, s.path());
}

/// The (id, name) bytes of every entry of the snapshot table of the qcow2 image `data`, read
/// straight from qcow2.txt's layout.
fn snapshot_strings(data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let be = |at: usize, n: usize| {
        data[at..at + n]
            .iter()
            .fold(0u64, |a, b| (a << 8) | u64::from(*b))
    };
    let mut at = be(64, 8) as usize;
    let mut out = Vec::new();
    for _ in 0..be(60, 4) {
        let (id, name, extra) = (
            be(at + 12, 2) as usize,
            be(at + 14, 2) as usize,
            be(at + 36, 4) as usize,
        );
        let var = at + 40 + extra;
        out.push((
            data[var..var + id].to_vec(),
            data[var + id..var + id + name].to_vec(),
        ));
        at += (40 + extra + id + name).next_multiple_of(8);
    }
    out
}

/// FINDING (vdisk-qcow2, fixed; `qcow2_tables`, session 13: "snapshot entry does not round-trip"):
/// snapshot ids and names were read as lossy UTF-8, so every change that writes the snapshot table
/// again (`snapshot -c/-d`, `amend`, `check -r all`) replaced another snapshot's bytes that are
/// not UTF-8 with U+FFFD, and a name of more than 21845 such bytes would have outgrown its 16-bit
/// length. QEMU keeps them as C strings: the stored bytes up to the first NUL, written back as
/// they are. So does vdisk now, and `info` shows the name up to the NUL, as qemu-img does.
#[test]
fn snapshot_names_that_are_not_utf8_survive_a_table_rewrite_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("finding-snapname");
    crate::util::qemu(s.path(), &["create", "-q", "-f", "qcow2", "a.qcow2", "1M"]);
    crate::util::qemu(s.path(), &["snapshot", "-c", "abcd", "a.qcow2"]);
    crate::util::qemu(s.path(), &["snapshot", "-c", "efgh", "a.qcow2"]);
    // The first name becomes "a\0cd", the second id "\xff".
    let data = std::fs::read(s.join("a.qcow2")).expect("read");
    let be = |at: usize, n: usize| {
        data[at..at + n]
            .iter()
            .fold(0u64, |a, b| (a << 8) | u64::from(*b))
    };
    let e1 = be(64, 8) as usize;
    let var1 = e1 + 40 + be(e1 + 36, 4) as usize;
    let name1 = var1 + be(e1 + 12, 2) as usize;
    let e2 =
        e1 + (var1 - e1 + be(e1 + 12, 2) as usize + be(e1 + 14, 2) as usize).next_multiple_of(8);
    let id2 = e2 + 40 + be(e2 + 36, 4) as usize;
    crate::util::patch(&s.join("a.qcow2"), name1 as u64 + 1, &[0]);
    crate::util::patch(&s.join("a.qcow2"), id2 as u64, &[0xff]);
    let ours = crate::util::copy(&s.join("a.qcow2"), "ours.qcow2");
    let theirs = crate::util::copy(&s.join("a.qcow2"), "theirs.qcow2");

    let r = vdisk::open_image(&ours, &vdisk::OpenRequest::default()).expect("open");
    let names: Vec<String> = r
        .image
        .info()
        .expect("info")
        .snapshots
        .iter()
        .map(|x| x.name.clone())
        .collect();
    assert_eq!(
        names,
        ["a", "efgh"],
        "names end at the first NUL, as qemu-img shows them"
    );

    vdisk_qcow2::mutate::snapshot_create(&ours, "third").expect("snapshot -c");
    crate::util::qemu(s.path(), &["snapshot", "-c", "third", "theirs.qcow2"]);
    let got = snapshot_strings(&std::fs::read(&ours).expect("read"));
    let want = snapshot_strings(&std::fs::read(&theirs).expect("read"));
    assert_eq!(
        got, want,
        "the snapshot table's ids and names after snapshot -c"
    );
    assert_eq!(got[1].0, [0xff], "the id that is not UTF-8 is kept");
    crate::util::qemu(s.path(), &["check", "ours.qcow2"]);
}
