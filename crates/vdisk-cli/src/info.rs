//! `vdisk info`: qemu-img's image description (human and `--output=json`, same fields and order),
//! plus a short "vdisk details" section with facts qemu-img leaves out.

use crate::json::{qdict_ordered, to_qemu_pretty};
use serde_json::{json, Map, Value};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use vdisk::chain::Layer;
use vdisk::core::humansize::size_to_str;
use vdisk::core::{ImageInfo, SnapshotInfo};

/// Length and allocated bytes of a host file (qemu's `file length` and `disk size`). qemu's block
/// layer counts lengths in 512-byte sectors, so the length is rounded up to a multiple of 512.
fn file_sizes(path: &Path) -> (u64, u64) {
    match std::fs::metadata(path) {
        Ok(m) => (m.len().div_ceil(512).saturating_mul(512), m.blocks() * 512),
        Err(_) => (0, 0),
    }
}

fn actual_size(info: &ImageInfo, top: &Path) -> u64 {
    if info.children.is_empty() {
        return file_sizes(top).1;
    }
    info.children.iter().map(|c| file_sizes(&c.path).1).sum()
}

fn child_json(name: &str, path: &Path) -> Value {
    let (len, alloc) = file_sizes(path);
    json!({
        "name": name,
        "info": {
            "children": [],
            "virtual-size": len,
            "filename": path.to_string_lossy(),
            "format": "file",
            "actual-size": alloc,
            "format-specific": {"type": "file", "data": {}},
            "dirty-flag": false
        }
    })
}

fn snapshot_json(s: &SnapshotInfo) -> Value {
    let mut m = Map::new();
    if let Some(ic) = s.icount {
        m.insert("icount".into(), ic.into());
    }
    m.insert(
        "vm-clock-nsec".into(),
        (s.vm_clock_nsec % 1_000_000_000).into(),
    );
    m.insert("name".into(), s.name.clone().into());
    m.insert("date-sec".into(), s.date_sec.into());
    m.insert("date-nsec".into(), s.date_nsec.into());
    m.insert(
        "vm-clock-sec".into(),
        (s.vm_clock_nsec / 1_000_000_000).into(),
    );
    m.insert("id".into(), s.id.clone().into());
    m.insert("vm-state-size".into(), s.vm_state_size.into());
    Value::Object(m)
}

/// One layer as `qemu-img info --output=json` shows it: QAPI's BlockGraphInfo members inserted in
/// the schema's order (BlockNodeInfo's, then `children`) and printed in QDict bucket order
/// ([`qdict_ordered`]); vdisk's own `vdisk-details` last.
pub fn layer_json(layer: &Layer) -> Value {
    let info = &layer.info;
    let mut f: Vec<(String, Value)> = Vec::new();
    let mut put = |k: &str, v: Value| f.push((k.to_string(), v));
    put("filename", layer.path.to_string_lossy().into());
    put("format", info.format.clone().into());
    put("dirty-flag", info.dirty.into());
    put("actual-size", actual_size(info, &layer.path).into());
    put("virtual-size", info.virtual_size.into());
    if let Some(c) = info.cluster_size {
        put("cluster-size", c.into());
    }
    if info.encrypted {
        put("encrypted", true.into());
    }
    // An empty name is no backing file to QEMU, and qemu-img shows none.
    if let Some(b) = info.backing.as_ref().filter(|b| !b.filename.is_empty()) {
        put("backing-filename", b.filename.clone().into());
        if let Some(full) = &layer.full_backing {
            put("full-backing-filename", full.to_string_lossy().into());
        }
        if let Some(fmt) = &b.format {
            put("backing-filename-format", fmt.clone().into());
        }
    }
    if !info.snapshots.is_empty() {
        put(
            "snapshots",
            Value::Array(info.snapshots.iter().map(snapshot_json).collect()),
        );
    }
    if let Some((ty, data)) = &info.format_specific {
        put("format-specific", json!({"type": ty, "data": data}));
    }
    let children: Vec<Value> = if info.children.is_empty() {
        vec![child_json("file", &layer.path)]
    } else {
        info.children
            .iter()
            .map(|c| child_json(&c.name, &c.path))
            .collect()
    };
    put("children", Value::Array(children));
    let mut m = qdict_ordered(f);
    if !info.details.is_empty() {
        let d: Map<String, Value> = info.details.iter().cloned().collect();
        m.insert("vdisk-details".into(), Value::Object(d));
    }
    Value::Object(m)
}

/// The JSON document for `info` (an array with `--backing-chain`).
pub fn info_json(layers: &[Layer], chain: bool) -> String {
    if chain {
        to_qemu_pretty(&Value::Array(layers.iter().map(layer_json).collect()))
    } else {
        to_qemu_pretty(&layer_json(&layers[0]))
    }
}

