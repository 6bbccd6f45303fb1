//! Growing an image whose backing file reaches past its old end (QEMU's bdrv_co_truncate adds
//! BDRV_REQ_ZERO_WRITE then, and qcow2_co_truncate zeroes the new area): the added guest range
//! must read as zeros, not as the backing file's data, so its clusters get the zero flag
//! (qcow2.txt "Standard Cluster Descriptor", bit 0; with extended L2 entries the zero bits of the
//! subcluster bitmap), and the cluster (or subcluster) holding the old end becomes data with zeros
//! after the old end, as QEMU's write of zeros there leaves it: copied to a new cluster, with the
//! bytes it still read from the backing file read from the opened backing image (QEMU's
//! copy-on-write). Version 2 images have no zero flag, and QEMU cannot zero subclusters of a
//! compressed cluster: QEMU fails there, and so does vdisk, with its message.

use super::image::RwImage;
use super::refs::add_l2_refs;
use super::txn::Txn;
use crate::limits::MAX_ZEROED_L2_TABLES;
use crate::tables::{Geometry, SubType, L2_BITMAP_ALL_ZERO as ALL_ZERO, OFLAG_COPIED};
use crate::tables::{L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_ZERO};
use std::collections::HashMap;
use vdisk_core::{Error, FileStorage, ImageReader, Result, Storage};

/// The backing file's length as QEMU's bdrv_getlength sees it: the opened backing image's size
/// (a raw file's rounded up to a sector) when the caller opened it; otherwise for the formats
/// whose size is in a fixed place (qcow2 header, raw file length); None when unknown (the caller
/// then assumes it reaches past the old end, which is never wrong for the guest).
pub(crate) fn backing_len(img: &RwImage, opened: Option<&dyn ImageReader>) -> Option<u64> {
    if let Some(b) = opened {
        let size = b.virtual_size();
        return Some(if b.format_name() == "raw" {
            size.checked_next_multiple_of(512)?
        } else {
            size
        });
    }
    let name = img.r.header.backing_file.as_ref()?.to_path();
    let path = vdisk_core::storage::resolve_relative(img.path(), name);
    // Not File::open: the name may be a FIFO, whose opening would wait for a writer forever
    // (FileStorage refuses FIFOs and sockets without blocking).
    if !std::fs::metadata(&path).ok()?.is_file() {
        return None;
    }
    let f = vdisk_core::FileStorage::open(&path).ok()?;
    let mut head = [0u8; 32];
    let got = f.read_at(&mut head, 0).ok()?;
    let file_len = f.len().ok()?;
    let fmt = img.r.header.backing_format();
    let is_qcow2 = got >= 32 && head[..4] == *b"QFI\xfb";
    match fmt {
        Some("qcow2") | None if is_qcow2 => Some(u64::from_be_bytes(head[24..32].try_into().ok()?)),
        Some("raw") => Some(file_len.div_ceil(512) * 512),
        _ => None,
    }
}

/// Makes the guest range `old_size..new_size` of the active L1 (grown already) read as zeros, in
/// `fresh` (changed L2 tables by L1 index).
pub(crate) fn zero_new_area(
    t: &mut Txn,
    l1: &[u64],
    fresh: &mut HashMap<usize, Vec<u64>>,
    old_size: u64,
    new_size: u64,
    under: Under,
) -> Result<()> {
    if t.img.r.header.version < 3 {
        return Err(Error::Other(
            "Failed to zero out new clusters: Operation not supported".into(),
        ));
    }
    let g = t.img.r.geo;
    let bits = g.cluster_bits;
    let cs = 1u64 << bits;
    let per_l2 = g.l2_entries();
    let words = g.words_per_entry();
    let first = old_size >> bits;
    let end = new_size.div_ceil(cs);
    if (end - first).div_ceil(per_l2) + 1 > MAX_ZEROED_L2_TABLES {
        return Err(Error::limit(
            t.img.path(),
            "L2 tables zeroed by a resize",
            (end - first).div_ceil(per_l2) + 1,
            MAX_ZEROED_L2_TABLES,
        ));
    }
    for c in first..end {
        let i = (c / per_l2) as usize;
        let (table, j) = super::refs::table_of(t, l1, fresh, c)?;
        let mut e = [0u64; 2];
        if let Some(s) = table.get(j..j + words) {
            e[..words].copy_from_slice(s);
        }
        let start = c << bits;
        let new = if start >= old_size {
            // A whole new cluster: drop what it held (nothing, normally) and mark it zero.
            add_l2_refs(t, &e[..words], -1)?;
            if words == 2 {
                [0, ALL_ZERO]
            } else {
                [OFLAG_ZERO, 0]
            }
        } else {
            old_end(t, e, c, old_size, under)?
        };
        if let Some(s) = fresh.get_mut(&i).and_then(|tb| tb.get_mut(j..j + words)) {
            s.copy_from_slice(&new[..words]);
        }
    }
    Ok(())
}

/// What lies under the layer while it grows: the opened backing image (the source of the bytes of
/// a cluster still read from it) and the external data file, when the image has one.
#[derive(Clone, Copy)]
pub(crate) struct Under<'a> {
    pub backing: Option<&'a dyn ImageReader>,
    pub data: Option<&'a FileStorage>,
}

