//! Damaged XFS images made with `xfs_db -x` from a small `mkfs.xfs -p` fixture: truncated, the
//! root inode's magic zeroed, an extent past the device or its AG, no allocation groups, a
//! directory block without magic, impossible bmap btree levels. Each gives errors, never a
//! panic or hang, and what reads without error reads right. (`xfs_hostile.rs` mutates every
//! field instead.)

mod common;

use common::xfs::{self, Fork, Geometry};
use common::xfs_ours::*;
use common::xfs_proto::*;
use common::{pattern, raw_reader, run, tools_available};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vdisk_fs::FileKind;
use vdisk_testutil::Scratch;

// ---------------------------------------------------------------------------------------------
// Damaged images.

/// Regular files' contents by path.
type Contents = BTreeMap<Vec<u8>, Vec<u8>>;

/// A small fixture for the damaged images: files in several AGs (one of 2 MiB), a block
/// directory, a directory with a btree data fork.
fn hostile_image(d: &Scratch) -> (PathBuf, Geometry, Contents) {
    let mut tree = vec![
        spec("big", 0o644, What::File(pattern(9, 2 << 20))),
        spec("small", 0o644, What::File(b"small\n".to_vec())),
        spec("link", 0o777, What::Link(b"small".to_vec())),
        spec(
            "block",
            0o755,
            What::Dir(mixed_entries("block-entry-with-name-", 40, 1000)),
        ),
    ];
    for k in 0..4 {
        tree.push(spec(
            format!("d{k}"),
            0o755,
            What::Dir(vec![spec("f", 0o644, What::File(pattern(20 + k, 100_000)))]),
        ));
    }
    tree.push(spec(
        "bt",
        0o755,
        What::Dir(
            (0..3000)
                .map(|k| {
                    spec(
                        format!("entry-with-a-forty-byte-long-name-{k:05}"),
                        0o644,
                        What::File(Vec::new()),
                    )
                })
                .collect(),
        ),
    ));
    let img = d.join("hostile.img");
    mkfs_proto(d, &img, &tree, &[], 300 << 20);
    let mut all = BTreeMap::new();
    flatten(&tree, b"", &mut all);
    let files = all
        .into_iter()
        .filter_map(|(p, s)| match &s.what {
            What::File(data) => Some((p, data.clone())),
            _ => None,
        })
        .collect();
    (img.clone(), Geometry::read(&img), files)
}

