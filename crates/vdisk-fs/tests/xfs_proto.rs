//! XFS filesystems made by `mkfs.xfs -p` from a tree defined in `common/xfs_proto.rs` (empty,
//! multi-block and 300 KB files, a 255-byte and a non-UTF-8 name, setuid/setgid modes and large
//! owners, inline and remote symlinks, character and block devices, fifos, and directories in
//! each layout: short form, block, leaf and node, in extents and btree data forks, the layouts
//! asserted with `xfs_db`), read by vdisk-fs without mounting and compared with xfsprogs: v5
//! (4 KiB blocks; 1 KiB blocks with 8 KiB directory blocks; 1 KiB inodes, rmapbt, 8 AGs; 2.6 TB
//! sparse, for 8-byte inode numbers in short-form directories) and v4 (256-byte inodes, no
//! ftype, mtimes patched to both ends of the 32-bit range), some inodes given attribute forks by
//! `xfs_db attr_set`. Every directory's entries (as sets) and each node's inode number, nlink,
//! size and mtime with nanoseconds are compared with `xfs_db` (`ls`, inode cores, device
//! numbers); names, kinds, modes, owners, contents, link targets and device numbers with the
//! tree; TYPE, LABEL and UUID with blkid; `usage` with the statvfs the kernel computes from the
//! superblock (and with the read-only mounted filesystem's where the kernel mounts it, with its
//! whole tree).

mod common;

use common::xfs::{self, Fork, Geometry, Layout, Mount};
use common::xfs_kernel::compare_mounted;
use common::xfs_ours::*;
use common::xfs_proto::*;
use common::{blkid, raw_reader, tools_available};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use vdisk_fs::{FileKind, Node};
use vdisk_testutil::Scratch;

const TOOLS: &[&str] = &["mkfs.xfs", "xfs_db", "blkid"];

// ---------------------------------------------------------------------------------------------
// The protofile fixtures, checked without mounting.

struct Config<'a> {
    name: &'a str,
    args: &'a [&'a str],
    size: u64,
    label: Option<&'a str>,
    /// The format each directory must have: (path, fork, layout).
    dirs: &'a [(&'a str, Fork, Layout)],
    /// Whether the 500-byte link target fits in the inode.
    inline_500: bool,
    /// Whether short-form directories must hold 8-byte inode numbers.
    i8: bool,
    /// v4 (no CRC): mtimes patched into inodes, before 1970 and at both ends of the signed
    /// 32-bit range.
    patch_times: bool,
    /// Given extended attributes by xfs_db after mkfs: an attribute fork in the inode, which
    /// leaves less room for the data fork (short-form entries, extents, a btree root).
    attrs: &'a [&'a str],
}

/// What `attrs` names where it is used.
const WITH_ATTRS: &[&str] = &[
    "/node",
    "/node_fifos",
    "/leaf",
    "/sf",
    "/big",
    "/short_link",
    "/tiny1",
];

/// The mtimes `patch_times` writes: (path, seconds, nanoseconds).
const PATCHED_TIMES: &[(&str, i32, u32)] = &[
    ("/small", -14_182_940, 123_456_789),
    ("/multi", i32::MIN, 999_999_999),
    ("/empty", i32::MAX, 1),
    ("/sf", -1, 500_000_000),
];

