#![allow(dead_code)]
//! Helpers for the mutation tests: fixtures made by qemu (and by vdisk's writer), qemu's view of an
//! image (content, snapshot list, check exit code), and a Storage that fails or drops writes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use vdisk_core::{CreateOptions, FileStorage, Payload, Result, Storage};
use vdisk_testutil::*;

/// A qemu-made image: v3 (or `opts`), 64 KiB clusters unless given, with data, zeros, a compressed
/// cluster written by qemu-io and a hole.
pub fn qemu_fixture(dir: &Scratch, name: &str, opts: &str, size: &str) -> PathBuf {
    let p = dir.join(name);
    let ps = p.to_string_lossy().into_owned();
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([ps.as_str(), size]);
    qemu_img(&args);
    let mut cmds = vec![
        "write -P 0xaa 0 100k",
        "write -P 0x5c 300k 64k",
        "write -c -P 0x33 1M 64k",
        "write -P 0x11 2047k 1k",
    ];
    if !opts.contains("0.10") && !opts.contains("v2") {
        cmds.push("write -z 512k 128k");
    }
    qemu_io("qcow2", &p, &cmds);
    p
}

/// A fixture written by vdisk's own writer: patterned data with a hole and a zero run.
pub fn vdisk_fixture(dir: &Scratch, name: &str, opts: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    let o = CreateOptions::parse(&[opts]).unwrap();
    let mut w = vdisk_qcow2::writer::create(&p, size, &o).unwrap();
    w.write(
        0,
        Payload::data(
            (0..200_000u32)
                .map(|i| (i * 7 % 251) as u8)
                .collect::<Vec<u8>>(),
        ),
    )
    .unwrap();
    w.write(200_000, Payload::Zero(100_000)).unwrap();
    w.write(1 << 20, Payload::data(vec![0x42; 70_000])).unwrap();
    w.finish().unwrap();
    p
}

pub fn copy(p: &Path, name: &str) -> PathBuf {
    let q = p.with_file_name(name);
    std::fs::copy(p, &q).unwrap();
    q
}

pub fn raw(p: &Path) -> Vec<u8> {
    qemu_raw_bytes(p, Some("qcow2"))
}

/// The content of internal snapshot `name` as qemu reads it.
pub fn snapshot_raw(p: &Path, name: &str) -> Vec<u8> {
    let out = p.with_extension(format!("sn-{name}.raw"));
    let sel = format!("snapshot.name={name}");
    qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-l",
        &sel,
        "-O",
        "raw",
        &p.to_string_lossy(),
        &out.to_string_lossy(),
    ]);
    let b = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    b
}

