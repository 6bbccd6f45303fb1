//! FAT12, FAT16 and FAT32 images made by `mkfs.fat` and filled by `mcopy -s -m` from a source
//! tree, read by vdisk-fs and compared with mtools and the source: each directory's entries in
//! order against `mdir -a` (name, long or 8.3 with its case bits as the Linux driver shows it,
//! directory or file, size, modification date and minute), every file's bytes against the
//! source and against mtools' own copy-out (`mcopy -s`), mtimes against the source's (to the
//! two seconds FAT keeps), `usage` against `fsck.fat -n`'s cluster counts, and the label and
//! serial against blkid.

mod common;

use common::{blkid, pattern, raw_reader, run, tools_available, truncate};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use vdisk_fs::{FileKind, Filesystem, Node};
use vdisk_testutil::Scratch;

const TOOLS: &[&str] = &["mkfs.fat", "mcopy", "mdir", "fsck.fat", "blkid", "mlabel"];

/// Builds the tree: nested directories, sizes around the cluster size, long and short names
/// in every case mix, names beyond ASCII, a 255-character name, a directory of many entries.
fn build(src: &Path, cluster: usize, big: usize, many: usize) {
    let d = |p: &str| {
        let p = src.join(p);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    d("Sub/deeper/deepest");
    d("empty dir");
    for (i, size) in [
        0usize,
        1,
        cluster - 1,
        cluster,
        cluster + 1,
        3 * cluster + 5,
        big,
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(
            src.join(format!("Sub/size_{size}.bin")),
            pattern(i as u64 + 9, *size),
        )
        .unwrap();
    }
    for (name, body) in [
        ("lower.txt", "lower"),
        ("UPPER.TXT", "upper"),
        ("MiXeD.Txt", "mixed"),
        ("x.TXT", "lower base"),
        ("UP.txt", "lower ext"),
        ("noext", "noext"),
        ("a long name with spaces.data", "long"),
        ("Caf\u{e9} \u{2603} \u{3b1}.txt", "unicode"),
        ("Sub/deeper/deepest/leaf.txt", "leaf"),
        ("Sub/deeper/ab.c.d.e", "dots"),
    ] {
        std::fs::write(src.join(name), body).unwrap();
    }
    std::fs::write(src.join("n".repeat(251) + ".txt"), "255").unwrap();
    let m = d("many");
    for k in 0..many {
        // Distinct first six characters: mtools finds a free "~N" tail for each at once.
        std::fs::write(m.join(format!("{k:05} entry.txt")), format!("{k}\n")).unwrap();
    }
}

/// One line of `mdir -a`.
#[derive(Debug, PartialEq, Eq)]
struct MdirEntry {
    name: Vec<u8>,
    dir: bool,
    size: Option<u64>,
    /// "YYYY-MM-DD H:MM"
    when: String,
}

fn mdir(img: &Path, path: &str) -> Vec<MdirEntry> {
    let out = run(Command::new("mdir")
        .env("LC_ALL", "C.UTF-8")
        .env("TZ", "UTC")
        .args(["-a", "-i"])
        .arg(img)
        .arg(format!("::{path}")));
    let mut v = Vec::new();
    for line in out.stdout.split(|b| *b == b'\n') {
        if line.len() < 13 || line.starts_with(b" ") || line.starts_with(b"Directory for") {
            continue;
        }
        // Columns are characters (an 8.3 name beyond ASCII shows as UTF-8).
        let chars: Vec<char> = String::from_utf8_lossy(line).chars().collect();
        let base: String = chars[..8].iter().collect::<String>().trim_end().to_string();
        let ext: String = chars[9..12]
            .iter()
            .collect::<String>()
            .trim_end()
            .to_string();
        let text: String = chars[12..].iter().collect();
        let mut tok = text.split_whitespace();
        let (size, date, time) = (
            tok.next().unwrap(),
            tok.next().unwrap(),
            tok.next().unwrap(),
        );
        assert!(
            size == "<DIR>" || size.parse::<u64>().is_ok(),
            "mdir line {text:?}"
        );
        let after_time = text.find(time).unwrap() + time.len();
        let long = text[after_time..].trim_start();
        if base == "." || base == ".." {
            continue;
        }
        let name = if !long.is_empty() {
            long.as_bytes().to_vec()
        } else if ext.is_empty() {
            base.into_bytes()
        } else {
            format!("{base}.{ext}").into_bytes()
        };
        v.push(MdirEntry {
            name,
            dir: size == "<DIR>",
            size: (size != "<DIR>").then(|| size.parse().unwrap()),
            when: format!("{date} {time}"),
        });
    }
    v
}

/// A time as mdir prints it: "YYYY-MM-DD H:MM".
fn when(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {}:{:02}",
        secs / 3600,
        secs % 3600 / 60
    )
}

