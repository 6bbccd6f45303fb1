//! Damaged XFS filesystems: every big-endian word of the superblock (and its one-byte fields),
//! of the AGF, of inodes (a block-format root directory, a file with an extent list, a remote
//! symlink, a leaf directory's extent list, a short-form directory, a file with a block-map
//! btree), of the btree's leaf block, of directory data blocks (header, entries, the block
//! directory's tail) and of remote symlink blocks (mkfs.xfs's, which lack the v5 header, and
//! one the kernel wrote), set to 0, to all ones, one more, one less,
//! and with the top bit flipped. Each mutant opens with an error or lists and reads with errors
//! or bounded results: never a panic, always within the time bound of
//! [`common::explore::survive_reader`]. Offsets come from `xfs_db`'s `convert` and `bmap`.

mod common;

use common::explore::{survive_reader, values, Patched};
use common::{raw_reader, run, tools_available, truncate};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use vdisk_core::ImageReader;
use vdisk_testutil::Scratch;

/// `xfs_db -r` commands' output.
fn db(img: &Path, cmds: &[&str]) -> String {
    let mut c = Command::new("xfs_db");
    c.arg("-r");
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    String::from_utf8_lossy(&run(c.arg(img)).stdout).into_owned()
}

/// The byte offset `xfs_db convert` prints (`0x10600 (67072)`).
fn convert(img: &Path, what: &str) -> u64 {
    let out = db(img, &[&format!("convert {what} byte")]);
    let n = out
        .split('(')
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok());
    n.unwrap_or_else(|| panic!("convert {what}: {out}"))
}

fn inode_byte(img: &Path, ino: u64) -> u64 {
    convert(img, &format!("inode {ino}"))
}

/// The inode number of `path`.
fn ino_of(img: &Path, path: &str) -> u64 {
    let out = db(img, &[&format!("path {path}"), "inode"]);
    let n = out
        .split("current inode number is ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    n.unwrap_or_else(|| panic!("inode of {path}: {out}"))
}

/// The byte offset of the first mapped block of `path`'s data fork.
fn first_block(img: &Path, path: &str) -> u64 {
    let out = db(img, &[&format!("path {path}"), "bmap"]);
    let fsb: u64 = out
        .split("startblock ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bmap of {path}: {out}"));
    convert(img, &format!("fsblock {fsb}"))
}

/// A field: offset and width in bytes, big-endian.
type Field = (u64, usize);

fn words(start: u64, end: u64) -> Vec<Field> {
    (start..end).step_by(4).map(|o| (o, 4)).collect()
}

/// Every field at `base` set to each of [`values`] in turn, read over the image `dev`.
fn mutate(dev: &Arc<dyn ImageReader>, base: u64, fields: &[Field], what: &str) -> usize {
    let mut n = 0;
    for &(off, w) in fields {
        let at = base + off;
        let mut orig = vec![0u8; w];
        dev.read_at(&mut orig, at).unwrap();
        let v0 = orig.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b));
        for v in values(v0, w) {
            let patch = v.to_be_bytes()[8 - w..].to_vec();
            let m = Patched {
                base: dev.clone(),
                at,
                patch,
            };
            survive_reader(Arc::new(m), &format!("{what} +{off:#x} = {v:#x}"));
            n += 1;
        }
    }
    n
}

/// A protofile tree in the root directory (mkfs.xfs -p), with a subdirectory of three entries.
fn proto(d: &Path, fifos: usize) -> std::path::PathBuf {
    std::fs::write(d.join("f"), b"hello\n").unwrap();
    std::fs::write(d.join("g"), common::pattern(7, 5000)).unwrap();
    std::fs::write(d.join("big"), common::pattern(8, 300_000)).unwrap();
    let mut p = String::from("/dev/null\n0 0\nd--755 0 0\n");
    for name in ["f", "g", "big"] {
        p += &format!("{name} ---644 0 0 {}\n", d.join(name).display());
    }
    p += &format!("slow l--777 0 0 {}/f\n", "d".repeat(700));
    p += "fast l--777 0 0 f\nmid l--777 0 0 abcdef\ncdev c--644 0 0 4 5\n";
    p += &format!(
        "sub d--755 0 0\n a ---644 0 0 {}\n b p--644 0 0\n $\n",
        d.join("f").display()
    );
    for i in 0..fifos {
        p += &format!("fifo-with-a-long-name-{i} p--644 0 0\n");
    }
    p += "$\n";
    let path = d.join(format!("proto{fifos}"));
    std::fs::write(&path, p).unwrap();
    path
}