/// qemu's snapshot list without the dates: (id, name, vm-state-size, vm-clock, icount).
pub fn snapshots(p: &Path) -> Vec<String> {
    let info = qemu_info_json(p);
    info["snapshots"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    format!(
                        "{} {} {} {} {} {}",
                        s["id"],
                        s["name"],
                        s["vm-state-size"],
                        s["vm-clock-sec"],
                        s["vm-clock-nsec"],
                        s["icount"]
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `qemu-img check` exit code and output.
pub fn check(p: &Path) -> (i32, String) {
    let o = vdisk_testutil::output_past_forks(
        Command::new("qemu-img")
            .args(["check", "-f", "qcow2"])
            .arg(p),
    );
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Asserts qemu-img check reports no errors and no leaks.
pub fn assert_clean(p: &Path) {
    let (code, out) = check(p);
    assert_eq!(code, 0, "qemu-img check {}:\n{out}", p.display());
}

/// Selected `qemu-img info` fields (virtual size, compat, lazy refcounts, refcount bits).
pub fn info_summary(p: &Path) -> String {
    let i = qemu_info_json(p);
    let d = &i["format-specific"]["data"];
    format!(
        "{} {} {} {} {}",
        i["virtual-size"], d["compat"], d["lazy-refcounts"], d["refcount-bits"], d["corrupt"]
    )
}

/// How [`FailingStorage`] misbehaves from the n-th modifying call (write_at, set_len, sync) on.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// That call and every later one fail with an I/O error.
    Fail,
    /// That call and every later one are silently lost (a crash the program did not see).
    Drop,
}

pub struct FailingStorage {
    inner: FileStorage,
    at: usize,
    fault: Fault,
    calls: AtomicUsize,
}

impl FailingStorage {
    pub fn new(p: &Path, at: usize, fault: Fault) -> Arc<FailingStorage> {
        Arc::new(FailingStorage {
            inner: FileStorage::open_rw(p).unwrap(),
            at,
            fault,
            calls: AtomicUsize::new(0),
        })
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Whether this call may reach the file; Err when it must fail.
    fn gate(&self) -> Result<bool> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n < self.at {
            return Ok(true);
        }
        match self.fault {
            Fault::Fail => Err(vdisk_core::Error::io(
                self.inner.path(),
                0,
                std::io::Error::other("injected failure"),
            )),
            Fault::Drop => Ok(false),
        }
    }
}

impl Storage for FailingStorage {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn len(&self) -> Result<u64> {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        if self.gate()? {
            self.inner.write_at(buf, offset)?;
        }
        Ok(())
    }
    fn set_len(&self, len: u64) -> Result<()> {
        if self.gate()? {
            self.inner.set_len(len)?;
        }
        Ok(())
    }
    fn sync(&self) -> Result<()> {
        if self.gate()? {
            self.inner.sync()?;
        }
        Ok(())
    }
}

/// The observable state of an image: guest content, snapshot list, the content of each snapshot
/// and the info fields of [`info_summary`].
pub fn state(p: &Path) -> (Vec<u8>, Vec<String>, Vec<Vec<u8>>, String) {
    let list = snapshots(p);
    let names: Vec<String> = qemu_info_json(p)["snapshots"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["name"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    let contents = names.iter().map(|n| snapshot_raw(p, n)).collect();
    (raw(p), list, contents, info_summary(p))
}

/// Runs `op` on copies of `fixture` with a fault injected at every modifying call in turn, for both
/// fault kinds, and asserts that after each interrupted run qemu-img check finds no errors (leaks
/// are allowed) and the image is exactly the state before or the state after. Returns the number
/// of fault points (modifying calls of a complete run).
pub fn crash_test(fixture: &Path, op: &dyn Fn(Arc<dyn Storage>) -> Result<()>) -> usize {
    let before = state(fixture);
    let done = copy(fixture, "crash-after.qcow2");
    let counter = FailingStorage::new(&done, usize::MAX, Fault::Fail);
    op(counter.clone()).unwrap();
    let points = counter.calls();
    // Closed before qemu-img looks, as the writing process would be: its locks go with it.
    drop(counter);
    assert!(points >= 2, "an operation writes something and syncs");
    assert_clean(&done);
    let after = state(&done);
    assert!(before != after, "the operation changes the image");
    for fault in [Fault::Fail, Fault::Drop] {
        for at in 1..=points {
            // A lost write leaves the file as a failed one does (nothing later reaches it either);
            // sample the lost-write runs to keep the test quick.
            if matches!(fault, Fault::Drop) && at % 3 != 0 && at != points {
                continue;
            }
            let p = copy(fixture, "crash.qcow2");
            let s = FailingStorage::new(&p, at, fault);
            let r = op(s);
            if matches!(fault, Fault::Fail) {
                assert!(r.is_err(), "{fault:?} at {at} must surface");
            }
            let (code, out) = check(&p);
            assert!(
                code == 0 || code == 3,
                "{fault:?} at {at}/{points}: qemu-img check:\n{out}"
            );
            let now = state(&p);
            assert!(
                now == before || now == after,
                "{fault:?} at {at}/{points}: neither the old nor the new image"
            );
        }
    }
    points
}

/// A path as a string, for command lines.
pub fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// qemu's map as (start, length, present, zero, data, compressed), adjacent ranges of the same
/// kind merged (host offsets left out). qemu reports a data cluster as zero when its host range
/// is a hole in the file, which depends on the file system's block size: with clusters smaller
/// than a block, which clusters share a block with a table depends on the layout, so `strict`
/// false leaves the zero flag of data ranges out.
pub fn map_kinds(p: &Path, strict: bool) -> Vec<(u64, u64, bool, bool, bool, bool)> {
    let mut out: Vec<(u64, u64, bool, bool, bool, bool)> = Vec::new();
    for e in qemu_map_json(p, Some("qcow2")).as_array().unwrap() {
        let b = |k: &str| e[k].as_bool().unwrap_or(false);
        let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        let zero = b("zero") && (strict || !b("data"));
        let kind = (b("present"), zero, b("data"), b("compressed"));
        match out.last_mut() {
            Some(l) if (l.2, l.3, l.4, l.5) == kind && l.0 + l.1 == start => l.1 += len,
            _ => out.push((start, len, kind.0, kind.1, kind.2, kind.3)),
        }
    }
    out
}

/// The `--preallocation` name of `m`.
pub fn mode_name(m: vdisk_qcow2::mutate::Prealloc) -> &'static str {
    match m {
        vdisk_qcow2::mutate::Prealloc::Off => "off",
        vdisk_qcow2::mutate::Prealloc::Metadata => "metadata",
        vdisk_qcow2::mutate::Prealloc::Falloc => "falloc",
        vdisk_qcow2::mutate::Prealloc::Full => "full",
    }
}

/// A qcow2 overlay made by qemu-img over `backing` (format `fmt`), with `opts`, then written by qemu-io `cmds`.
pub fn overlay(
    d: &Scratch,
    name: &str,
    opts: &str,
    backing: &str,
    fmt: &str,
    size: &str,
    cmds: &[&str],
) -> std::path::PathBuf {
    let p = d.join(name);
    let mut args = vec!["create", "-q", "-f", "qcow2", "-b", backing, "-F", fmt];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    let ps = s(&p);
    args.extend([ps.as_str(), size]);
    qemu_img(&args);
    if !cmds.is_empty() {
        qemu_io("qcow2", &p, cmds);
    }
    p
}

/// Sets the refcount (16-bit) of host cluster `c` in the first refcount block of a qemu image.
pub fn poke_refcount(p: &Path, c: u64, v: u16) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let mut h = [0u8; 64];
    f.read_exact_at(&mut h, 0).unwrap();
    let rt = u64::from_be_bytes(h[48..56].try_into().unwrap());
    let mut e = [0u8; 8];
    f.read_exact_at(&mut e, rt).unwrap();
    let block = u64::from_be_bytes(e);
    f.write_all_at(&v.to_be_bytes(), block + 2 * c).unwrap();
}

/// The host offset of the first L2 entry and the offset of that entry.
pub fn first_l2_entry(p: &Path) -> (u64, u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(p).unwrap();
    let mut h = [0u8; 64];
    f.read_exact_at(&mut h, 0).unwrap();
    let l1 = u64::from_be_bytes(h[40..48].try_into().unwrap());
    let mut e = [0u8; 8];
    f.read_exact_at(&mut e, l1).unwrap();
    let l2 = u64::from_be_bytes(e) & 0x00ff_ffff_ffff_fe00;
    f.read_exact_at(&mut e, l2).unwrap();
    (u64::from_be_bytes(e), l2)
}

pub fn same_state(ours: &Path, theirs: &Path) {
    assert_clean(ours);
    assert_clean(theirs);
    assert_same_bytes(&raw(ours), &raw(theirs), "guest content");
    assert_eq!(snapshots(ours), snapshots(theirs), "snapshot list");
    assert_eq!(info_summary(ours), info_summary(theirs), "qemu-img info");
    for n in qemu_info_json(theirs)["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let n = n["name"].as_str().unwrap();
        assert_same_bytes(
            &snapshot_raw(ours, n),
            &snapshot_raw(theirs, n),
            &format!("snapshot {n}"),
        );
    }
}

/// Rewrites the snapshot table of `p` in place with the extra data of each entry cut to `keep`
/// bytes (at most what it has): version 2 entries may have none, version 3 ones need 16.
pub fn cut_snapshot_extra_data(p: &Path, keep: usize) {
    let data = std::fs::read(p).unwrap();
    let be = |a: usize, n: usize| {
        data[a..a + n]
            .iter()
            .fold(0u64, |x, b| (x << 8) | u64::from(*b))
    };
    let (count, table) = (be(60, 4) as usize, be(64, 8) as usize);
    let (mut at, mut out) = (table, Vec::new());
    for _ in 0..count {
        at = at.next_multiple_of(8);
        let (id, name, extra) = (
            be(at + 12, 2) as usize,
            be(at + 14, 2) as usize,
            be(at + 36, 4) as usize,
        );
        let kept = keep.min(extra);
        let mut e = data[at..at + 40 + kept].to_vec();
        e[36..40].copy_from_slice(&(kept as u32).to_be_bytes());
        e.extend_from_slice(&data[at + 40 + extra..at + 40 + extra + id + name]);
        out.resize(out.len().next_multiple_of(8), 0);
        out.extend_from_slice(&e);
        at += 40 + extra + id + name;
    }
    // What the old table used past the new one is cleared, inside its cluster.
    out.resize(at - table, 0);
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &out, table as u64).unwrap();
}
