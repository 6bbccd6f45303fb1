//! The tree of the XFS protofile fixtures: what `mkfs.xfs -p` is given, and the filesystem
//! it makes.

use super::{pattern, run, truncate};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};
use vdisk_fs::FileKind;
use vdisk_testutil::Scratch;

// ---------------------------------------------------------------------------------------------
// The tree of the protofile fixtures.

#[derive(Debug, Clone)]
pub enum What {
    File(Vec<u8>),
    Dir(Vec<Spec>),
    Link(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub name: Vec<u8>,
    /// Permission bits with setuid/setgid.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub what: What,
}

impl Spec {
    pub fn kind(&self) -> FileKind {
        match self.what {
            What::File(_) => FileKind::Regular,
            What::Dir(_) => FileKind::Directory,
            What::Link(_) => FileKind::Symlink,
            What::Char(..) => FileKind::CharDevice,
            What::Block(..) => FileKind::BlockDevice,
            What::Fifo => FileKind::Fifo,
        }
    }

    pub fn type_bits(&self) -> u32 {
        match self.what {
            What::File(_) => 0o100000,
            What::Dir(_) => 0o040000,
            What::Link(_) => 0o120000,
            What::Char(..) => 0o020000,
            What::Block(..) => 0o060000,
            What::Fifo => 0o010000,
        }
    }

    /// `st_size` (directories: from xfs_db).
    pub fn size(&self) -> Option<u64> {
        match &self.what {
            What::File(d) => Some(d.len() as u64),
            What::Link(t) => Some(t.len() as u64),
            What::Dir(_) => None,
            _ => Some(0),
        }
    }

