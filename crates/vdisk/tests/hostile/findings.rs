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
