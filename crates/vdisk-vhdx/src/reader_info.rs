//! The "vdisk details" that `info` adds for a VHDX image (qemu-img shows only the virtual size and
//! the block size as `cluster_size`): the structures qemu read, the log's state and how the
//! payload blocks are used, with the spec's names, so that a learner can follow the layout.

use crate::bat::BlockState;
use crate::limits::SPEC_MAX_VIRTUAL_SIZE;
use crate::log::LogState;
use crate::reader::VhdxReader;
use serde_json::Value;

/// Appends the details of `r` to `d`.
pub(crate) fn details(r: &VhdxReader, d: &mut Vec<(String, Value)>) {
    let mut put = |k: &str, v: Value| d.push((k.to_string(), v));
    let m = r.metadata();
    // Spec 2.6.2.1: LeaveBlocksAllocated marks a fixed image, whose blocks all stay in the file.
    let sub = if m.leave_blocks_allocated() {
        "fixed"
    } else {
        "dynamic"
    };
    put("subformat", sub.into());
    if !r.creator().is_empty() {
        put("creator", r.creator().into());
    }
    let (idx, h) = r.header();
    let at = if idx == 0 { "64 KiB" } else { "128 KiB" };
    put(
        "current-header",
        format!(
            "{} (at {at}, sequence number {})",
            idx + 1,
            h.sequence_number
        )
        .into(),
    );
    put("file-write-guid", h.file_write_guid.to_string().into());
    put("data-write-guid", h.data_write_guid.to_string().into());
    put("log-offset", h.log_offset.into());
    put("log-length", h.log_length.into());
    let log = match r.log_state() {
        LogState::Empty(why) => format!("empty ({why})"),
        LogState::NeedsReplay {
            sequence, entries, ..
        } => {
            format!("{entries} entries from sequence {sequence} to replay")
        }
    };
    put("log", log.into());
    put("block-size", m.block_size.into());
    put("logical-sector-size", m.logical_sector_size.into());
    put("physical-sector-size", m.physical_sector_size.into());
    if m.virtual_disk_size != r.size() {
        put(
            "stored-virtual-disk-size",
            format!(
                "{} (qemu uses it rounded down to whole sectors)",
                m.virtual_disk_size
            )
            .into(),
        );
    }
    if r.size() > SPEC_MAX_VIRTUAL_SIZE {
        put(
            "note",
            "the virtual size is larger than the spec's 64 TiB maximum".into(),
        );
    }
    if let Some(g) = m.page83 {
        put("page83-id", g.to_string().into());
    }
    let b = r.bat();
    put("bat-offset", b.offset.into());
    put("bat-entries", b.entries.into());
    put("chunk-ratio", b.chunk_ratio.into());
    put("payload-blocks", b.payload_blocks.into());
    for s in BlockState::ALL {
        let n = b.state_counts[s as usize];
        if n > 0 {
            put(&format!("blocks-{}", s.name()), n.into());
        }
    }
    put("metadata-offset", r.regions().metadata.file_offset.into());
    put("metadata-entries", m.table.entry_count.into());
    put("region-entries", (r.regions().entries.len() as u64).into());
}
