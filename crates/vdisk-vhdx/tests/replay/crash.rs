//! Crash points inside vdisk's replay. A storage that keeps what was synced apart from what was
//! written since, and fails every step (write, length change or sync) after the first `n`, stands
//! for a crash after `n` steps;
//! the file the crash leaves is what was synced plus any part of what was not: all of it, none of
//! it, only the last change, or all but the last. Each must be either refused by qemu as needing a
//! replay, and then replay (by vdisk) to the bytes of an uninterrupted replay, or opened by qemu
//! and read as the fully replayed image: never an image qemu opens with other contents. (A replay
//! resumed after a crash in the header updates counts its sequence numbers on from what the crash
//! left, so those may differ from an uninterrupted replay's, and so may which header is current.)

use crate::common::*;
use crate::craft::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use vdisk_core::{Error, Result, Storage};
use vdisk_testutil::*;

#[derive(Clone)]
enum Change {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

fn apply(file: &mut Vec<u8>, c: &Change) {
    match c {
        Change::Write(at, b) => {
            let (at, end) = (*at as usize, *at as usize + b.len());
            if file.len() < end {
                file.resize(end, 0);
            }
            file[at..end].copy_from_slice(b);
        }
        Change::SetLen(n) => file.resize(*n as usize, 0),
    }
}

struct State {
    /// Everything written.
    now: Vec<u8>,
    /// What the last sync made durable.
    synced: Vec<u8>,
    /// Changes since the last sync.
    pending: Vec<Change>,
    /// Steps (changes and syncs) still allowed (`None`: no limit).
    left: Option<usize>,
    /// Steps made.
    steps: usize,
    /// Changes made.
    changes: usize,
    /// How many changes the last sync made durable.
    synced_changes: usize,
}

impl State {
    /// One more step, or the crash.
    fn step(&mut self) -> Result<()> {
        match &mut self.left {
            Some(0) => return Err(Error::Other("crash".into())),
            Some(n) => *n -= 1,
            None => {}
        }
        self.steps += 1;
        Ok(())
    }
}

struct CrashStorage {
    path: PathBuf,
    state: Mutex<State>,
}

impl CrashStorage {
    fn new(file: Vec<u8>, left: Option<usize>) -> Self {
        CrashStorage {
            path: PathBuf::from("crash.vhdx"),
            state: Mutex::new(State {
                now: file.clone(),
                synced: file,
                pending: Vec::new(),
                left,
                steps: 0,
                changes: 0,
                synced_changes: 0,
            }),
        }
    }

    fn change(&self, c: Change) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        s.step()?;
        s.changes += 1;
        apply(&mut s.now, &c);
        s.pending.push(c);
        Ok(())
    }

    /// The file after a crash now, keeping the pending changes `keep` picks, and which changes
    /// (numbered from 0 in the order made) it holds.
    fn crashed(&self, keep: Keep) -> (Vec<u8>, Vec<usize>) {
        let s = self.state.lock().unwrap();
        let mut f = s.synced.clone();
        let mut held: Vec<usize> = (0..s.synced_changes).collect();
        let n = s.pending.len();
        for (i, c) in s.pending.iter().enumerate() {
            if keep(i, n) {
                apply(&mut f, c);
                held.push(s.synced_changes + i);
            }
        }
        (f, held)
    }
}

impl Storage for CrashStorage {
    fn path(&self) -> &Path {
        &self.path
    }
    fn len(&self) -> Result<u64> {
        Ok(self.state.lock().unwrap().now.len() as u64)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let s = self.state.lock().unwrap();
        let start = (offset as usize).min(s.now.len());
        let n = buf.len().min(s.now.len() - start);
        buf[..n].copy_from_slice(&s.now[start..start + n]);
        Ok(n)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.change(Change::Write(offset, buf.to_vec()))
    }
    fn set_len(&self, len: u64) -> Result<()> {
        self.change(Change::SetLen(len))
    }
    fn sync(&self) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        s.step()?;
        s.synced = s.now.clone();
        s.pending.clear();
        s.synced_changes = s.changes;
        Ok(())
    }
}