fn mkfs(img: &Path, proto: &Path, args: &[&str]) {
    truncate(img, 300 << 20);
    run(Command::new("mkfs.xfs")
        .args(["-q", "-f"])
        .args(args)
        .arg("-p")
        .arg(proto)
        .arg(img));
}

#[test]
fn xfs_v5_fields_at_extremes() {
    if !tools_available(&["mkfs.xfs", "xfs_db"]) {
        return;
    }
    let s = Scratch::new("xfs-hostile-v5");
    let img = s.path().join("v5.img");
    mkfs(&img, &proto(s.path(), 40), &[]);
    let dev = raw_reader(&img);
    assert!(vdisk_fs::open(dev.clone()).is_ok());
    let mut n = 0;
    let mut sb = words(0, 264);
    sb.extend((120..128).map(|o| (o, 1)));
    n += mutate(&dev, 0, &sb, "superblock");
    n += mutate(&dev, 512, &words(0, 96), "AGF 0");
    let root = ino_of(&img, "/");
    assert_eq!(
        db(&img, &["path /", "p core.format core.size"]),
        "core.format = 2 (extents)\ncore.size = 4096\n",
        "the root is a block directory"
    );
    n += mutate(
        &dev,
        inode_byte(&img, root),
        &words(0, 176 + 32),
        "root inode",
    );
    let block = first_block(&img, "/");
    let mut dir = words(0, 64 + 96);
    dir.extend(words(4096 - 16, 4096));
    n += mutate(&dev, block, &dir, "root directory block");
    n += mutate(
        &dev,
        inode_byte(&img, ino_of(&img, "/g")),
        &words(0, 176 + 16),
        "file inode",
    );
    n += mutate(
        &dev,
        inode_byte(&img, ino_of(&img, "/slow")),
        &words(0, 176 + 16),
        "remote symlink inode",
    );
    n += mutate(
        &dev,
        first_block(&img, "/slow"),
        &words(0, 56),
        "remote symlink block",
    );
    let sub = inode_byte(&img, ino_of(&img, "/sub")) + 176;
    let sf: Vec<Field> = (0..40).map(|o| (o, 1)).collect();
    n += mutate(&dev, sub, &sf, "short-form directory");
    assert!(n > 1500, "{n} mutants");
}

#[test]
fn xfs_v4_leaf_directory_fields_at_extremes() {
    if !tools_available(&["mkfs.xfs", "xfs_db"]) {
        return;
    }
    let s = Scratch::new("xfs-hostile-v4");
    let img = s.path().join("v4.img");
    mkfs(
        &img,
        &proto(s.path(), 300),
        &[
            "-b",
            "size=1024",
            "-m",
            "crc=0",
            "-i",
            "size=256",
            "-n",
            "ftype=0",
        ],
    );
    let dev = raw_reader(&img);
    let fs = vdisk_fs::open(dev.clone()).unwrap();
    assert_eq!(fs.read_dir(&fs.root().unwrap()).unwrap().len(), 308);
    let fork = db(&img, &["path /", "p core.format core.nextents"]);
    assert!(fork.starts_with("core.format = 2"), "{fork}");
    let root = inode_byte(&img, ino_of(&img, "/"));
    let mut n = mutate(&dev, root, &words(0, 100 + 48), "v4 root inode");
    let mut block = words(0, 16 + 96);
    block.extend(words(4096 - 16, 4096));
    n += mutate(
        &dev,
        first_block(&img, "/"),
        &block,
        "v4 directory data block",
    );
    assert!(n > 300, "{n} mutants");
}

