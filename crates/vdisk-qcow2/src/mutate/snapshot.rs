//! Internal snapshots, as `qemu-img snapshot -c/-a/-d` makes them (qcow2.txt "Snapshots"; QEMU's
//! block/qcow2-snapshot.c): a snapshot owns a copy of the L1 table, and every L2 table and data
//! cluster it reaches gains a reference; applying one makes a copy of its L1 the active one;
//! deleting one drops its references. All through a shadow-paged [`Txn`].

use super::bitmaps::Bitmaps;
use super::image::{Purpose, RwImage};
use super::refs::{add_l1_refs, replace_active_l1, rewrite_active};
use super::txn::Txn;
use crate::limits;
use crate::snapshot::Snapshot;
use std::collections::HashMap;
use std::sync::Arc;
use vdisk_core::{Error, Result, Storage};

/// QEMU's find_snapshot_by_id_or_name: the id first, then the name.
fn find(list: &[Snapshot], name_or_id: &str) -> Option<usize> {
    list.iter()
        .position(|s| s.id == name_or_id)
        .or_else(|| list.iter().position(|s| s.name == name_or_id))
}

/// Writes the new snapshot table (or none) and frees the old one; returns (offset, count).
pub(crate) fn put_snapshot_table(t: &mut Txn, list: &[Snapshot]) -> Result<(u64, u32)> {
    let h = t.img.r.header.clone();
    if h.nb_snapshots > 0 {
        let bytes = t.img.r.snapshot_table_bytes;
        t.add_range(h.snapshots_offset, bytes, -1)?;
    }
    if list.is_empty() {
        return Ok((0, 0));
    }
    let bytes: Vec<u8> = list.iter().flat_map(|s| s.serialize()).collect();
    if bytes.len() as u64 > limits::MAX_SNAPSHOT_TABLE_BYTES
        || list.len() as u64 > limits::MAX_SNAPSHOTS
    {
        return Err(Error::Other(format!(
            "{}: Too many snapshots",
            t.img.path().display()
        )));
    }
    let off = t.alloc((bytes.len() as u64).div_ceil(t.img.cs()))?;
    t.write(off, bytes);
    Ok((off, list.len() as u32))
}

/// Writes the snapshot table again when an entry lacks the extra data version 3 needs (the VM
/// state size and disk size), the disk size of such an entry taken as the image's, as QEMU reads
/// it: qcow2_upgrade and qcow2_check_fix_snapshot_table. Returns the new (offset, count) and how
/// many entries were completed, or `None` when none lacked it.
pub(crate) fn complete_snapshot_table(t: &mut Txn) -> Result<Option<(u64, u32, u64)>> {
    let size = t.img.r.header.size;
    let mut list = t.img.r.snapshots.clone();
    let mut completed = 0u64;
    for sn in list.iter_mut().filter(|sn| sn.disk_size.is_none()) {
        sn.disk_size = Some(size);
        completed += 1;
    }
    if completed == 0 {
        return Ok(None);
    }
    let (offset, count) = put_snapshot_table(t, &list)?;
    Ok(Some((offset, count, completed)))
}

/// `qemu-img snapshot -c NAME` on the image in `storage`.
pub fn snapshot_create_in(storage: Arc<dyn Storage>, name: &str) -> Result<()> {
    let fail = |e: String| Error::Other(format!("Could not create snapshot '{name}': {e}"));
    let mut img = RwImage::open(storage, Purpose::Modify)?;
    if img.r.geo.data_file {
        return Err(fail("Operation not supported".into()));
    }
    let list = img.r.snapshots.clone();
    if list.len() as u64 >= limits::MAX_SNAPSHOTS {
        return Err(fail("Too many snapshots".into()));
    }
    if name.len() > usize::from(u16::MAX) {
        return Err(fail("Snapshot name too long".into()));
    }
    let id = list
        .iter()
        .map(|s| s.id.to_lossy().parse::<u64>().unwrap_or(0))
        .max()
        .unwrap_or(0)
        + 1;
    let h = img.r.header.clone();
    let l1 = img.r.l1.clone();
    let (sec, nsec) = now();
    let mut t = Txn::new(&mut img);
    let sn_l1 = if l1.is_empty() { 0 } else { t.put_table(&l1)? };
    add_l1_refs(&mut t, &l1, 1)?;
    let active = rewrite_active(&mut t, &l1, &HashMap::new())?;
    let l1_off = replace_active_l1(&mut t, &active)?;
    let mut new_list = list;
    new_list.push(Snapshot {
        l1_table_offset: sn_l1,
        l1_size: h.l1_size,
        id: id.to_string().into(),
        name: name.into(),
        date_sec: sec,
        date_nsec: nsec,
        vm_clock_nsec: 0,
        vm_state_size: 0,
        disk_size: Some(h.size),
        icount: Some(0),
        extra_rest: Vec::new(),
    });
    let (sn_off, nb) = put_snapshot_table(&mut t, &new_list)?;
    let mut nh = h;
    nh.l1_table_offset = l1_off;
    nh.snapshots_offset = sn_off;
    nh.nb_snapshots = nb;
    t.commit(&nh, false).map_err(|e| fail(e.to_string()))
}