/// Opens a damaged copy and reads everything, bounded in time; returns the errors met (an
/// error opening counts), after checking that whatever was read without error is right.
fn explore(img: &Path, files: &Contents, what: &str) -> Vec<String> {
    let t = Instant::now();
    let mut errors = Vec::new();
    match vdisk_fs::open(raw_reader(img)) {
        Err(e) => errors.push(format!("open: {e}")),
        Ok(fs) => {
            let fs = fs.as_ref();
            let _ = (fs.usage(), fs.label(), fs.uuid());
            let mut seen = HashSet::new();
            let mut todo = match fs.root() {
                Ok(r) => vec![(Vec::new(), r)],
                Err(e) => {
                    errors.push(format!("root: {e}"));
                    Vec::new()
                }
            };
            let mut buf = vec![0u8; 65537];
            while let Some((path, dir)) = todo.pop() {
                if !seen.insert(dir.id) || seen.len() > 100 {
                    continue;
                }
                let entries = match fs.read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) => {
                        errors.push(format!("read_dir {}: {e}", show(&path)));
                        continue;
                    }
                };
                for (k, e) in entries.into_iter().enumerate() {
                    let mut p = path.clone();
                    p.push(b'/');
                    p.extend_from_slice(&e.name);
                    if k % 101 == 0 {
                        if let Err(err) = fs.lookup(&dir, &e.name) {
                            errors.push(format!("lookup {}: {err}", show(&p)));
                        }
                    }
                    match e.node.kind {
                        FileKind::Directory => todo.push((p, e.node)),
                        FileKind::Regular => {
                            let mut data = Vec::new();
                            loop {
                                match fs.read(&e.node, data.len() as u64, &mut buf) {
                                    Ok(0) => break,
                                    Ok(n) => data.extend_from_slice(&buf[..n]),
                                    Err(err) => {
                                        errors.push(format!("read {}: {err}", show(&p)));
                                        data.clear();
                                        break;
                                    }
                                }
                                assert!(data.len() <= 4 << 20, "{what}: {} grows", show(&p));
                            }
                            if let (Some(want), false) = (files.get(&p), data.is_empty()) {
                                assert!(
                                    &data == want,
                                    "{what}: {} read without error but wrong",
                                    show(&p)
                                );
                            }
                        }
                        FileKind::Symlink => {
                            if let Err(err) = fs.read_link(&e.node) {
                                errors.push(format!("read_link {}: {err}", show(&p)));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "{what}: took {:?}",
        t.elapsed()
    );
    eprintln!("{what}: {} errors, e.g. {:?}", errors.len(), errors.first());
    errors
}

fn hostile_fixture(tag: &str) -> Option<(Scratch, PathBuf, Geometry, Contents)> {
    if !tools_available(&["mkfs.xfs", "xfs_db"]) {
        return None;
    }
    let d = Scratch::new(&format!("xfs-hostile-{tag}"));
    let (img, g, files) = hostile_image(&d);
    // The undamaged image reads without error.
    assert_eq!(
        explore(&img, &files, tag),
        Vec::<String>::new(),
        "{tag}: intact image"
    );
    Some((d, img, g, files))
}

/// `xfs_db -x` commands on a copy of `img` (`write -d`: written even when the verifiers object,
/// CRCs recomputed).
fn damaged_copy(img: &Path, name: &str, cmds: &[String]) -> PathBuf {
    let copy = img.with_file_name(name);
    sparse_copy(img, &copy);
    let mut c = Command::new("xfs_db");
    c.arg("-x");
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    run(c.arg(&copy));
    copy
}

fn db_ino(img: &Path, path: &str) -> u64 {
    let (all, _) = xfs::db_tree(img, Geometry::read(img).root_ino);
    all.into_iter()
        .find(|(p, _)| p == path.as_bytes())
        .unwrap()
        .1
        .ino
}

/// Cut to 1 MiB (the log and most inodes gone), and just after the log (the last AG gone).
#[test]
fn hostile_truncated() {
    let Some((_d, img, _g, files)) = hostile_fixture("truncated") else {
        return;
    };
    let cut = |len: u64| {
        let p = img.with_file_name(format!("cut-{len}.img"));
        sparse_copy(&img, &p);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(len)
            .unwrap();
        p
    };
    let errors = explore(&cut(1 << 20), &files, "truncated to 1 MiB");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("read /big:") || e.starts_with("open")),
        "truncated to 1 MiB: reading /big (2 MiB) past the end of the device must fail: {errors:?}"
    );
    let sb = xfs::superblock(&img);
    let log_end = xfs::db(
        &img,
        &[format!(
            "convert fsb {} byte",
            xfs::num(&sb["logstart"]) + xfs::num(&sb["logblocks"])
        )],
    );
    let log_end = xfs::num(String::from_utf8_lossy(&log_end).trim());
    let what = format!("truncated after the log, to {log_end}");
    let errors = explore(&cut(log_end), &files, &what);
    assert!(
        !errors.is_empty() && !errors.iter().any(|e| e.starts_with("open")),
        "{what}: opens, and what lies past the end cannot be read: {errors:?}"
    );
    // What lies before the cut still reads; the last AG's files do not.
    let fs = vdisk_fs::open(raw_reader(&cut(log_end))).unwrap();
    let fs = fs.as_ref();
    let big = vdisk_fs::resolve(fs, b"/big", false).unwrap();
    assert!(vdisk_fs::read_all(fs, &big, 4 << 20).unwrap() == files[&b"/big"[..]]);
    let g = Geometry::read(&img);
    let mut gone = 0;
    for k in 0..4 {
        let p = format!("/d{k}/f");
        if g.ag_of(db_ino(&img, &p)) == g.agcount - 1 {
            let r = vdisk_fs::resolve(fs, p.as_bytes(), false)
                .and_then(|n| vdisk_fs::read_all(fs, &n, 4 << 20));
            assert!(
                r.is_err(),
                "{what}: {p} lies past the end: {:?}",
                r.map(|d| d.len())
            );
            gone += 1;
        }
    }
    assert!(gone > 0, "{what}: a file in the last AG");
}

#[test]
fn hostile_root_inode_magic() {
    let Some((_d, img, g, files)) = hostile_fixture("rootmagic") else {
        return;
    };
    let out = xfs::db(&img, &[format!("convert ino {} byte", g.root_ino)]);
    let at = xfs::num(String::from_utf8_lossy(&out).trim());
    // Zeroed in place (the CRC no longer matches either, on v5)...
    let zeroed = img.with_file_name("zeroed.img");
    sparse_copy(&img, &zeroed);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&zeroed)
            .unwrap();
        let mut magic = [0u8; 2];
        f.read_exact_at(&mut magic, at).unwrap();
        assert_eq!(&magic, b"IN", "the root inode at {at}");
        f.write_all_at(&[0, 0], at).unwrap();
    }
    // ... and by xfs_db.
    let written = damaged_copy(
        &img,
        "written.img",
        &[
            format!("inode {}", g.root_ino),
            "write -d core.magic 0".into(),
        ],
    );
    for (p, what) in [
        (&zeroed, "root magic zeroed"),
        (&written, "root magic 0 (xfs_db)"),
    ] {
        let errors = explore(p, &files, what);
        assert!(
            errors.iter().any(|e| e.starts_with("open")
                || e.starts_with("root")
                || e.starts_with("read_dir :")),
            "{what}: the root inode has no magic: open, root() or read_dir(root) must fail: {errors:?}"
        );
    }
}

