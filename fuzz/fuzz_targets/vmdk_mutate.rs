//! VMDK written in place on hostile images: the `convert -n` writer (`open_writer_in`: data at the
//! start, data ending at the disk's end, an unaligned write, a zero run, data across a grain-table
//! boundary, data then zeros over half of it, and a `finish` with no write), each followed by
//! `finish`, on in-memory copies of the files. The first byte picks the operation, the second its
//! size; the rest is the image: one file (monolithicSparse), or as `vmdk_extents` a descriptor, the
//! line `#EXTENT-DATA`, then the bytes each extent file it names starts with.
//!
//! Each must fail with an error or leave an image that opens and reads within the harness's bounds.
//! When the input checked sound (no corruption or check error) and the writes succeeded, the result
//! must check sound too, read back what was written and the same bytes as before around it; the
//! hosted sparse headers must be unchanged and the descriptor changed in its `CID=` line only; a
//! `finish` with no write must leave every file as it was.
//!
//! Inputs where a write would make a file larger than [`MAX_REACH`] are skipped (the in-memory
//! store is not sparse; a new grain goes at the end of its file rounded up to a grain, or past the
//! metadata area, which a header can put anywhere): see [`Capped`].
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use vdisk_core::storage::{resolve_relative, FileOpener};
use vdisk_core::{Error, ImageReader, MemStorage, Payload, Result, Storage};
use vdisk_fuzz::{exercise, guest_bytes, sound, split_at_marker};
use vdisk_vmdk::descriptor::ExtentType;

/// Number of operations the first byte picks from.
const OPS: u8 = 7;

/// Step of a write: the second byte picks 1..=256 of these.
const WRITE_STEP: u64 = 4096;

/// Bytes compared before and after a write on each side of it.
const WINDOW: u64 = 256 << 10;

/// Largest file a write may make; inputs where one would grow further are skipped.
const MAX_REACH: u64 = 48 << 20;

const MAIN: &str = "dir/fuzz.vmdk";

/// An in-memory file that refuses (and records) any write or length past [`MAX_REACH`].
struct Capped {
    mem: MemStorage,
    over: Arc<AtomicBool>,
}

impl Capped {
    fn admit(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_some_and(|e| e <= MAX_REACH) {
            return Ok(());
        }
        self.over.store(true, Ordering::Relaxed);
        Err(Error::invalid("fuzz store: past MAX_REACH"))
    }
}

impl Storage for Capped {
    fn path(&self) -> &Path {
        self.mem.path()
    }
    fn len(&self) -> Result<u64> {
        self.mem.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        self.mem.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.admit(offset, buf.len() as u64)?;
        self.mem.write_at(buf, offset)
    }
    fn write_zeros(&self, offset: u64, len: u64) -> Result<()> {
        self.admit(offset, len)?;
        self.mem.write_zeros(offset, len)
    }
    fn set_len(&self, len: u64) -> Result<()> {
        self.admit(len, 0)?;
        self.mem.set_len(len)
    }
}

/// One image's files: the main one, and every extent file it names (each starting with the same
/// bytes), served as the same store whenever asked for again.
struct Files {
    extent: Vec<u8>,
    over: Arc<AtomicBool>,
    open: Mutex<HashMap<PathBuf, Arc<Capped>>>,
}

impl Files {
    fn new(main: &[u8], extent: &[u8]) -> Arc<Files> {
        let f = Arc::new(Files {
            extent: extent.to_vec(),
            over: Arc::new(AtomicBool::new(false)),
            open: Mutex::new(HashMap::new()),
        });
        f.insert(Path::new(MAIN), main);
        f
    }

    fn insert(&self, path: &Path, bytes: &[u8]) -> Arc<Capped> {
        let s = Arc::new(Capped {
            mem: MemStorage::new(&path.to_string_lossy(), bytes.to_vec()),
            over: Arc::clone(&self.over),
        });
        if let Ok(mut m) = self.open.lock() {
            m.insert(path.to_path_buf(), Arc::clone(&s));
        }
        s
    }

    fn get(&self, path: &Path) -> Option<Arc<Capped>> {
        self.open.lock().ok()?.get(path).cloned()
    }

