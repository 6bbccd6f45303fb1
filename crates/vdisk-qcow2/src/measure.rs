//! `qemu-img measure -O qcow2`: the file size a new qcow2 image needs, computed as QEMU's
//! `qcow2_measure` does (metadata for a fully allocated image per qcow2.txt "Cluster mapping" and
//! "Host cluster management", minus the data clusters the source does not allocate).

use crate::writer::Settings;
use vdisk_core::{CreateOptions, Error, ExtentKind, ImageReader, Result};

/// What `qemu-img measure` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    /// `required size`: the file size for converting the source (or a new empty image).
    pub required: u64,
    /// `fully allocated size`: the file size with every cluster allocated.
    pub fully_allocated: u64,
    /// `bitmaps size`: shown when both source and target can hold persistent bitmaps.
    pub bitmaps: Option<u64>,
}

/// Bytes of refcount table and blocks needed to count `clusters` clusters plus themselves: QEMU's
/// `qcow2_refcount_metadata_size` fixpoint (without its "generous increase").
pub fn refcount_metadata_size(clusters: u64, cluster_size: u64, refcount_order: u32) -> u64 {
    let per_table_cluster = cluster_size / 8;
    let per_block = (cluster_size * 8) >> refcount_order;
    let (mut table, mut blocks, mut n) = (0u64, 0u64, 0u64);
    loop {
        let last = n;
        blocks = (clusters + table + blocks).div_ceil(per_block);
        table = blocks.div_ceil(per_table_cluster);
        n = clusters + blocks + table;
        if n == last {
            return (blocks + table) * cluster_size;
        }
    }
}

/// The size of a fully preallocated image of `size` bytes: QEMU's `qcow2_calc_prealloc_size`.
pub fn prealloc_size(size: u64, cluster_size: u64, refcount_order: u32, extended_l2: bool) -> u64 {
    let aligned = size.next_multiple_of(cluster_size);
    let l2e = if extended_l2 { 16 } else { 8 };
    let mut meta = cluster_size; // header
    let nl2e = (aligned / cluster_size).next_multiple_of(cluster_size / l2e);
    meta += nl2e * l2e;
    let nl1e = (nl2e * l2e / cluster_size).next_multiple_of(cluster_size / 8);
    meta += nl1e * 8;
    meta += refcount_metadata_size(
        (meta + aligned) / cluster_size,
        cluster_size,
        refcount_order,
    );
    meta + aligned
}

/// Measures a qcow2 image of `size` bytes created with `opts`, or holding `source` (the whole
/// chain, as opened for conversion) when given, in which case `size` is ignored as qemu-img
/// forbids `--size` with a source.
pub fn measure(
    size: u64,
    opts: &CreateOptions,
    source: Option<&dyn ImageReader>,
) -> Result<Measure> {
    let s = Settings::parse_unsized(size, opts)?;
    if !s.l1_fits() {
        return Err(Error::invalid(
            "The image size is too large (try using a larger cluster size)",
        ));
    }
    let cs = s.cluster_size();
    let mut virtual_size = s.size.next_multiple_of(cs);
    let mut required = 0u64;
    if let Some(src) = source {
        let ssize = src.virtual_size();
        virtual_size = ssize.next_multiple_of(cs);
        if s.backing_file.is_some() {
            // qemu cannot tell what the backing file shares with the source: everything counts.
            required = virtual_size;
        } else {
            let mut offset = 0u64;
            while offset < ssize {
                let e = src.block_status(offset, ssize - offset)?;
                if e.offset != offset || e.length == 0 {
                    return Err(Error::Other(format!(
                        "block status of the source failed at offset {offset}"
                    )));
                }
                let mut pnum = e.length.min(ssize - offset);
                if matches!(e.kind, ExtentKind::Data | ExtentKind::Compressed) {
                    pnum = (offset + pnum).next_multiple_of(cs) - offset;
                    required += offset % cs + pnum;
                }
                offset += pnum;
            }
        }
    }
    if matches!(
        s.prealloc,
        crate::writer::Prealloc::Full | crate::writer::Prealloc::Falloc
    ) {
        required = virtual_size;
    }
    let fully_allocated = prealloc_size(virtual_size, cs, s.refcount_order, s.extended_l2);
    let bitmaps = match source {
        Some(src) if s.version >= 3 && supports_bitmaps(src) => Some(bitmaps_size(src, cs)?),
        _ => None,
    };
    Ok(Measure {
        required: fully_allocated - virtual_size + required,
        fully_allocated,
        bitmaps,
    })
}

/// Whether the source can hold persistent dirty bitmaps: a qcow2 v3 image (QEMU's
/// `bdrv_supports_persistent_dirty_bitmap`).
fn supports_bitmaps(src: &dyn ImageReader) -> bool {
    src.format_name() == "qcow2"
        && src
            .info()
            .ok()
            .and_then(|i| i.format_specific)
            .is_some_and(|(_, d)| d.get("compat").and_then(|c| c.as_str()) == Some("1.1"))
}

/// QEMU's `qcow2_get_persistent_dirty_bitmap_size` from the bitmaps `info` lists: each bitmap's
/// clusters, its table, and its directory entry.
fn bitmaps_size(src: &dyn ImageReader, cs: u64) -> Result<u64> {
    let info = src.info()?;
    let list = info
        .format_specific
        .as_ref()
        .and_then(|(_, d)| d.get("bitmaps"))
        .and_then(|b| b.as_array())
        .cloned()
        .unwrap_or_default();
    let (mut size, mut dir) = (0u64, 0u64);
    for b in &list {
        let gran = b
            .get("granularity")
            .and_then(|g| g.as_u64())
            .filter(|g| *g > 0)
            .unwrap_or(65536);
        let name_len = b
            .get("name")
            .and_then(|n| n.as_str())
            .map_or(0, |n| n.len() as u64);
        let bits = src.virtual_size().div_ceil(gran);
        let clusters = bits.div_ceil(8).div_ceil(cs);
        size += clusters * cs + (clusters * 8).next_multiple_of(cs);
        dir += (24 + name_len).next_multiple_of(8);
    }
    Ok(size + dir.next_multiple_of(cs))
}

#[cfg(test)]
#[path = "writer/measure_tests.rs"]
mod tests;