#[test]
fn hostile_extent_past_the_device() {
    let Some((_d, img, g, files)) = hostile_fixture("extent") else {
        return;
    };
    let big = db_ino(&img, "/big");
    let fork = if g.v5 { "u3" } else { "u" };
    let ag_end = (1u64 << g.agblklog) - 1;
    for (name, start) in [("past-device.img", 99_999_999u64), ("past-ag.img", ag_end)] {
        let bad = damaged_copy(
            &img,
            name,
            &[
                format!("inode {big}"),
                format!("write -d {fork}.bmx[0].startblock {start}"),
            ],
        );
        let errors = explore(&bad, &files, name);
        assert!(
            errors.iter().any(|e| e.starts_with("read /big:")),
            "{name}: /big's extent starts at block {start}: reading it must fail: {errors:?}"
        );
        assert_eq!(errors.len(), 1, "{name}: only /big is damaged: {errors:?}");
    }
}

#[test]
fn hostile_agcount_zero() {
    let Some((_d, img, _g, files)) = hostile_fixture("agcount") else {
        return;
    };
    let bad = damaged_copy(
        &img,
        "agcount0.img",
        &["sb 0".into(), "write -d agcount 0".into()],
    );
    let errors = explore(&bad, &files, "agcount 0");
    assert!(
        errors.iter().any(|e| e.starts_with("open")),
        "agcount 0: open must fail: {errors:?}"
    );
}

#[test]
fn hostile_directory_block_magic() {
    let Some((_d, img, _g, files)) = hostile_fixture("dirmagic") else {
        return;
    };
    let block = db_ino(&img, "/block");
    let bad = damaged_copy(
        &img,
        "dirmagic.img",
        &[
            format!("inode {block}"),
            "dblock 0".into(),
            "write -d bhdr.hdr.magic 0".into(),
        ],
    );
    let errors = explore(&bad, &files, "directory block magic");
    assert!(
        errors.iter().any(|e| e.starts_with("read_dir /block")),
        "a block directory's block without magic: read_dir must fail: {errors:?}"
    );
}

#[test]
fn hostile_btree_level() {
    let Some((_d, img, g, files)) = hostile_fixture("btree") else {
        return;
    };
    let bt = db_ino(&img, "/bt");
    let cores = xfs::inode_cores(&img, &[bt]);
    assert_eq!(xfs::fork_of(cores[&bt].format), Fork::Btree, "/bt");
    let fork = if g.v5 { "u3" } else { "u" };
    for level in [0u64, 2, 200] {
        let name = format!("level{level}.img");
        let bad = damaged_copy(
            &img,
            &name,
            &[
                format!("inode {bt}"),
                format!("write -d {fork}.bmbt.level {level}"),
            ],
        );
        let errors = explore(&bad, &files, &name);
        assert!(
            errors.iter().any(|e| e.starts_with("read_dir /bt")),
            "{name}: /bt's bmap btree root says level {level}: read_dir must fail: {errors:?}"
        );
    }
}