    fn main(&self) -> Arc<dyn Storage> {
        match self.get(Path::new(MAIN)) {
            Some(s) => s,
            None => self.insert(Path::new(MAIN), &[]),
        }
    }

    /// Every file opened so far and its contents.
    fn contents(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let m = self.open.lock().map(|m| m.clone()).unwrap_or_default();
        let mut v: Vec<_> = m.into_iter().map(|(p, s)| (p, s.mem.contents())).collect();
        v.sort();
        v
    }
}

impl FileOpener for Files {
    fn open(&self, path: &Path) -> Result<Arc<dyn Storage>> {
        Ok(match self.get(path) {
            Some(s) => s,
            None => self.insert(path, &self.extent),
        })
    }
}

fn open(files: &Arc<Files>) -> Option<vdisk_vmdk::VmdkReader> {
    vdisk_vmdk::open(files.main(), Arc::clone(files) as Arc<dyn FileOpener>).ok()
}

/// One write: `len` bytes of `byte` at `at` (zeros with `Payload::Zero` when `byte` is 0).
struct Write {
    at: u64,
    len: u64,
    byte: u8,
}

/// Runs `writes` through one writer, then `finish`.
fn run(files: &Arc<Files>, writes: &[Write]) -> bool {
    let opener = Arc::clone(files) as Arc<dyn FileOpener>;
    let Ok(mut w) = vdisk_vmdk::open_writer_in(files.main(), opener) else {
        return false;
    };
    for wr in writes {
        let Ok(n) = usize::try_from(wr.len) else {
            return false;
        };
        let p = if wr.byte == 0 {
            Payload::Zero(wr.len)
        } else {
            Payload::data(vec![wr.byte; n])
        };
        if w.write(wr.at, p).is_err() {
            return false;
        }
    }
    w.finish().is_ok()
}

/// Bytes covered by one grain table of the first hosted sparse file (the image, or the bytes its
/// extents are served with), if there is one.
fn table_span(image: &[u8], extent: &[u8]) -> Option<u64> {
    [image, extent].iter().find_map(|b| {
        let s = MemStorage::new("h", b.get(..512)?.to_vec());
        let h = vdisk_vmdk::sparse::read_header(&s, 0).ok()?;
        Some(h.gt_coverage_bytes()).filter(|c| *c > 0)
    })
}

/// Whether `old` and `new` differ only inside lines starting `CID=` (same length).
fn only_cid_changed(old: &[u8], new: &[u8]) -> bool {
    old.len() == new.len()
        && (0..old.len()).filter(|i| old[*i] != new[*i]).all(|i| {
            let start = old[..i]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |p| p + 1);
            old[start..].starts_with(b"CID=")
        })
}

/// The embedded descriptor's bytes of a hosted sparse file.
fn embedded(file: &[u8]) -> Option<&[u8]> {
    let s = MemStorage::new("h", file.get(..512)?.to_vec());
    let h = vdisk_vmdk::sparse::read_header(&s, 0).ok()?;
    let a = usize::try_from(h.descriptor_offset.checked_mul(512)?).ok()?;
    let n = usize::try_from(h.descriptor_size.checked_mul(512)?).ok()?;
    file.get(a.min(file.len())..a.saturating_add(n).min(file.len()))
}

/// The files read as hosted sparse extents: the image itself, or the SPARSE extents its descriptor
/// names (a flat extent's file may start with `KDMV` too, and writes rewrite it).
fn sparse_files(image: &[u8], r: &vdisk_vmdk::VmdkReader) -> Vec<PathBuf> {
    if image.starts_with(b"KDMV") {
        return vec![PathBuf::from(MAIN)];
    }
    r.descriptor()
        .extents
        .iter()
        .filter(|l| l.kind == ExtentType::Sparse)
        .filter_map(|l| {
            Some(resolve_relative(
                Path::new(MAIN),
                l.file.as_ref()?.to_path(),
            ))
        })
        .collect()
}

