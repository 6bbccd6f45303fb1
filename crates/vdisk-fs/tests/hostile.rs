//! Damaged filesystems: every field of the ext superblock, of a group descriptor, of inodes
//! (a directory, a file with an extent tree of depth 1, a slow symlink, an inline file), of
//! extent tree nodes and of directory entries, and of the FAT BPB, directory entries and FAT
//! entries, set to 0, to all ones, one more, one less, and with the top bit flipped; truncated
//! images; a directory entry leading back to the root; an extent index pointing at its own
//! node; FAT chains that loop. Each opens with an error or lists and reads with errors or
//! bounded results: never a panic, always fast, memory bounded by the named limits.

mod common;

use common::explore::{mem_reader, survive, values};
use common::{build_tree, run, tools_available, truncate, TreeOpts};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use vdisk_fs::FileKind;
use vdisk_testutil::Scratch;

fn get(b: &[u8], at: usize, width: usize) -> u64 {
    (0..width).fold(0u64, |v, k| v | (u64::from(b[at + k]) << (8 * k)))
}

fn set(b: &mut [u8], at: usize, width: usize, v: u64) {
    for k in 0..width {
        b[at + k] = (v >> (8 * k)) as u8;
    }
}

/// Every listed field (offset from `base`, width) mutated in turn.
fn mutate_fields(img: &[u8], base: usize, fields: &[(usize, usize)], what: &str) {
    for &(off, w) in fields {
        let at = base + off;
        let orig = get(img, at, w);
        for v in values(orig, w) {
            let mut m = img.to_vec();
            set(&mut m, at, w, v);
            survive(m, &format!("{what} field {off:#x} = {v:#x}"));
        }
    }
}

/// Words of a range (each 4 bytes).
fn words(start: usize, end: usize) -> Vec<(usize, usize)> {
    (start..end).step_by(4).map(|o| (o, 4)).collect()
}

fn debugfs(img: &Path, cmd: &str) -> String {
    let out = run(Command::new("debugfs").args(["-R", cmd]).arg(img));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The byte offset of an inode, from `imap`.
fn inode_offset(img: &Path, path: &str, bs: usize) -> usize {
    let out = debugfs(img, &format!("imap {path}"));
    let block: usize = out
        .split("located at block ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let off = usize::from_str_radix(out.split("offset 0x").nth(1).unwrap().trim(), 16).unwrap();
    block * bs + off
}

fn ext_image(d: &Scratch, name: &str, args: &[&str]) -> std::path::PathBuf {
    let src = d.join(&format!("src-{name}"));
    std::fs::create_dir(&src).unwrap();
    build_tree(
        &src,
        &TreeOpts {
            block: 1024,
            big: 20_000,
            islands: 8,
            many: 60,
            triple: false,
        },
    );
    let img = d.join(&format!("{name}.img"));
    truncate(&img, 8 << 20);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "1024"])
        .args(args)
        .arg("-d")
        .arg(&src)
        .arg(&img));
    img
}

const SUPER_FIELDS: &[(usize, usize)] = &[
    (0x0, 4),
    (0x4, 4),
    (0x8, 4),
    (0xC, 4),
    (0x10, 4),
    (0x14, 4),
    (0x18, 4),
    (0x1C, 4),
    (0x20, 4),
    (0x24, 4),
    (0x28, 4),
    (0x38, 2),
    (0x3A, 2),
    (0x4C, 4),
    (0x54, 4),
    (0x58, 2),
    (0x5C, 4),
    (0x60, 4),
    (0x64, 4),
    (0x78, 4),
    (0xCE, 2),
    (0xE0, 4),
    (0xFE, 2),
    (0x104, 4),
    (0x150, 4),
    (0x154, 4),
    (0x158, 4),
    (0x160, 4),
    (0x248, 4),
    (0x24C, 4),
];

const DESC_FIELDS: &[(usize, usize)] = &[
    (0x0, 4),
    (0x4, 4),
    (0x8, 4),
    (0xC, 2),
    (0xE, 2),
    (0x10, 2),
    (0x12, 2),
    (0x20, 4),
    (0x24, 4),
    (0x28, 4),
    (0x2C, 2),
    (0x2E, 2),
];

