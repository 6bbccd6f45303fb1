//! xfsprogs and the kernel's XFS driver as oracles: `xfs_db -r` run in batches (directory
//! listings with inode numbers, inode cores, device numbers, the superblock and the AG free
//! space headers, the format of a directory and of a file's data fork), the statvfs numbers
//! the kernel gives for a read-only mount computed from the superblock's counters, blkid, and
//! loop mounts that are always undone.

use super::run;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Runs `xfs_db -r` with each of `cmds` as a `-c` (times printed in UTC); returns its stdout.
pub fn db(img: &Path, cmds: &[String]) -> Vec<u8> {
    let mut c = Command::new("xfs_db");
    c.env("TZ", "UTC").arg("-r");
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    c.arg(img);
    run(&mut c).stdout
}

/// The `name = value` lines of xfs_db's `print`, in order.
pub fn fields(out: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A number as xfs_db prints it: decimal, `0x` hex or `0` octal, maybe followed by words.
pub fn num(v: &str) -> u64 {
    let t = v.split_whitespace().next().unwrap_or(v);
    if let Some(h) = t.strip_prefix("0x") {
        u64::from_str_radix(h, 16).unwrap()
    } else if t.len() > 1 && t.starts_with('0') {
        u64::from_str_radix(&t[1..], 8).unwrap()
    } else {
        t.parse().unwrap_or_else(|_| panic!("xfs_db number {v:?}"))
    }
}

/// The superblock (`sb 0`, `print`).
pub fn superblock(img: &Path) -> HashMap<String, String> {
    fields(&db(img, &["sb 0".into(), "print".into()]))
        .into_iter()
        .collect()
}

/// What the tests need of the geometry.
#[derive(Debug, Clone)]
pub struct Geometry {
    pub block_size: u64,
    pub dir_block_size: u64,
    pub inode_size: u64,
    pub agcount: u64,
    pub agblklog: u32,
    pub inopblog: u32,
    pub root_ino: u64,
    pub v5: bool,
    pub uuid: String,
}

impl Geometry {
    pub fn read(img: &Path) -> Geometry {
        let sb = superblock(img);
        let g = |k: &str| num(sb.get(k).unwrap_or_else(|| panic!("sb field {k}")));
        Geometry {
            block_size: g("blocksize"),
            dir_block_size: g("blocksize") << g("dirblklog"),
            inode_size: g("inodesize"),
            agcount: g("agcount"),
            agblklog: g("agblklog") as u32,
            inopblog: g("inopblog") as u32,
            root_ino: g("rootino"),
            v5: g("versionnum") & 0xf == 5,
            uuid: sb["uuid"].clone(),
        }
    }

    /// The allocation group an inode number lies in.
    pub fn ag_of(&self, ino: u64) -> u64 {
        ino >> (self.agblklog + self.inopblog)
    }
}

/// One entry of xfs_db's `ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    /// `regular`, `directory`, `symlink`, `chardev`, `blkdev`, `fifo`, `socket`; `unknown`
    /// without ftype.
    pub ftype: String,
}

/// Parses one `ls` line: `offset inode type hash namelen name (good)`, the name as raw bytes,
/// exactly namelen of them.
fn parse_ls_line(line: &[u8]) -> Option<DbEntry> {
    let mut pos = 0;
    let mut toks = Vec::new();
    for _ in 0..5 {
        while pos < line.len() && line[pos] == b' ' {
            pos += 1;
        }
        let start = pos;
        while pos < line.len() && line[pos] != b' ' {
            pos += 1;
        }
        if start == pos {
            return None;
        }
        toks.push(String::from_utf8_lossy(&line[start..pos]).into_owned());
    }
    let namelen: usize = toks[4].parse().ok()?;
    let ino: u64 = toks[1].parse().ok()?;
    toks[0].parse::<u64>().ok()?;
    toks[3].strip_prefix("0x")?;
    let name = line.get(pos + 1..pos + 1 + namelen)?.to_vec();
    assert_eq!(
        line.get(pos + 1 + namelen..),
        Some(&b" (good)"[..]),
        "xfs_db ls line {:?}",
        String::from_utf8_lossy(line)
    );
    Some(DbEntry {
        name,
        ino,
        ftype: toks[2].clone(),
    })
}