    /// The device number as `stat` shows it: the kernel keeps 9 bits of an XFS major
    /// (`xfs_to_linux_dev_t`).
    pub fn rdev(&self) -> Option<(u32, u32)> {
        match self.what {
            What::Char(a, b) | What::Block(a, b) => Some((a & 0x1ff, b)),
            _ => None,
        }
    }
}

pub fn spec(name: impl AsRef<[u8]>, perm: u32, what: What) -> Spec {
    Spec {
        name: name.as_ref().to_vec(),
        perm,
        uid: 0,
        gid: 0,
        what,
    }
}

pub fn owned(mut s: Spec, uid: u32, gid: u32) -> Spec {
    s.uid = uid;
    s.gid = gid;
    s
}

/// 500 and 1023 bytes: longer than an inode's literal area, stored in remote blocks.
pub fn long_target(len: usize) -> Vec<u8> {
    let mut t = b"0123456789abcdef/".repeat(len / 17 + 1);
    t.truncate(len - 1);
    t.push(b'z');
    t
}

/// Directory entries of every kind, cycling: files with contents, empty files, fifos,
/// symlinks, character devices, empty directories.
pub fn mixed_entries(prefix: &str, n: usize, seed: u64) -> Vec<Spec> {
    (0..n)
        .map(|k| {
            let name = format!("{prefix}{k:05}");
            match k % 6 {
                0 => spec(
                    name,
                    0o644,
                    What::File(pattern(seed + k as u64, (k * 37) % 5000 + 1)),
                ),
                1 => spec(name, 0o600, What::File(Vec::new())),
                2 => spec(name, 0o640, What::Fifo),
                3 => spec(name, 0o777, What::Link(b"../small".to_vec())),
                4 => spec(name, 0o600, What::Char(1, k as u32)),
                _ => spec(name, 0o755, What::Dir(Vec::new())),
            }
        })
        .collect()
}

/// The root directory's entries.
pub fn proto_tree() -> Vec<Spec> {
    let node: Vec<Spec> = (0..4000)
        .map(|k| {
            let data = if k % 97 == 0 {
                pattern(5000 + k as u64, 100 + k * 3)
            } else {
                Vec::new()
            };
            spec(
                format!("entry-with-a-forty-byte-long-name-{k:05}"),
                0o644,
                What::File(data),
            )
        })
        .collect();
    let fifos: Vec<Spec> = (0..1500)
        .map(|k| {
            spec(
                format!("fifo-entry-with-a-forty-byte-long-nam-{k:05}"),
                0o644,
                What::Fifo,
            )
        })
        .collect();
    let mut root = vec![
        spec("empty", 0o644, What::File(Vec::new())),
        owned(
            spec("small", 0o644, What::File(b"hello, xfs\n".to_vec())),
            1000,
            1000,
        ),
        spec("multi", 0o640, What::File(pattern(2, 3 * 4096 + 123))),
        owned(
            spec("big", 0o6755, What::File(pattern(3, 300_000))),
            100_000,
            70_000,
        ),
        spec("setuid", 0o4700, What::File(b"u\n".to_vec())),
        spec("setgid", 0o2070, What::File(b"g\n".to_vec())),
        spec("n".repeat(255), 0o600, What::File(b"long name\n".to_vec())),
        spec(
            b"caf\xe9\xff-latin1",
            0o644,
            What::File(b"latin-1\n".to_vec()),
        ),
        spec("short_link", 0o777, What::Link(b"small".to_vec())),
        spec("link_500", 0o777, What::Link(long_target(500))),
        spec("link_1023", 0o777, What::Link(long_target(1023))),
        spec("dangling", 0o777, What::Link(b"/no/such/file".to_vec())),
        owned(spec("chardev", 0o620, What::Char(4, 5)), 0, 5),
        owned(spec("blockdev", 0o660, What::Block(259, 70_000)), 0, 6),
        spec("bigminor", 0o600, What::Block(511, 262_143)),
        spec("major4095", 0o600, What::Char(4095, 7)),
        spec("fifo", 0o644, What::Fifo),
        owned(
            spec(
                "sf",
                0o750,
                What::Dir(vec![
                    spec("a", 0o644, What::File(b"a\n".to_vec())),
                    spec("b", 0o777, What::Link(b"../small".to_vec())),
                    spec("c", 0o644, What::Fifo),
                ]),
            ),
            10,
            20,
        ),
        spec(
            "deep",
            0o755,
            What::Dir(vec![spec(
                "a",
                0o755,
                What::Dir(vec![spec(
                    "b",
                    0o711,
                    What::Dir(vec![spec(
                        "leaf.txt",
                        0o444,
                        What::File(b"deep down\n".to_vec()),
                    )]),
                )]),
            )]),
        ),
        spec("empty_dir", 0o2775, What::Dir(Vec::new())),
        spec(
            "block",
            0o755,
            What::Dir(mixed_entries("block-entry-with-name-", 40, 1000)),
        ),
        spec(
            "leaf",
            0o755,
            What::Dir(mixed_entries("leaf-entry-with-a-longer-name-", 400, 2000)),
        ),
        spec("node", 0o755, What::Dir(node)),
        spec("node_fifos", 0o755, What::Dir(fifos)),
    ];
    // Small directories, spread over the AGs by mkfs: short form, with 8-byte inode numbers
    // where the AG's inode numbers pass 2^32.
    for k in 0..6 {
        root.push(spec(
            format!("tiny{k}"),
            0o755,
            What::Dir(vec![
                spec("f", 0o644, What::File(pattern(700 + k, 5000))),
                spec("l", 0o777, What::Link(b"../small".to_vec())),
            ]),
        ));
    }
    root
}

/// Writes the protofile for `root` (the root directory's entries), the regular files'
/// contents under `src`.
pub fn protofile(root: &[Spec], src: &Path) -> Vec<u8> {
    pub fn mode(s: &Spec) -> String {
        let t = match s.what {
            What::File(_) => '-',
            What::Dir(_) => 'd',
            What::Link(_) => 'l',
            What::Char(..) => 'c',
            What::Block(..) => 'b',
            What::Fifo => 'p',
        };
        let u = if s.perm & 0o4000 != 0 { 'u' } else { '-' };
        let g = if s.perm & 0o2000 != 0 { 'g' } else { '-' };
        assert_eq!(s.perm & 0o1000, 0, "a protofile has no sticky bit");
        format!("{t}{u}{g}{:03o}", s.perm & 0o777)
    }
    pub fn emit(out: &mut Vec<u8>, s: &Spec, src: &Path, files: &mut HashMap<Vec<u8>, PathBuf>) {
        assert!(
            !s.name
                .iter()
                .any(|b| b.is_ascii_whitespace() || *b == b':' || *b == b'$'),
            "protofile names have no spaces, colons or dollars"
        );
        out.extend_from_slice(&s.name);
        out.extend_from_slice(format!(" {} {} {}", mode(s), s.uid, s.gid).as_bytes());
        match &s.what {
            What::File(data) => {
                let n = files.len();
                let p = files.entry(data.clone()).or_insert_with(|| {
                    let p = src.join(format!("content-{n}"));
                    std::fs::write(&p, data).unwrap();
                    p
                });
                out.push(b' ');
                out.extend_from_slice(p.as_os_str().as_bytes());
                out.push(b'\n');
            }
            What::Link(t) => {
                out.push(b' ');
                out.extend_from_slice(t);
                out.push(b'\n');
            }
            What::Char(a, b) | What::Block(a, b) => {
                out.extend_from_slice(format!(" {a} {b}\n").as_bytes())
            }
            What::Fifo => out.push(b'\n'),
            What::Dir(children) => {
                out.push(b'\n');
                for c in children {
                    emit(out, c, src, files);
                }
                out.extend_from_slice(b"$\n");
            }
        }
    }
    assert!(
        !src.as_os_str()
            .as_bytes()
            .iter()
            .any(|b| b.is_ascii_whitespace() || *b == b':'),
        "the scratch path must fit in a protofile"
    );
    let mut out = b"vdisk-xfs-oracle\n0 0\nd--755 0 0\n".to_vec();
    let mut files = HashMap::new();
    for s in root {
        emit(&mut out, s, src, &mut files);
    }
    out.extend_from_slice(b"$\n");
    out
}

/// Every entry under `children`, by path (`/a/b`).
pub fn flatten<'a>(children: &'a [Spec], prefix: &[u8], out: &mut BTreeMap<Vec<u8>, &'a Spec>) {
    for s in children {
        let mut p = prefix.to_vec();
        p.push(b'/');
        p.extend_from_slice(&s.name);
        if let What::Dir(c) = &s.what {
            flatten(c, &p, out);
        }
        out.insert(p, s);
    }
}

/// Makes the filesystem: `mkfs.xfs -p` of the tree; returns the time window of the mkfs run.
pub fn mkfs_proto(d: &Scratch, img: &Path, tree: &[Spec], args: &[&str], size: u64) -> (i64, i64) {
    let src = d.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let proto = d.join("proto");
    std::fs::write(&proto, protofile(tree, &src)).unwrap();
    truncate(img, size);
    let t0 = now();
    run(Command::new("mkfs.xfs")
        .args(["-q", "-f"])
        .args(args)
        .arg("-p")
        .arg(&proto)
        .arg(img));
    let t1 = now();
    dig_holes(img);
    (t0, t1 + 1)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// mkfs.xfs zeroes its log (64 MiB from 300 MiB on) by allocating it: give the space back.
pub fn dig_holes(img: &Path) {
    let tmp = img.with_extension("sparse");
    sparse_copy(img, &tmp);
    std::fs::rename(&tmp, img).unwrap();
}

/// A copy with holes wherever the original reads as zeros.
pub fn sparse_copy(from: &Path, to: &Path) {
    run(Command::new("cp").arg("--sparse=always").arg(from).arg(to));
}