fn check_proto(c: &Config) {
    if !tools_available(TOOLS) {
        return;
    }
    let started = Instant::now();
    let d = Scratch::new(&format!("xfs-{}", c.name));
    let img = d.join("fs.img");
    let tree = proto_tree();
    let mut args: Vec<&str> = c.args.to_vec();
    if let Some(l) = c.label {
        args.extend(["-L", l]);
    }
    let (t0, t1) = mkfs_proto(&d, &img, &tree, &args, c.size);
    let mut spec_all = BTreeMap::new();
    flatten(&tree, b"", &mut spec_all);
    let g = Geometry::read(&img);
    let what = c.name;

    // xfs_db's view of the tree.
    let (db_all, db_dirs) = xfs::db_tree(&img, g.root_ino);
    let db_paths: BTreeMap<Vec<u8>, &xfs::DbEntry> =
        db_all.iter().map(|(p, e)| (p.clone(), e)).collect();
    assert_eq!(
        db_paths.keys().collect::<Vec<_>>(),
        spec_all.keys().collect::<Vec<_>>(),
        "{what}: xfs_db lists the tree mkfs was given"
    );
    if c.patch_times {
        use std::os::unix::fs::FileExt;
        assert!(!g.v5, "{what}: v5 inodes have CRCs");
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        for (p, sec, nsec) in PATCHED_TIMES {
            let ino = db_paths[p.as_bytes()].ino;
            let at = xfs::db(&img, &[format!("convert ino {ino} byte")]);
            let at = xfs::num(String::from_utf8_lossy(&at).trim());
            // di_mtime: big-endian seconds and nanoseconds at byte 40 of the inode.
            let mut t = sec.to_be_bytes().to_vec();
            t.extend_from_slice(&nsec.to_be_bytes());
            f.write_all_at(&t, at + 40).unwrap();
        }
    }
    let attr_inos: Vec<u64> = c.attrs.iter().map(|p| db_paths[p.as_bytes()].ino).collect();
    xfs::attr_set(&img, &attr_inos, 40);
    let mut inos: Vec<u64> = db_all.iter().map(|(_, e)| e.ino).collect();
    inos.push(g.root_ino);
    inos.sort();
    inos.dedup();
    assert_eq!(
        inos.len(),
        spec_all.len() + 1,
        "{what}: one inode per entry"
    );
    let cores = xfs::inode_cores(&img, &inos);
    let dev_inos: Vec<u64> = db_all
        .iter()
        .filter(|(p, _)| spec_all[p].rdev().is_some())
        .map(|(_, e)| e.ino)
        .collect();
    let devs = xfs::devices(&img, &dev_inos, g.v5);
    eprintln!(
        "{what}: xfs_db listed {} entries in {} directories; geometry {g:?}",
        db_all.len(),
        db_dirs.len()
    );

    // The fixture is what it was meant to be.
    for (path, s) in &spec_all {
        let core = &cores[&db_paths[path].ino];
        assert_eq!(
            core.mode,
            s.type_bits() | s.perm,
            "{what}: {} mode",
            show(path)
        );
        assert_eq!(
            (core.uid, core.gid),
            (s.uid, s.gid),
            "{what}: {}",
            show(path)
        );
        if let Some(size) = s.size() {
            assert_eq!(core.size, size, "{what}: {} size", show(path));
        }
        if let What::Char(a, b) | What::Block(a, b) = s.what {
            assert_eq!(devs[&db_paths[path].ino], (a, b), "{what}: {}", show(path));
        }
    }
    let ags: BTreeSet<u64> = inos.iter().map(|i| g.ag_of(*i)).collect();
    assert!(ags.len() >= 2, "{what}: inodes in AGs {ags:?}");
    for (p, ino) in c.attrs.iter().zip(&attr_inos) {
        assert!(cores[ino].forkoff > 0, "{what}: {p} has an attribute fork");
    }
    for (path, fork, layout) in c.dirs {
        let ino = db_paths[path.as_bytes()].ino;
        assert_eq!(
            xfs::dir_format(&img, &g, ino),
            (*fork, *layout),
            "{what}: directory {path} (inode {ino}): {} extents",
            cores[&ino].nextents
        );
    }
    let mut i8_dirs = 0;
    for k in 0..6 {
        let ino = db_paths[format!("/tiny{k}").as_bytes()].ino;
        assert_eq!(
            xfs::fork_of(cores[&ino].format),
            Fork::Local,
            "{what}: /tiny{k}"
        );
        if xfs::short_form_i8count(&img, ino) > 0 {
            i8_dirs += 1;
        }
    }
    if c.i8 {
        assert!(
            i8_dirs > 0,
            "{what}: short-form directories with 8-byte inode numbers"
        );
        assert!(inos.iter().any(|i| *i > u64::from(u32::MAX)), "{what}");
    }
    let link_fork = |p: &str| xfs::fork_of(cores[&db_paths[p.as_bytes()].ino].format);
    assert_eq!(link_fork("/short_link"), Fork::Local, "{what}");
    assert_eq!(link_fork("/link_1023"), Fork::Extents, "{what}");
    assert_eq!(
        link_fork("/link_500"),
        if c.inline_500 {
            Fork::Local
        } else {
            Fork::Extents
        },
        "{what}"
    );
    assert_eq!(
        xfs::fork_of(cores[&db_paths[&b"/big"[..]].ino].format),
        Fork::Extents
    );

    // Identity.
    let fs = vdisk_fs::open(raw_reader(&img)).unwrap();
    let fs = fs.as_ref();
    let b = blkid(&img);
    assert_eq!(
        b.get("TYPE").map(String::as_str),
        Some("xfs"),
        "{what}: blkid"
    );
    assert_eq!(fs.kind(), "xfs");
    assert_eq!(
        vdisk_fs::probe(raw_reader(&img).as_ref()).unwrap(),
        Some("xfs")
    );
    assert_eq!(
        fs.uuid().as_deref(),
        b.get("UUID").map(String::as_str),
        "{what}: UUID"
    );
    assert_eq!(fs.uuid().as_deref(), Some(g.uuid.as_str()), "{what}: UUID");
    assert_eq!(
        fs.label(),
        c.label.map(|l| l.as_bytes().to_vec()),
        "{what}: label"
    );
    assert_eq!(
        b.get("LABEL").map(|l| l.as_bytes().to_vec()),
        c.label.map(|l| l.as_bytes().to_vec()),
        "{what}: blkid LABEL"
    );

    // The tree.
    let ours = our_tree(fs, what);
    let root = fs.root().unwrap();
    assert_eq!(root.id, g.root_ino, "{what}: root inode");
    assert_eq!(root.kind, FileKind::Directory);
    assert_eq!(
        (root.mode, root.nlink, root.size),
        (0o40755, cores[&g.root_ino].nlink, cores[&g.root_ino].size),
        "{what}: root"
    );
    assert_eq!(
        ours.0.keys().map(|p| show(p)).collect::<Vec<_>>(),
        spec_all.keys().map(|p| show(p)).collect::<Vec<_>>(),
        "{what}: the paths listed"
    );
    for (dir, entries) in &ours.1 {
        let mut mine: Vec<&[u8]> = entries.iter().map(|e| e.name.as_slice()).collect();
        let mut theirs: Vec<&[u8]> = db_dirs[dir].iter().map(|e| e.name.as_slice()).collect();
        mine.sort();
        theirs.sort();
        assert!(mine == theirs, "{what}: directory inode {dir}: names");
    }
    let (mut files, mut bytes, mut links, mut remote_refused, mut devices) = (0, 0, 0, 0, 0);
    for (path, n) in &ours.0 {
        let s = spec_all[path];
        let p = show(path);
        let core = &cores[&db_paths[path].ino];
        let want = Node {
            id: db_paths[path].ino,
            kind: s.kind(),
            size: s.size().unwrap_or(core.size),
            mode: s.type_bits() | s.perm,
            uid: s.uid,
            gid: s.gid,
            nlink: core.nlink,
            mtime: core.mtime,
            mtime_nsec: core.mtime_nsec,
            rdev: s.rdev(),
        };
        assert_eq!(n, &want, "{what}: {p}");
        match PATCHED_TIMES
            .iter()
            .find(|t| c.patch_times && t.0.as_bytes() == &path[..])
        {
            Some((_, sec, nsec)) => assert_eq!(
                (n.mtime, n.mtime_nsec),
                (i64::from(*sec), *nsec),
                "{what}: {p}: patched mtime"
            ),
            None => assert!(
                (t0..=t1).contains(&n.mtime),
                "{what}: {p}: mtime {} made by mkfs at {t0}..{t1}",
                n.mtime
            ),
        }
        match &s.what {
            What::Dir(c) => {
                let subdirs = c.iter().filter(|x| matches!(x.what, What::Dir(_))).count();
                assert_eq!(n.nlink as usize, 2 + subdirs, "{what}: {p}: nlink");
            }
            _ => assert_eq!(n.nlink, 1, "{what}: {p}: nlink"),
        }
        match &s.what {
            What::File(data) => {
                check_reads(fs, n, data, &format!("{what}: {p}"));
                files += 1;
                bytes += data.len();
            }
            What::Link(t) => {
                let got = fs.read_link(n);
                let headerless = g.v5
                    && core.format == 2
                    && xfs::first_block_magic(&img, n.id) != Some(0x5853_4c4d);
                if headerless {
                    // mkfs.xfs 6.1 -p writes a v5 remote symlink's target without the block
                    // header (magic XSLM, CRC, owner) v5 requires: the kernel refuses it
                    // ("Structure needs cleaning", checked on a loop mount): so must we.
                    assert!(
                        got.is_err(),
                        "{what}: {p}: a v5 remote symlink block without its header: the kernel says EUCLEAN, vdisk-fs said {:?}",
                        got.map(|t| show(&t))
                    );
                    remote_refused += 1;
                } else {
                    assert_eq!(
                        got.unwrap_or_else(|e| panic!("{what}: read_link {p}: {e}")),
                        *t,
                        "{what}: {p}: target"
                    );
                }
                links += 1;
            }
            What::Char(..) | What::Block(..) => devices += 1,
            _ => {}
        }
    }
    let found = check_lookups(fs, &ours, what);
    eprintln!(
        "{what}: compared {} nodes, {files} files ({bytes} bytes), {links} links ({remote_refused} v5 remote ones without header refused as the kernel does), {devices} devices, {} directories, {found} lookups",
        ours.0.len(),
        ours.1.len()
    );
    assert!(
        files > 4000 && bytes > 300_000 && links > 60 && devices > 60 && found > 200,
        "{what}: what was compared"
    );
    if !g.v5 {
        assert_eq!(remote_refused, 0);
    }

    // Paths and the walk.
    let ino = |p: &[u8], follow: bool| vdisk_fs::resolve(fs, p, follow).map(|n| n.id);
    let small = ino(b"/small", false).unwrap();
    assert_eq!(ino(b"/sf/b", true).unwrap(), small, "{what}: /sf/b");
    assert_eq!(ino(b"/short_link", true).unwrap(), small);
    assert_eq!(
        ino(b"/deep/a/b/leaf.txt", false).unwrap(),
        db_paths[&b"/deep/a/b/leaf.txt"[..]].ino
    );
    assert_eq!(
        ino(b"/block/block-entry-with-name-00003", true).unwrap(),
        small
    );
    assert!(vdisk_fs::resolve(fs, b"/dangling", true).is_err());
    let mut walked = 0usize;
    vdisk_fs::walk::walk(fs, &root, b"/", &mut |_, _| {
        walked += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(walked, spec_all.len(), "{what}: walk");

    // Usage: the kernel's statvfs from the superblock's counters.
    let u = fs.usage().unwrap();
    let expected = xfs::expected_usage(&img);
    assert_eq!(
        u, expected,
        "{what}: usage against the superblock's counters"
    );
    assert_eq!(u.block_size, g.block_size);

    // The kernel, where it mounts the filesystem (not v4 without CONFIG_XFS_SUPPORT_V4).
    let mnt = d.join("mnt");
    match Mount::new(&img, &mnt, true) {
        Ok(m) => {
            let s = xfs::statvfs(&m.dir);
            assert_eq!(
                expected, s,
                "{what}: the statvfs formula against the kernel"
            );
            assert_eq!(
                u, s,
                "{what}: usage against the mounted filesystem's statvfs"
            );
            let counts = compare_mounted(what, fs, &m.dir);
            assert!(counts.files > 4000, "{what}: {counts:?}");
            eprintln!("{what}: the read-only mount agrees: {counts:?}");
        }
        Err(e) => eprintln!("note: {what}: no mounted oracle: {e}"),
    }
    eprintln!("{what}: done in {:?}", started.elapsed());
}

#[test]
fn proto_v5_defaults() {
    check_proto(&Config {
        name: "v5-4k",
        args: &[],
        size: 300 << 20,
        label: None,
        dirs: &[
            ("/sf", Fork::Local, Layout::Short),
            ("/deep/a", Fork::Local, Layout::Short),
            ("/empty_dir", Fork::Local, Layout::Short),
            ("/block", Fork::Extents, Layout::Block),
            ("/leaf", Fork::Extents, Layout::Leaf),
            ("/node", Fork::Btree, Layout::Node),
            ("/node_fifos", Fork::Extents, Layout::Node),
        ],
        inline_500: false,
        i8: false,
        patch_times: false,
        attrs: WITH_ATTRS,
    });
}

#[test]
fn proto_v5_1k_blocks_8k_directory_blocks() {
    check_proto(&Config {
        name: "v5-1k-dir8k",
        args: &["-b", "size=1024", "-n", "size=8192"],
        size: 300 << 20,
        label: Some("vdisk-1k"),
        dirs: &[
            ("/sf", Fork::Local, Layout::Short),
            ("/block", Fork::Extents, Layout::Block),
            ("/leaf", Fork::Extents, Layout::Leaf),
            ("/node", Fork::Btree, Layout::Node),
            ("/node_fifos", Fork::Extents, Layout::Node),
        ],
        inline_500: false,
        i8: false,
        patch_times: false,
        attrs: &[],
    });
}

#[test]
fn proto_v4_256_byte_inodes_no_ftype() {
    check_proto(&Config {
        name: "v4-noftype",
        args: &["-m", "crc=0", "-i", "size=256", "-n", "ftype=0"],
        size: 300 << 20,
        label: Some("twelve-chars"),
        dirs: &[
            ("/sf", Fork::Local, Layout::Short),
            ("/block", Fork::Extents, Layout::Block),
            ("/leaf", Fork::Extents, Layout::Leaf),
            ("/node", Fork::Btree, Layout::Node),
            ("/node_fifos", Fork::Btree, Layout::Node),
        ],
        inline_500: false,
        i8: false,
        patch_times: true,
        attrs: WITH_ATTRS,
    });
}

#[test]
fn proto_v5_1k_inodes_rmapbt_8_ags() {
    check_proto(&Config {
        name: "v5-rmap-8ag",
        args: &["-i", "size=1024", "-m", "rmapbt=1", "-d", "agcount=8"],
        size: 600 << 20,
        label: Some("x"),
        dirs: &[
            ("/sf", Fork::Local, Layout::Short),
            ("/block", Fork::Extents, Layout::Block),
            ("/leaf", Fork::Extents, Layout::Leaf),
            ("/node", Fork::Extents, Layout::Node),
            ("/node_fifos", Fork::Extents, Layout::Node),
        ],
        inline_500: true,
        i8: false,
        patch_times: false,
        attrs: &[],
    });
}

/// 2.6 TB (sparse) in 5 AGs of 2^28 blocks: inode numbers from 2^31 in AG 1 and past 2^32 from
/// AG 2 on, so that short-form directories store 8-byte inode numbers.
#[test]
fn proto_v5_8_byte_inode_numbers() {
    check_proto(&Config {
        name: "v5-i8",
        args: &["-d", "agcount=5", "-l", "size=64m"],
        size: 2600 << 30,
        label: Some("inode64"),
        dirs: &[
            ("/sf", Fork::Local, Layout::Short),
            ("/block", Fork::Extents, Layout::Block),
            ("/leaf", Fork::Extents, Layout::Leaf),
            ("/node", Fork::Extents, Layout::Node),
            ("/node_fifos", Fork::Extents, Layout::Node),
        ],
        inline_500: false,
        i8: true,
        patch_times: false,
        attrs: &[],
    });
}
