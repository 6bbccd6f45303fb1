//! `qemu-img check -r leaks` and `-r all` on a VHDX image, as QEMU 10 runs them: qemu-img opens
//! the image read-write (`BDRV_O_RDWR | BDRV_O_CHECK`), so `vhdx_open` replays a log that needs
//! it ([`crate::replay`]); then `vhdx_co_check` counts the replay as one corruption fixed
//! (`if (s->log_replayed_on_open) result->corruptions_fixed++`) and checks the BAT entries
//! (`vhdx_check_bat_entries`), which it never repairs: both modes do the same. qemu-img then, when
//! something was fixed, checks again and reports the second check with the first one's fixed
//! counts (qemu-img.c `img_check`). On an image without a log to replay nothing is written.

use crate::reader::open_for_check;
use crate::replay::replay_log;
use std::path::Path;
use std::sync::Arc;
use vdisk_core::{CheckReport, FileStorage, ImageReader, Result, Storage};

/// What [`repair`] did and found.
#[derive(Debug, Clone, Default)]
pub struct RepairOutcome {
    /// Whether a log was replayed.
    pub replayed: bool,
    /// The check of the image after the replay (qemu-img's second check): the BAT findings, with
    /// `corruptions_fixed` 1 when a log was replayed (0 otherwise).
    pub report: CheckReport,
}

/// `qemu-img check -r leaks|all` on the VHDX image at `path`, opened read-write.
pub fn repair(path: &Path) -> Result<RepairOutcome> {
    repair_in(Arc::new(FileStorage::open_rw(path)?))
}

/// [`repair`] on the image in `storage` (which must be writable when its log needs replaying).
pub fn repair_in(storage: Arc<dyn Storage>) -> Result<RepairOutcome> {
    let replayed = replay_log(storage.as_ref())?;
    let mut report = open_for_check(storage)?.check()?;
    report.corruptions_fixed = u64::from(replayed);
    Ok(RepairOutcome { replayed, report })
}