/// `qemu-img compare -f vhdx -F vhdx A B`: exit code and output.
fn compare(a: &Path, b: &Path) -> (i32, String) {
    let out = std::process::Command::new("qemu-img")
        .args(["compare", "-f", "vhdx", "-F", "vhdx"])
        .arg(a)
        .arg(b)
        .output()
        .expect("run qemu-img compare");
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text.into_owned())
}

/// Which of `n` pending changes (the `i`th) a crash keeps.
type Keep = fn(usize, usize) -> bool;

const KEEPS: [(&str, Keep); 4] = [
    ("all pending", |_, _| true),
    ("none pending", |_, _| false),
    ("only the last", |i, n| i + 1 == n),
    ("all but the last", |i, n| i + 1 < n),
];

/// Every crash point of vdisk's replay of `image` (a file qemu refuses as needing a replay).
fn crash_everywhere(s: &Scratch, name: &str, image: &[u8]) {
    let full = CrashStorage::new(image.to_vec(), None);
    assert!(vdisk_vhdx::replay_log(&full).unwrap());
    let (reference, total) = {
        let st = full.state.lock().unwrap();
        (st.now.clone(), st.steps)
    };
    let ref_path = s.join(&format!("{name}.ref.vhdx"));
    std::fs::write(&ref_path, &reference).unwrap();
    let mut seen = HashSet::new();
    let mut outcomes = [0usize; 2];
    for n in 0..=total {
        let st = CrashStorage::new(image.to_vec(), Some(n));
        let r = vdisk_vhdx::replay_log(&st);
        assert_eq!(r.is_ok(), n == total, "{name}: after {n} of {total} steps");
        for (what, keep) in KEEPS {
            // Every run makes the same changes (but for random GUIDs): a crash image is known by
            // the changes it holds.
            let (f, held) = st.crashed(keep);
            if !seen.insert(held) {
                continue;
            }
            let what = format!("{name}: crash after {n} of {total} steps, {what}");
            let p = s.join(&format!("{name}.crash.vhdx"));
            std::fs::write(&p, &f).unwrap();
            // qemu-img compare opens both read-only: 0 when it reads the same guest bytes, 2 with
            // its open error when it refuses the crashed file.
            match compare(&ref_path, &p) {
                (0, _) => {
                    outcomes[1] += 1;
                    assert_qemu_check_clean(&p, "vhdx");
                }
                (2, e) if e.contains("needs to be replayed") => {
                    outcomes[0] += 1;
                    assert!(vdisk_vhdx::replay_log_at(&p).unwrap(), "{what}");
                    let again = std::fs::read(&p).unwrap();
                    same(&masked_seq(&again), &masked_seq(&reference), &what);
                    assert_eq!(compare(&ref_path, &p).0, 0, "{what}");
                }
                (rc, e) => panic!("{what}: qemu-img compare exits {rc}: {e}"),
            }
        }
    }
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{name}: {outcomes:?}");
}

#[test]
fn a_crash_anywhere_in_the_replay_leaves_a_replayable_or_replayed_image() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-replay-crash");
    let (p, l) = base(&s);
    let mut image = std::fs::read(&p).unwrap();
    let b0 = block_at(&image, &l, 0);
    // Two entries: data, zeros, and a LastFileOffset that grows the file.
    let e1 = Entry::new(
        8,
        l.len,
        vec![
            Desc::Data {
                at: b0,
                sector: sector(0x81),
            },
            Desc::Zero {
                at: b0 + 4096,
                len: 8192,
            },
        ],
    );
    let mut e2 = Entry::new(
        9,
        l.len,
        vec![Desc::Data {
            at: b0 + 16384,
            sector: sector(0x82),
        }],
    );
    e2.last = l.len + 100;
    let x1 = e1.encode();
    put_in_log(&mut image, l.log, l.log_len, 0, &x1);
    put_in_log(&mut image, l.log, l.log_len, x1.len(), &e2.encode());
    let mut both_headers = image.clone();
    set_log_guid(&mut both_headers);
    crash_everywhere(&s, "crafted", &both_headers);
    // Only the current header has the log GUID: qemu's first header update would make the other
    // header current with its own, zero, log GUID; vdisk's keeps the log.
    set_current_log_guid(&mut image);
    crash_everywhere(&s, "stale", &image);
}
