//! Growing an image whose backing file reaches past its old end (QEMU's bdrv_co_truncate adds
//! BDRV_REQ_ZERO_WRITE then, and qcow2_co_truncate zeroes the new area): the added guest range
//! must read as zeros, not as the backing file's data, so its clusters get the zero flag
//! (qcow2.txt "Standard Cluster Descriptor", bit 0; with extended L2 entries the zero bits of the
//! subcluster bitmap), and the cluster holding the old end, when it is data, is copied to a new
//! cluster with zeros after the old end. Version 2 images have no zero flag: QEMU fails there, and
//! so does vdisk, with its message.

use super::image::RwImage;
use super::refs::add_l2_refs;
use super::txn::Txn;
use crate::limits::MAX_ZEROED_L2_TABLES;
use crate::tables::{L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_ZERO};
use std::collections::HashMap;
use vdisk_core::{Error, ImageReader, Result, Storage};

/// Zero bits of every subcluster (extended L2, high half of the bitmap word).
const ALL_ZERO: u64 = 0xffff_ffff << 32;

/// The backing file's length as QEMU's bdrv_getlength sees it, for the formats whose size is in
/// a fixed place (qcow2 header, raw file length rounded up to a sector); None when unknown (the
/// caller then assumes it reaches past the old end, which is never wrong for the guest).
pub(crate) fn backing_len(img: &RwImage) -> Option<u64> {
    let name = img.r.header.backing_file.as_deref()?;
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
) -> Result<()> {
    if t.img.r.header.version < 3 {
        return Err(Error::Other(
            "Failed to zero out new clusters: Operation not supported".into(),
        ));
    }
    let g = t.img.r.geo;
    let bits = g.cluster_bits;
    let cs = 1u64 << bits;
    let unit = 1u64 << g.unit_bits();
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
        let host = e[0] & L2E_OFFSET_MASK;
        let start = c << bits;
        let new = if start >= old_size {
            // A whole new cluster: drop what it held (nothing, normally) and mark it zero.
            add_l2_refs(t, &e[..words], -1)?;
            if words == 2 {
                [0, ALL_ZERO]
            } else {
                [OFLAG_ZERO, 0]
            }
        } else if t.img.r.geo.data_file {
            // The cluster lives in the external data file, where nothing is shadow-paged.
            return Err(partial(t.img.path()));
        } else if words == 2 {
            // Extended L2: zero the subclusters from the old end on; one the old end falls
            // inside would need its head copied from the backing file.
            if old_size % unit != 0 {
                return Err(partial(t.img.path()));
            }
            if e[0] & OFLAG_COMPRESSED != 0 {
                return Err(partial(t.img.path()));
            }
            let k = ((old_size - start) / unit) as u32;
            let mask = (u64::from(u32::MAX) >> k) << k;
            [e[0], (e[1] & !mask) | (mask << 32)]
        } else if e[0] & (OFLAG_COMPRESSED | OFLAG_ZERO) == 0 && host == 0 {
            return Err(partial(t.img.path()));
        } else {
            // Data, compressed data or zeros up to the old end: a new data cluster with that
            // head and zeros after it (QEMU writes the zeros after the old end as guest data).
            let mut head = vec![0u8; (old_size - start) as usize];
            t.img.r.read_at(&mut head, start)?;
            add_l2_refs(t, &e[..1], -1)?;
            let off = t.alloc(1)?;
            t.write(off, head);
            [off, 0]
        };
        if let Some(s) = fresh.get_mut(&i).and_then(|tb| tb.get_mut(j..j + words)) {
            s.copy_from_slice(&new[..words]);
        }
    }
    Ok(())
}

fn partial(path: &std::path::Path) -> Error {
    Error::unsupported(
        path,
        "growing: the cluster holding the old end is partly the backing file's, which a resize \
         over a longer backing file must zero after the old end (vdisk does not read backing files \
         when resizing)",
    )
}
