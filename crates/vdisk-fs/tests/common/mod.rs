//! Shared by the oracle tests: checks that the real tools are there (a failure under `CI`, a
//! skip otherwise, as `vdisk_testutil::qemu_available` does), source trees with every kind of
//! file, and patterned file contents.

#![allow(dead_code)]

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use vdisk_core::{FileStorage, ImageReader};

/// Whether every tool is there. Under `CI` a missing tool is a failure, not a skip.
pub fn tools_available(tools: &[&str]) -> bool {
    vdisk_testutil::tools::tools_available(
        tools,
        false,
        "apt-get install e2fsprogs dosfstools mtools fdisk xfsprogs",
    )
}

/// Runs a command that must succeed; returns its output.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Deterministic bytes for a file: a xorshift stream seeded by `seed`, never all-zero blocks.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8 | 1
        })
        .collect()
}

/// Writes `data` at each offset of a sparse file `size` bytes long.
pub fn sparse_file(path: &Path, size: u64, pieces: &[(u64, Vec<u8>)]) {
    let mut f = fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (off, data) in pieces {
        f.seek(SeekFrom::Start(*off)).unwrap();
        f.write_all(data).unwrap();
    }
}

pub struct TreeOpts {
    /// The filesystem block size the file sizes are chosen around.
    pub block: u64,
    /// The size of the largest plain file.
    pub big: usize,
    /// Data islands in the fragmented sparse file (one extent each).
    pub islands: u64,
    /// Files in the big directory.
    pub many: usize,
    /// Whether to add a file past the triple-indirect boundary of an ext2/3 block map.
    pub triple: bool,
}

/// Builds the source tree: nested directories, files of sizes around the block size, empty
/// and sparse files, a fragmented file, fast and slow symlinks (and dangling, absolute and
/// looping ones), hard links, a 255-byte name, a non-UTF-8 name, a fifo, device nodes, a
/// socket, owners and modes, and a directory of `many` entries.
pub fn build_tree(root: &Path, o: &TreeOpts) {
    let d = |p: &str| {
        let p = root.join(p);
        fs::create_dir_all(&p).unwrap();
        p
    };
    d("a/b/c/d");
    d("empty_dir");
    let b = o.block as usize;
    for (i, size) in [
        0usize,
        1,
        b - 1,
        b,
        b + 1,
        2 * b + 7,
        13 * b,
        100_000,
        o.big,
    ]
    .iter()
    .enumerate()
    {
        fs::write(
            root.join(format!("a/size_{size}")),
            pattern(i as u64 + 1, *size),
        )
        .unwrap();
    }
    fs::write(root.join("a/b/c/d/deep.txt"), b"deep down\n").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    sparse_file(&root.join("sparse_hole_only"), 5 << 20, &[]);
    sparse_file(
        &root.join("sparse"),
        3 << 20,
        &[
            (0, pattern(50, 100)),
            (1 << 20, pattern(51, 5000)),
            ((3 << 20) - 10, pattern(52, 10)),
        ],
    );
    // One extent per island: more than fit in the inode makes index nodes (depth > 0).
    let islands: Vec<(u64, Vec<u8>)> = (0..o.islands)
        .map(|k| (k * 3 * o.block, pattern(100 + k, o.block as usize)))
        .collect();
    sparse_file(
        &root.join("fragmented"),
        o.islands * 3 * o.block + 5,
        &islands,
    );
    if o.triple {
        // Past 12 + n + n^2 blocks (n pointers a block): reached through the triple indirect.
        let n = o.block / 4;
        let at = (12 + n + n * n + 3) * o.block;
        sparse_file(
            &root.join("triple"),
            at + 3 * o.block,
            &[(at, pattern(7, 2 * o.block as usize + 5))],
        );
    }
    // Links.
    symlink("a/size_1", root.join("fast_link")).unwrap();
    let long_target: String = "../".repeat(5) + &"x".repeat(80) + "/target";
    symlink(&long_target, root.join("a/slow_link")).unwrap();
    symlink("/a/b/c/d/deep.txt", root.join("a/b/abs_link")).unwrap();
    symlink("c", root.join("a/b/rel_dir_link")).unwrap();
    symlink("nowhere", root.join("dangling")).unwrap();
    symlink("loop2", root.join("loop1")).unwrap();
    symlink("loop1", root.join("loop2")).unwrap();
    symlink("../../..", root.join("a/b/up_link")).unwrap();
    fs::hard_link(root.join("a/b/c/d/deep.txt"), root.join("hard_link")).unwrap();
    // Names.
    fs::write(root.join("n".repeat(255)), b"long name\n").unwrap();
    let weird = root.join(std::ffi::OsStr::from_bytes(b"caf\xe9 \xff name"));
    fs::write(weird, b"latin-1\n").unwrap();
    fs::write(root.join("sp ace & quote\""), b"x").unwrap();
    // Special files.
    run(Command::new("mkfifo").arg(root.join("fifo")));
    run(Command::new("mknod")
        .arg(root.join("chardev"))
        .args(["c", "1", "3"]));
    run(Command::new("mknod")
        .arg(root.join("blockdev"))
        .args(["b", "259", "300000"]));
    drop(std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap());
    // Owners and modes.
    let owned = root.join("owned");
    fs::write(&owned, b"owned\n").unwrap();
    std::os::unix::fs::chown(&owned, Some(100_000), Some(70_000)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&owned, fs::Permissions::from_mode(0o4751)).unwrap();
    fs::set_permissions(root.join("empty_dir"), fs::Permissions::from_mode(0o1777)).unwrap();
    // Many entries (an htree directory once e2fsck -D has indexed it).
    let many = d("many");
    for k in 0..o.many {
        fs::write(
            many.join(format!("entry-with-a-longish-name-{k:05}")),
            format!("{k}\n"),
        )
        .unwrap();
    }
}

/// A raw image file as a vdisk reader.
pub fn raw_reader(p: &Path) -> Arc<dyn ImageReader> {
    Arc::new(vdisk_raw::open(Arc::new(FileStorage::open(p).unwrap())).unwrap())
}

/// qemu-img's qcow2 copy of a raw image, as a vdisk reader.
pub fn qcow2_reader(p: &Path) -> Arc<dyn ImageReader> {
    let q: PathBuf = p.with_extension("qcow2");
    vdisk_testutil::qemu_img(&[
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

/// Makes an empty sparse file of `size` bytes.
pub fn truncate(p: &Path, size: u64) {
    fs::File::create(p).unwrap().set_len(size).unwrap();
}
pub mod debugfs;
pub mod explore;
pub mod xfs;
pub mod xfs_kernel;
pub mod xfs_ours;
pub mod xfs_proto;

/// blkid's low-level probe (`-p -o export`), its escaped spaces unescaped; empty when it finds
/// nothing (exit status 2).
pub fn blkid(img: &Path) -> std::collections::HashMap<String, String> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(img)
        .output()
        .unwrap_or_else(|e| panic!("cannot run blkid: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("\\ ", " ")))
        .collect()
}