/// Each directory's `ls` (without `.` and `..`), by inode number.
pub fn ls_dirs(img: &Path, inos: &[u64]) -> HashMap<u64, Vec<DbEntry>> {
    let mut res = HashMap::new();
    for chunk in inos.chunks(500) {
        let cmds: Vec<String> = chunk
            .iter()
            .flat_map(|i| [format!("inode {i}"), "ls".to_string()])
            .collect();
        let out = db(img, &cmds);
        // Every listing starts with its `.` entry.
        let mut lists: Vec<Vec<DbEntry>> = Vec::new();
        for line in out.split(|b| *b == b'\n') {
            let Some(e) = parse_ls_line(line) else {
                continue;
            };
            if e.name == b"." {
                lists.push(Vec::new());
            } else if e.name != b".." {
                lists
                    .last_mut()
                    .expect("an ls listing starting with .")
                    .push(e);
            }
        }
        assert_eq!(lists.len(), chunk.len(), "xfs_db ls listings");
        res.extend(chunk.iter().copied().zip(lists));
    }
    res
}

/// Every entry by path, and each directory's entries by inode number.
pub type DbTree = (Vec<(Vec<u8>, DbEntry)>, HashMap<u64, Vec<DbEntry>>);

/// Every directory reachable from `root`, listed by `ls`: each path (`/a/b`) with its entry,
/// and each directory's entries by inode number. Without ftype (`unknown`), which entries are
/// directories is read from their inodes.
pub fn db_tree(img: &Path, root: u64) -> DbTree {
    let mut all = Vec::new();
    let mut lists = HashMap::new();
    let mut level = vec![(b"".to_vec(), root)];
    while !level.is_empty() {
        let inos: Vec<u64> = level.iter().map(|(_, i)| *i).collect();
        let mut got = ls_dirs(img, &inos);
        let mut found = Vec::new();
        for (path, ino) in level {
            let entries = got.remove(&ino).unwrap();
            for e in &entries {
                let mut p = path.clone();
                p.push(b'/');
                p.extend_from_slice(&e.name);
                found.push((p, e.clone()));
            }
            lists.insert(ino, entries);
        }
        let unknown: Vec<u64> = found
            .iter()
            .filter(|(_, e)| e.ftype == "unknown")
            .map(|(_, e)| e.ino)
            .collect();
        let cores = inode_cores(img, &unknown);
        level = found
            .iter()
            .filter(|(_, e)| {
                e.ftype == "directory" || cores.get(&e.ino).is_some_and(|c| c.mode >> 12 == 4)
            })
            .map(|(p, e)| (p.clone(), e.ino))
            .collect();
        all.extend(found);
    }
    (all, lists)
}

/// What xfs_db prints of an inode's core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbInode {
    pub mode: u32,
    /// `di_format`: 0 dev, 1 local, 2 extents, 3 btree.
    pub format: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub nextents: u64,
    /// Where the attribute fork starts, in 8-byte units (0: none).
    pub forkoff: u64,
}

const CORE: &str =
    "core.mode core.format core.uid core.gid core.nlinkv2 core.size core.mtime.sec core.mtime.nsec core.nextents core.forkoff";

/// The cores of the inodes.
pub fn inode_cores(img: &Path, inos: &[u64]) -> HashMap<u64, DbInode> {
    let mut res = HashMap::new();
    for chunk in inos.chunks(1500) {
        let cmds: Vec<String> = chunk
            .iter()
            .flat_map(|i| [format!("inode {i}"), format!("print {CORE}")])
            .collect();
        let f = fields(&db(img, &cmds));
        assert_eq!(f.len(), chunk.len() * 10, "xfs_db inode cores");
        for (ino, g) in chunk.iter().zip(f.chunks(10)) {
            let keys: Vec<&str> = g.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys.join(" "), CORE, "xfs_db print of inode {ino}");
            res.insert(
                *ino,
                DbInode {
                    mode: num(&g[0].1) as u32,
                    format: num(&g[1].1) as u32,
                    uid: num(&g[2].1) as u32,
                    gid: num(&g[3].1) as u32,
                    nlink: num(&g[4].1) as u32,
                    size: num(&g[5].1),
                    mtime: parse_ctime(&g[6].1),
                    mtime_nsec: num(&g[7].1) as u32,
                    nextents: num(&g[8].1),
                    forkoff: num(&g[9].1),
                },
            );
        }
    }
    res
}

/// The device numbers of device inodes (`u3.dev` or `u.dev`: Linux's sysv encoding, 14 bits
/// of major and 18 of minor).
pub fn devices(img: &Path, inos: &[u64], v5: bool) -> HashMap<u64, (u32, u32)> {
    if inos.is_empty() {
        return HashMap::new();
    }
    let field = if v5 { "u3.dev" } else { "u.dev" };
    let cmds: Vec<String> = inos
        .iter()
        .flat_map(|i| [format!("inode {i}"), format!("print {field}")])
        .collect();
    let f = fields(&db(img, &cmds));
    assert_eq!(f.len(), inos.len(), "xfs_db device numbers");
    inos.iter()
        .zip(f)
        .map(|(i, (_, v))| {
            let d = num(&v) as u32;
            (*i, (d >> 18, d & 0x3ffff))
        })
        .collect()
}

