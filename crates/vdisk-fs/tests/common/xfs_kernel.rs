//! vdisk-fs compared with the kernel's XFS driver on a loop mount: every directory's names,
//! every node's `stat` fields, every file's bytes, every link target.

use super::xfs::Mount;
use super::xfs_ours::*;
use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use vdisk_fs::{DirEntry, FileKind, Filesystem, Node};

/// What `stat` says, as a node.
pub fn node_of(m: &std::fs::Metadata) -> Node {
    let kind = FileKind::from_mode(m.mode());
    let rdev = matches!(kind, FileKind::CharDevice | FileKind::BlockDevice).then(|| {
        let d = m.rdev();
        (
            (((d >> 8) & 0xfff) | ((d >> 32) & !0xfff)) as u32,
            ((d & 0xff) | ((d >> 12) & !0xff)) as u32,
        )
    });
    Node {
        id: m.ino(),
        kind,
        size: m.size(),
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        nlink: m.nlink() as u32,
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec() as u32,
        rdev,
    }
}

/// Files larger than this (sparse) are compared at sampled offsets, not read whole.
pub const HUGE: u64 = 64 << 20;

/// The offsets at which a huge sparse file is compared: around its data (past 4 GiB and
/// 1 TiB), in its holes, across its end.
pub fn huge_offsets(size: u64) -> Vec<u64> {
    let mut v = vec![0, 4095, 1 << 20, size - 1, size - 70_000];
    for base in [1u64 << 32, 1 << 40, 5 << 40] {
        for d in [-70_000i64, -4097, -1, 0, 1, 4095, 65_537] {
            v.push(base.saturating_add_signed(d));
        }
    }
    v.retain(|o| *o < size);
    v
}

/// Compares reads of 65537 bytes at sampled offsets with the kernel's (`pread`).
pub fn check_sampled_reads(fs: &dyn Filesystem, n: &Node, path: &Path, what: &str) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut nonzero = 0;
    for off in huge_offsets(n.size) {
        let mut want = vec![0u8; 65537];
        let mut k = 0;
        while k < want.len() {
            match f.read_at(&mut want[k..], off + k as u64).unwrap() {
                0 => break,
                r => k += r,
            }
        }
        want.truncate(k);
        let mut got = vec![0xA5u8; 65537];
        let r = fs
            .read(n, off, &mut got)
            .unwrap_or_else(|e| panic!("{what}: read(65537 at {off}): {e}"));
        got.truncate(r);
        if let Some(i) = first_diff(&got, &want) {
            panic!(
                "{what}: read(65537 at {off}): {r} bytes, the kernel's {k}; first difference at +{i}"
            );
        }
        nonzero += usize::from(want.iter().any(|b| *b != 0));
    }
    assert!(nonzero >= 3, "{what}: sampled data, not only holes");
    let mut buf = [0u8; 5];
    assert_eq!(
        fs.read(n, n.size, &mut buf).unwrap(),
        0,
        "{what}: at the end"
    );
}

#[derive(Debug, Default)]
pub struct Counts {
    pub huge: usize,
    pub dirs: usize,
    pub nodes: usize,
    pub files: usize,
    pub bytes: u64,
    pub links: usize,
    pub links_refused: usize,
    pub specials: usize,
}

/// Compares everything vdisk-fs says with the mounted filesystem `mnt`: every directory's
/// names, every node's stat fields, every file's bytes, every link target.
pub fn compare_mounted(what: &str, fs: &dyn Filesystem, mnt: &Path) -> Counts {
    let mut c = Counts::default();
    let root = fs.root().unwrap();
    assert_eq!(
        root,
        node_of(&std::fs::symlink_metadata(mnt).unwrap()),
        "{what}: the root"
    );
    let mut todo = vec![(mnt.to_path_buf(), Vec::new(), root)];
    while let Some((dir_path, rel, dir)) = todo.pop() {
        c.dirs += 1;
        let ours = fs
            .read_dir(&dir)
            .unwrap_or_else(|e| panic!("{what}: read_dir {}: {e}", show(&rel)));
        let mut kernel: Vec<(Vec<u8>, PathBuf)> = std::fs::read_dir(&dir_path)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().as_bytes().to_vec(), e.path())
            })
            .collect();
        kernel.sort();
        let mut mine: Vec<&DirEntry> = ours.iter().collect();
        mine.sort_by(|a, b| a.name.cmp(&b.name));
        let names = |v: &[Vec<u8>]| v.iter().map(|n| show(n)).collect::<Vec<_>>();
        let kn: Vec<Vec<u8>> = kernel.iter().map(|(n, _)| n.clone()).collect();
        let on: Vec<Vec<u8>> = mine.iter().map(|e| e.name.clone()).collect();
        if kn != on {
            let ks: BTreeSet<_> = kn.iter().collect();
            let os: BTreeSet<_> = on.iter().collect();
            panic!(
                "{what}: directory /{}: {} names from the kernel, {} from vdisk-fs; only the kernel's: {:?}; only ours: {:?}",
                show(&rel),
                kn.len(),
                on.len(),
                names(&ks.difference(&os).take(5).map(|x| (*x).clone()).collect::<Vec<_>>()),
                names(&os.difference(&ks).take(5).map(|x| (*x).clone()).collect::<Vec<_>>()),
            );
        }
        for ((name, path), e) in kernel.iter().zip(mine) {
            let mut r = rel.clone();
            r.push(b'/');
            r.extend_from_slice(name);
            let p = format!("{what}: {}", show(&r));
            let m = std::fs::symlink_metadata(path).unwrap();
            assert_eq!(e.node, node_of(&m), "{p}");
            c.nodes += 1;
            match e.node.kind {
                FileKind::Directory => todo.push((path.clone(), r, e.node.clone())),
                FileKind::Regular if e.node.size > HUGE => {
                    check_sampled_reads(fs, &e.node, path, &p);
                    c.files += 1;
                    c.huge += 1;
                }
                FileKind::Regular => {
                    let want = std::fs::read(path).unwrap();
                    check_reads(fs, &e.node, &want, &p);
                    c.files += 1;
                    c.bytes += want.len() as u64;
                }
                FileKind::Symlink => {
                    let got = fs.read_link(&e.node);
                    match std::fs::read_link(path) {
                        Ok(t) => assert_eq!(
                            got.unwrap_or_else(|e| panic!("{p}: read_link: {e}")),
                            t.as_os_str().as_bytes(),
                            "{p}: target"
                        ),
                        Err(err) => {
                            assert!(
                                got.is_err(),
                                "{p}: the kernel cannot read the link ({err}), vdisk-fs read {:?}",
                                got.map(|t| show(&t))
                            );
                            c.links_refused += 1;
                        }
                    }
                    c.links += 1;
                }
                _ => c.specials += 1,
            }
        }
    }
    c
}

/// Mounts, or explains why the kernel oracle cannot run: a failure under `CI`, a skip
/// otherwise.
pub fn mount_or_skip(img: &Path, dir: &Path, read_only: bool) -> Option<Mount> {
    match Mount::new(img, dir, read_only) {
        Ok(m) => Some(m),
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!("the XFS kernel oracle needs root and loop devices when CI is set: {e}");
            }
            eprintln!(
                "note: cannot loop-mount XFS ({e}); skipping the kernel oracle test (set CI=1 to make this fail)"
            );
            None
        }
    }
}
