#![allow(dead_code)]
//! Shared helpers for the qemu oracle tests: open a fixture and compare it with qemu-img.

use std::path::Path;
use std::sync::Arc;
use vdisk_core::storage::HostFiles;
use vdisk_core::{FileStorage, ImageReader};
use vdisk_qcow2::{open, OpenOptions, Qcow2Reader};
use vdisk_testutil::*;

pub fn open_path(p: &Path, opts: &OpenOptions) -> vdisk_core::Result<Qcow2Reader> {
    open(Arc::new(FileStorage::open(p)?), Arc::new(HostFiles), opts)
}

/// qemu's map entries reduced to the keys vdisk_map_json produces.
pub fn qemu_map(p: &Path) -> serde_json::Value {
    let keys = [
        "start",
        "length",
        "depth",
        "present",
        "zero",
        "data",
        "compressed",
        "offset",
    ];
    let v = qemu_map_json(p, Some("qcow2"));
    serde_json::Value::Array(
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let mut m = serde_json::Map::new();
                for k in keys {
                    if let Some(x) = e.get(k) {
                        m.insert(k.into(), x.clone());
                    }
                }
                serde_json::Value::Object(m)
            })
            .collect(),
    )
}

/// Bytes, map, format-specific info and check statistics all equal qemu's.
pub fn verify(p: &Path) {
    let r = open_path(p, &OpenOptions::default())
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let what = p.display().to_string();
    let oracle = qemu_raw_bytes(p, Some("qcow2"));
    assert_same_bytes(&read_all(&r, 100_000), &oracle, &what);
    assert_same_bytes(&read_all(&r, 1 << 20), &oracle, &what);
    assert_eq!(vdisk_map_json(&r), qemu_map(p), "map of {what}");
    verify_info(&r, p);
    verify_check(&r, p);
}

pub fn verify_info(r: &Qcow2Reader, p: &Path) {
    let q = qemu_info_json(p);
    let info = r.info().unwrap();
    let (ty, data) = info.format_specific.clone().unwrap();
    assert_eq!(ty, "qcow2");
    assert_eq!(
        data.to_string(),
        q["format-specific"]["data"].to_string(),
        "format-specific of {}",
        p.display()
    );
    assert_eq!(info.virtual_size, q["virtual-size"].as_u64().unwrap());
    assert_eq!(info.cluster_size, q["cluster-size"].as_u64());
    assert_eq!(info.dirty, q["dirty-flag"].as_bool().unwrap());
    assert_eq!(
        info.encrypted,
        q.get("encrypted")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    );
    let names: Vec<_> = info.children.iter().map(|c| c.name.as_str()).collect();
    let qnames: Vec<_> = q["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, qnames, "children of {}", p.display());
    let qsnaps = q
        .get("snapshots")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(info.snapshots.len(), qsnaps.len());
    for (ours, theirs) in info.snapshots.iter().zip(&qsnaps) {
        let u = |k: &str| theirs[k].as_u64().unwrap();
        assert_eq!(
            (ours.id.as_str(), ours.name.as_str()),
            (
                theirs["id"].as_str().unwrap(),
                theirs["name"].as_str().unwrap()
            )
        );
        assert_eq!(
            (ours.date_sec, u64::from(ours.date_nsec)),
            (u("date-sec"), u("date-nsec"))
        );
        assert_eq!(
            ours.vm_clock_nsec,
            u("vm-clock-sec") * 1_000_000_000 + u("vm-clock-nsec")
        );
        assert_eq!(ours.vm_state_size, u("vm-state-size"));
        assert_eq!(ours.icount, theirs.get("icount").and_then(|v| v.as_u64()));
    }
    assert_eq!(
        info.backing.as_ref().map(|b| b.filename.clone()),
        q["backing-filename"].as_str().map(String::from)
    );
    assert_eq!(
        info.backing.as_ref().and_then(|b| b.format.clone()),
        q["backing-filename-format"].as_str().map(String::from)
    );
}

pub fn verify_check(r: &Qcow2Reader, p: &Path) {
    let out = std::process::Command::new("qemu-img")
        .args(["check", "--output=json", "-f", "qcow2"])
        .arg(p)
        .output()
        .unwrap();
    let q: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = r.check().unwrap();
    let n = |k: &str| q.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let what = p.display();
    assert_eq!(
        c.exit_code(),
        out.status.code().unwrap(),
        "exit code of {what}"
    );
    assert_eq!(c.corruptions, n("corruptions"), "corruptions of {what}");
    assert_eq!(c.leaks, n("leaks"), "leaks of {what}");
    assert_eq!(
        c.image_end_offset,
        q.get("image-end-offset").and_then(|v| v.as_u64()),
        "end of {what}"
    );
    assert_eq!(
        c.total_clusters,
        q.get("total-clusters").and_then(|v| v.as_u64()),
        "total of {what}"
    );
    assert_eq!(
        c.allocated_clusters.unwrap_or(0),
        n("allocated-clusters"),
        "allocated of {what}"
    );
    assert_eq!(
        c.fragmented_clusters.unwrap_or(0),
        n("fragmented-clusters"),
        "fragmented of {what}"
    );
    assert_eq!(
        c.compressed_clusters.unwrap_or(0),
        n("compressed-clusters"),
        "compressed of {what}"
    );
}

/// Creates `name` with `opts` and size, then runs qemu-io commands on it.
pub fn make(s: &Scratch, name: &str, opts: &str, size: &str, cmds: &[&str]) -> std::path::PathBuf {
    let p = s.join(name);
    let ps = p.to_str().unwrap();
    if opts.is_empty() {
        qemu_img(&["create", "-q", "-f", "qcow2", ps, size]);
    } else {
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, ps, size]);
    }
    if !cmds.is_empty() {
        qemu_io("qcow2", &p, cmds);
    }
    p
}

/// A typical pattern: data, a hole, explicit zeros, more data near the end.
pub const PATTERN: &[&str] = &[
    "write -P 0x11 0 100k",
    "write -P 0x22 300k 64k",
    "write -z 512k 128k",
    "write -P 0x33 1M 3k",
    "write -P 0x44 2000k 48k",
];

/// The check of `p` opened with `opts`: the same findings (the lines starting "ERROR" or
/// "Leaked", in any order) and exit code as `qemu-img check`.
pub fn check_like_qemu(p: &Path, opts: &OpenOptions) -> vdisk_core::CheckReport {
    use vdisk_core::ImageReader;
    let c = open_path(p, opts).unwrap().check().unwrap();
    let out = std::process::Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(p)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let finding = |l: &&str| l.starts_with("ERROR") || l.starts_with("Leaked");
    let mut theirs: Vec<&str> = text.lines().filter(finding).collect();
    let mut ours: Vec<&str> = c
        .messages
        .iter()
        .map(String::as_str)
        .filter(finding)
        .collect();
    theirs.sort();
    ours.sort();
    assert_eq!(ours, theirs, "findings for {}", p.display());
    assert_eq!(
        Some(c.exit_code()),
        out.status.code(),
        "exit code for {}",
        p.display()
    );
    c
}
