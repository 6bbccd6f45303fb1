//! Journal replay against e2fsprogs: filesystems whose journal needs recovery are made with
//! debugfs's journal commands (`jo`, `jw`, `jc`), and what vdisk-fs reads with its in-memory
//! replay must equal what it reads, without replay, from a copy whose journal e2fsprogs
//! replayed (`e2fsck -E journal_only`), and the image must not change. Hostile journal
//! superblocks on real images end in clear errors.

mod common;

use common::{pattern, raw_reader, run, tools_available, truncate};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use vdisk_fs::ext::Ext;
use vdisk_fs::{FileKind, Filesystem, OpenOptions};
use vdisk_testutil::Scratch;

const TOOLS: &[&str] = &["mkfs.ext4", "mkfs.ext3", "debugfs", "dumpe2fs", "e2fsck"];

const AS_ON_DISK: OpenOptions = OpenOptions {
    ignore_journal_recovery: true,
};

/// Makes a filesystem of `size` bytes with `bs`-byte blocks holding the files of `src`.
fn mkfs(img: &Path, cmd: &str, args: &[&str], bs: usize, size: u64, src: &Path) {
    truncate(img, size);
    run(Command::new(cmd)
        .args(["-q", "-F", "-b", &bs.to_string()])
        .args(args)
        .arg("-d")
        .arg(src)
        .arg(img));
}

/// Runs `cmds` in one `debugfs -w` session; fails on any error message.
fn debugfs_w(img: &Path, cmds: &[String]) {
    let script = img.with_extension("dbgfs");
    std::fs::write(&script, cmds.join("\n") + "\n").unwrap();
    let out = run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(img));
    let err = String::from_utf8_lossy(&out.stderr);
    let bad: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    assert!(bad.is_empty(), "debugfs {cmds:?}: {err}");
}

fn needs_recovery(img: &Path) -> bool {
    let out = run(Command::new("dumpe2fs").arg("-h").arg(img));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("Filesystem features:") && l.contains("needs_recovery"))
}

/// The physical blocks of a file (debugfs `bmap`).
fn blocks_of(img: &Path, path: &str, n: u64) -> Vec<u64> {
    let cmds: Vec<String> = (0..n).map(|k| format!("bmap {path} {k}")).collect();
    common::debugfs::batch(img, &cmds)
        .iter()
        .map(|o| String::from_utf8_lossy(o).trim().parse().unwrap())
        .collect()
}

