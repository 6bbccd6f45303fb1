//! `qemu-img check` for VDI, with the semantics of QEMU's `vdi_co_check` (block/vdi.c): every
//! allocated block map entry must name a data slot below `blocks_in_image` used by no other block,
//! and their count must equal the header's `blocks_allocated`. Each finding is one corruption,
//! reported with QEMU's message. vdisk adds one check QEMU lacks: a slot whose data lies past the
//! end of the file (a truncated image, which vdisk refuses to read).

use crate::header::Header;
use crate::limits::BLOCK_ZERO;
use vdisk_core::CheckReport;

/// Checks a block map against its header and the file length.
pub fn check_map(h: &Header, entries: &[u32], file_len: u64) -> CheckReport {
    let mut report = CheckReport::default();
    let mut used = vec![false; entries.len()];
    let mut allocated: u64 = 0;
    for (block, &entry) in entries.iter().enumerate() {
        if entry >= BLOCK_ZERO {
            continue;
        }
        let Some(seen) = used.get_mut(entry as usize) else {
            report
                .messages
                .push(format!("ERROR: block index {block} too large, is {entry}"));
            report.corruptions += 1;
            continue;
        };
        allocated += 1;
        if *seen {
            // QEMU prints the slot number twice here; the message is kept identical.
            report
                .messages
                .push(format!("ERROR: block index {entry} also used by {entry}"));
            report.corruptions += 1;
        } else {
            *seen = true;
        }
        let end = u64::from(entry)
            .checked_mul(h.slot_size())
            .and_then(|o| o.checked_add(h.offset_data))
            .and_then(|o| o.checked_add(h.slot_size()));
        // Only the part of the last block inside the disk must exist.
        let block_start = block as u64 * u64::from(h.block_size);
        let used_len = h
            .virtual_size()
            .saturating_sub(block_start)
            .min(u64::from(h.block_size));
        let need = end.map(|e| e - u64::from(h.block_size) + used_len);
        if need.is_none_or(|n| n > file_len) {
            report.messages.push(format!(
                "ERROR: block {block} (slot {entry}) has its data past the end of the file ({file_len} bytes)"
            ));
            report.corruptions += 1;
        }
    }
    if allocated != u64::from(h.blocks_allocated) {
        report.messages.push(format!(
            "ERROR: allocated blocks mismatch, is {allocated}, should be {}",
            h.blocks_allocated
        ));
        report.corruptions += 1;
    }
    report
}