fn fsck_clusters(img: &Path) -> (u64, u64) {
    let out = Command::new("fsck.fat")
        .arg("-n")
        .arg(img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains(" clusters")).unwrap();
    let frac = line.split_whitespace().rev().nth(1).unwrap();
    let (used, total) = frac.split_once('/').unwrap();
    (used.parse().unwrap(), total.parse().unwrap())
}

fn check(name: &str, fat: &str, sectors: u64, extra: &[&str], cluster: usize, many: usize) {
    if !tools_available(TOOLS) {
        return;
    }
    let d = Scratch::new(&format!("fat-{name}"));
    let src = d.join("src");
    std::fs::create_dir(&src).unwrap();
    build(&src, cluster, 300_000, many);
    let img = d.join("fat.img");
    truncate(&img, sectors * 512);
    run(Command::new("mkfs.fat")
        .args(["-F", fat, "-n", "VDISK LBL"])
        .args(extra)
        .arg(&img));
    let mut cp = Command::new("mcopy");
    cp.env("TZ", "UTC")
        .env("LC_ALL", "C.UTF-8")
        .args(["-s", "-m", "-i"])
        .arg(&img);
    for e in std::fs::read_dir(&src).unwrap() {
        cp.arg(e.unwrap().path());
    }
    run(cp.arg("::"));
    let fs = vdisk_fs::open(raw_reader(&img)).unwrap();
    compare(name, fs.as_ref(), &img, &src, &d, cluster);
}

