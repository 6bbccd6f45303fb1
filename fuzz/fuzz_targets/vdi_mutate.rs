//! VDI changed in place on hostile images: `resize` (grow by a step, to the same size, and a
//! shrink, which must be refused) and the `convert -n` writer (`open_writer_in`: data at the start,
//! data ending at the disk's end, a zero run, data across a block boundary, then `finish`),
//! each on an in-memory copy of the input. The first byte picks the operation, the second its size;
//! the rest is the image.
//!
//! Each must fail with an error or leave an image that opens and reads within the harness's bounds.
//! When the input checked sound (no corruption or check error) and the change succeeded, the result
//! must check sound too, and read as expected: a resize keeps the first and last bytes of the old
//! disk (up to its stored, unrounded size), reads zeros after them and has the new size; a write
//! reads back what was written and leaves the bytes around it unchanged. Any change that succeeded
//! must leave the header bytes it has no reason to touch as they were.
//!
//! Inputs where an operation may legitimately make the file larger than [`MAX_REACH`] are skipped
//! (the in-memory store is not sparse); see [`reach`].
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use vdisk_core::{ImageReader, MemStorage, Payload, Storage};
use vdisk_fuzz::{exercise, guest_bytes, sound};
use vdisk_vdi::VdiReader;

/// Number of operations the first byte picks from.
const OPS: u8 = 8;

/// Step of a resize: the second byte picks 1..=256 of these.
const RESIZE_STEP: u64 = 64 << 10;

/// Step of a write: the second byte picks 1..=256 of these.
const WRITE_STEP: u64 = 4096;

/// Bytes compared before and after a change at each place looked at.
const WINDOW: u64 = 256 << 10;

/// Most bytes an operation may legitimately make the file hold; inputs where that can be more are
/// skipped (see [`reach`]).
const MAX_REACH: u64 = 48 << 20;

/// How far into the file an operation may legitimately write: past the file's end or the slots in
/// use (the data area can start far past the end of a file: `offset_data` is a free 32-bit field),
/// `new_slots` more slots. A new slot is placed at `offset_data + n * slot size` whatever the file
/// length, as QEMU does: `qemu-img convert -n` into a 1 KiB image whose data area starts at 4 GiB
/// makes a 4 GiB sparse file, and so does vdisk (this target's first invariant violation that was
/// the target's fault: a `MemStorage` is not sparse).
fn reach(r: &VdiReader, new_slots: u64) -> u64 {
    let h = r.header();
    let used = r
        .block_map()
        .iter()
        .filter(|e| **e < 0xffff_fffe)
        .map(|e| u64::from(*e) + 1)
        .max()
        .unwrap_or(0);
    (h.offset_data + used * h.slot_size())
        .max(r.file_len())
        .saturating_add(new_slots.saturating_mul(h.slot_size()))
}

/// Slots a resize to `new_size` may add: one per new block of a static image, and those moved to
/// free room for a grown block map.
fn resize_slots(r: &VdiReader, new_size: u64) -> u64 {
    let h = r.header();
    let bs = u64::from(h.block_size);
    let blocks = new_size.div_ceil(bs);
    let moved = blocks.saturating_mul(4).div_ceil(h.slot_size()) + 1;
    let added = blocks.saturating_sub(u64::from(h.blocks_in_image));
    if h.image_type == vdisk_vdi::header::TYPE_STATIC {
        moved.saturating_add(added)
    } else {
        moved
    }
}

fn open_mem(bytes: Vec<u8>) -> Option<VdiReader> {
    vdisk_vdi::open(MemStorage::new("fuzz.vdi", bytes).shared()).ok()
}

/// What the changed image must read, range by range.
enum Expect {
    /// The same bytes as the image before the change.
    Same(u64, u64),
    /// All `byte`.
    Fill(u64, u64, u8),
}

fn write_once(s: Arc<dyn Storage>, offset: u64, payload: Payload) -> bool {
    let Ok(mut w) = vdisk_vdi::open_writer_in(s) else {
        return false;
    };
    w.write(offset, payload).is_ok() && w.finish().is_ok()
}

/// Writes `len` bytes of `byte` at `offset` (zeros with `Payload::Zero` when `byte` is 0), and says
/// what the result must read: the bytes written, the same bytes as before around them.
fn write_op(s: Arc<dyn Storage>, offset: u64, len: u64, byte: u8, exp: &mut Vec<Expect>) -> bool {
    let Ok(n) = usize::try_from(len) else {
        return false;
    };
    let payload = if byte == 0 {
        Payload::Zero(len)
    } else {
        Payload::data(vec![byte; n])
    };
    let start = offset.saturating_sub(WINDOW);
    exp.push(Expect::Same(start, offset - start));
    exp.push(Expect::Fill(offset, len, byte));
    exp.push(Expect::Same(offset + len, WINDOW));
    write_once(s, offset, payload)
}

