//! debugfs and dumpe2fs as oracles: directory listings (`ls -p`), inode details (`stat`), file
//! and slow symlink contents (`dump`), run in batches (`debugfs -f`) with inodes named by
//! number so that no name needs quoting; and the statvfs numbers the kernel would derive from
//! what `dumpe2fs` reports of the layout.

use super::run;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::process::Command;

/// Runs `cmds` in one `debugfs -f`; returns each command's output.
pub fn batch(img: &Path, cmds: &[String]) -> Vec<Vec<u8>> {
    let script = img.with_extension(format!("cmds{}", cmds.len()));
    std::fs::write(&script, cmds.join("\n") + "\n").unwrap();
    let out = run(Command::new("debugfs").arg("-f").arg(&script).arg(img));
    let mut res: Vec<Vec<u8>> = Vec::new();
    let mut next = 0usize;
    for line in out.stdout.split(|b| *b == b'\n') {
        if next < cmds.len() && line == format!("debugfs: {}", cmds[next]).as_bytes() {
            res.push(Vec::new());
            next += 1;
            continue;
        }
        if let Some(cur) = res.last_mut() {
            cur.extend_from_slice(line);
            cur.push(b'\n');
        }
    }
    assert_eq!(
        res.len(),
        cmds.len(),
        "debugfs output did not echo every command"
    );
    res
}

/// One line of `ls -p`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsEntry {
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub name: Vec<u8>,
    /// Empty for directories.
    pub size: Option<u64>,
}

fn parse_ls(out: &[u8]) -> Vec<LsEntry> {
    let mut v = Vec::new();
    for line in out.split(|b| *b == b'\n') {
        if line.len() < 2 || line[0] != b'/' {
            continue;
        }
        let f: Vec<&[u8]> = line.split(|b| *b == b'/').collect();
        assert_eq!(f.len(), 8, "ls -p line {:?}", String::from_utf8_lossy(line));
        let num = |s: &[u8]| String::from_utf8_lossy(s).parse::<u64>().unwrap();
        v.push(LsEntry {
            ino: num(f[1]),
            mode: u32::from_str_radix(&String::from_utf8_lossy(f[2]), 8).unwrap(),
            uid: num(f[3]) as u32,
            gid: num(f[4]) as u32,
            name: f[5].to_vec(),
            size: (!f[6].is_empty()).then(|| num(f[6])),
        });
    }
    v
}

/// Every directory's `ls -p` (without `.` and `..`), by inode, from the root down.
pub fn ls_tree(img: &Path) -> BTreeMap<u64, Vec<LsEntry>> {
    let mut tree = BTreeMap::new();
    let mut level = vec![2u64];
    while !level.is_empty() {
        let cmds: Vec<String> = level.iter().map(|i| format!("ls -p <{i}>")).collect();
        let outs = batch(img, &cmds);
        let mut next = VecDeque::new();
        for (ino, out) in level.iter().zip(outs) {
            let entries: Vec<LsEntry> = parse_ls(&out)
                .into_iter()
                .filter(|e| e.ino != 0 && e.name != b"." && e.name != b"..")
                .collect();
            for e in &entries {
                if e.mode & 0o170000 == 0o040000 && !tree.contains_key(&e.ino) {
                    next.push_back(e.ino);
                }
            }
            tree.insert(*ino, entries);
        }
        let mut n: Vec<u64> = next.into_iter().collect();
        n.sort();
        n.dedup();
        n.retain(|i| !tree.contains_key(i));
        level = n;
    }
    tree
}

/// What `stat` says of an inode.
#[derive(Debug, Clone, Default)]
pub struct Stat {
    pub links: u32,
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub fast_link: Option<Vec<u8>>,
    pub rdev: Option<(u32, u32)>,
    /// `i_flags`.
    pub flags: u32,
}

fn field(text: &str, key: &str) -> Option<u64> {
    let i = text.find(key)? + key.len();
    text[i..].split_whitespace().next()?.parse().ok()
}

fn parse_stat(out: &[u8]) -> Stat {
    let text = String::from_utf8_lossy(out);
    let mut s = Stat {
        links: field(&text, "Links:").unwrap() as u32,
        size: field(&text, "Size:").unwrap(),
        uid: field(&text, "User:").unwrap() as u32,
        gid: field(&text, "Group:").unwrap() as u32,
        ..Default::default()
    };
    if let Some(i) = text.find("Flags: 0x") {
        let h = text[i + 9..].split_whitespace().next().unwrap();
        s.flags = u32::from_str_radix(h, 16).unwrap();
    }
    for line in out.split(|b| *b == b'\n') {
        let l = String::from_utf8_lossy(line);
        if let Some(rest) = l.trim_start().strip_prefix("mtime: 0x") {
            let hex = rest.split_whitespace().next().unwrap();
            let (sec, extra) = match hex.split_once(':') {
                Some((a, b)) => (a, u32::from_str_radix(b, 16).unwrap()),
                None => (hex, 0),
            };
            let base = u32::from_str_radix(sec, 16).unwrap() as i32 as i64;
            s.mtime = base + (i64::from(extra & 3) << 32);
            s.mtime_nsec = extra >> 2;
        }
        if let Some(i) = l.find("Device major/minor number: ") {
            let t = &l[i + 27..];
            let mm = t.split_whitespace().next().unwrap();
            let (a, b) = mm.split_once(':').unwrap();
            s.rdev = Some((a.parse().unwrap(), b.parse().unwrap()));
        }
        if line.starts_with(b"Fast link dest: \"") {
            let start = 17;
            let end = line.iter().rposition(|b| *b == b'"').unwrap();
            s.fast_link = Some(line[start..end].to_vec());
        }
    }
    s
}