#[test]
fn xfs_btree_file_fields_at_extremes() {
    if !tools_available(&["mkfs.xfs", "xfs_db", "xfs_io", "mount"]) {
        return;
    }
    let s = Scratch::new("xfs-hostile-btree");
    let img = s.path().join("bt.img");
    mkfs(&img, &proto(s.path(), 0), &[]);
    let mnt = s.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "xfs", "-o", "loop"])
        .arg(&img)
        .arg(&mnt)
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        assert!(
            std::env::var_os("CI").is_none(),
            "cannot loop-mount (root and loop devices are needed when CI is set)"
        );
        eprintln!("note: cannot loop-mount; skipping the btree mutants");
        return;
    }
    // Every other 4 KiB block written: one extent each, too many for the inode.
    let mut io = Command::new("xfs_io");
    io.arg("-f");
    for i in 0..200 {
        io.args([
            "-c",
            &format!("pwrite -q -S {} {} 4096", i % 250 + 1, i * 8192),
        ]);
    }
    let ok = io.arg("-c").arg("fsync").arg(mnt.join("frag")).status();
    // A remote symlink as the kernel writes it (its block with the v5 header, which
    // mkfs.xfs 6.1 -p leaves out).
    let linked = std::os::unix::fs::symlink("k".repeat(900), mnt.join("klink"));
    let _ = Command::new("umount").arg(&mnt).status();
    assert!(ok.is_ok_and(|st| st.success()));
    linked.unwrap();
    let fmt = db(&img, &["path /frag", "p core.format"]);
    assert_eq!(fmt, "core.format = 3 (btree)\n");
    let dev = raw_reader(&img);
    let ino = inode_byte(&img, ino_of(&img, "/frag"));
    let mut n = mutate(&dev, ino, &words(0, 176 + 48), "btree file inode");
    let leaf = first_block_of_btree(&img);
    n += mutate(&dev, leaf, &words(0, 72 + 64), "block map leaf");
    let fs = vdisk_fs::open(dev.clone()).unwrap();
    let klink = vdisk_fs::resolve(fs.as_ref(), b"/klink", false).unwrap();
    assert_eq!(fs.read_link(&klink).unwrap(), "k".repeat(900).as_bytes());
    n += mutate(
        &dev,
        first_block(&img, "/klink"),
        &words(0, 64),
        "kernel-made remote symlink block",
    );
    assert!(n > 450, "{n} mutants");
}

/// The byte offset of the first leaf of `/frag`'s block-map btree (the root's first pointer).
fn first_block_of_btree(img: &Path) -> u64 {
    let out = db(img, &["path /frag", "p u3.bmbt.ptrs[1]"]);
    let fsb: u64 = out
        .split('=')
        .nth(1)
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("btree root pointer: {out}"));
    convert(img, &format!("fsblock {fsb}"))
}

/// Symlink targets holding a NUL, as the kernel reads them: a remote target up to its first
/// NUL (the VFS's `readlink` stops there), a local one refused (its inode fails
/// `xfs_symlink_shortform_verify`). On v4 (its remote blocks have no header; mkfs.xfs 6.1 -p
/// writes v5 ones without theirs, which the kernel refuses: the kernel-made ones are read in
/// `xfs_mounted.rs`).
#[test]
fn xfs_symlink_targets_with_a_nul() {
    if !tools_available(&["mkfs.xfs", "xfs_db"]) {
        return;
    }
    let s = Scratch::new("xfs-link-nul");
    let img = s.path().join("v4.img");
    mkfs(
        &img,
        &proto(s.path(), 0),
        &["-m", "crc=0", "-i", "size=256"],
    );
    let dev = raw_reader(&img);
    let read_link = |dev: Arc<dyn ImageReader>, path: &str| {
        let fs = vdisk_fs::open(dev).unwrap();
        let node = vdisk_fs::resolve(fs.as_ref(), path.as_bytes(), false).unwrap();
        fs.read_link(&node)
    };
    let slow = read_link(dev.clone(), "/slow").unwrap();
    assert_eq!(slow.len(), 702);
    assert_eq!(read_link(dev.clone(), "/mid").unwrap(), b"abcdef");
    // The remote target's 11th byte made a NUL.
    let remote = Patched {
        base: dev.clone(),
        at: first_block(&img, "/slow") + 10,
        patch: vec![0],
    };
    assert_eq!(read_link(Arc::new(remote), "/slow").unwrap(), b"dddddddddd");
    // The local target's third byte (in the inode's literal area, after the v2 core).
    let local = Patched {
        base: dev.clone(),
        at: inode_byte(&img, ino_of(&img, "/mid")) + 100 + 2,
        patch: vec![0],
    };
    let e = read_link(Arc::new(local), "/mid").unwrap_err().to_string();
    assert!(e.contains("NUL"), "{e}");
    // Its last byte may be a NUL: the target then ends before it.
    let last = Patched {
        base: dev,
        at: inode_byte(&img, ino_of(&img, "/mid")) + 100 + 5,
        patch: vec![0],
    };
    assert_eq!(read_link(Arc::new(last), "/mid").unwrap(), b"abcde");
}
