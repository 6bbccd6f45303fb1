//! The filesystem read through any vdisk reader: an ext4 and a FAT32 filesystem placed in the
//! partitions of a GPT disk made by `sfdisk` (`dd conv=notrunc`), the disk converted to qcow2
//! by qemu-img, the partitions found by vdisk-part, and every file read through the qcow2
//! reader and a partition window equal to the same file read from the bare raw filesystem.

mod common;

use common::{build_tree, raw_reader, run, tools_available, truncate, TreeOpts};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use vdisk_core::{ImageReader, Window};
use vdisk_fs::{FileKind, Filesystem};
use vdisk_testutil::{qemu_available, Scratch};

/// Every path with its kind, size, and contents (files) or target (links).
fn snapshot(fs: &dyn Filesystem) -> Vec<(Vec<u8>, FileKind, u64, Vec<u8>)> {
    let mut v = Vec::new();
    let root = fs.root().unwrap();
    vdisk_fs::walk::walk(fs, &root, b"/", &mut |p, e| {
        let body = match e.node.kind {
            FileKind::Regular => vdisk_fs::read_all(fs, &e.node, 1 << 30)?,
            FileKind::Symlink => fs.read_link(&e.node)?,
            _ => Vec::new(),
        };
        v.push((p.to_vec(), e.node.kind, e.node.size, body));
        Ok(())
    })
    .unwrap();
    v
}

#[test]
fn filesystems_in_partitions_of_a_qcow2_disk() {
    if !tools_available(&[
        "mkfs.ext4",
        "mkfs.fat",
        "mcopy",
        "sfdisk",
        "dd",
        "mkfifo",
        "mknod",
    ]) || !qemu_available()
    {
        return;
    }
    let d = Scratch::new("fs-qcow2");
    let src = d.join("src");
    std::fs::create_dir(&src).unwrap();
    build_tree(
        &src,
        &TreeOpts {
            block: 4096,
            big: 3 << 20,
            islands: 30,
            many: 500,
            triple: false,
        },
    );
    let ext = d.join("ext.img");
    truncate(&ext, 40 << 20);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg("-d")
        .arg(&src)
        .arg(&ext));
    let fat = d.join("fat.img");
    truncate(&fat, 40 << 20);
    run(Command::new("mkfs.fat")
        .args(["-F", "32", "-s", "1"])
        .arg(&fat));
    let mut cp = Command::new("mcopy");
    cp.args(["-s", "-i"]).arg(&fat).arg(src.join("many"));
    for e in std::fs::read_dir(src.join("a")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() && !p.is_symlink() {
            cp.arg(p);
        }
    }
    run(cp.arg("::"));

    let disk = d.join("disk.img");
    truncate(&disk, 100 << 20);
    let mut c = Command::new("sfdisk")
        .arg("-q")
        .arg(&disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\nsize=41M, type=U\nsize=41M, type=L\n")
        .unwrap();
    assert!(c.wait().unwrap().success());
    let table = vdisk_part::read(raw_reader(&disk).as_ref())
        .unwrap()
        .unwrap();
    let starts: Vec<u64> = table.partitions.iter().map(|p| p.start * 512).collect();
    for (img, start) in [(&fat, starts[0]), (&ext, starts[1])] {
        run(Command::new("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", disk.display()))
            .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
            .arg(format!("seek={}", start >> 20)));
        assert_eq!(start % (1 << 20), 0);
    }
    let qcow2 = common::qcow2_reader(&disk);
    assert_eq!(qcow2.format_name(), "qcow2");
    let table = vdisk_part::read(qcow2.as_ref()).unwrap().unwrap();
    let mut kinds = Vec::new();
    for (p, bare) in table.partitions.iter().zip([&fat, &ext]) {
        let w: Arc<dyn ImageReader> =
            Arc::new(Window::new(qcow2.clone(), p.start * 512, p.sectors * 512).unwrap());
        let kind = vdisk_fs::probe(w.as_ref()).unwrap().unwrap();
        let fs = vdisk_fs::open(w).unwrap();
        let theirs = vdisk_fs::open(raw_reader(bare)).unwrap();
        assert_eq!(fs.kind(), kind);
        let ours = snapshot(fs.as_ref());
        assert!(ours.len() > 500, "{kind}: {} paths", ours.len());
        assert!(
            ours == snapshot(theirs.as_ref()),
            "{kind}: through qcow2 and a partition"
        );
        assert_eq!(fs.usage().unwrap(), theirs.usage().unwrap());
        kinds.push(kind);
    }
    assert_eq!(kinds, ["vfat", "ext4"]);
    // The whole disk is no filesystem.
    assert_eq!(vdisk_fs::probe(qcow2.as_ref()).unwrap(), None);
}

/// `mkfs.ext4 -E offset=` puts the filesystem at an offset of the raw file: read through a
/// window there.
#[test]
fn ext4_at_an_offset() {
    if !tools_available(&["mkfs.ext4", "mkfifo", "mknod"]) {
        return;
    }
    let d = Scratch::new("fs-offset");
    let src = d.join("src");
    std::fs::create_dir(&src).unwrap();
    build_tree(
        &src,
        &TreeOpts {
            block: 1024,
            big: 100_000,
            islands: 10,
            many: 50,
            triple: false,
        },
    );
    let img = d.join("off.img");
    truncate(&img, 20 << 20);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "offset=3145728"])
        .arg("-d")
        .arg(&src)
        .arg(&img)
        .arg("16M"));
    let r = raw_reader(&img);
    let w: Arc<dyn ImageReader> = Arc::new(Window::new(r, 3 << 20, 16 << 20).unwrap());
    let fs = vdisk_fs::open(w).unwrap();
    let n = vdisk_fs::resolve(fs.as_ref(), b"/a/b/abs_link", true).unwrap();
    assert_eq!(
        vdisk_fs::read_all(fs.as_ref(), &n, 100).unwrap(),
        b"deep down\n"
    );
}
