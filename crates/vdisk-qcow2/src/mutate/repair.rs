//! `qemu-img check -r leaks|all` (QEMU's qcow2_check_refcounts with BDRV_FIX_LEAKS/ERRORS): the
//! crate's check computes every cluster's references; stored refcounts that are too high (leaks)
//! and, with `fix_errors`, too low (corruptions) are set to the computed value, COPIED flags are
//! made true, the dirty and corrupt bits are cleared when nothing unfixable remains; then the image
//! is checked again. The new refcount blocks and table are written shadow-paged ([`Txn`]).

use super::image::{Purpose, RwImage};
use super::refs::{replace_active_l1, rewrite_active};
use super::txn::Txn;
use crate::header::incompat;
use crate::reader::{open, OpenOptions};
use std::collections::HashMap;
use std::sync::Arc;
use vdisk_core::storage::NoFiles;
use vdisk_core::{CheckReport, Error, ImageReader, Result, Storage};

/// What a repair did: the check before and after, and what it fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairOutcome {
    pub before: CheckReport,
    pub after: CheckReport,
    pub leaks_fixed: u64,
    pub corruptions_fixed: u64,
}

/// Whether a check finding is one that rebuilding refcounts and COPIED flags fixes.
fn fixable(msg: &str) -> bool {
    msg.starts_with("ERROR cluster ")
        || msg.starts_with("ERROR OFLAG_COPIED")
        || msg.starts_with("Leaked cluster ")
}

/// Repairs the image in `storage`.
pub fn repair_in(
    storage: Arc<dyn Storage>,
    fix_leaks: bool,
    fix_errors: bool,
) -> Result<RepairOutcome> {
    let mut img = RwImage::open(Arc::clone(&storage), Purpose::Repair)?;
    let before = img.report.clone();
    if before.check_errors > 0 {
        return Err(Error::Other(format!(
            "{}: the check could not complete ({} errors); the image cannot be repaired",
            img.path().display(),
            before.check_errors
        )));
    }
    let h = img.r.header.clone();
    let flags = incompat::DIRTY | incompat::CORRUPT;
    let unfixable = before.messages.iter().any(|m| !fixable(m));
    let clear_flags = fix_errors && !unfixable && h.incompatible_features & flags != 0;
    let wanted =
        (fix_leaks && before.leaks > 0) || (fix_errors && before.corruptions > 0) || clear_flags;
    if !wanted {
        return Ok(RepairOutcome {
            after: before.clone(),
            before,
            leaks_fixed: 0,
            corruptions_fixed: 0,
        });
    }
    let refs = img.refs.clone();
    let l1 = img.r.l1.clone();
    let mut t = Txn::new(&mut img);
    for (c, computed) in refs.iter().enumerate() {
        let computed = u64::from(*computed);
        let stored = t.img.stored_refcount(c as u64)?;
        if (stored > computed && fix_leaks) || (stored < computed && fix_errors) {
            t.set(c as u64, computed);
        }
    }
    let mut nh = h.clone();
    if fix_errors {
        let active = rewrite_active(&mut t, &l1, &HashMap::new())?;
        nh.l1_table_offset = replace_active_l1(&mut t, &active)?;
        if clear_flags || !unfixable {
            nh.incompatible_features &= !flags;
        }
    }
    t.commit(&nh, false)?;
    let after = open(
        Arc::clone(&storage),
        Arc::new(NoFiles),
        &OpenOptions::default(),
    )?
    .check()?;
    Ok(RepairOutcome {
        leaks_fixed: before.leaks.saturating_sub(after.leaks),
        corruptions_fixed: before.corruptions.saturating_sub(after.corruptions),
        before,
        after,
    })
}