/// Checks the files after writes that succeeded on a sound image: sparse headers as they were, the
/// descriptor changed in its CID only; with no write, every file as it was.
fn files_kept(
    before: &[(PathBuf, Vec<u8>)],
    after: &[(PathBuf, Vec<u8>)],
    sparse: &[PathBuf],
    wrote: bool,
) {
    for (p, old) in before {
        let Some((_, new)) = after.iter().find(|(q, _)| q == p) else {
            continue;
        };
        if !wrote {
            assert!(old == new, "a finish with no write changed {}", p.display());
        } else if sparse.contains(p) {
            assert!(
                new.get(..512) == old.get(..512) || old.len() < 512,
                "a write changed the sparse header of {}",
                p.display()
            );
            if let (Some(o), Some(n)) = (embedded(old), embedded(new)) {
                assert!(
                    only_cid_changed(o, n),
                    "a write changed the embedded descriptor of {} beyond its CID",
                    p.display()
                );
            }
        } else if p == Path::new(MAIN) {
            assert!(
                only_cid_changed(old, new),
                "a write changed the descriptor beyond its CID"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [op, arg, input @ ..] = data else {
        return;
    };
    let (image, extent) = split_at_marker(input, b"\n#EXTENT-DATA\n");
    let old_files = Files::new(image, extent);
    let Some(before) = open(&old_files) else {
        return;
    };
    let size = before.virtual_size();
    if size == 0 {
        return;
    }
    let was_sound = sound(&before);

    let step = u64::from(*arg) + 1;
    let op = op % OPS;
    let len = (step * WRITE_STEP).min(size);
    let writes = match op {
        0 => vec![Write {
            at: 0,
            len,
            byte: 0xa5,
        }],
        1 => {
            let len = (step * WRITE_STEP / 8).min(size);
            vec![Write {
                at: size - len,
                len,
                byte: 0x5a,
            }]
        }
        2 => {
            // Odd length at an odd sector offset plus 3 bytes: partial grains at both ends.
            let len = (step * 777).min(size);
            let at = ((size / 3) | 512).saturating_add(3).min(size - len);
            vec![Write {
                at,
                len,
                byte: 0x69,
            }]
        }
        3 => vec![Write {
            at: (size / 2) & !511,
            len: len.min(size - ((size / 2) & !511)),
            byte: 0,
        }],
        4 => {
            let span = table_span(image, extent).unwrap_or(size / 2);
            let at = span.min(size).saturating_sub(len / 2).min(size - len);
            vec![Write {
                at,
                len,
                byte: 0x3c,
            }]
        }
        5 => {
            let at = (size / 4) & !511;
            let len = len.min(size - at);
            vec![
                Write {
                    at,
                    len,
                    byte: 0x77,
                },
                Write {
                    at,
                    len: len / 2,
                    byte: 0,
                },
            ]
        }
        _ => vec![],
    };

    let files = Files::new(image, extent);
    let ok = run(&files, &writes);
    if files.over.load(Ordering::Relaxed) {
        return;
    }
    let after = open(&files);
    if was_sound && ok {
        let sparse = sparse_files(image, &before);
        files_kept(
            &old_files.contents(),
            &files.contents(),
            &sparse,
            !writes.is_empty(),
        );
    }
    let Some(r) = after else {
        assert!(
            !(was_sound && ok),
            "operation {op} left a sound image that no longer opens"
        );
        return;
    };
    exercise(&r);
    if !(was_sound && ok) {
        return;
    }
    assert_eq!(r.virtual_size(), size, "operation {op} changed the size");
    assert!(
        sound(&r),
        "operation {op} left a sound image with corruptions: {:?}",
        r.check().map(|c| c.messages)
    );
    // What each byte near the writes must read: the last write over it, else what it read before.
    let lo = writes
        .iter()
        .map(|w| w.at)
        .min()
        .unwrap_or(0)
        .saturating_sub(WINDOW);
    let hi = writes
        .iter()
        .map(|w| w.at + w.len)
        .max()
        .unwrap_or(0)
        .saturating_add(WINDOW)
        .min(size);
    let (Some(mut want), Some(now)) = (
        guest_bytes(&before, lo, hi - lo),
        guest_bytes(&r, lo, hi - lo),
    ) else {
        return;
    };
    for w in &writes {
        let a = (w.at - lo) as usize;
        want[a..a + w.len as usize].fill(w.byte);
    }
    if let Some(i) = (0..want.len()).find(|i| want[*i] != now[*i]) {
        panic!(
            "operation {op}: byte {} reads {:#x}, expected {:#x}",
            lo + i as u64,
            now[i],
            want[i]
        );
    }
});
