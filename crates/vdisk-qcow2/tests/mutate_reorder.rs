//! Crash tests with reordering: a disk may persist any subset of the writes issued since the last
//! completed sync. Each operation is crashed at each of its modifying calls, and at that point every
//! single unsynced write (and alternate halves of them) is lost; the image must then pass
//! `qemu-img check` (leaks allowed) and be exactly the old or the new image.

mod mutate_common;

use mutate_common::*;
use std::path::Path;
use std::sync::{Arc, Mutex};
use vdisk_core::{Error, FileStorage, Result, Storage};
use vdisk_qcow2::mutate;
use vdisk_testutil::*;

/// Applies writes at once but remembers, for those since the last sync, the bytes they replaced;
/// at the crash point it puts back the bytes of the writes `lose` selects, then fails every call.
/// Which of the `n` unsynced writes (by index) a crash loses.
type Lose = Box<dyn Fn(usize, usize) -> bool + Send + Sync>;

/// Modifying calls so far, the writes since the last sync (offset, replaced bytes), crashed yet.
type State = (usize, Vec<(u64, Vec<u8>)>, bool);

struct ReorderStorage {
    inner: FileStorage,
    crash_at: usize,
    lose: Lose,
    st: Mutex<State>,
}

impl ReorderStorage {
    fn gate(&self) -> Result<()> {
        let mut st = self.st.lock().unwrap();
        if st.2 {
            return Err(Error::Other("crashed".into()));
        }
        st.0 += 1;
        if st.0 < self.crash_at {
            return Ok(());
        }
        st.2 = true;
        let pending = std::mem::take(&mut st.1);
        let n = pending.len();
        for (i, (off, old)) in pending.into_iter().enumerate().rev() {
            if (self.lose)(i, n) {
                self.inner.write_at(&old, off)?;
            }
        }
        Err(Error::Other("crashed".into()))
    }
}

impl Storage for ReorderStorage {
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
        self.gate()?;
        let mut old = vec![0u8; buf.len()];
        self.inner.read_zero_padded(&mut old, offset)?;
        self.st.lock().unwrap().1.push((offset, old));
        self.inner.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> Result<()> {
        self.gate()?;
        self.inner.set_len(len)
    }
    fn sync(&self) -> Result<()> {
        self.gate()?;
        self.st.lock().unwrap().1.clear();
        self.inner.sync()
    }
}

fn reorder_test(fixture: &Path, op: &dyn Fn(Arc<dyn Storage>) -> Result<()>) -> usize {
    let before = state(fixture);
    let done = copy(fixture, "after.qcow2");
    let counter = FailingStorage::new(&done, usize::MAX, Fault::Fail);
    op(counter.clone()).unwrap();
    let points = counter.calls();
    drop(counter); // closed before qemu-img looks, as the writing process would be
    let after = state(&done);
    let mut runs = 0;
    for at in 1..=points {
        // Lose the last write, the first one, or every other one.
        let patterns: Vec<Lose> = vec![
            Box::new(|i, n| i + 1 == n),
            Box::new(|i, _| i == 0),
            Box::new(|i, _| i % 2 == 0),
            Box::new(|i, _| i % 2 == 1),
        ];
        for lose in patterns {
            let p = copy(fixture, "crash.qcow2");
            let s = Arc::new(ReorderStorage {
                inner: FileStorage::open_rw(&p).unwrap(),
                crash_at: at,
                lose,
                st: Mutex::new((0, Vec::new(), false)),
            });
            let _ = op(s);
            let (code, out) = check(&p);
            assert!(code == 0 || code == 3, "crash at {at}/{points}: {out}");
            let now = state(&p);
            assert!(
                now == before || now == after,
                "crash at {at}/{points}: neither old nor new image"
            );
            runs += 1;
        }
    }
    runs
}

#[test]
fn reordered_crashes_snapshot_create_and_resize() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("mut-reorder");
    let p = qemu_fixture(&d, "base.qcow2", "cluster_size=4k", "2M");
    let n = reorder_test(&p, &|s| mutate::snapshot_create_in(s, "r"));
    eprintln!("snapshot_create: {n} reordered crashes");
    let n = reorder_test(&p, &|s| mutate::resize_in(s, 600 << 10, true));
    eprintln!("resize shrink: {n} reordered crashes");
}

#[test]
fn reordered_crashes_preallocation_and_downgrade() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("mut-reorder2");
    let p = qemu_fixture(&d, "base.qcow2", "cluster_size=4k", "2M");
    qemu_img(&["resize", "-q", "--shrink", &p.to_string_lossy(), "2096640"]);
    let n = reorder_test(&p, &|s| {
        mutate::resize_with_in(s, 3 << 20, false, mutate::Prealloc::Full, None)
    });
    eprintln!("resize --preallocation=full: {n} reordered crashes");
    // Zero clusters expanded and bitmaps dropped in one downgrade.
    qemu_img(&["bitmap", "--add", &p.to_string_lossy(), "b"]);
    qemu_io("qcow2", &p, &["write -z 8k 8k"]);
    let n = reorder_test(&p, &|s| {
        mutate::amend_in(
            s,
            &vdisk_core::CreateOptions::parse(&["compat=0.10"]).unwrap(),
        )
    });
    eprintln!("amend compat=0.10: {n} reordered crashes");
}
