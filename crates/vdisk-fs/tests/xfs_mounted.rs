//! XFS read by vdisk-fs and compared with the kernel's own XFS driver: a filesystem filled
//! through a loop mount (std::fs and `xfs_io`: sockets, hard links, times before 1970 and after
//! 2038 with nanoseconds, a file fragmented into a btree data fork, preallocated unwritten
//! extents, sparse files, deleted directory entries and a freed directory block, a directory
//! with a btree data fork, inodes in every AG), opened while still mounted (its log needs
//! recovery: an error), given attributes once unmounted, then mounted read-only: every
//! directory's names, every node's `stat` fields, every file's bytes (read in odd chunk sizes
//! and past the end), every link target and `usage` against statvfs; and the tree again through
//! a qcow2 copy. Needs root and loop devices: a failure under `CI` without them, a skip
//! otherwise.

mod common;

use common::xfs::{self, Fork, Geometry, Layout};
use common::xfs_kernel::*;
use common::xfs_ours::*;
use common::xfs_proto::*;
use common::{blkid, pattern, raw_reader, run, tools_available, truncate};
use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;
use vdisk_fs::FileKind;
use vdisk_testutil::Scratch;

const MOUNT_TOOLS: &[&str] = &[
    "mkfs.xfs", "xfs_db", "xfs_io", "blkid", "mount", "umount", "stat", "touch", "mknod", "mkfifo",
];

// ---------------------------------------------------------------------------------------------
// The kernel as the oracle.

fn touch(p: &Path, when: &str) {
    run(Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(format!("@{when}"))
        .arg(p));
}

/// Runs xfs_io's commands (read from its standard input).
fn xfs_io(cmds: &str) {
    use std::io::Write;
    let mut child = Command::new("xfs_io")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cmds.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "xfs_io");
}

