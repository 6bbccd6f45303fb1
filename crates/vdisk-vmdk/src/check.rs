//! `check` for VMDK: every grain table and every allocated grain of each sparse extent must lie inside
//! its file (qemu's `vmdk_co_check`: "cluster offset for sector N points after EOF"), and the redundant
//! grain directory must describe the same grains as the primary one ("Hosted Sparse Extent Header":
//! rgdOffset, flag bit 1). Like qemu, only errors are reported (no leak accounting).

use crate::limits::SECTOR;
use crate::reader::{ExtentData, VmdkReader};
use crate::sparse::{read_u32s, Grain, SparseExtent};
use vdisk_core::{CheckReport, Result};

/// At most this many messages are kept; the counts go on.
const MAX_MESSAGES: usize = 100;

fn note(r: &mut CheckReport, msg: String) {
    r.corruptions += 1;
    if r.messages.len() < MAX_MESSAGES {
        r.messages.push(msg);
    }
}

/// Checks every sparse extent of `reader`.
pub fn check(reader: &VmdkReader) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    for (i, e) in reader.extents.iter().enumerate() {
        if let ExtentData::Sparse { .. } = &e.data {
            match reader.sparse_extent(i) {
                Ok(sp) => check_sparse(&sp, e.start, &mut r),
                Err(err) => {
                    r.check_errors += 1;
                    r.messages
                        .push(format!("ERROR: cannot load extent {i} again: {err}"));
                }
            }
        }
    }
    if r.messages.iter().any(|m| m.contains("points after EOF")) {
        // qemu's check gives up with EINVAL ("Check failed", exit code 1) once a grain points after EOF.
        r.check_errors = 1;
    }
    Ok(r)
}

fn check_sparse(sp: &SparseExtent, start: u64, r: &mut CheckReport) {
    let h = &sp.header;
    let per = u64::from(h.num_gtes_per_gt);
    let g = sp.grain_bytes();
    let name = sp.path().display().to_string();
    // Host offset of every grain inside the file, to find grains stored twice. Bounded by the file:
    // each grain table is scanned once (a table shared by two directory entries is itself reported).
    let mut used: Vec<u64> = Vec::new();
    let mut tables = std::collections::HashSet::new();
    for (i, &gde) in sp.gd.iter().enumerate() {
        if gde == 0 {
            continue;
        }
        if !tables.insert(gde) {
            note(r, format!("ERROR: {name}: grain directory entry {i} reuses the grain table at sector {gde}"));
            continue;
        }
        let Ok(gt) = sp.grain_table(gde) else {
            note(
                r,
                format!("ERROR: {name}: grain table {i} at sector {gde} points after EOF"),
            );
            continue;
        };
        for (j, &gte) in gt.iter().enumerate() {
            let guest = (i as u64 * per + j as u64) * g;
            if guest >= sp.capacity() {
                break;
            }
            let sector = (start + guest) / SECTOR;
            let at = match sp.classify(gte) {
                Ok(Grain::Data(at) | Grain::Compressed(at)) => at,
                Ok(_) => continue,
                Err(e) => {
                    note(r, format!("ERROR: {name}: grain for sector {sector}: {e}"));
                    continue;
                }
            };
            if at >= sp.file_len {
                note(
                    r,
                    format!("ERROR: cluster offset for sector {sector} points after EOF"),
                );
            } else if at < h.overhead.saturating_mul(SECTOR) {
                note(
                    r,
                    format!(
                        "ERROR: {name}: grain for sector {sector} at sector {} overlaps the metadata (overhead {} sectors)",
                        at / SECTOR,
                        h.overhead
                    ),
                );
            } else {
                used.push(at);
            }
        }
    }
    used.sort_unstable();
    for w in used.windows(2) {
        if w[0] == w[1] {
            note(
                r,
                format!(
                    "ERROR: {name}: two grains share host sector {}",
                    w[0] / SECTOR
                ),
            );
        }
    }
    if h.has_rgd() {
        check_rgd(sp, r, &name);
    }
}

fn check_rgd(sp: &SparseExtent, r: &mut CheckReport, name: &str) {
    let h = &sp.header;
    let n = sp.gd.len();
    let at = h.rgd_offset.saturating_mul(SECTOR);
    if at
        .checked_add(n as u64 * 4)
        .is_none_or(|end| end > sp.file_len)
    {
        note(r, format!("ERROR: {name}: redundant grain directory at sector {} lies past the end of the file", h.rgd_offset));
        return;
    }
    let rgd = match read_u32s(&*sp.storage, at, n) {
        Ok(v) => v,
        Err(e) => {
            r.check_errors += 1;
            r.messages.push(format!(
                "ERROR: {name}: cannot read the redundant grain directory: {e}"
            ));
            return;
        }
    };
    // Each (table, redundant table) pair is compared once, so shared tables cost nothing extra.
    let mut compared = std::collections::HashSet::new();
    for (i, (&a, b)) in sp
        .gd
        .iter()
        .zip(rgd.iter().map(|v| u64::from(*v)))
        .enumerate()
    {
        if !compared.insert((a, b)) {
            continue;
        }
        let same = match (a, b) {
            (0, 0) => true,
            (0, _) | (_, 0) => false,
            (a, b) => match (sp.grain_table(a), sp.grain_table(b)) {
                (Ok(ta), Ok(tb)) => ta == tb,
                (Err(_), _) => true, // already reported above
                (_, Err(_)) => {
                    note(r, format!("ERROR: {name}: redundant grain table {i} at sector {b} points after EOF"));
                    continue;
                }
            },
        };
        if !same {
            note(
                r,
                format!("ERROR: {name}: redundant grain table {i} does not match grain table {i}"),
            );
        }
    }
}
