//! `qemu-img check -r leaks|all` (QEMU's qcow2_check_refcounts with BDRV_FIX_LEAKS/ERRORS): the
//! crate's check computes every cluster's references; stored refcounts that are too high (leaks)
//! and, with `fix_errors`, too low (corruptions) are set to the computed value. COPIED flags are
//! then made true with `-r all`, and with `-r leaks` when nothing but leaks and wrong COPIED flags
//! was found (QEMU's check_oflag_copied: the refcounts are then right once the leaks are fixed,
//! and fixing leaks can itself make a flag wrong: a cluster at refcount 2 with one reference).
//! Either mode clears the dirty and corrupt bits when it leaves no corruption (QEMU's
//! qcow2_check). The new tables are written shadow-paged ([`Txn`]); the image is checked again.

use super::image::{Purpose, RwImage};
use super::refs::{copied_mismatches, replace_active_l1, rewrite_active};
use super::snapshot::complete_snapshot_table;
use super::txn::{write_fixed_header, Txn};
use crate::header::incompat;
use crate::reader::{open, OpenOptions};
use crate::refcount::REFT_OFFSET_MASK;
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
    /// What QEMU prints to stderr while it repairs, in its order: the findings of the first
    /// comparison, then each refcount again as "Repairing cluster ..." (or unchanged when this
    /// mode does not fix it), then the COPIED flags against the fixed refcounts ("Repairing
    /// OFLAG_COPIED ..." or "ERROR OFLAG_COPIED ..."). The check after the repair is `after`.
    pub log: Vec<String>,
}

/// Whether a check finding is one that rebuilding refcounts and COPIED flags fixes.
fn fixable(msg: &str) -> bool {
    msg.starts_with("ERROR cluster ")
        || msg.starts_with("ERROR OFLAG_COPIED")
        || msg.starts_with("Leaked cluster ")
        || msg.starts_with("ERROR refcount table entry ")
        || (msg.starts_with("ERROR refcount block ")
            && (msg.ends_with(" is outside image")
                || msg.ends_with(" entry corrupted")
                || msg.contains(" refcount=")))
        || is_incomplete_snapshot(msg)
}

/// A version 3 snapshot table entry without the extra data every entry needs: `-r all` writes
/// the table again with it ([`complete_snapshot_table`]).
fn is_incomplete_snapshot(msg: &str) -> bool {
    msg.starts_with("ERROR snapshot table entry ") && msg.ends_with(" is incomplete")
}

/// The refcount table entries `-r all` drops (their blocks' clusters then count as refcount 0,
/// and new blocks describe the computed refcounts, as QEMU's rebuild does): reserved bits set, a
/// misaligned block, or a block past the end of the file. The check counted none of them as a
/// reference.
fn unusable_blocks(img: &RwImage) -> Vec<u64> {
    let cs = img.cs();
    let file_len = img.r.file_len;
    img.reftable
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            let off = **e & REFT_OFFSET_MASK;
            **e & !REFT_OFFSET_MASK != 0 || (off != 0 && (off % cs != 0 || off >= file_len))
        })
        .map(|(i, _)| i as u64)
        .collect()
}

/// The refcount table entries whose block the check counted more than once, with the block's
/// cluster ("ERROR refcount block N refcount=K": the cluster is also another entry's block, a
/// table or guest data, so what it holds cannot be trusted as refcounts). `-r all` drops them as
/// well, and the cluster loses the references they gave it; QEMU's rebuild gives every refcount
/// new blocks instead. The same clusters stay in use until the switch (the check counted them).
fn shared_blocks(img: &RwImage) -> Vec<(u64, u64)> {
    let cs = img.cs();
    img.reftable
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let off = *e & REFT_OFFSET_MASK;
            if *e & !REFT_OFFSET_MASK != 0 || off == 0 || off % cs != 0 || off >= img.r.file_len {
                return None;
            }
            let c = off / cs;
            let counted = usize::try_from(c).ok().and_then(|k| img.refs.get(k))?;
            (*counted > 1).then_some((i as u64, c))
        })
        .collect()
}

