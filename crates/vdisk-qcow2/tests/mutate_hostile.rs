//! Hostile input: every mutation run on damaged copies of a real image (in memory) must fail with
//! an error or succeed, never panic or run away.

mod mutate_common;

use mutate_common::*;
use std::sync::Arc;
use vdisk_core::{CreateOptions, MemStorage, Storage};
use vdisk_qcow2::mutate;
use vdisk_testutil::*;

fn ops(s: &Arc<dyn Storage>) {
    let _ = mutate::snapshot_create_in(Arc::clone(s), "x");
    let _ = mutate::snapshot_apply_in(Arc::clone(s), "1");
    let _ = mutate::resize_in(Arc::clone(s), 300 << 10, true);
    let _ = mutate::resize_in(Arc::clone(s), 64 << 20, false);
    let _ = mutate::repair_in(Arc::clone(s), true, true);
    let _ = mutate::snapshot_delete_in(Arc::clone(s), "s");
    let _ = mutate::amend_in(
        Arc::clone(s),
        &CreateOptions::parse(&["compat=0.10"]).unwrap(),
    );
    let _ = mutate::rebase_unsafe_in(Arc::clone(s), "b", Some("raw"));
}

#[test]
fn damaged_images_never_panic() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("mut-hostile");
    let p = qemu_fixture(&d, "h.qcow2", "cluster_size=4k", "2M");
    qemu_img(&["snapshot", "-c", "s", &p.to_string_lossy()]);
    qemu_io("qcow2", &p, &["write -P 0x71 0 8k"]);
    let good = std::fs::read(&p).unwrap();
    // The metadata lives in the first clusters and past the data; damage 8-byte words there.
    let values = [
        u64::MAX,
        1 << 63,
        0x00ff_ffff_ffff_fe00,
        1,
        0x200,
        0x1000_0000_0000,
    ];
    let mut rng = XorShift64::new(0x9e37_79b9_7f4a_7c15);
    let mut cases = 0;
    for i in 0..240 {
        let seed = rng.next_u64();
        let word = (seed % (good.len() as u64 / 8)) as usize;
        let word = if i < 20 { i * 2 + 3 } else { word };
        let mut bad = good.clone();
        let v = values[i % values.len()];
        bad[word * 8..word * 8 + 8].copy_from_slice(&v.to_be_bytes());
        let s: Arc<dyn Storage> = Arc::new(MemStorage::new("bad.qcow2", bad));
        ops(&s);
        cases += 1;
    }
    assert_eq!(cases, 240);
    // And the undamaged image still works in memory.
    let s: Arc<dyn Storage> = Arc::new(MemStorage::new("good.qcow2", good));
    mutate::snapshot_create_in(Arc::clone(&s), "mem").unwrap();
    let r = vdisk_qcow2::open(
        s,
        Arc::new(vdisk_core::storage::NoFiles),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(r.snapshots().len(), 2);
    assert_eq!(vdisk_core::ImageReader::check(&r).unwrap().exit_code(), 0);
}

#[test]
fn damaged_images_with_bitmaps_never_panic() {
    if !qemu_available() {
        return;
    }
    use vdisk_core::Payload;
    let d = Scratch::new("mut-hostile-bm");
    let p = qemu_fixture(&d, "h.qcow2", "cluster_size=4k", "2M");
    let ps = p.to_string_lossy().into_owned();
    qemu_img(&["bitmap", "--add", &ps, "b1"]);
    qemu_img(&["bitmap", "--add", "-g", "8k", &ps, "b2"]);
    qemu_io("qcow2", &p, &["write -P 0x72 64k 8k"]);
    let good = std::fs::read(&p).unwrap();
    // Damage the header, its extensions and the bitmap directory and tables (the last clusters).
    let mut rng = XorShift64::new(0x2545_f491_4f6c_dd1d);
    for i in 0..200usize {
        let seed = rng.next_u64();
        let words = good.len() / 8;
        let word = if i % 2 == 0 {
            (seed % 64) as usize
        } else {
            words - 1 - (seed % 2048) as usize
        };
        let mut bad = good.clone();
        let v = [u64::MAX, 1, 0x200, 0x1000, 1 << 40][i % 5];
        bad[word * 8..word * 8 + 8].copy_from_slice(&v.to_be_bytes());
        let s: Arc<dyn Storage> = Arc::new(MemStorage::new("bad.qcow2", bad));
        ops(&s);
        let _ =
            mutate::resize_with_in(Arc::clone(&s), 3 << 20, false, mutate::Prealloc::Full, None);
        if let Ok(mut w) = mutate::open_writer_in(Arc::clone(&s)) {
            let _ = w.write(0, Payload::data(vec![1; 8192]));
            let _ = w.finish();
        }
    }
}

/// Growing an overlay looks at its backing file's length; a backing name that is a FIFO must not
/// make the resize wait for a writer forever.
#[test]
fn resize_over_a_fifo_backing_file_does_not_hang() {
    let d = Scratch::new("mut-fifo");
    let fifo = d.join("pipe");
    let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: mkfifo only reads the NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let img = d.join("over.qcow2");
    let opts = CreateOptions::parse(&["backing_file=pipe", "backing_fmt=raw"]).unwrap();
    vdisk_qcow2::writer::create(&img, 1 << 20, &opts)
        .unwrap()
        .finish()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let p = img.clone();
    std::thread::spawn(move || {
        let _ = tx.send(mutate::resize_with(
            &p,
            2 << 20,
            false,
            mutate::Prealloc::Off,
        ));
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("resize over a FIFO backing file hangs");
    r.unwrap();
    // The header's size field (bytes 24..32) holds the new size.
    let head = std::fs::read(&img).unwrap();
    assert_eq!(
        u64::from_be_bytes(head[24..32].try_into().unwrap()),
        2 << 20
    );
}