/// `ctime(3)`'s `Tue Nov 24 13:58:42 2026` (UTC) as seconds since the epoch.
pub fn parse_ctime(s: &str) -> i64 {
    let t: Vec<&str> = s.split_whitespace().collect();
    assert_eq!(t.len(), 5, "time {s:?}");
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| *x == t[1]).unwrap() as i64 + 1;
    let d: i64 = t[2].parse().unwrap();
    let y: i64 = t[4].parse().unwrap();
    let hms: Vec<i64> = t[3].split(':').map(|x| x.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2]
}

/// The data fork's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    Local,
    Extents,
    Btree,
}

/// The layout of a directory ("XFS Algorithms & Data Structures", Directories).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// In the inode.
    Short,
    /// One directory block holding entries and their hash leaf (magic XD2B/XDB3).
    Block,
    /// Data blocks and one leaf block at 32 GiB (LEAF1: 0xd2f1/0x3df1).
    Leaf,
    /// Data blocks, a node btree (or LEAFN blocks) at 32 GiB and free index blocks at 64 GiB.
    Node,
}

pub fn fork_of(format: u32) -> Fork {
    match format {
        1 => Fork::Local,
        2 => Fork::Extents,
        3 => Fork::Btree,
        f => panic!("data fork format {f}"),
    }
}

/// The first `magic = 0x…` xfs_db prints.
fn first_magic(out: &[u8]) -> Option<u64> {
    fields(out)
        .into_iter()
        .find(|(k, _)| k.ends_with("magic"))
        .map(|(_, v)| num(&v))
}

/// The magic of the first block of an inode's data fork (`dblock 0`), if xfs_db finds one.
pub fn first_block_magic(img: &Path, ino: u64) -> Option<u64> {
    first_magic(&db(
        img,
        &[format!("inode {ino}"), "dblock 0".into(), "print".into()],
    ))
}

/// How the directory `ino` is stored: its fork's format and its layout, from its data fork
/// format, the magic of its first directory block and that of the block at the leaf offset.
pub fn dir_format(img: &Path, g: &Geometry, ino: u64) -> (Fork, Layout) {
    let core = &inode_cores(img, &[ino])[&ino];
    assert_eq!(core.mode >> 12, 4, "inode {ino} is a directory");
    let fork = fork_of(core.format);
    if fork == Fork::Local {
        return (fork, Layout::Short);
    }
    let first = first_block_magic(img, ino);
    if matches!(first, Some(0x5844_3242 | 0x5844_4233)) {
        assert_eq!(core.size, g.dir_block_size, "block directory {ino}: size");
        return (fork, Layout::Block);
    }
    assert!(
        matches!(first, Some(0x5844_3244 | 0x5844_4433)),
        "directory {ino}: first block's magic {first:x?}"
    );
    let leaf_fsb = (32u64 << 30) / g.block_size;
    let leaf = first_magic(&db(
        img,
        &[
            format!("inode {ino}"),
            format!("dblock {leaf_fsb}"),
            "print".into(),
        ],
    ));
    let layout = match leaf {
        Some(0xd2f1 | 0x3df1) => Layout::Leaf,
        Some(0xfebe | 0x3ebe | 0xd2ff | 0x3dff) => Layout::Node,
        m => panic!("directory {ino}: leaf block's magic {m:x?}"),
    };
    (fork, layout)
}

/// `bmap` of a file's data fork: (file offset, start block, count, unwritten) in blocks.
pub fn bmap(img: &Path, ino: u64) -> Vec<(u64, u64, u64, bool)> {
    let out = db(img, &[format!("inode {ino}"), "bmap".into()]);
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            (t.first() == Some(&"data")).then(|| {
                let at = |k: &str| num(t[t.iter().position(|x| *x == k).unwrap() + 1]);
                (at("offset"), at("startblock"), at("count"), at("flag") == 1)
            })
        })
        .collect()
}