/// `stat` of each inode.
pub fn stat_all(img: &Path, inos: &[u64]) -> HashMap<u64, Stat> {
    let cmds: Vec<String> = inos.iter().map(|i| format!("stat <{i}>")).collect();
    let outs = batch(img, &cmds);
    inos.iter()
        .copied()
        .zip(outs.iter().map(|o| parse_stat(o)))
        .collect()
}

/// `dump` of each inode into `dir/INO`; returns the contents.
pub fn dump_all(img: &Path, inos: &[u64], dir: &Path) -> HashMap<u64, Vec<u8>> {
    let cmds: Vec<String> = inos
        .iter()
        .map(|i| format!("dump <{i}> {}", dir.join(i.to_string()).display()))
        .collect();
    batch(img, &cmds);
    inos.iter()
        .map(|i| (*i, std::fs::read(dir.join(i.to_string())).unwrap()))
        .collect()
}

/// statvfs of the mounted filesystem as the ext4 driver computes it, from the layout
/// `dumpe2fs` reports: block count less the blocks before the first group, each group's
/// superblock copy, descriptor and reserved GDT blocks, bitmaps and inode table, and the
/// journal; free counts summed over the groups; the root reserve and, with extents, the
/// driver's own (2% of the blocks, at most 4096).
pub fn expected_usage(img: &Path) -> vdisk_fs::Usage {
    let out = run(Command::new("dumpe2fs").arg(img));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let head = |key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|r| r.split_whitespace().next().unwrap().parse().unwrap())
    };
    let blocks = head("Block count:").unwrap();
    let first = head("First block:").unwrap();
    let bs = head("Block size:").unwrap();
    let itb = head("Inode blocks per group:").unwrap();
    let reserved = head("Reserved block count:").unwrap();
    let inodes = head("Inode count:").unwrap();
    let journal = head("Total journal blocks:").unwrap_or(0);
    let features = text
        .lines()
        .find(|l| l.starts_with("Filesystem features:"))
        .unwrap();
    let extents = features.split_whitespace().any(|f| f == "extent");
    let range_len = |s: &str| -> u64 {
        let r = s.split_whitespace().next().unwrap().trim_end_matches(',');
        match r.split_once('-') {
            Some((a, b)) => b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1,
            None => 1,
        }
    };
    let (mut groups, mut overhead, mut free, mut free_inodes) = (0u64, first + journal, 0u64, 0u64);
    for l in text.lines() {
        let l = l.trim();
        if l.starts_with("Group ") && l.contains("(Blocks ") {
            groups += 1;
        }
        if l.contains("superblock at ") {
            overhead += 1;
        }
        if let Some(i) = l.find("Group descriptors at ") {
            overhead += range_len(&l[i + 21..]);
        }
        if let Some(i) = l.find("Group descriptor at ") {
            overhead += range_len(&l[i + 20..]);
        }
        if let Some(r) = l.strip_prefix("Reserved GDT blocks at ") {
            overhead += range_len(r);
        }
        if l.contains(" free blocks, ") && l.contains(" free inodes") {
            let nums: Vec<u64> = l
                .split(", ")
                .map(|p| p.split_whitespace().next().unwrap().parse().unwrap())
                .collect();
            free += nums[0];
            free_inodes += nums[1];
        }
    }
    overhead += groups * (itb + 2);
    let resv = if extents { (blocks / 50).min(4096) } else { 0 };
    vdisk_fs::Usage {
        block_size: bs,
        blocks: blocks - overhead,
        free_blocks: free,
        available_blocks: free.saturating_sub(reserved + resv),
        inodes: Some(inodes),
        free_inodes: Some(free_inodes),
    }
}

/// statvfs of the image mounted read-only through a loop device, when this machine allows
/// mounting (root, loop devices); `None` otherwise. A second oracle for `usage`, optional.
pub fn mounted_usage(img: &Path, fstype: &str) -> Option<vdisk_fs::Usage> {
    let mnt = img.with_extension("mnt");
    std::fs::create_dir_all(&mnt).ok()?;
    let ok = Command::new("mount")
        .args(["-t", fstype, "-o", "loop,ro"])
        .arg(img)
        .arg(&mnt)
        .output()
        .ok()?
        .status
        .success();
    if !ok {
        eprintln!(
            "note: cannot mount {}; the mounted statvfs oracle is skipped",
            img.display()
        );
        return None;
    }
    let out = Command::new("stat")
        .args(["-f", "-c", "%S %b %f %a %c %d"])
        .arg(&mnt)
        .output();
    let _ = Command::new("umount").arg(&mnt).status();
    let out = out.ok()?;
    let n: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    Some(vdisk_fs::Usage {
        block_size: n[0],
        blocks: n[1],
        free_blocks: n[2],
        available_blocks: n[3],
        inodes: (n[4] != 0).then_some(n[4]),
        free_inodes: (n[4] != 0).then_some(n[5]),
    })
}

/// The depth of an inode's extent tree, from `ex` (its first line's level "0/ N").
pub fn extent_depth(img: &Path, ino: u64) -> u32 {
    let out = &batch(img, &[format!("ex <{ino}>")])[0];
    let text = String::from_utf8_lossy(out);
    let line = text.lines().nth(1).expect("ex output");
    let level = line.split_whitespace().nth(1).unwrap();
    level.parse().unwrap()
}