/// Whether a check finding makes QEMU rebuild the refcount structures (check_refblocks and
/// compare_refcounts set `rebuild`): a cluster in use at refcount 0, a refcount table entry with
/// reserved bits set, or a refcount block that is misaligned or not referenced exactly once.
/// `-r leaks` then fails without writing.
fn needs_rebuild(msg: &str) -> bool {
    (msg.starts_with("ERROR cluster ") && msg.contains(" refcount=0 "))
        || msg.starts_with("ERROR refcount table entry ")
        || (msg.starts_with("ERROR refcount block ") && !msg.ends_with(" is outside image"))
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
    if !fix_errors {
        if let Some(m) = before.messages.iter().find(|m| needs_rebuild(m)) {
            return Err(Error::Other(format!(
                "{}: Check failed: the refcount structures need to be rebuilt ({m}), which only \
                 -r all does",
                img.path().display()
            )));
        }
    }
    let h = img.r.header.clone();
    let flags = incompat::DIRTY | incompat::CORRUPT;
    let unfixable = before.messages.iter().any(|m| !fixable(m));
    let leaks_and_copied_only = before
        .messages
        .iter()
        .all(|m| m.starts_with("Leaked cluster ") || m.starts_with("ERROR OFLAG_COPIED"));
    let fix_copied = fix_errors || (fix_leaks && leaks_and_copied_only);
    // What the repair leaves: no corruption when it fixes every finding there is.
    let fixes_all = if fix_errors {
        !unfixable
    } else {
        fix_leaks && leaks_and_copied_only
    };
    let clear_flags = fixes_all && h.incompatible_features & flags != 0;
    let fixes = (fix_leaks && before.leaks > 0) || (fix_copied && before.corruptions > 0);
    let mut log = first_passes(&before.messages, fix_leaks, fix_errors);
    if !fixes {
        log.extend(before.messages.iter().filter(|m| is_copied(m)).cloned());
        if clear_flags {
            // Nothing else to change: the feature bits are cleared in place, as QEMU does.
            let mut nh = h.clone();
            nh.incompatible_features &= !flags;
            drop(img);
            write_fixed_header(storage.as_ref(), &nh)?;
            storage.sync()?;
        }
        return Ok(RepairOutcome {
            after: if clear_flags {
                recheck(&storage)?
            } else {
                before.clone()
            },
            before,
            leaks_fixed: 0,
            corruptions_fixed: 0,
            log,
        });
    }
    let mut corruptions_fixed = 0u64;
    let shared = if fix_errors {
        shared_blocks(&img)
    } else {
        Vec::new()
    };
    if fix_errors {
        for bi in unusable_blocks(&img) {
            img.forget_block(bi);
            corruptions_fixed += 1;
        }
        for (bi, _) in &shared {
            img.forget_block(*bi);
            corruptions_fixed += 1;
        }
    }
    let refs = img.refs.clone();
    let l1 = img.r.l1.clone();
    let mut t = Txn::new(&mut img);
    for (c, computed) in refs.iter().enumerate() {
        let computed = u64::from(*computed);
        let stored = t.img.stored_refcount(c as u64)?;
        if stored > computed && fix_leaks {
            t.set(c as u64, computed);
        } else if stored < computed && fix_errors {
            t.set(c as u64, computed);
            corruptions_fixed += 1;
        }
    }
    // A dropped block's cluster keeps only its other references.
    for (_, c) in &shared {
        t.add(*c, -1)?;
    }
    let mut nh = h.clone();
    if fix_errors && before.messages.iter().any(|m| is_incomplete_snapshot(m)) {
        if let Some((offset, count, completed)) = complete_snapshot_table(&mut t)? {
            (nh.snapshots_offset, nh.nb_snapshots) = (offset, count);
            corruptions_fixed += completed;
        }
    }
    let (copied, compressed) = copied_mismatches(&mut t, &l1)?;
    let prefix = if fix_copied { "Repairing" } else { "ERROR" };
    log.extend(copied.iter().map(|m| format!("{prefix} {m}")));
    if fix_copied {
        corruptions_fixed += copied.len() as u64;
        if fix_errors {
            corruptions_fixed += compressed;
        }
        let active = rewrite_active(&mut t, &l1, &HashMap::new())?;
        nh.l1_table_offset = replace_active_l1(&mut t, &active)?;
    }
    if fixes_all {
        nh.incompatible_features &= !flags;
    }
    t.commit(&nh, false)?;
    let after = recheck(&storage)?;
    Ok(RepairOutcome {
        leaks_fixed: before.leaks.saturating_sub(after.leaks),
        corruptions_fixed,
        before,
        after,
        log,
    })
}

fn is_copied(msg: &str) -> bool {
    msg.starts_with("ERROR OFLAG_COPIED")
}

/// QEMU's stderr before its COPIED pass: the findings (its COPIED ones come last, from that
/// pass), then, when there was a leak or corruption, the refcount comparison again with fixing
/// on: "Repairing cluster N ..." for what this mode fixes, the finding unchanged otherwise.
fn first_passes(findings: &[String], fix_leaks: bool, fix_errors: bool) -> Vec<String> {
    // With -r all QEMU fixes a refcount block past the end of the file as it finds it.
    let mut log: Vec<String> = findings
        .iter()
        .filter(|m| !is_copied(m))
        .map(|m| match m.strip_prefix("ERROR ") {
            Some(rest)
                if fix_errors
                    && (rest.ends_with(" is outside image") || is_incomplete_snapshot(m)) =>
            {
                format!("Repairing {rest}")
            }
            _ => m.clone(),
        })
        .collect();
    if log.is_empty() {
        return log;
    }
    for m in findings {
        let fixed = match (m.strip_prefix("Leaked "), m.strip_prefix("ERROR ")) {
            (Some(rest), _) if fix_leaks => Some(rest),
            (_, Some(rest)) if fix_errors && rest.starts_with("cluster ") => Some(rest),
            _ => None,
        };
        match fixed {
            Some(rest) => log.push(format!("Repairing {rest}")),
            None if m.starts_with("Leaked cluster ") || m.starts_with("ERROR cluster ") => {
                log.push(m.clone())
            }
            None => {}
        }
    }
    log
}

/// The check of the repaired image.
fn recheck(storage: &Arc<dyn Storage>) -> Result<CheckReport> {
    open(
        Arc::clone(storage),
        Arc::new(NoFiles),
        &OpenOptions::default(),
    )?
    .check()
}