/// The statvfs numbers of the kernel's `xfs_fs_statfs` for a read-only mount of a cleanly
/// unmounted filesystem (no blocks reserved then: `m_resblks` and the per-AG metadata
/// reservations are only taken by read-write mounts), from the superblock's counters:
/// `f_blocks` = data blocks less the internal log; `f_bfree` = `f_bavail` = free blocks less
/// the allocation set-aside (4 AGFL blocks and 4 for a bmap split, per AG) and, when reflink
/// or rmapbt make the mount read every AGF, the free space btrees' blocks beyond their roots
/// (`m_allocbt_blks`: `agf_btreeblks` less the reverse-map btree's own); `f_files` = the
/// inodes allocated plus as many as the free blocks could hold, at most `imax_pct` of the
/// blocks' worth (whole inode chunks) and at least `sb_icount`; `f_ffree` = `f_files` less
/// the inodes in use. Checked against the mounted filesystem wherever the kernel mounts it.
pub fn expected_usage(img: &Path) -> vdisk_fs::Usage {
    let sb = superblock(img);
    let g = |k: &str| num(&sb[k]);
    let log = if g("logstart") != 0 {
        g("logblocks")
    } else {
        0
    };
    // features_ro_compat: RMAPBT 2, REFLINK 4.
    let ro_compat = sb.get("features_ro_compat").map_or(0, |v| num(v));
    let mut allocbt = 0;
    if ro_compat & 6 != 0 {
        for agno in 0..g("agcount") {
            let f: HashMap<String, String> =
                fields(&db(img, &[format!("agf {agno}"), "print".into()]))
                    .into_iter()
                    .collect();
            let rmap = if ro_compat & 2 != 0 {
                num(&f["rmapblocks"]) - 1
            } else {
                0
            };
            allocbt += num(&f["btreeblks"]).saturating_sub(rmap);
        }
    }
    let bfree = g("fdblocks").saturating_sub(g("agcount") * 8 + allocbt);
    let (icount, ifree, inopblog) = (g("icount"), g("ifree"), g("inopblog"));
    let mut files = icount + (bfree << inopblog);
    if g("imax_pct") != 0 {
        let ialloc_blks = (64u64 >> inopblog).max(1);
        let max = g("dblocks") * g("imax_pct") / 100 / ialloc_blks * ialloc_blks;
        files = files.min(max << inopblog);
    }
    files = files.max(icount);
    vdisk_fs::Usage {
        block_size: g("blocksize"),
        blocks: g("dblocks") - log,
        free_blocks: bfree,
        available_blocks: bfree,
        inodes: Some(files),
        free_inodes: Some(files.saturating_sub(icount - ifree)),
    }
}

/// statvfs of a mounted filesystem, as `stat -f` reports it.
pub fn statvfs(dir: &Path) -> vdisk_fs::Usage {
    let out = run(Command::new("stat")
        .args(["-f", "-c", "%S %b %f %a %c %d"])
        .arg(dir));
    let n: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    vdisk_fs::Usage {
        block_size: n[0],
        blocks: n[1],
        free_blocks: n[2],
        available_blocks: n[3],
        inodes: Some(n[4]),
        free_inodes: Some(n[5]),
    }
}

/// A loop mount, unmounted when dropped (declare it after the scratch directory holding it,
/// so that it is dropped first, also when a test panics).
pub struct Mount {
    pub dir: PathBuf,
}

impl Mount {
    /// Mounts `img` (XFS, through a loop device) on `dir`, read-only or read-write.
    pub fn new(img: &Path, dir: &Path, read_only: bool) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let opts = if read_only { "loop,ro" } else { "loop" };
        let out = Command::new("mount")
            .args(["-t", "xfs", "-o", opts])
            .arg(img)
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t xfs -o {opts} {} {}: {}",
                img.display(),
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = Command::new("umount")
                .arg(&self.dir)
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Busy for 5 s: detach it so that nothing stays mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The count of 8-byte inode numbers in a short-form directory's header.
pub fn short_form_i8count(img: &Path, ino: u64) -> u64 {
    let f = fields(&db(img, &[format!("inode {ino}"), "print".into()]));
    let (_, v) = f
        .iter()
        .find(|(k, _)| k.ends_with("hdr.i8count"))
        .unwrap_or_else(|| panic!("inode {ino} is no short-form directory"));
    num(v)
}

/// Gives each inode extended attributes with `xfs_db -x` (`attr_set`): one of `value_len`
/// bytes in the user namespace and a short one in the root (trusted) namespace.
pub fn attr_set(img: &Path, inos: &[u64], value_len: usize) {
    let mut c = Command::new("xfs_db");
    c.arg("-x");
    for ino in inos {
        c.arg("-c").arg(format!("inode {ino}"));
        c.arg("-c")
            .arg(format!("attr_set -u -v {value_len} vdisk.test"));
        c.arg("-c").arg("attr_set -r -v 8 vdisk.root");
    }
    let out = run(c.arg(img));
    assert!(
        out.stderr.is_empty() && out.stdout.is_empty(),
        "xfs_db attr_set: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