/// Fills the mounted filesystem.
fn populate(m: &Path) {
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};
    let j = |p: &str| m.join(p);
    let chmod = |p: &str, mode: u32| {
        fs::set_permissions(j(p), fs::Permissions::from_mode(mode)).unwrap();
    };
    // Top-level directories: the inode64 allocator puts each new one in the next AG.
    for k in 0..6 {
        fs::create_dir(j(&format!("ag{k}"))).unwrap();
        fs::write(
            j(&format!("ag{k}/file")),
            pattern(300 + k, 20_000 + k as usize * 4096),
        )
        .unwrap();
    }
    fs::create_dir(j("a")).unwrap();
    for (i, size) in [0usize, 1, 4095, 4096, 4097, 12_411, 300_000, (2 << 20) + 5]
        .iter()
        .enumerate()
    {
        fs::write(j(&format!("a/size_{size}")), pattern(i as u64 + 1, *size)).unwrap();
    }
    // Rewritten shorter, then extended by a hole.
    fs::write(j("a/rewritten"), pattern(40, 50_000)).unwrap();
    fs::write(j("a/rewritten"), pattern(41, 7000)).unwrap();
    let f = fs::OpenOptions::new()
        .append(true)
        .open(j("a/rewritten"))
        .unwrap();
    f.set_len(9000).unwrap();
    drop(f);
    // Sparse files.
    common::sparse_file(
        &j("sparse"),
        10 << 20,
        &[
            (0, pattern(50, 100)),
            (5 << 20, pattern(51, 5000)),
            ((10 << 20) - 10, pattern(52, 10)),
        ],
    );
    common::sparse_file(&j("hole_only"), 3 << 20, &[]);
    // Data past 4 GiB and 1 TiB: file offsets and sizes beyond 32 bits.
    common::sparse_file(
        &j("huge_sparse"),
        (5 << 40) + 7,
        &[
            (0, pattern(53, 3000)),
            ((1 << 32) - 2, pattern(54, 70_000)),
            ((1 << 40) - 4096, pattern(55, 12_288)),
            ((5 << 40) - 3, pattern(56, 10)),
        ],
    );
    // A file of 256 separate extents (a hole after each): a btree data fork.
    let mut cmds = format!("open -f {}\n", j("fragmented").display());
    for k in 0..256u64 {
        cmds += &format!("pwrite -S {:#x} {} 4096\n", k % 250 + 1, k * 8192);
    }
    cmds += "fsync\nclose\n";
    // Preallocated: unwritten extents read as zeros, one written block, more past the end.
    cmds += &format!(
        "open -f {}\nfalloc 0 1m\npwrite -S 0x5a 64k 4k\nfalloc -k 1m 1m\nfsync\nclose\n",
        j("prealloc").display()
    );
    xfs_io(&cmds);
    // Links.
    fs::create_dir(j("links")).unwrap();
    symlink("../a/size_1", j("links/short")).unwrap();
    symlink(
        std::ffi::OsStr::from_bytes(&long_target(500)),
        j("links/long_500"),
    )
    .unwrap();
    symlink(
        std::ffi::OsStr::from_bytes(&long_target(1023)),
        j("links/long_1023"),
    )
    .unwrap();
    symlink("/a", j("links/abs_dir")).unwrap();
    symlink("nowhere", j("links/dangling")).unwrap();
    fs::write(j("links/target"), b"linked three times\n").unwrap();
    fs::hard_link(j("links/target"), j("links/hard")).unwrap();
    fs::hard_link(j("links/target"), j("ag3/hard")).unwrap();
    fs::hard_link(j("links/short"), j("ag2/hard_symlink")).unwrap();
    // Names.
    fs::write(m.join("n".repeat(255)), b"long name\n").unwrap();
    fs::write(
        m.join(std::ffi::OsStr::from_bytes(b"caf\xe9 \xff name")),
        b"latin-1\n",
    )
    .unwrap();
    fs::write(j("sp ace\nnew:line"), b"x").unwrap();
    // Special files.
    fs::create_dir(j("dev")).unwrap();
    for (name, t, a, b) in [
        ("null", "c", 1, 3),
        ("c45", "c", 4, 5),
        ("nvme", "b", 259, 70_000),
        ("max", "b", 511, 262_143),
    ] {
        run(Command::new("mknod").arg(j(&format!("dev/{name}"))).args([
            t,
            &a.to_string(),
            &b.to_string(),
        ]));
    }
    run(Command::new("mkfifo").arg(j("dev/fifo")));
    drop(std::os::unix::net::UnixListener::bind(j("dev/socket")).unwrap());
    // Owners and modes.
    fs::write(j("owned"), b"owned\n").unwrap();
    std::os::unix::fs::chown(j("owned"), Some(100_000), Some(70_000)).unwrap();
    chmod("owned", 0o4751);
    fs::write(j("setgid"), b"g\n").unwrap();
    chmod("setgid", 0o2710);
    fs::write(j("nothing"), b"").unwrap();
    chmod("nothing", 0);
    fs::create_dir(j("sticky")).unwrap();
    chmod("sticky", 0o1777);
    std::os::unix::fs::lchown(j("links/short"), Some(65_534), Some(65_534)).unwrap();
    // Directories in each layout, with entries deleted.
    fs::create_dir(j("sf")).unwrap();
    for n in ["x", "y", "z", "gone"] {
        fs::write(j(&format!("sf/{n}")), n).unwrap();
    }
    fs::remove_file(j("sf/gone")).unwrap();
    let many = |dir: &str, prefix: &str, n: usize, remove: &dyn Fn(usize) -> bool| {
        fs::create_dir(j(dir)).unwrap();
        for k in 0..n {
            let p = j(&format!("{dir}/{prefix}{k:05}"));
            if k % 11 == 0 {
                fs::write(&p, format!("{k}\n")).unwrap();
            } else {
                fs::File::create(&p).unwrap();
            }
        }
        for k in (0..n).filter(|k| remove(*k)) {
            fs::remove_file(j(&format!("{dir}/{prefix}{k:05}"))).unwrap();
        }
    };
    many("block", "block-entry-", 60, &|k| k % 3 == 1);
    many("leaf", "leaf-entry-with-a-longer-name-", 500, &|k| {
        k % 5 == 2
    });
    // A run of entries removed: a whole data block freed (a hole in the directory).
    many("node", "entry-with-a-forty-byte-long-name-", 3000, &|k| {
        k % 7 == 3 || (1000..1300).contains(&k)
    });
    // 1500 names of 205 bytes, each file given a block (falloc) as it is created: the
    // directory's blocks interleave with the files', too many extents for the inode.
    fs::create_dir(j("btree_dir")).unwrap();
    let mut cmds = String::new();
    for k in 0..1500 {
        cmds += &format!(
            "open -f {}/btree_dir/{}{k:05}\nfalloc 0 4k\nclose\n",
            m.display(),
            "f".repeat(200)
        );
    }
    xfs_io(&cmds);
    for k in (0..1500).step_by(9) {
        fs::remove_file(j(&format!("btree_dir/{}{k:05}", "f".repeat(200)))).unwrap();
    }
    // Times, last (a directory's mtime changes with its entries): nanoseconds, before 1970,
    // the bigtime range's first second, after 2038.
    fs::create_dir(j("times")).unwrap();
    for (name, when) in [
        ("pre1970", "-14182940.123456789"),
        ("minus1.5", "-1.5"),
        ("min", "-2147483648"),
        ("y2038", "2147483648.000000001"),
        ("y2106", "4294967296.75"),
        ("y2445", "15000000000.999999999"),
        ("nsec", "1234567890.000000001"),
    ] {
        fs::write(j(&format!("times/{name}")), when).unwrap();
        touch(&j(&format!("times/{name}")), when);
    }
    touch(&j("links/short"), "946684800.000000042");
    touch(&j("dev/fifo"), "300000000.3");
    touch(&j("sticky"), "-86400.75");
    touch(&j("times"), "4102444800.5");
}

