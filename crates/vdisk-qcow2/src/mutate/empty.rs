//! Emptying the active state of an image (`qemu-img commit` without `-d`; QEMU's
//! qcow2_make_empty): qcow2.txt "Cluster mapping" — every active L1 entry cleared, in one
//! shadow-paged transaction ([`Txn`]).

use super::image::{Purpose, RwImage};
use super::refs::{add_l1_refs, replace_active_l1, rewrite_active};
use super::txn::Txn;
use crate::tables::L1E_OFFSET_MASK;
use std::collections::HashMap;
use std::sync::Arc;
use vdisk_core::{Result, Storage};

/// `qemu-img commit`'s emptying of the overlay (QEMU's qcow2_make_empty): every active L1 entry is
/// cleared and the references it held dropped, in one transaction. Internal snapshots keep their
/// data (QEMU discards the active clusters one by one in that case, with the same result).
pub fn make_empty_in(storage: Arc<dyn Storage>) -> Result<()> {
    let mut img = RwImage::open(storage, Purpose::Modify)?;
    let h = img.r.header.clone();
    let l1 = img.r.l1.clone();
    if l1.iter().all(|e| e & L1E_OFFSET_MASK == 0) {
        return Ok(());
    }
    let mut t = Txn::new(&mut img);
    add_l1_refs(&mut t, &l1, -1)?;
    let empty = vec![0u64; l1.len()];
    let active = rewrite_active(&mut t, &empty, &HashMap::new())?;
    let l1_off = replace_active_l1(&mut t, &active)?;
    let mut nh = h;
    nh.l1_table_offset = l1_off;
    t.commit(&nh, false)
}