/// A copy of `img` whose journal e2fsprogs replayed.
fn oracle(img: &Path) -> PathBuf {
    let o = img.with_extension("replayed");
    std::fs::copy(img, &o).unwrap();
    let st = Command::new("e2fsck")
        .args(["-E", "journal_only", "-y"])
        .arg(&o)
        .output()
        .unwrap();
    assert!(
        st.status.code().is_some_and(|c| c <= 1),
        "e2fsck: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(!needs_recovery(&o), "e2fsck left the journal unreplayed");
    o
}

/// FNV-1a of file contents (snapshots stay small enough to print).
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Everything vdisk-fs reads of a filesystem: every path with its node (inode number,
/// kind, mode, owners, size, links, mtime), file contents and link targets; usage, label.
fn snapshot(fs: &dyn Filesystem) -> BTreeMap<Vec<u8>, String> {
    let mut m = BTreeMap::new();
    m.insert(
        b"<meta>".to_vec(),
        format!(
            "{:?} {:?} {:?} {}",
            fs.usage().unwrap(),
            fs.label(),
            fs.uuid(),
            fs.kind()
        ),
    );
    let mut todo = vec![(b"/".to_vec(), fs.root().unwrap())];
    while let Some((path, dir)) = todo.pop() {
        for e in fs.read_dir(&dir).unwrap() {
            let mut p = path.clone();
            p.extend_from_slice(&e.name);
            let extra = match e.node.kind {
                FileKind::Regular => {
                    let data = vdisk_fs::read_all(fs, &e.node, 64 << 20).unwrap();
                    format!("{} bytes, fnv {:016x}", data.len(), fnv(&data))
                }
                FileKind::Symlink => format!("{:?}", fs.read_link(&e.node).unwrap()),
                FileKind::Directory => {
                    let mut q = p.clone();
                    q.push(b'/');
                    todo.push((q, e.node.clone()));
                    String::new()
                }
                _ => String::new(),
            };
            m.insert(p, format!("{:?} {extra}", e.node));
        }
    }
    m
}

/// Opens `img` replaying its journal; checks the replay against e2fsprogs' and that the
/// image is unchanged; returns the replay's transaction count.
fn check_against_oracle(img: &Path) -> u32 {
    assert!(needs_recovery(img));
    let before = std::fs::read(img).unwrap();
    let ext = Ext::open(raw_reader(img), &OpenOptions::default()).unwrap();
    let replay = ext.journal_replay().expect("something replayed");
    let transactions = replay.transactions;
    let ours = snapshot(&ext);
    let on_disk = snapshot(
        vdisk_fs::open_with(raw_reader(img), &AS_ON_DISK)
            .unwrap()
            .as_ref(),
    );
    let o = oracle(img);
    let theirs = snapshot(vdisk_fs::open(raw_reader(&o)).unwrap().as_ref());
    assert_ne!(
        on_disk, theirs,
        "the journal changes nothing: the test proves nothing"
    );
    for (k, v) in &theirs {
        assert_eq!(
            ours.get(k),
            Some(v),
            "{} differs from e2fsprogs' replay",
            String::from_utf8_lossy(k)
        );
    }
    assert_eq!(ours.len(), theirs.len());
    assert!(
        std::fs::read(img).unwrap() == before,
        "the image was written"
    );
    transactions
}

fn source_tree(d: &Scratch, bs: usize) -> PathBuf {
    let src = d.join("src");
    std::fs::create_dir_all(src.join("dir/sub")).unwrap();
    std::fs::write(src.join("f1"), pattern(1, 3 * bs)).unwrap();
    std::fs::write(src.join("f2"), pattern(2, 2 * bs)).unwrap();
    std::fs::write(src.join("f3"), pattern(3, bs)).unwrap();
    std::fs::write(src.join("dir/sub/deep"), pattern(4, 5000)).unwrap();
    std::os::unix::fs::symlink("f1", src.join("link")).unwrap();
    src
}

/// Several transactions written by debugfs on data blocks of known files: a block written
/// twice (the later copy wins), a revoked block, an escaped block (starting with the jbd2
/// magic), and an uncommitted trailing transaction (ignored).
#[test]
fn debugfs_transactions() {
    if !tools_available(TOOLS) {
        return;
    }
    let cases: &[(&str, &str, &[&str], &str, usize)] = &[
        (
            "ext4-64bit-csum3",
            "mkfs.ext4",
            &["-O", "metadata_csum,64bit"],
            "jo -c",
            4096,
        ),
        (
            "ext4-32bit",
            "mkfs.ext4",
            &["-O", "^metadata_csum,^64bit"],
            "jo",
            4096,
        ),
        (
            "ext4-csum2",
            "mkfs.ext4",
            &["-O", "^64bit"],
            "jo -c -v 2",
            4096,
        ),
        ("ext3", "mkfs.ext3", &["-b", "4096"], "jo", 4096),
        ("ext4-1k-csum3", "mkfs.ext4", &["-b", "1024"], "jo -c", 1024),
    ];
    for (name, cmd, args, jo, bs) in cases {
        let d = Scratch::new(&format!("journal-{name}"));
        let src = source_tree(&d, *bs);
        let img = d.join("fs.img");
        mkfs(&img, cmd, args, *bs, 16 << 20, &src);
        let f1 = blocks_of(&img, "/f1", 3);
        let f2 = blocks_of(&img, "/f2", 2);
        let f3 = blocks_of(&img, "/f3", 1);
        let x = d.join("x");
        std::fs::write(&x, pattern(10, 2 * bs)).unwrap();
        let y = d.join("y");
        std::fs::write(&y, pattern(11, 2 * bs)).unwrap();
        let z = d.join("z");
        std::fs::write(&z, pattern(12, *bs)).unwrap();
        let esc = d.join("esc");
        let mut e = pattern(13, *bs);
        e[..4].copy_from_slice(&0xC03B_3998u32.to_be_bytes());
        std::fs::write(&esc, e).unwrap();
        let p = |f: &PathBuf| f.to_string_lossy().into_owned();
        debugfs_w(
            &img,
            &[
                jo.to_string(),
                format!("jw -b {},{} {}", f1[0], f1[1], p(&x)),
                format!("jw -b {},{} {}", f1[1], f2[0], p(&y)),
                format!("jw -b {} {}", f3[0], p(&z)),
                format!("jw -r {} /dev/null", f3[0]),
                format!("jw -b {} {}", f2[1], p(&esc)),
                format!("jw -b {} -c {}", f1[2], p(&z)),
                "jc".to_string(),
            ],
        );
        assert_eq!(check_against_oracle(&img), 5, "{name}");
        // The specific outcomes, besides agreeing with e2fsprogs.
        let fs = vdisk_fs::open(raw_reader(&img)).unwrap();
        let read = |path: &[u8]| {
            let n = vdisk_fs::resolve(fs.as_ref(), path, false).unwrap();
            vdisk_fs::read_all(fs.as_ref(), &n, 1 << 20).unwrap()
        };
        let f1d = read(b"/f1");
        assert!(
            f1d[..*bs] == pattern(10, 2 * bs)[..*bs],
            "{name}: f1 block 0"
        );
        assert!(
            f1d[*bs..2 * bs] == pattern(11, 2 * bs)[..*bs],
            "{name}: later copy wins"
        );
        assert!(
            f1d[2 * bs..] == pattern(1, 3 * bs)[2 * bs..],
            "{name}: uncommitted"
        );
        assert!(read(b"/f3") == pattern(3, *bs), "{name}: revoked");
        let f2d = read(b"/f2");
        assert!(
            f2d[..*bs] == pattern(11, 2 * bs)[*bs..],
            "{name}: f2 block 0"
        );
        let mut e = pattern(13, *bs);
        e[..4].copy_from_slice(&0xC03B_3998u32.to_be_bytes());
        assert!(f2d[*bs..] == e, "{name}: escaped block");
    }
}

/// A realistic change: image B is A changed by debugfs (a new file, a new directory, a
/// removed file, a new label); B's changed blocks (inode tables, directories, bitmaps, group
/// descriptors, the superblock) are written into A's journal, and the replayed A must read
/// as B.
#[test]
fn replay_yields_modified_copy() {
    if !tools_available(TOOLS) {
        return;
    }
    let cases: &[(&str, &str, &[&str], &str, usize)] = &[
        (
            "ext4",
            "mkfs.ext4",
            &["-O", "metadata_csum,64bit"],
            "jo -c",
            4096,
        ),
        ("ext3", "mkfs.ext3", &["-b", "4096"], "jo", 4096),
        (
            "ext4-1k",
            "mkfs.ext4",
            &["-b", "1024", "-O", "^64bit"],
            "jo",
            1024,
        ),
    ];
    for (name, cmd, args, jo, bs) in cases {
        let d = Scratch::new(&format!("journal-real-{name}"));
        let src = source_tree(&d, *bs);
        let a = d.join("a.img");
        mkfs(&a, cmd, args, *bs, 16 << 20, &src);
        let b = d.join("b.img");
        std::fs::copy(&a, &b).unwrap();
        let newfile = d.join("new");
        std::fs::write(&newfile, pattern(20, 3 * bs + 17)).unwrap();
        let nf = newfile.to_string_lossy();
        debugfs_w(
            &b,
            &[
                format!("write {nf} newfile"),
                "mkdir newdir".into(),
                "mkdir dir/sub/newsub".into(),
                format!("write {nf} newdir/inner"),
                "rm f3".into(),
                "symlink newlink /dir/sub/deep".into(),
                "ssv volume_name replayed".into(),
            ],
        );
        let (ab, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let changed: Vec<usize> = (0..ab.len() / bs)
            .filter(|k| ab[k * bs..(k + 1) * bs] != bb[k * bs..(k + 1) * bs])
            .collect();
        let sb_block = if *bs == 1024 { 1 } else { 0 };
        assert!(
            changed.contains(&sb_block),
            "{name}: the superblock changes"
        );
        let blocks = d.join("blocks");
        let data: Vec<u8> = changed
            .iter()
            .flat_map(|k| bb[k * bs..(k + 1) * bs].to_vec())
            .collect();
        std::fs::write(&blocks, data).unwrap();
        let list: Vec<String> = changed.iter().map(|k| k.to_string()).collect();
        debugfs_w(
            &a,
            &[
                jo.to_string(),
                format!("jw -b {} {}", list.join(","), blocks.to_string_lossy()),
                "jc".into(),
            ],
        );
        assert_eq!(check_against_oracle(&a), 1, "{name}");
        let replayed = snapshot(vdisk_fs::open(raw_reader(&a)).unwrap().as_ref());
        let want = snapshot(vdisk_fs::open(raw_reader(&b)).unwrap().as_ref());
        assert_eq!(replayed, want, "{name}: the replayed A is not B");
        let fs = vdisk_fs::open(raw_reader(&a)).unwrap();
        assert_eq!(fs.label().as_deref(), Some(&b"replayed"[..]));
    }
}

fn patch(img: &Path, at: u64, bytes: &[u8]) {
    let mut b = std::fs::read(img).unwrap();
    b[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    std::fs::write(img, b).unwrap();
}

/// Damaged journals on real images: each a clear error naming `--ignore-journal` (or a
/// replay of less), never a panic; `ignore_journal_recovery` still reads them as on disk.
#[test]
fn hostile_journals() {
    if !tools_available(TOOLS) {
        return;
    }
    let d = Scratch::new("journal-hostile");
    let src = source_tree(&d, 4096);
    let img = d.join("h.img");
    mkfs(
        &img,
        "mkfs.ext4",
        &["-O", "^metadata_csum"],
        4096,
        16 << 20,
        &src,
    );
    let f1 = blocks_of(&img, "/f1", 1);
    let x = d.join("x");
    std::fs::write(&x, pattern(10, 4096)).unwrap();
    debugfs_w(
        &img,
        &[
            "jo".into(),
            format!("jw -b {} {}", f1[0], x.to_string_lossy()),
            "jc".into(),
        ],
    );
    let jsb = blocks_of(&img, "<8>", 2);
    let j0 = jsb[0] * 4096;
    // The first descriptor is journal block 1 (s_first), here right after block 0.
    assert_eq!(jsb[1], jsb[0] + 1);
    let desc = j0 + 4096;
    let cases: Vec<(&str, u64, Vec<u8>, &str)> = vec![
        (
            "maxlen",
            j0 + 0x10,
            u32::MAX.to_be_bytes().to_vec(),
            "s_maxlen",
        ),
        (
            "first0",
            j0 + 0x14,
            0u32.to_be_bytes().to_vec(),
            "s_first 0",
        ),
        (
            "start",
            j0 + 0x1C,
            5000u32.to_be_bytes().to_vec(),
            "past s_maxlen",
        ),
        (
            "blocksize",
            j0 + 0x0C,
            1024u32.to_be_bytes().to_vec(),
            "block size 1024",
        ),
        (
            "incompat",
            j0 + 0x28,
            0x8000_0000u32.to_be_bytes().to_vec(),
            "journal features",
        ),
        ("magic", j0, [0u8; 4].to_vec(), "magic"),
        (
            "blocknr",
            desc + 12,
            u32::MAX.to_be_bytes().to_vec(),
            "past the device",
        ),
        (
            "external",
            1024 + 0xE0,
            0u32.to_le_bytes().to_vec(),
            "external journal",
        ),
    ];
    for (name, at, bytes, msg) in cases {
        let m = d.join(&format!("{name}.img"));
        std::fs::copy(&img, &m).unwrap();
        patch(&m, at, &bytes);
        let before = std::fs::read(&m).unwrap();
        let e = vdisk_fs::open(raw_reader(&m)).err().map(|e| e.to_string());
        let e = e.unwrap_or_else(|| panic!("{name}: opened"));
        assert!(
            e.contains(msg) && e.contains("--ignore-journal"),
            "{name}: {e}"
        );
        if name != "external" {
            let fs = vdisk_fs::open_with(raw_reader(&m), &AS_ON_DISK).unwrap();
            let n = vdisk_fs::resolve(fs.as_ref(), b"/f1", false).unwrap();
            assert_eq!(
                vdisk_fs::read_all(fs.as_ref(), &n, 1 << 20).unwrap(),
                pattern(1, 3 * 4096)
            );
        }
        assert!(std::fs::read(&m).unwrap() == before);
    }
    // A descriptor whose sequence is not the expected one: nothing committed, nothing
    // replayed (as the kernel and e2fsck decide), the file reads as on disk.
    let m = d.join("seq.img");
    std::fs::copy(&img, &m).unwrap();
    patch(&m, desc + 8, &77u32.to_be_bytes());
    let fs = vdisk_fs::open(raw_reader(&m)).unwrap();
    let n = vdisk_fs::resolve(fs.as_ref(), b"/f1", false).unwrap();
    assert_eq!(
        vdisk_fs::read_all(fs.as_ref(), &n, 1 << 20).unwrap(),
        pattern(1, 3 * 4096)
    );
    let o = oracle(&m);
    let fo = vdisk_fs::open(raw_reader(&o)).unwrap();
    let n = vdisk_fs::resolve(fo.as_ref(), b"/f1", false).unwrap();
    assert_eq!(
        vdisk_fs::read_all(fo.as_ref(), &n, 1 << 20).unwrap(),
        pattern(1, 3 * 4096)
    );
}