/// The snapshot table as `qemu-img info` and `snapshot -l` print it (qemu's `bdrv_snapshot_dump`).
pub fn snapshot_table(snaps: &[SnapshotInfo]) -> String {
    let mut s = String::from("Snapshot list:\n");
    s.push_str(&format!(
        "{:<7} {:<16} {:>8} {:>19} {:>15} {:>10}\n",
        "ID", "TAG", "VM_SIZE", "DATE", "VM_CLOCK", "ICOUNT"
    ));
    for sn in snaps {
        let secs = sn.vm_clock_nsec / 1_000_000_000;
        let clock = format!(
            "{:04}:{:02}:{:02}.{:03}",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60,
            (sn.vm_clock_nsec / 1_000_000) % 1000
        );
        let icount = sn.icount.map(|i| i.to_string()).unwrap_or_default();
        s.push_str(&format!(
            "{:<7} {:<16} {:>8} {:>19} {:>15} {:>10}\n",
            sn.id,
            sn.name,
            size_to_str(sn.vm_state_size),
            local_time(sn.date_sec),
            clock,
            icount
        ));
    }
    s
}

/// `YYYY-MM-DD HH:MM:SS` in local time, as qemu prints snapshot dates.
fn local_time(secs: u64) -> String {
    let t = secs as libc::time_t;
    // SAFETY: localtime_r writes into the zeroed struct we pass and reads only `t`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return "????-??-?? ??:??:??".into();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// Dumps a format-specific value as qemu's `dump_qobject` does: `-` in keys printed as spaces,
/// nested objects and list items indented four more spaces.
fn dump_value(out: &mut String, v: &Value, level: usize) {
    let pad = "    ".repeat(level);
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                let key = k.replace('-', " ");
                match val {
                    Value::Object(_) | Value::Array(_) => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        dump_value(out, val, level + 1);
                    }
                    _ => out.push_str(&format!("{pad}{key}: {}\n", scalar(val))),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Object(_) | Value::Array(_) => {
                        out.push_str(&format!("{pad}[{i}]:\n"));
                        dump_value(out, item, level + 1);
                    }
                    _ => out.push_str(&format!("{pad}[{i}]: {}\n", scalar(item))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One layer as `qemu-img info` prints it.
pub fn layer_human(layer: &Layer) -> String {
    let info = &layer.info;
    let mut s = String::new();
    s.push_str(&format!("image: {}\n", layer.path.display()));
    s.push_str(&format!("file format: {}\n", info.format));
    s.push_str(&format!(
        "virtual size: {} ({} bytes)\n",
        size_to_str(info.virtual_size),
        info.virtual_size
    ));
    s.push_str(&format!(
        "disk size: {}\n",
        size_to_str(actual_size(info, &layer.path))
    ));
    if info.encrypted {
        s.push_str("encrypted: yes\n");
    }
    if let Some(c) = info.cluster_size {
        s.push_str(&format!("cluster_size: {c}\n"));
    }
    if info.dirty {
        s.push_str("cleanly shut down: no\n");
    }
    // An empty name is no backing file to QEMU, and qemu-img shows none.
    if let Some(b) = info.backing.as_ref().filter(|b| !b.filename.is_empty()) {
        s.push_str(&format!("backing file: {}", b.filename));
        if let Some(full) = &layer.full_backing {
            if *full != b.path {
                s.push_str(&format!(" (actual path: {})", full.display()));
            }
        }
        s.push('\n');
        if let Some(f) = &b.format {
            s.push_str(&format!("backing file format: {f}\n"));
        }
    }
    if !info.snapshots.is_empty() {
        s.push_str(&snapshot_table(&info.snapshots));
    }
    if let Some((_, data)) = &info.format_specific {
        s.push_str("Format specific information:\n");
        dump_value(&mut s, data, 1);
    }
    let children: Vec<(String, &Path)> = if info.children.is_empty() {
        vec![("file".to_string(), layer.path.as_path())]
    } else {
        info.children
            .iter()
            .map(|c| (c.name.clone(), c.path.as_path()))
            .collect()
    };
    for (name, path) in children {
        let (len, alloc) = file_sizes(path);
        s.push_str(&format!("Child node '/{name}':\n"));
        s.push_str(&format!("    filename: {}\n", path.display()));
        s.push_str("    protocol type: file\n");
        s.push_str(&format!(
            "    file length: {} ({len} bytes)\n",
            size_to_str(len)
        ));
        s.push_str(&format!("    disk size: {}\n", size_to_str(alloc)));
    }
    if !info.details.is_empty() {
        s.push_str("vdisk details (not shown by qemu-img):\n");
        for (k, v) in &info.details {
            s.push_str(&format!("    {}: {}\n", k.replace('-', " "), scalar(v)));
        }
    }
    s
}

/// The text for `info` (layers separated by a blank line with `--backing-chain`).
pub fn info_human(layers: &[Layer], chain: bool) -> String {
    let shown = if chain { layers } else { &layers[..1] };
    shown.iter().map(layer_human).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_header_matches_qemu() {
        let t = snapshot_table(&[]);
        assert_eq!(
            t.lines().nth(1).unwrap(),
            "ID      TAG               VM_SIZE                DATE        VM_CLOCK     ICOUNT"
        );
    }

    #[test]
    fn format_specific_dump_matches_qemu() {
        let v = json!({"cid": 1, "create-type": "monolithicSparse",
                       "extents": [{"virtual-size": 67108864, "format": ""}]});
        let mut s = String::new();
        dump_value(&mut s, &v, 1);
        assert_eq!(
            s,
            "    cid: 1\n    create type: monolithicSparse\n    extents:\n        [0]:\n            virtual size: 67108864\n            format: \n"
        );
    }
}
