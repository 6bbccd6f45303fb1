//! `qemu-img resize` of a qcow2 image (QEMU's qcow2_co_truncate): growing raises the virtual size
//! and, when needed, makes a larger active L1 table (written elsewhere, switched with the size in
//! the one header write); shrinking (only when asked) drops the guest clusters past the new end,
//! zeroes the L1 entries past it (the L1 keeps its size, as QEMU's does) and cuts the file after
//! the last used cluster. Growing over a backing file that reaches past the old end zeroes the new
//! area ([`super::grow`]), as QEMU does.

use super::bitmaps::Bitmaps;
use super::grow::{backing_len, zero_new_area, Under};
use super::image::{Purpose, RwImage};
use super::prealloc::{fill_run, map_identity, map_new_area, resize_data_file, Backing};
use super::refs::{add_l1_refs, add_l2_refs, replace_active_l1, rewrite_active};
use super::txn::Txn;
use crate::limits;
use crate::tables::{L1E_OFFSET_MASK, OFLAG_COPIED};
use crate::writer::Prealloc;
use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use vdisk_core::{Error, ImageReader, Result, Storage};

/// Resizes the image in `storage` to `new_size` bytes; shrinking needs `shrink`.
pub fn resize_in(storage: Arc<dyn Storage>, new_size: u64, shrink: bool) -> Result<()> {
    resize_with_in(storage, new_size, shrink, Prealloc::Off, None)
}

/// Resizes the image in `storage` to `new_size` bytes with preallocation `prealloc` of the added
/// area (see [`super::prealloc`]); `file`, when given, is the image file, for `posix_fallocate`
/// (`falloc` without it writes zeros instead). Without the backing image opened, a grow that
/// would need its bytes is refused: see [`resize_over_in`].
pub fn resize_with_in(
    storage: Arc<dyn Storage>,
    new_size: u64,
    shrink: bool,
    prealloc: Prealloc,
    file: Option<&File>,
) -> Result<()> {
    resize_over_in(storage, new_size, shrink, prealloc, file, None)
}

/// As [`resize_with_in`], with the image's backing chain opened (read-only) by the caller: when
/// the image grows over a backing file that reaches past its old end, the cluster holding the old
/// end takes the bytes it still reads from the backing file from `backing` (QEMU's copy-on-write
/// of the zero write it makes there), and the backing file's length is `backing`'s size.
pub fn resize_over_in(
    storage: Arc<dyn Storage>,
    new_size: u64,
    shrink: bool,
    prealloc: Prealloc,
    file: Option<&File>,
    backing: Option<Arc<dyn ImageReader>>,
) -> Result<()> {
    let mut img = RwImage::open(Arc::clone(&storage), Purpose::Modify)?;
    let h = img.r.header.clone();
    if prealloc != Prealloc::Off && new_size <= h.size {
        return Err(Error::invalid(
            "Preallocation can only be used for growing images",
        ));
    }
    if h.nb_snapshots > 0 && h.version < 3 {
        return Err(Error::Other(
            "Can't resize a v2 image which has snapshots".into(),
        ));
    }
    let bitmaps = Bitmaps::load(&img)?;
    // The external data file, resized with the image (QEMU truncates it too).
    let data = match &img.r.data_file {
        Some(p) => Some(vdisk_core::FileStorage::open_rw(p)?),
        None => None,
    };
    let raw = h.autoclear_features & crate::header::autoclear::DATA_FILE_RAW != 0;
    if let Some(b) = &bitmaps {
        b.refuse_in_use()?;
    }
    if new_size % 512 != 0 {
        return Err(Error::invalid("The new size must be a multiple of 512"));
    }
    if new_size > limits::MAX_VIRTUAL_SIZE {
        return Err(Error::invalid(format!(
            "Invalid image size specified. Must be between 0 and {}.",
            limits::MAX_VIRTUAL_SIZE
        )));
    }
    if new_size == h.size {
        return Ok(());
    }
    if new_size < h.size && !shrink {
        return Err(Error::invalid(
            "Use the --shrink option to perform a shrink operation.",
        ));
    }
    let need = h.min_l1_entries(new_size);
    if need * 8 > limits::MAX_L1_BYTES {
        return Err(Error::invalid(
            "Failed to grow the L1 table: File too large",
        ));
    }
    let mut l1 = img.r.l1.clone();
    let mut fresh = HashMap::new();
    // QEMU zeroes the added area when the backing file would otherwise show through it.
    let zero = new_size > h.size
        && h.backing_file.is_some()
        && backing_len(&img, backing.as_deref()).is_none_or(|b| b > h.size);
    let under = match (h.backing_file.is_some(), zero) {
        (false, _) => Backing::None,
        (true, false) => Backing::Short,
        (true, true) => Backing::Zeroed,
    };
    let mut t = Txn::new(&mut img);
    let mut run = None;
    if new_size > h.size {
        if need > l1.len() as u64 {
            l1.resize(need as usize, 0);
        }
        let reader = backing.as_deref();
        if zero && (prealloc == Prealloc::Off || data.is_some()) {
            let data = data.as_ref();
            zero_new_area(
                &mut t,
                &l1,
                &mut fresh,
                h.size,
                new_size,
                Under {
                    backing: reader,
                    data,
                },
            )?;
        }
        if data.is_some() && (prealloc != Prealloc::Off || raw) {
            // A raw data file must stay mapped one to one (QEMU turns on metadata
            // preallocation for it); over a longer backing file the new clusters stay zero.
            map_identity(&mut t, &l1, &mut fresh, h.size, new_size)?;
        } else if prealloc != Prealloc::Off {
            let sizes = (h.size, new_size);
            run = map_new_area(&mut t, &l1, &mut fresh, sizes, prealloc, under, reader)?;
        }
    } else {
        // Guest clusters from `keep` on are dropped.
        let keep = new_size.div_ceil(h.cluster_size());
        let per_l2 = h.l2_entries();
        let words = t.img.r.geo.words_per_entry();
        for (i, e) in l1.clone().iter().enumerate() {
            let l2 = e & L1E_OFFSET_MASK;
            let first = i as u64 * per_l2;
            if l2 == 0 || first + per_l2 <= keep {
                continue;
            }
            if first >= keep {
                add_l1_refs(&mut t, &[*e], -1)?;
                l1[i] = 0;
                continue;
            }
            let mut table = t.img.read_l2(l2)?;
            let cut = ((keep - first) as usize) * words;
            add_l2_refs(&mut t, &table[cut..], -1)?;
            table[cut..].fill(0);
            fresh.insert(i, table);
        }
    }
    let active = rewrite_active(&mut t, &l1, &fresh)?;
    let l1_off = replace_active_l1(&mut t, &active)?;
    let mut nh = h.clone();
    nh.l1_table_offset = l1_off;
    nh.l1_size = active.len() as u32;
    nh.size = new_size;
    if let Some(run) = &run {
        fill_run(&t, run, prealloc, file)?;
    }
    if let Some(d) = data.as_ref().filter(|_| new_size > h.size) {
        let exact = prealloc == Prealloc::Off && !raw;
        resize_data_file(d, new_size, h.cluster_size(), prealloc, exact)?;
    }
    if let Some(mut b) = bitmaps {
        b.truncate(t.img, new_size)?;
        if b.write(&mut t, &mut nh)? {
            t.rewrite_whole_header();
        }
    }
    t.commit(&nh, new_size < h.size)?;
    if let Some(d) = data.as_ref().filter(|_| new_size < h.size) {
        // Only once the image no longer maps what is cut.
        resize_data_file(d, new_size, h.cluster_size(), Prealloc::Off, true)?;
    }
    if new_size < h.size {
        compact(storage)?;
    }
    Ok(())
}