/// Writes non-zero bytes into the blocks of the unwritten extents of inode `ino`; returns
/// how many blocks.
fn scribble_unwritten(img: &Path, g: &Geometry, ino: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    let mut blocks = 0;
    for (_, start, count, unwritten) in xfs::bmap(img, ino) {
        if !unwritten {
            continue;
        }
        let at = xfs::db(img, &[format!("convert fsb {start} byte")]);
        let at = xfs::num(String::from_utf8_lossy(&at).trim());
        let junk = pattern(start, (count * g.block_size) as usize);
        f.write_all_at(&junk, at).unwrap();
        blocks += count;
    }
    blocks
}

#[test]
fn mounted_v5_kernel_oracle() {
    mounted("mounted-v5", &[], true);
}

/// 1 KiB blocks: remote symlink targets over two blocks (one v5 header per extent), directory
/// blocks of 1 KiB.
#[test]
fn mounted_v5_1k_blocks_kernel_oracle() {
    mounted("mounted-v5-1k", &["-b", "size=1024"], false);
}

/// Makes a filesystem (`mkfs.xfs ARGS`), fills it through a loop mount, checks that it holds
/// the structures meant (the directories' layouts when `layouts`: they depend on the block
/// size), then compares vdisk-fs with the kernel on a read-only mount.
fn mounted(what: &str, args: &[&str], layouts: bool) {
    if !tools_available(MOUNT_TOOLS) {
        return;
    }
    let started = Instant::now();
    let d = Scratch::new(&format!("xfs-{what}"));
    let img = d.join("mounted.img");
    truncate(&img, 320 << 20);
    run(Command::new("mkfs.xfs")
        .args(["-q", "-f", "-L", "mounted-xfs"])
        .args(args)
        .arg(&img));
    dig_holes(&img);
    let mnt = d.join("mnt");
    {
        let Some(m) = mount_or_skip(&img, &mnt, false) else {
            return;
        };
        populate(&m.dir);
        // Still mounted: the log holds what is not yet written in place, and has no unmount
        // record; the kernel would replay it.
        run(Command::new("sync").arg("-f").arg(&m.dir));
        let dirty = vdisk_fs::open(raw_reader(&img));
        assert!(
            dirty.is_err(),
            "{what}: a mounted filesystem's log needs recovery: open must say so"
        );
        let opts = vdisk_fs::OpenOptions {
            ignore_journal_recovery: true,
        };
        if let Ok(fs) = vdisk_fs::open_with(raw_reader(&img), &opts) {
            let _ = fs.root().and_then(|r| fs.read_dir(&r));
        }
    }
    eprintln!("{what}: filled in {:?}", started.elapsed());

    // What was made is what was meant.
    let g = Geometry::read(&img);
    assert!(g.v5);
    let ino_of = |p: &str| {
        let out = xfs::db(&img, &[format!("path {p}"), "print v3.inumber".into()]);
        let f = xfs::fields(&out);
        assert_eq!(f.len(), 1, "xfs_db path {p}: {f:?}");
        xfs::num(&f[0].1)
    };
    let frag = ino_of("/fragmented");
    // Extended attributes (xfs_db), whatever the kernel gave already: attribute forks in
    // inodes with a btree data fork, a short-form directory, extents, an inline symlink; a
    // remote attribute value.
    let with_attrs: Vec<u64> = [
        "/btree_dir",
        "/sf",
        "/a/size_12411",
        "/links/short",
        "/prealloc",
        "/leaf",
    ]
    .iter()
    .map(|p| ino_of(p))
    .collect();
    xfs::attr_set(&img, &with_attrs, 40);
    xfs::attr_set(&img, &[frag], 3000);
    let cores = xfs::inode_cores(&img, &[&with_attrs[..], &[frag]].concat());
    for ino in with_attrs.iter().chain([&frag]) {
        assert!(
            cores[ino].forkoff > 0,
            "{what}: inode {ino} has an attribute fork"
        );
    }
    assert_eq!(
        xfs::fork_of(cores[&frag].format),
        Fork::Btree,
        "{what}: /fragmented"
    );
    // 256 written extents; the kernel's speculative preallocation may fill holes between them
    // with unwritten ones.
    let frag_map = xfs::bmap(&img, frag);
    assert_eq!(frag_map.len() as u64, cores[&frag].nextents);
    assert_eq!(
        frag_map.iter().filter(|e| !e.3).count(),
        256,
        "{what}: /fragmented written extents"
    );
    let pre = xfs::bmap(&img, ino_of("/prealloc"));
    assert!(
        pre.iter().any(|e| e.3) && pre.iter().any(|e| !e.3),
        "{what}: /prealloc has written and unwritten extents: {pre:?}"
    );
    assert!(
        pre.iter().any(|e| (e.0 + e.2) * g.block_size > 1 << 20),
        "{what}: /prealloc has blocks past its end: {pre:?}"
    );
    // The 1023-byte target with its header takes two 1 KiB blocks.
    let target_blocks: u64 = xfs::bmap(&img, ino_of("/links/long_1023"))
        .iter()
        .map(|e| e.2)
        .sum();
    assert_eq!(
        target_blocks,
        if g.block_size == 1024 { 2 } else { 1 },
        "{what}: /links/long_1023's blocks"
    );
    // Unwritten extents must read as zeros whatever their blocks hold: fill those of
    // /prealloc and /fragmented with bytes that are not (the kernel still reads zeros).
    let mut scribbled = 0;
    for ino in [ino_of("/prealloc"), frag] {
        scribbled += scribble_unwritten(&img, &g, ino);
    }
    assert!(
        scribbled >= 64,
        "{what}: {scribbled} unwritten blocks scribbled on"
    );
    // /node's fork depends on when writeback allocated its files' blocks: extents or btree;
    // /btree_dir's blocks were interleaved with its files' (falloc) as it grew.
    let layouts: &[_] = if layouts {
        &[
            ("/sf", Some(Fork::Local), Layout::Short),
            ("/block", Some(Fork::Extents), Layout::Block),
            ("/leaf", Some(Fork::Extents), Layout::Leaf),
            ("/node", None, Layout::Node),
            ("/btree_dir", Some(Fork::Btree), Layout::Node),
        ]
    } else {
        &[
            ("/sf", Some(Fork::Local), Layout::Short),
            ("/node", None, Layout::Node),
            ("/btree_dir", Some(Fork::Btree), Layout::Node),
        ]
    };
    for &(p, fork, layout) in layouts {
        let (f, l) = xfs::dir_format(&img, &g, ino_of(p));
        assert_eq!(l, layout, "{what}: directory {p}");
        assert!(fork.is_none_or(|x| x == f), "{what}: directory {p}: {f:?}");
    }
    let node_map = xfs::bmap(&img, ino_of("/node"));
    assert!(
        node_map
            .windows(2)
            .any(|w| w[0].0 + w[0].2 < w[1].0 && w[1].0 < (32 << 30) / g.block_size),
        "{what}: /node has a hole among its data blocks: {node_map:?}"
    );

    // vdisk-fs against the kernel, mounted read-only.
    let fs = vdisk_fs::open(raw_reader(&img)).unwrap();
    let fs = fs.as_ref();
    let b = blkid(&img);
    assert_eq!(fs.uuid().as_deref(), b.get("UUID").map(String::as_str));
    assert_eq!(fs.label(), Some(b"mounted-xfs".to_vec()));
    assert_eq!(b.get("LABEL").map(String::as_str), Some("mounted-xfs"));
    let expected = xfs::expected_usage(&img);
    let (counts, ags) = {
        let Some(m) = mount_or_skip(&img, &mnt, true) else {
            return;
        };
        let s = xfs::statvfs(&m.dir);
        let u = fs.usage().unwrap();
        let counts = compare_mounted(what, fs, &m.dir);
        assert_eq!(
            u, s,
            "{what}: usage against the mounted filesystem's statvfs"
        );
        assert_eq!(
            expected, s,
            "{what}: the statvfs formula against the kernel"
        );
        let mut ags = BTreeSet::new();
        for e in std::fs::read_dir(&m.dir).unwrap() {
            ags.insert(g.ag_of(e.unwrap().metadata().unwrap().ino()));
        }
        (counts, ags)
    };
    eprintln!(
        "{what}: compared with the kernel in {:?}: {counts:?}; inodes in AGs {ags:?}",
        started.elapsed()
    );
    assert_eq!(ags.len() as u64, g.agcount, "{what}: inodes in every AG");
    assert!(
        counts.files > 4000
            && counts.bytes > 3 << 20
            && counts.links >= 6
            && counts.links_refused == 0
            && counts.specials >= 6
            && counts.huge == 1
            && counts.dirs > 10,
        "{what}: {counts:?}"
    );
    let ours = our_tree(fs, what);
    assert_eq!(ours.0.len(), counts.nodes, "{what}: the tree");
    let mut walked = 0usize;
    vdisk_fs::walk::walk(fs, &fs.root().unwrap(), b"/", &mut |_, _| {
        walked += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(walked, counts.nodes, "{what}: walk");
    let hard = fs.lookup(&fs.root().unwrap(), b"links").unwrap().unwrap();
    let hard = fs.lookup(&hard, b"hard").unwrap().unwrap();
    assert_eq!(hard.nlink, 3);
    let found = check_lookups(fs, &ours, what);
    assert!(found > 200, "{what}: {found} lookups");
    let ino = |p: &[u8]| vdisk_fs::resolve(fs, p, true).map(|n| n.id).ok();
    assert_eq!(ino(b"/links/abs_dir/size_1"), ino(b"/a/size_1"));
    assert_eq!(ino(b"/ag2/hard_symlink"), ino(b"/a/size_1"));

    eprintln!("{what}: lookups done at {:?}", started.elapsed());
    // The same through a qcow2 copy.
    if vdisk_testutil::qemu_available() {
        let q = vdisk_fs::open(common::qcow2_reader(&img)).unwrap();
        let theirs = our_tree(q.as_ref(), "qcow2");
        assert_eq!(theirs.0, ours.0, "{what}: the tree through qcow2");
        // The big ones and a sample of the rest, read in chunks through the qcow2 layer.
        let mut compared = 0;
        let regular = ours.0.iter().filter(|(_, n)| n.kind == FileKind::Regular);
        for (k, (path, n)) in regular.enumerate() {
            if n.size > HUGE {
                for off in huge_offsets(n.size) {
                    let (mut a, mut b) = (vec![0u8; 65537], vec![1u8; 65537]);
                    let ka = fs.read(n, off, &mut a).unwrap();
                    let kb = q.read(n, off, &mut b).unwrap();
                    assert!(a[..ka] == b[..kb], "qcow2: {}: at {off}", show(path));
                }
            } else if n.size > 100_000 || (n.size > 0 && k % 20 == 0) {
                let want = vdisk_fs::read_all(fs, n, 1 << 30).unwrap();
                let what = format!("qcow2: {}", show(path));
                assert!(read_chunks(q.as_ref(), n, 65537, &what) == want, "{what}");
                compared += 1;
            }
        }
        assert!(compared > 50, "{what}: {compared} files through qcow2");
    }
    eprintln!("{what}: done in {:?}", started.elapsed());
}
