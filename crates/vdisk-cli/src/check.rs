//! `vdisk check`: prints a format's `CheckReport` as qemu-img check does (human text or JSON) and
//! returns qemu-img's exit code.

use crate::json::{qdict_ordered, to_qemu_pretty};
use serde_json::Value;
use vdisk::core::CheckReport;

/// The human report, as `qemu-img check` prints it on stdout.
pub fn human(r: &CheckReport) -> String {
    let mut s = String::new();
    if r.corruptions == 0 && r.leaks == 0 && r.check_errors == 0 {
        s.push_str("No errors were found on the image.\n");
    } else {
        if r.corruptions > 0 {
            s.push_str(&format!(
                "\n{} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n",
                r.corruptions
            ));
        }
        if r.leaks > 0 {
            s.push_str(&format!(
                "\n{} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n",
                r.leaks
            ));
        }
        if r.check_errors > 0 {
            s.push_str(&format!(
                "\n{} internal errors have occurred during the check.\n",
                r.check_errors
            ));
        }
    }
    if let (Some(total), Some(alloc)) = (r.total_clusters, r.allocated_clusters) {
        if total != 0 && alloc != 0 {
            let pct = |n: Option<u64>| n.unwrap_or(0) as f64 * 100.0 / alloc as f64;
            s.push_str(&format!(
                "{alloc}/{total} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters\n",
                alloc as f64 * 100.0 / total as f64,
                pct(r.fragmented_clusters),
                pct(r.compressed_clusters)
            ));
        }
    }
    if let Some(end) = r.image_end_offset.filter(|e| *e != 0) {
        s.push_str(&format!("Image end offset: {end}\n"));
    }
    s
}

/// The JSON report, with qemu's field names; optional fields appear only when non-zero, as in qemu.
pub fn json(r: &CheckReport, filename: &str, format: &str) -> String {
    // QAPI's ImageCheck, in its schema's order; absent and zero counts are left out, as qemu-img's
    // `has_*` flags leave them out.
    let mut f: Vec<(String, Value)> = vec![
        ("filename".into(), filename.into()),
        ("format".into(), format.into()),
        ("check-errors".into(), r.check_errors.into()),
    ];
    let counts = [
        ("image-end-offset", r.image_end_offset),
        ("corruptions", Some(r.corruptions)),
        ("leaks", Some(r.leaks)),
        ("corruptions-fixed", Some(r.corruptions_fixed)),
        ("leaks-fixed", Some(r.leaks_fixed)),
        ("total-clusters", r.total_clusters),
        ("allocated-clusters", r.allocated_clusters),
        ("fragmented-clusters", r.fragmented_clusters),
        ("compressed-clusters", r.compressed_clusters),
    ];
    for (k, v) in counts {
        if let Some(v) = v.filter(|v| *v != 0) {
            f.push((k.into(), v.into()));
        }
    }
    to_qemu_pretty(&Value::Object(qdict_ordered(f)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_report_matches_qemu_reference() {
        let r = CheckReport {
            image_end_offset: Some(32899072),
            total_clusters: Some(1024),
            allocated_clusters: Some(497),
            fragmented_clusters: Some(0),
            compressed_clusters: Some(0),
            ..Default::default()
        };
        assert_eq!(
            human(&r),
            "No errors were found on the image.\n497/1024 = 48.54% allocated, 0.00% fragmented, 0.00% compressed clusters\nImage end offset: 32899072\n"
        );
        assert_eq!(
            json(&r, "q-default.qcow2", "qcow2"),
            "{\n    \"image-end-offset\": 32899072,\n    \"total-clusters\": 1024,\n    \"check-errors\": 0,\n    \"allocated-clusters\": 497,\n    \"filename\": \"q-default.qcow2\",\n    \"format\": \"qcow2\"\n}"
        );
    }
}
