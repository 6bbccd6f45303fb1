//! Shared by the hostile-input tests: a client that lists and reads everything reachable in a
//! damaged filesystem within bounds, and the values fields are set to.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vdisk_core::{ImageReader, MemStorage};
use vdisk_fs::{FileKind, Filesystem, Node};

pub fn mem_reader(bytes: Vec<u8>) -> Arc<dyn ImageReader> {
    Arc::new(vdisk_raw::open(MemStorage::new("mutant", bytes).shared()).unwrap())
}

/// Lists and reads everything reachable, ignoring errors; returns how many things it did.
pub fn explore(fs: &dyn Filesystem) -> usize {
    let _ = (fs.usage(), fs.label(), fs.uuid(), fs.kind());
    let Ok(root) = fs.root() else { return 0 };
    let mut seen = HashSet::new();
    let mut todo: Vec<(Vec<u8>, Node, usize)> = vec![(b"/".to_vec(), root, 0)];
    let mut ops = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    while let Some((path, dir, depth)) = todo.pop() {
        if !seen.insert(dir.id) || depth > 64 || ops > 20_000 {
            continue;
        }
        let Ok(entries) = fs.read_dir(&dir) else {
            continue;
        };
        for e in entries {
            ops += 1;
            let mut p = path.clone();
            if p.len() > 1 {
                p.push(b'/');
            }
            p.extend_from_slice(&e.name);
            let _ = fs.lookup(&dir, &e.name);
            match e.node.kind {
                FileKind::Directory => todo.push((p, e.node, depth + 1)),
                FileKind::Regular => {
                    let mut off = 0u64;
                    while off < 4 << 20 {
                        match fs.read(&e.node, off, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => off += n as u64,
                        }
                    }
                    let _ = fs.read(&e.node, e.node.size.saturating_sub(3), &mut buf[..7]);
                }
                FileKind::Symlink => {
                    let _ = fs.read_link(&e.node);
                    let _ = vdisk_fs::resolve(fs, &p, true);
                }
                _ => {}
            }
        }
    }
    let _ = vdisk_fs::walk::walk(
        fs,
        &fs.root().unwrap_or_else(|_| dummy()),
        b"/",
        &mut |_, _| Ok(()),
    );
    ops
}

fn dummy() -> Node {
    Node {
        id: 2,
        kind: FileKind::Directory,
        size: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        nlink: 0,
        mtime: 0,
        mtime_nsec: 0,
        rdev: None,
    }
}

/// Opens and explores a mutant within a time bound.
pub fn survive(bytes: Vec<u8>, what: &str) {
    survive_reader(mem_reader(bytes), what);
}

/// Opens and explores a mutant device within a time bound.
pub fn survive_reader(dev: Arc<dyn ImageReader>, what: &str) {
    let t = Instant::now();
    if let Ok(fs) = vdisk_fs::open(dev) {
        explore(fs.as_ref());
    }
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "{what}: took {:?}",
        t.elapsed()
    );
}

/// The values each field is set to: 0, all ones, one more, one less, top bit flipped.
pub fn values(orig: u64, width: usize) -> Vec<u64> {
    let max = if width == 8 {
        u64::MAX
    } else {
        (1u64 << (width * 8)) - 1
    };
    let top = 1u64 << (width * 8 - 1);
    vec![
        0,
        max,
        orig.wrapping_add(1) & max,
        orig.wrapping_sub(1) & max,
        orig ^ top,
    ]
}

/// A device read from `base` with `patch` over it at `at`: a mutant of a large image without
/// copying it.
pub struct Patched {
    pub base: Arc<dyn ImageReader>,
    pub at: u64,
    pub patch: Vec<u8>,
}

impl ImageReader for Patched {
    fn format_name(&self) -> &'static str {
        "raw"
    }

    fn virtual_size(&self) -> u64 {
        self.base.virtual_size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> vdisk_core::Result<()> {
        self.base.read_at(buf, offset)?;
        let end = offset + buf.len() as u64;
        let (p0, p1) = (self.at, self.at + self.patch.len() as u64);
        let (from, to) = (p0.max(offset), p1.min(end));
        if from < to {
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&self.patch[(from - p0) as usize..(to - p0) as usize]);
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, max_len: u64) -> vdisk_core::Result<vdisk_core::Extent> {
        self.base.block_status(offset, max_len)
    }

    fn info(&self) -> vdisk_core::Result<vdisk_core::ImageInfo> {
        self.base.info()
    }
}
