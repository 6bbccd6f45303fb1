//! What vdisk-fs says of an XFS filesystem: its tree, and its reads checked every way.

use std::collections::{BTreeMap, HashMap};
use vdisk_fs::{DirEntry, FileKind, Filesystem, Node};

// ---------------------------------------------------------------------------------------------
// What vdisk-fs says.

/// Every (path, node) under the root, and each directory's entries by inode.
pub type Ours = (BTreeMap<Vec<u8>, Node>, BTreeMap<u64, Vec<DirEntry>>);

pub fn our_tree(fs: &dyn Filesystem, what: &str) -> Ours {
    let mut all = BTreeMap::new();
    let mut dirs = BTreeMap::new();
    let root = fs.root().unwrap();
    let mut todo = vec![(Vec::new(), root)];
    while let Some((path, dir)) = todo.pop() {
        if dirs.contains_key(&dir.id) {
            continue;
        }
        let entries = fs
            .read_dir(&dir)
            .unwrap_or_else(|e| panic!("{what}: read_dir {}: {e}", String::from_utf8_lossy(&path)));
        for e in &entries {
            assert!(
                e.name != b"." && e.name != b".." && !e.name.is_empty(),
                "{what}: entry {:?} in {}",
                String::from_utf8_lossy(&e.name),
                String::from_utf8_lossy(&path)
            );
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(&e.name);
            if e.node.kind == FileKind::Directory {
                todo.push((p.clone(), e.node.clone()));
            }
            assert!(
                all.insert(p.clone(), e.node.clone()).is_none(),
                "{what}: {} listed twice",
                String::from_utf8_lossy(&p)
            );
        }
        dirs.insert(dir.id, entries);
    }
    (all, dirs)
}

pub fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// The first offset at which two byte strings differ.
pub fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i))
}

/// Reads a whole file in chunks of `chunk` bytes, each read filling the buffer or reaching
/// the end.
pub fn read_chunks(fs: &dyn Filesystem, n: &Node, chunk: usize, what: &str) -> Vec<u8> {
    let mut got = Vec::with_capacity(n.size as usize);
    let mut buf = vec![0xA5u8; chunk];
    loop {
        let off = got.len() as u64;
        let k = fs
            .read(n, off, &mut buf)
            .unwrap_or_else(|e| panic!("{what}: read({off}, {chunk}): {e}"));
        assert_eq!(
            k as u64,
            (chunk as u64).min(n.size.saturating_sub(off)),
            "{what}: read({off}, {chunk}) returned {k} bytes"
        );
        if k == 0 {
            return got;
        }
        got.extend_from_slice(&buf[..k]);
    }
}

/// Checks every way of reading a file: chunks of 65537 bytes and of 4097 (each read filling the
/// buffer or reaching the end), `read_all`, a read across the end, reads at and past the end.
pub fn check_reads(fs: &dyn Filesystem, n: &Node, want: &[u8], what: &str) {
    assert_eq!(n.size, want.len() as u64, "{what}: size");
    for chunk in [65537usize, 4097] {
        let got = read_chunks(fs, n, chunk, what);
        if let Some(i) = first_diff(&got, want) {
            panic!(
                "{what}: bytes differ at offset {i} (read in chunks of {chunk}; {} bytes read, {} expected): got {:02x?}, expected {:02x?}",
                got.len(),
                want.len(),
                &got[i..(i + 16).min(got.len())],
                &want[i..(i + 16).min(want.len())]
            );
        }
    }
    let all = vdisk_fs::read_all(fs, n, 1 << 30).unwrap();
    assert!(all == want, "{what}: read_all");
    let mut buf = [0x5Au8; 9];
    let size = want.len() as u64;
    for off in [size, size + 1, size + 65537, u64::MAX / 2] {
        assert_eq!(
            fs.read(n, off, &mut buf)
                .unwrap_or_else(|e| panic!("{what}: read past the end at {off}: {e}")),
            0,
            "{what}: read past the end at {off}"
        );
    }
    if size >= 3 {
        let k = fs.read(n, size - 3, &mut buf).unwrap();
        assert_eq!(
            &buf[..k],
            &want[want.len() - 3..],
            "{what}: read across the end"
        );
    }
    if size > 10_000 {
        let off = size / 3 + 1;
        let mut b = vec![0u8; 4099];
        let k = fs.read(n, off, &mut b).unwrap();
        assert_eq!(
            &b[..k],
            &want[off as usize..(off as usize + 4099).min(want.len())],
            "{what}: read(4099 at {off})"
        );
    }
}

/// Looks up entries of each directory (all of small ones, a sample of big ones) and a name
/// that is not there; returns how many lookups found their node.
pub fn check_lookups(fs: &dyn Filesystem, ours: &Ours, what: &str) -> usize {
    let by_id: HashMap<u64, &Node> = ours.0.values().map(|n| (n.id, n)).collect();
    let root = fs.root().unwrap();
    let mut found = 0;
    for (dir_id, entries) in &ours.1 {
        let dir = if *dir_id == root.id {
            root.clone()
        } else {
            (*by_id[dir_id]).clone()
        };
        let step = if entries.len() > 100 { 37 } else { 1 };
        let mut sample: Vec<&DirEntry> = entries.iter().step_by(step).collect();
        sample.extend(entries.last());
        for e in sample {
            let got = fs
                .lookup(&dir, &e.name)
                .unwrap_or_else(|err| panic!("{what}: lookup {}: {err}", show(&e.name)));
            assert_eq!(
                got.as_ref(),
                Some(&e.node),
                "{what}: lookup {} in directory {dir_id}",
                show(&e.name)
            );
            found += 1;
        }
        for missing in [
            &b"no-such-entry"[..],
            b"entry-with-a-forty-byte-long-name-99999",
        ] {
            assert_eq!(
                fs.lookup(&dir, missing).unwrap(),
                None,
                "{what}: lookup of {} in directory {dir_id}",
                show(missing)
            );
        }
    }
    found
}