fuzz_target!(|data: &[u8]| {
    let [op, arg, image @ ..] = data else {
        return;
    };
    let Some(before) = open_mem(image.to_vec()) else {
        return;
    };
    let size = before.virtual_size();
    let stored = before.header().disk_size;
    let bs = u64::from(before.header().block_size);
    let was_sound = sound(&before);

    let mem = Arc::new(MemStorage::new("fuzz.vdi", image.to_vec()));
    let s: Arc<dyn Storage> = mem.clone();
    let mut expect = Vec::new();
    let mut new_size = size;
    let op = op % OPS;
    let step = u64::from(*arg) + 1;
    let new_slots = match op {
        0 | 1 => resize_slots(&before, size.saturating_add(step * RESIZE_STEP)),
        2 => 0,
        _ => (step * WRITE_STEP).div_ceil(bs) + 1,
    };
    if reach(&before, new_slots) > MAX_REACH {
        return;
    }
    let ok = match op {
        0 | 1 => {
            let grow = if op == 0 { step * RESIZE_STEP } else { 0 };
            let Some(n) = size.checked_add(grow) else {
                return;
            };
            new_size = n;
            let keep = WINDOW.min(stored);
            expect.push(Expect::Same(0, keep));
            expect.push(Expect::Same(stored - keep, keep));
            expect.push(Expect::Fill(stored, WINDOW, 0));
            let last = n.saturating_sub(WINDOW).max(stored);
            expect.push(Expect::Fill(last, n - last, 0));
            vdisk_vdi::resize_in(s, n).is_ok()
        }
        2 => {
            let Some(n) = size.checked_sub(step * RESIZE_STEP) else {
                return;
            };
            let r = vdisk_vdi::resize_in(s, n);
            assert!(r.is_err(), "a shrink from {size} to {n} succeeded");
            false
        }
        3 => write_op(s, 0, (step * WRITE_STEP).min(size), 0xa5, &mut expect),
        4 => {
            let len = (step * WRITE_STEP / 8).min(size);
            write_op(s, size - len, len, 0x5a, &mut expect)
        }
        5 => {
            let at = (size / 2) & !511;
            let len = (step * WRITE_STEP).min(size - at);
            write_op(s, at, len, 0, &mut expect)
        }
        _ => {
            // Half before the end of block 0 (or the end of the disk), half after.
            let len = (step * WRITE_STEP).min(size);
            let at = bs.min(size).saturating_sub(len / 2).min(size - len);
            write_op(s, at, len, 0x3c, &mut expect)
        }
    };

    let after = mem.contents();
    if ok {
        // Header bytes other than the fields the operation changes stay as they were: the offsets,
        // disk size and block counts for a resize, the allocated count for a write.
        let changed: &[(usize, usize)] = if op <= 2 {
            &[(0x154, 0x15c), (0x170, 0x178), (0x180, 0x188)]
        } else {
            &[(0x184, 0x188)]
        };
        let end = 0x200.min(image.len()).min(after.len());
        for i in 0..end {
            if !changed.iter().any(|(a, b)| (*a..*b).contains(&i)) {
                assert_eq!(
                    image[i], after[i],
                    "operation {op} changed header byte {i:#x}"
                );
            }
        }
    }
    match open_mem(after) {
        Some(r) => {
            exercise(&r);
            if ok {
                assert_eq!(
                    r.virtual_size(),
                    new_size.next_multiple_of(512),
                    "operation {op}: wrong size"
                );
            }
            if was_sound && ok {
                assert!(
                    sound(&r),
                    "operation {op} left a sound image with corruptions: {:?}",
                    r.check().map(|c| c.messages)
                );
                for e in &expect {
                    match *e {
                        Expect::Same(at, len) => {
                            let (Some(old), Some(now)) =
                                (guest_bytes(&before, at, len), guest_bytes(&r, at, len))
                            else {
                                continue;
                            };
                            let n = old.len().min(now.len());
                            assert!(
                                old[..n] == now[..n],
                                "operation {op} changed bytes in {at}+{n}"
                            );
                        }
                        Expect::Fill(at, len, byte) => {
                            let now = guest_bytes(&r, at, len);
                            assert!(
                                now.as_ref().is_some_and(|b| b.iter().all(|x| *x == byte)),
                                "operation {op}: {at}+{len} does not read as {byte:#x}"
                            );
                        }
                    }
                }
            }
        }
        None => assert!(
            !(was_sound && ok),
            "operation {op} left a sound image that no longer opens"
        ),
    }
});