fn inode_fields() -> Vec<(usize, usize)> {
    let mut f = vec![
        (0x0, 2),
        (0x2, 2),
        (0x4, 4),
        (0x10, 4),
        (0x18, 2),
        (0x1A, 2),
        (0x1C, 4),
        (0x20, 4),
    ];
    f.extend(words(0x28, 0x64));
    f.extend([
        (0x68, 4),
        (0x6C, 4),
        (0x74, 2),
        (0x76, 2),
        (0x78, 2),
        (0x7A, 2),
        (0x80, 2),
        (0x88, 4),
    ]);
    f.extend(words(0x90, 0x100));
    f
}

#[test]
fn ext_fields_at_extremes() {
    if !tools_available(&["mkfs.ext4", "debugfs", "mkfifo", "mknod"]) {
        return;
    }
    let d = Scratch::new("hostile-ext");
    for (name, args) in [
        ("ext4", &["-O", "^has_journal"][..]),
        ("indirect", &["-O", "^extent,^64bit,^has_journal"][..]),
        (
            "inline",
            &["-O", "inline_data,^has_journal", "-I", "256"][..],
        ),
    ] {
        let img_path = ext_image(&d, name, args);
        let img = std::fs::read(&img_path).unwrap();
        let t = Instant::now();
        mutate_fields(&img, 1024, SUPER_FIELDS, &format!("{name} superblock"));
        let desc_size = if name == "indirect" { 32 } else { 64 };
        let desc: Vec<(usize, usize)> = DESC_FIELDS
            .iter()
            .copied()
            .filter(|(o, _)| *o < desc_size)
            .collect();
        mutate_fields(&img, 2048, &desc, &format!("{name} group descriptor"));
        for path in [
            "/",
            "/a",
            "/fragmented",
            "/a/slow_link",
            "/a/size_1",
            "/many",
        ] {
            let at = inode_offset(&img_path, path, 1024);
            mutate_fields(&img, at, &inode_fields(), &format!("{name} inode {path}"));
        }
        // The root directory's first block: every entry field of its first entries.
        let out = debugfs(&img_path, "bmap <2> 0");
        if let Ok(block) = out.trim().parse::<usize>() {
            let mut fields = Vec::new();
            let mut pos = 0usize;
            let blk = &img[block * 1024..block * 1024 + 1024];
            while pos + 8 <= 1024 && fields.len() < 60 {
                fields.extend([
                    (pos, 4),
                    (pos + 4, 2),
                    (pos + 6, 1),
                    (pos + 7, 1),
                    (pos + 8, 1),
                ]);
                let rec = get(blk, pos + 4, 2) as usize;
                if rec < 8 {
                    break;
                }
                pos += rec;
            }
            mutate_fields(
                &img,
                block * 1024,
                &fields,
                &format!("{name} root directory block"),
            );
        }
        eprintln!("{name}: field mutations in {:?}", t.elapsed());
    }
}

