//! qcow2 changed in place on hostile images: `check -r leaks` and `-r all`, `resize` (grow, and
//! shrink with `--shrink`), `snapshot -c/-a/-d`, `amend` (compat, lazy_refcounts, refcount_bits,
//! size), `rebase -u`, `commit`'s emptying, a `convert -n` write, a compressed write (`rebase -c`)
//! `convert --bitmaps` (the image's bitmaps read, then a new one added) and `bitmap` (a sequence
//! of --add/--merge/--clear/--disable/--enable/--remove), each on an in-memory copy of the input. The first byte picks the operation, the second its size; the rest is the image.
//!
//! Each must fail with an error or leave an image that opens and reads within the harness's bounds;
//! and when the input checked sound (no corruption or check error), a change that succeeded must
//! leave it sound. Leaks are allowed: qemu-img itself leaves some (`resize --shrink` of an image
//! whose file ends inside a cluster leaks the same two clusters in qemu-img 10 as in vdisk: the
//! first finding of this target). Images with an external data file are skipped: the mutators
//! open it read-write by its stored name, which here could be any host file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use vdisk_core::storage::NoFiles;
use vdisk_core::{CreateOptions, ImageReader, MemStorage, Payload, Storage};
use vdisk_fuzz::{exercise, sound};
use vdisk_qcow2::mutate;

/// Number of operations the first byte picks from.
const OPS: u8 = 18;

/// Step of the sizes the second byte picks: resizes by 1..=256 of these, writes of 1..=256.
const STEP: u64 = 4096;

fn open_mem(bytes: Vec<u8>) -> Option<vdisk_qcow2::Qcow2Reader> {
    let s = MemStorage::new("fuzz.qcow2", bytes).shared();
    vdisk_qcow2::open(s, Arc::new(NoFiles), &Default::default()).ok()
}

fn options(pairs: &str) -> Option<CreateOptions> {
    CreateOptions::parse(&[pairs]).ok()
}

fn write_once(s: Arc<dyn Storage>, offset: u64, len: u64) -> bool {
    write_with(mutate::open_writer_in(s), offset, len)
}

fn write_with(
    w: vdisk_core::Result<Box<dyn vdisk_core::ImageWriter>>,
    offset: u64,
    len: u64,
) -> bool {
    let Ok(mut w) = w else {
        return false;
    };
    let Ok(n) = usize::try_from(len) else {
        return false;
    };
    w.write(offset, Payload::data(vec![0xa5u8; n])).is_ok() && w.finish().is_ok()
}

fuzz_target!(|data: &[u8]| {
    let [op, arg, image @ ..] = data else {
        return;
    };
    // The image as a reader: skipped when it does not open without other files (the data file
    // case) or at all, since every mutator opens it the same way first.
    let Some(before) = open_mem(image.to_vec()) else {
        return;
    };
    let size = before.virtual_size();
    let was_sound = sound(&before);
    let snapshot = before.snapshots().first().map(|s| s.id.to_lossy());
    // What convert --bitmaps reads from a source: never a panic, bits bounded by the limit.
    let bitmaps = mutate::read_persistent_bitmaps(&before);
    if let Ok(list) = &bitmaps {
        for b in list {
            assert!(b.bits.len() as u64 <= vdisk_qcow2::limits::MAX_BITMAP_DATA_BYTES);
        }
    }
    let first_bitmap = bitmaps
        .ok()
        .and_then(|l| l.first().map(|b| b.name_text()))
        .unwrap_or_else(|| "fuzz".into());
    drop(before);

    let mem = Arc::new(MemStorage::new("fuzz.qcow2", image.to_vec()));
    let s: Arc<dyn Storage> = mem.clone();
    let step = (u64::from(*arg) + 1) * STEP;
    let ok = match op % OPS {
        0 => mutate::repair_in(s, true, false).is_ok(),
        1 => mutate::repair_in(s, true, true).is_ok(),
        2 => size
            .checked_add(step)
            .is_some_and(|n| mutate::resize_in(s, n, false).is_ok()),
        3 => mutate::resize_in(s, size.saturating_sub(step), true).is_ok(),
        4 => mutate::snapshot_create_in(s, "fuzz").is_ok(),
        5 => snapshot.is_some_and(|id| mutate::snapshot_apply_in(s, &id).is_ok()),
        6 => snapshot.is_some_and(|id| mutate::snapshot_delete_in(s, &id).is_ok()),
        7 => options("compat=0.10").is_some_and(|o| mutate::amend_in(s, &o).is_ok()),
        8 => {
            options("compat=1.1,lazy_refcounts=on").is_some_and(|o| mutate::amend_in(s, &o).is_ok())
        }
        9 => mutate::rebase_unsafe_in(s, "", None).is_ok(),
        10 => mutate::make_empty_in(s).is_ok(),
        11 => write_once(s, 0, step.min(size)),
        12 => write_with(mutate::open_compressing_writer_in(s), 0, step.min(size)),
        13 => {
            // A new bitmap of the image's size (64 KiB granularity), half its bits set.
            let nbytes = size.div_ceil(65536).div_ceil(8);
            let bits = (0..nbytes)
                .map(|i| if i % 2 == 0 { 0xff } else { 0 })
                .collect();
            let b = mutate::PersistentBitmap {
                name: b"fuzz".to_vec(),
                enabled: arg % 2 == 0,
                in_use: false,
                granularity_bits: 16,
                bits,
            };
            nbytes <= (1 << 20) && mutate::add_bitmaps_in(s, &[b]).is_ok()
        }
        14 => options(&format!("refcount_bits={}", 1u32 << (arg % 7)))
            .is_some_and(|o| mutate::amend_in(s, &o).is_ok()),
        15 => {
            // amend's size: grows or shrinks (without --shrink) by the step.
            let n = if arg % 2 == 0 {
                size.checked_add(step)
            } else {
                size.checked_sub(step)
            };
            n.and_then(|n| options(&format!("size={n}")))
                .is_some_and(|o| mutate::amend_in(s, &o).is_ok())
        }
        16 => {
            // `bitmap`: the operations the second byte's bits pick, in order, on the image's first
            // bitmap (or a new one), merging from that first bitmap.
            let all = [
                mutate::BitmapOp::Add {
                    granularity: Some(512 << (arg % 8)),
                },
                mutate::BitmapOp::Merge {
                    source: first_bitmap.clone(),
                },
                mutate::BitmapOp::Clear,
                mutate::BitmapOp::Disable,
                mutate::BitmapOp::Enable,
                mutate::BitmapOp::Remove,
            ];
            let ops: Vec<mutate::BitmapOp> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| arg >> i & 1 == 1)
                .map(|(_, o)| o.clone())
                .collect();
            let target = if arg & 0x40 != 0 {
                "fuzz"
            } else {
                &first_bitmap
            };
            mutate::bitmap_ops_in(s, target, &ops, None).is_ok()
        }
        _ => {
            // An unaligned write that ends at the disk's end.
            let len = (step / 8).min(size);
            write_once(s, size - len, len)
        }
    };

    let after = mem.contents();
    match open_mem(after) {
        Some(r) => {
            exercise(&r);
            if was_sound && ok {
                assert!(
                    sound(&r),
                    "operation {} left a sound image with corruptions: {:?}",
                    op % OPS,
                    r.check().map(|c| c.messages)
                );
            }
        }
        None => assert!(
            !(was_sound && ok),
            "operation {} left a sound image that no longer opens",
            op % OPS
        ),
    }
});