fn compare(name: &str, fs: &dyn Filesystem, img: &Path, src: &Path, d: &Scratch, cluster: usize) {
    assert_eq!(fs.kind(), "vfat");
    let b = blkid(img);
    assert_eq!(b.get("TYPE").map(String::as_str), Some("vfat"));
    assert_eq!(
        fs.uuid().as_deref(),
        b.get("UUID").map(String::as_str),
        "{name}: UUID"
    );
    assert_eq!(
        fs.label().map(|l| String::from_utf8(l).unwrap()),
        b.get("LABEL").cloned(),
        "{name}: LABEL"
    );

    // Every directory against mdir; files against the source and mtools' copy-out.
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();
    run(Command::new("mcopy")
        .env("LC_ALL", "C.UTF-8")
        .args(["-s", "-n", "-i"])
        .arg(img)
        .arg("::")
        .arg(&out));
    let mut todo: Vec<(String, Node)> = vec![(String::new(), fs.root().unwrap())];
    let mut files = 0;
    while let Some((path, dir)) = todo.pop() {
        let ours = fs.read_dir(&dir).unwrap();
        let shown: Vec<MdirEntry> = ours
            .iter()
            .map(|e| MdirEntry {
                name: e.name.clone(),
                dir: e.node.kind == FileKind::Directory,
                size: (e.node.kind != FileKind::Directory).then_some(e.node.size),
                when: when(e.node.mtime),
            })
            .collect();
        let disp = if path.is_empty() {
            "/".to_string()
        } else {
            path.clone()
        };
        assert_eq!(shown, mdir(img, &disp), "{name}: directory {disp}");
        for e in ours {
            let p = format!("{path}/{}", String::from_utf8(e.name.clone()).unwrap());
            let rel = std::ffi::OsStr::from_bytes(&p.as_bytes()[1..]);
            let meta = std::fs::metadata(src.join(rel)).unwrap();
            use std::os::unix::fs::MetadataExt;
            if e.node.kind == FileKind::Directory {
                assert_eq!(e.node.mode, 0o040755);
                let subdirs = std::fs::read_dir(src.join(rel))
                    .unwrap()
                    .filter(|x| x.as_ref().unwrap().file_type().unwrap().is_dir())
                    .count() as u32;
                assert_eq!(e.node.nlink, subdirs + 2, "{name}: {p}: links");
                assert_eq!(e.node.size % cluster as u64, 0);
                todo.push((p, e.node));
                continue;
            }
            files += 1;
            assert_eq!(e.node.mode, 0o100755, "{name}: {p}");
            assert_eq!(
                e.node.mtime,
                meta.mtime() & !1,
                "{name}: {p}: mtime (two-second units)"
            );
            let data = vdisk_fs::read_all(fs, &e.node, 1 << 30).unwrap();
            assert!(
                data == std::fs::read(src.join(rel)).unwrap(),
                "{name}: {p}: contents against the source"
            );
            assert!(
                data == std::fs::read(out.join(rel)).unwrap(),
                "{name}: {p}: contents against mcopy"
            );
            for (off, len) in [
                (1usize, 3usize),
                (cluster - 1, 2),
                (cluster, cluster + 3),
                (data.len(), 4),
            ] {
                let mut buf = vec![0xAAu8; len];
                let got = fs.read(&e.node, off as u64, &mut buf).unwrap();
                let lo = off.min(data.len());
                let hi = (off + len).min(data.len());
                assert_eq!(
                    &buf[..got],
                    &data[lo..hi],
                    "{name}: {p}: read({off}, {len})"
                );
            }
            // Found again by its path, whatever the (ASCII) case: the driver with utf8 names
            // folds ASCII only.
            let got = vdisk_fs::resolve(fs, p.to_ascii_uppercase().as_bytes(), true).unwrap();
            assert_eq!(got.id, e.node.id, "{name}: resolve {p} in capitals");
        }
    }
    assert!(files > 20, "{name}: {files} files checked");
    let root = fs.root().unwrap();
    assert_eq!(
        root.nlink,
        2 + 3,
        "{name}: the root's links (Sub, empty dir, many; and 2 as for . and ..)"
    );

    // Usage against fsck.fat's cluster counts.
    let (used, total) = fsck_clusters(img);
    let u = fs.usage().unwrap();
    assert_eq!(
        (u.blocks, u.blocks - u.free_blocks),
        (total, used),
        "{name}: usage"
    );
    assert_eq!(u.block_size, cluster as u64);
    assert_eq!(u.available_blocks, u.free_blocks);
    assert_eq!((u.inodes, u.free_inodes), (None, None));

    // 8.3 names shown as the Linux driver shows them (shortname=mixed).
    let names: Vec<Vec<u8>> = fs
        .read_dir(&root)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    for n in [
        "lower.txt",
        "UPPER.TXT",
        "MiXeD.Txt",
        "x.TXT",
        "UP.txt",
        "noext",
    ] {
        assert!(
            names.contains(&n.as_bytes().to_vec()),
            "{name}: {n} listed as {names:?}"
        );
    }
    // The 8.3 alias of a long name finds it too.
    let long = vdisk_fs::resolve(fs, b"/a long name with spaces.data", false).unwrap();
    assert_eq!(
        vdisk_fs::resolve(fs, b"/ALONGN~1.DAT", false).unwrap().id,
        long.id
    );
    assert!(vdisk_fs::resolve(fs, b"/nope", false)
        .unwrap_err()
        .to_string()
        .ends_with("No such file or directory"));
}

#[test]
fn fat12() {
    check("fat12", "12", 8192, &["-s", "2"], 1024, 300);
}

#[test]
fn fat16() {
    check("fat16", "16", 65536, &["-s", "4"], 2048, 1500);
}

#[test]
fn fat32() {
    check("fat32", "32", 140_000, &["-s", "1"], 512, 1500);
}

/// The label blkid shows is the root directory's volume label entry; without one, none (the
/// boot sector's copy is only LABEL_FATBOOT).
#[test]
fn labels_as_blkid_reads_them() {
    if !tools_available(TOOLS) {
        return;
    }
    let d = Scratch::new("fat-labels");
    let img = d.join("l.img");
    for (fat, sectors) in [("12", 4096u64), ("32", 140_000)] {
        let _ = std::fs::remove_file(&img);
        truncate(&img, sectors * 512);
        run(Command::new("mkfs.fat").args(["-F", fat]).arg(&img));
        let fs = vdisk_fs::open(raw_reader(&img)).unwrap();
        assert_eq!(fs.label(), None);
        assert_eq!(blkid(&img).get("LABEL"), None);
        run(Command::new("mlabel")
            .arg("-i")
            .arg(&img)
            .arg("::New Label"));
        let fs = vdisk_fs::open(raw_reader(&img)).unwrap();
        let b = blkid(&img);
        assert_eq!(
            fs.label().map(|l| String::from_utf8(l).unwrap()),
            b.get("LABEL").cloned(),
            "FAT{fat}"
        );
        assert_eq!(b.get("LABEL").map(String::as_str), Some("NEW LABEL"));
    }
}