#[test]
fn ext_extent_nodes_and_cycles() {
    if !tools_available(&["mkfs.ext4", "debugfs", "mkfifo", "mknod"]) {
        return;
    }
    let d = Scratch::new("hostile-extent");
    let img_path = ext_image(&d, "ext4", &["-O", "^has_journal"]);
    let img = std::fs::read(&img_path).unwrap();
    // The index node of /fragmented's depth-1 tree (its root's only index entry).
    let out = debugfs(&img_path, "ex /fragmented");
    let line = out.lines().nth(1).unwrap();
    let toks: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(toks[0], "0/", "{out}");
    let node_block: usize = toks[toks.iter().position(|t| *t == "-").unwrap() + 2]
        .parse()
        .unwrap();
    let base = node_block * 1024;
    let mut fields: Vec<(usize, usize)> = vec![(0, 2), (2, 2), (4, 2), (6, 2)];
    for e in 0..8 {
        let o = 12 + e * 12;
        fields.extend([(o, 4), (o + 4, 2), (o + 6, 2), (o + 8, 4)]);
    }
    mutate_fields(&img, base, &fields, "extent leaf");
    // The leaf made an index node pointing at itself.
    let mut m = img.clone();
    set(&mut m, base + 6, 2, 1);
    set(&mut m, base + 12 + 4, 4, node_block as u64);
    set(&mut m, base + 12 + 8, 2, 0);
    let fs = vdisk_fs::open(mem_reader(m)).unwrap();
    let f = vdisk_fs::resolve(fs.as_ref(), b"/fragmented", false).unwrap();
    let t = Instant::now();
    assert!(vdisk_fs::read_all(fs.as_ref(), &f, 1 << 30).is_err());
    assert!(t.elapsed() < Duration::from_secs(1));

    // A directory entry leading back to the root: listed, not walked forever.
    run(Command::new("debugfs")
        .args(["-w", "-R", "ln <2> /a/b/back_to_root"])
        .arg(&img_path));
    let fs = vdisk_fs::open(common::raw_reader(&img_path)).unwrap();
    let root = fs.root().unwrap();
    let mut n = 0;
    vdisk_fs::walk::walk(fs.as_ref(), &root, b"/", &mut |_, _| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert!(n > 50 && n < 500, "{n} entries walked");
    let back =
        vdisk_fs::resolve(fs.as_ref(), b"/a/b/back_to_root/a/b/back_to_root/a", false).unwrap();
    assert_eq!(
        back.id,
        vdisk_fs::resolve(fs.as_ref(), b"/a", false).unwrap().id
    );
}

#[test]
fn truncated_images() {
    if !tools_available(&["mkfs.ext4", "mkfs.fat", "mcopy", "mkfifo", "mknod"]) {
        return;
    }
    let d = Scratch::new("hostile-trunc");
    let ext = std::fs::read(ext_image(&d, "ext4", &[])).unwrap();
    let fat = std::fs::read(fat_image(&d, "16")).unwrap();
    for img in [ext, fat] {
        let len = img.len();
        for cut in [
            0,
            1,
            511,
            512,
            1024,
            2047,
            2048,
            4096,
            65536,
            len / 4,
            len / 2,
            len - 1024,
            len - 1,
        ] {
            survive(img[..cut].to_vec(), &format!("cut at {cut}"));
        }
    }
}

fn fat_image(d: &Scratch, fat: &str) -> std::path::PathBuf {
    let src = d.join(&format!("fsrc{fat}"));
    std::fs::create_dir_all(src.join("Dir/Sub")).unwrap();
    std::fs::write(src.join("Dir/Sub/file.txt"), common::pattern(1, 5000)).unwrap();
    std::fs::write(src.join("A long file name.bin"), common::pattern(2, 3000)).unwrap();
    std::fs::write(src.join("short.txt"), b"short").unwrap();
    for k in 0..40 {
        std::fs::write(src.join(format!("Dir/entry {k}.txt")), b"x").unwrap();
    }
    let img = d.join(&format!("fat{fat}.img"));
    let sectors: u64 = match fat {
        "12" => 4000,
        "16" => 8192,
        _ => 70_000,
    };
    truncate(&img, sectors * 512);
    run(Command::new("mkfs.fat")
        .args(["-F", fat, "-s", "1", "-n", "LBL"])
        .arg(&img));
    run(Command::new("mcopy")
        .args(["-s", "-i"])
        .arg(&img)
        .arg(src.join("Dir"))
        .arg(src.join("A long file name.bin"))
        .arg(src.join("short.txt"))
        .arg("::"));
    img
}

const BPB_FIELDS: &[(usize, usize)] = &[
    (11, 2),
    (13, 1),
    (14, 2),
    (16, 1),
    (17, 2),
    (19, 2),
    (21, 1),
    (22, 2),
    (32, 4),
    (36, 4),
    (40, 2),
    (44, 4),
    (67, 4),
    (510, 2),
];

#[test]
fn fat_fields_at_extremes_and_loops() {
    if !tools_available(&["mkfs.fat", "mcopy"]) {
        return;
    }
    let d = Scratch::new("hostile-fat");
    for fat in ["12", "16", "32"] {
        let img_path = fat_image(&d, fat);
        let img = std::fs::read(&img_path).unwrap();
        mutate_fields(&img, 0, BPB_FIELDS, &format!("FAT{fat} BPB"));
        let fs = vdisk_fs::open(mem_reader(img.clone())).unwrap();
        let entries = fs.read_dir(&fs.root().unwrap()).unwrap();
        // Every field of the root's 8.3 entries and of the long-name entries before them.
        let mut fields = Vec::new();
        for e in &entries {
            let at = e.node.id as usize;
            fields.extend(
                [(0, 1), (11, 1), (12, 1), (20, 2), (26, 2), (28, 4)].map(|(o, w)| (at + o, w)),
            );
            fields.extend([(0, 1), (11, 1), (13, 1), (1, 2)].map(|(o, w)| (at - 32 + o, w)));
        }
        mutate_fields(&img, 0, &fields, &format!("FAT{fat} directory entries"));
        // The FAT's first entries.
        let l = vdisk_fs::fat::Fat::open(mem_reader(img.clone())).unwrap();
        let lay = l.layout().clone();
        let width = match fat {
            "12" => 2,
            "16" => 2,
            _ => 4,
        };
        let fat_fields: Vec<(usize, usize)> = (0..24)
            .map(|k| (lay.fat_offset as usize + k * width, width))
            .collect();
        mutate_fields(&img, 0, &fat_fields, &format!("FAT{fat} table"));

        // Loops: every FAT entry of the data clusters pointing at cluster 2 (files and directories
        // chain back on themselves).
        let mut m = img.clone();
        for c in 3..60usize {
            match fat {
                "12" => {
                    let o = lay.fat_offset as usize + c + c / 2;
                    let v = u16::from_le_bytes([m[o], m[o + 1]]);
                    let nv = if c & 1 == 1 {
                        (v & 0x000F) | (2 << 4)
                    } else {
                        (v & 0xF000) | 2
                    };
                    m[o..o + 2].copy_from_slice(&nv.to_le_bytes());
                }
                "16" => set(&mut m, lay.fat_offset as usize + c * 2, 2, 2),
                _ => set(&mut m, lay.fat_offset as usize + c * 4, 4, 2),
            }
        }
        survive(m, &format!("FAT{fat} looping chains"));
        // A file whose chain loops on itself and whose size says it is as large as can be.
        let file = entries
            .iter()
            .find(|e| e.node.kind == FileKind::Regular && e.node.size > 1000)
            .unwrap();
        let mut m = img.clone();
        set(&mut m, file.node.id as usize + 28, 4, u64::from(u32::MAX));
        let first = get(&m, file.node.id as usize + 26, 2) as usize;
        match fat {
            "12" => {
                let o = lay.fat_offset as usize + first + first / 2;
                let v = u16::from_le_bytes([m[o], m[o + 1]]);
                let f = first as u16;
                let nv = if first & 1 == 1 {
                    (v & 0x000F) | (f << 4)
                } else {
                    (v & 0xF000) | f
                };
                m[o..o + 2].copy_from_slice(&nv.to_le_bytes());
            }
            "16" => set(&mut m, lay.fat_offset as usize + first * 2, 2, first as u64),
            _ => set(&mut m, lay.fat_offset as usize + first * 4, 4, first as u64),
        }
        let fs = vdisk_fs::open(mem_reader(m)).unwrap();
        let node = fs.lookup(&fs.root().unwrap(), &file.name).unwrap().unwrap();
        let t = Instant::now();
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        let res = loop {
            match fs.read(&node, off, &mut buf) {
                Ok(n) => off += n as u64,
                Err(e) => break e,
            }
        };
        assert!(res.to_string().contains("loop"), "FAT{fat}: {res}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "FAT{fat}: {:?}",
            t.elapsed()
        );
    }
}

/// A slow symlink whose block holds a NUL inside its target: read up to that NUL, as the
/// kernel's `readlink` returns it (ext4_get_link does not check the block for NULs; the VFS
/// copies the string).
#[test]
fn ext_slow_symlink_with_a_nul() {
    if !tools_available(&["mkfs.ext4", "debugfs"]) {
        return;
    }
    let d = Scratch::new("ext-link-nul");
    let img = ext_image(&d, "link-nul", &["-t", "ext4"]);
    let bytes = std::fs::read(&img).unwrap();
    let read_link = |bytes: Vec<u8>| {
        let fs = vdisk_fs::open(mem_reader(bytes)).unwrap();
        let n = vdisk_fs::resolve(fs.as_ref(), b"/a/slow_link", false).unwrap();
        fs.read_link(&n)
    };
    let whole = read_link(bytes.clone()).unwrap();
    assert!(whole.len() > 60 && !whole.contains(&0), "a slow symlink");
    let out = debugfs(&img, "bmap /a/slow_link 0");
    let block: usize = out.trim().parse().unwrap();
    let mut damaged = bytes;
    damaged[block * 1024 + 7] = 0;
    assert_eq!(read_link(damaged).unwrap(), &whole[..7]);
}