/// The new entry (and subcluster bitmap) of guest cluster `c`, which holds the old end
/// `old_size`: what it read up to the old end stays, and the rest of it reads as zeros, as QEMU's
/// write of zeros from the old end to the next (sub)cluster boundary leaves it. A unit (cluster,
/// or subcluster with extended L2) still read from the backing file takes its head from there
/// (QEMU's copy-on-write); with extended L2 only that unit is allocated and the later ones get
/// zero bits. Without a data file the content goes to a new cluster (the old one is released);
/// with one, it is written in place in the data file, where nothing the old state reads changes
/// (bytes past the old end, or a cluster the old state does not map).
fn old_end(t: &mut Txn, e: [u64; 2], c: u64, old_size: u64, under: Under) -> Result<[u64; 2]> {
    let g = t.img.r.geo;
    let cs = 1u64 << g.cluster_bits;
    let words = g.words_per_entry();
    let start = c * cs;
    let head = old_size - start;
    let compressed = e[0] & OFLAG_COMPRESSED != 0;
    if words == 2 && compressed {
        // QEMU cannot zero subclusters of a compressed cluster.
        return Err(Error::Other(
            "Failed to zero out new clusters: Operation not supported".into(),
        ));
    }
    let (part, bitmap) = old_end_units(g, start, old_size, e[1]);
    if words == 2 && part.is_none() {
        // The old end on a subcluster boundary: only zero bits change.
        return Ok([e[0], bitmap]);
    }
    let unalloc = part.is_some_and(|k| unallocated(g, e, k));
    let allocated = e[0] & L2E_OFFSET_MASK != 0 || (g.data_file && e[0] & OFLAG_COPIED != 0);
    let zero_flag = words == 1 && e[0] & OFLAG_ZERO != 0;
    if g.data_file && zero_flag {
        // Zeros before and after the old end: nothing to change.
        return Ok(e);
    }
    // The cluster's new content: this layer's bytes up to the old end, the backing file's in the
    // unit still read from it, zeros after.
    let mut buf = head_bytes(t, e, c, old_size, &|u| Some(u) == part, under.backing)?;
    buf.resize(cs as usize, 0);
    if let Some(d) = under.data.filter(|_| g.data_file) {
        // In place in the data file (guest cluster `c` at its own offset when not mapped yet).
        let host = if allocated {
            e[0] & L2E_OFFSET_MASK
        } else {
            start
        };
        let from = if allocated && !unalloc { head } else { 0 };
        d.write_at(&buf[from as usize..], host + from)?;
        return Ok([host | OFLAG_COPIED, bitmap]);
    }
    add_l2_refs(t, &e[..words], -1)?;
    let off = t.alloc(1)?;
    t.write(off, buf);
    Ok([off, bitmap])
}

/// Where the old end `old_size` falls in the guest cluster starting at `start`: the unit (cluster,
/// or subcluster with extended L2) holding it, None when it lies on a unit boundary; and, with
/// extended L2, `bitmap` as a grow leaves it: units wholly past the old end zero, and the unit
/// holding the old end data (QEMU writes the zeros after the old end as guest data, whatever the
/// unit was: data, zeros or the backing file's). Without extended L2 `bitmap` is returned as is.
pub(crate) fn old_end_units(
    g: Geometry,
    start: u64,
    old_size: u64,
    bitmap: u64,
) -> (Option<u32>, u64) {
    let head = old_size - start;
    let unit = 1u64 << g.unit_bits();
    // Units from `k0` on lie wholly past the old end.
    let k0 = head.div_ceil(unit) as u32;
    let part = (head % unit != 0).then(|| k0 - 1);
    if !g.extended {
        return (part, bitmap);
    }
    let after = if k0 >= 32 {
        0
    } else {
        (u64::from(u32::MAX) >> k0) << k0
    };
    let mut grown = (bitmap & !after) | (after << 32);
    if let Some(k) = part {
        grown = (grown & !(1 << (32 + k))) | (1 << k);
    }
    (part, grown)
}

/// Unit `u` (subcluster with extended L2, else the cluster) of entry `e` is not allocated: it
/// reads from the backing file.
fn unallocated(g: Geometry, e: [u64; 2], u: u32) -> bool {
    matches!(
        g.classify(e[0], e[1], u),
        SubType::UnallocPlain | SubType::UnallocAlloc(_)
    )
}

/// The guest bytes `c * cluster_size .. old_size` of guest cluster `c` (entry `e`, which holds the
/// old end `old_size`): this layer's, and in each unallocated unit `u` for which `fill(u)`, the
/// backing image's (zeros past its end), as QEMU's copy-on-write reads them. Fails when such a
/// unit exists over a backing file that the caller did not open.
pub(crate) fn head_bytes(
    t: &Txn,
    e: [u64; 2],
    c: u64,
    old_size: u64,
    fill: &dyn Fn(u32) -> bool,
    backing: Option<&dyn ImageReader>,
) -> Result<Vec<u8>> {
    let g = t.img.r.geo;
    let start = c << g.cluster_bits;
    let unit = 1u64 << g.unit_bits();
    let mut buf = vec![0u8; (old_size - start) as usize];
    t.img.r.read_at(&mut buf, start)?;
    if t.img.r.header.backing_file.is_none() {
        return Ok(buf);
    }
    let units = (old_size - start).div_ceil(unit) as u32;
    for u in (0..units).filter(|&u| fill(u) && unallocated(g, e, u)) {
        let Some(bk) = backing else {
            return Err(Error::unsupported(
                t.img.path(),
                "growing: the cluster holding the old end still reads from the backing file, \
                 which was not opened",
            ));
        };
        let from = start + u64::from(u) * unit;
        let to = (from + unit).min(old_size);
        super::image::read_backing(
            bk,
            &mut buf[(from - start) as usize..(to - start) as usize],
            from,
        )?;
    }
    Ok(buf)
}