/// `qemu-img snapshot -a NAME_OR_ID`: the active disk becomes the snapshot's (contents and size).
pub fn snapshot_apply_in(storage: Arc<dyn Storage>, name_or_id: &str) -> Result<()> {
    let fail = |e: String| Error::Other(format!("Could not apply snapshot '{name_or_id}': {e}"));
    let mut img = RwImage::open(storage, Purpose::Modify)?;
    if img.r.geo.data_file {
        return Err(fail(
            "Failed to load snapshot: Operation not supported".into(),
        ));
    }
    // QEMU's bdrv_snapshot_goto: any persistent bitmap, enabled or not, in use or not.
    if Bitmaps::load(&img)?.is_some_and(|b| b.any()) {
        return Err(fail("Device has active dirty bitmaps".into()));
    }
    let i = find(&img.r.snapshots, name_or_id)
        .ok_or_else(|| fail("Failed to load snapshot: No such file or directory".into()))?;
    let sn = img.r.snapshots[i].clone();
    if sn.l1_table_offset % img.cs() != 0 {
        return Err(fail("Snapshot L1 table offset invalid".into()));
    }
    let h = img.r.header.clone();
    let size = sn.disk_size.unwrap_or(h.size);
    let sn_l1 = img.read_l1(sn.l1_table_offset, sn.l1_size)?;
    let entries = u64::from(h.l1_size)
        .max(u64::from(sn.l1_size))
        .max(h.min_l1_entries(size));
    if entries * 8 > limits::MAX_L1_BYTES {
        return Err(fail("Active L1 table too large".into()));
    }
    let mut l1 = sn_l1;
    l1.resize(entries as usize, 0);
    let old = img.r.l1.clone();
    let mut t = Txn::new(&mut img);
    add_l1_refs(&mut t, &l1, 1)?;
    add_l1_refs(&mut t, &old, -1)?;
    let active = rewrite_active(&mut t, &l1, &HashMap::new())?;
    let l1_off = replace_active_l1(&mut t, &active)?;
    let mut nh = h;
    nh.l1_table_offset = l1_off;
    nh.l1_size = entries as u32;
    nh.size = size;
    t.commit(&nh, false).map_err(|e| fail(e.to_string()))
}

/// `qemu-img snapshot -d NAME_OR_ID`.
pub fn snapshot_delete_in(storage: Arc<dyn Storage>, name_or_id: &str) -> Result<()> {
    let fail = |e: String| Error::Other(format!("Could not delete snapshot '{name_or_id}': {e}"));
    let mut img = RwImage::open(storage, Purpose::Modify)?;
    // qemu-img's bdrv_snapshot_find matches names only.
    let i = img
        .r
        .snapshots
        .iter()
        .position(|s| s.name == name_or_id)
        .ok_or_else(|| fail("snapshot not found".into()))?;
    let mut list = img.r.snapshots.clone();
    let sn = list.remove(i);
    if sn.l1_table_offset % img.cs() != 0 {
        return Err(fail("Snapshot L1 table offset invalid".into()));
    }
    let sn_l1 = img.read_l1(sn.l1_table_offset, sn.l1_size)?;
    let h = img.r.header.clone();
    let l1 = img.r.l1.clone();
    let mut t = Txn::new(&mut img);
    add_l1_refs(&mut t, &sn_l1, -1)?;
    t.add_range(sn.l1_table_offset, u64::from(sn.l1_size) * 8, -1)?;
    let active = rewrite_active(&mut t, &l1, &HashMap::new())?;
    let l1_off = replace_active_l1(&mut t, &active)?;
    let (sn_off, nb) = put_snapshot_table(&mut t, &list)?;
    let mut nh = h;
    nh.l1_table_offset = l1_off;
    nh.snapshots_offset = sn_off;
    nh.nb_snapshots = nb;
    t.commit(&nh, false).map_err(|e| fail(e.to_string()))
}

/// The wall clock as QEMU stores snapshot dates: seconds and microseconds (as nanoseconds).
fn now() -> (u32, u32) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as u32, d.subsec_micros() * 1000)
}