/// After a shrink: moves the active L1 and L2 tables (not shared with snapshots) and the snapshot
/// table into lower free clusters where there are some, and cuts the file after the last used
/// cluster, so that the tables the shrink itself wrote past the data do not keep the file long.
/// Another shadow-paged change: the image is valid before and after it.
fn compact(storage: Arc<dyn Storage>) -> Result<()> {
    let mut img = RwImage::open(storage, Purpose::Modify)?;
    let h = img.r.header.clone();
    let l1 = img.r.l1.clone();
    let cs = img.cs();
    let mut t = Txn::new(&mut img);
    let mut new_l1 = l1.clone();
    for (i, e) in l1.iter().enumerate() {
        let l2 = e & L1E_OFFSET_MASK;
        if l2 == 0 || t.get(l2 >> h.cluster_bits)? != 1 {
            continue;
        }
        let off = t.alloc(1)?;
        if off < l2 {
            let table = t.img.read_l2(l2)?;
            t.write(off, table.iter().flat_map(|x| x.to_be_bytes()).collect());
            t.add(l2 >> h.cluster_bits, -1)?;
            new_l1[i] = off | OFLAG_COPIED;
        } else {
            t.unalloc(off, 1);
        }
    }
    let mut nh = h.clone();
    let l1_clusters = (u64::from(h.l1_size) * 8).div_ceil(cs);
    if l1_clusters > 0 {
        let off = t.alloc(l1_clusters)?;
        if off < h.l1_table_offset || new_l1 != l1 {
            t.write(off, new_l1.iter().flat_map(|x| x.to_be_bytes()).collect());
            t.add_range(h.l1_table_offset, u64::from(h.l1_size) * 8, -1)?;
            nh.l1_table_offset = off;
        } else {
            t.unalloc(off, l1_clusters);
        }
    }
    let sn_bytes = t.img.r.snapshot_table_bytes;
    if h.nb_snapshots > 0 && sn_bytes > 0 {
        let n = sn_bytes.div_ceil(cs);
        let off = t.alloc(n)?;
        if off < h.snapshots_offset {
            let mut b = vec![0u8; sn_bytes as usize];
            t.img.storage.read_exact_at(&mut b, h.snapshots_offset)?;
            t.write(off, b);
            t.add_range(h.snapshots_offset, sn_bytes, -1)?;
            nh.snapshots_offset = off;
        } else {
            t.unalloc(off, n);
        }
    }
    t.commit(&nh, true)
}
