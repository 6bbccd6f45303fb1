//! What `info` shows for a VMDK, with qemu's `format-specific` keys and order (`cid`, `parent-cid`,
//! `create-type`, `extents` of {`compressed`?, `virtual-size`, `filename`, `cluster-size`?, `format`}),
//! the child files in qemu's order (extents last to first, then `file`), and the descriptor's disk
//! database as vdisk details.

use crate::descriptor::NO_PARENT_CID;
use crate::reader::{ExtentData, PlacedExtent, VmdkReader};
use serde_json::{json, Map, Value};
use vdisk_core::{BackingRef, ChildFile, ImageInfo};

/// The `info` of an opened image.
pub fn info(r: &VmdkReader) -> ImageInfo {
    let mut info = ImageInfo::new("vmdk", r.size);
    if let Some(ExtentData::Sparse(sp)) = r.extents.first().map(|e| &e.data) {
        info.cluster_size = Some(sp.grain_bytes());
    }
    if let Some(hint) = &r.desc.parent_hint {
        info.backing = Some(BackingRef {
            filename: hint.clone(),
            format: None,
        });
    }
    let extents: Vec<Value> = r.extents.iter().map(extent_json).collect();
    let data = json!({
        "cid": r.desc.cid,
        "parent-cid": r.desc.parent_cid,
        "create-type": r.create_type(),
        "extents": extents,
    });
    info.format_specific = Some(("vmdk".to_string(), data));
    if !r.monolithic {
        let named: Vec<ChildFile> = r
            .extents
            .iter()
            .filter_map(|e| e.file.as_ref())
            .enumerate()
            .map(|(i, f)| ChildFile {
                name: format!("extents.{i}"),
                path: f.to_path_buf(),
            })
            .collect();
        info.children.extend(named.into_iter().rev());
    }
    info.children.push(ChildFile {
        name: "file".into(),
        path: r.path.clone(),
    });
    for (k, v) in &r.desc.ddb {
        info.details.push((format!("ddb.{k}"), json!(v)));
    }
    if let Some(ExtentData::Sparse(sp)) = r.extents.first().map(|e| &e.data) {
        let h = &sp.header;
        info.details
            .push(("sparse-version".into(), json!(h.version)));
        info.details
            .push(("sparse-flags".into(), json!(format!("{:#x}", h.flags))));
        info.details
            .push(("grain-directory-sector".into(), json!(h.gd_offset)));
        if h.has_rgd() {
            info.details.push((
                "redundant-grain-directory-sector".into(),
                json!(h.rgd_offset),
            ));
        }
    }
    if r.desc.parent_cid != NO_PARENT_CID {
        info.details.push((
            "parent-cid-hex".into(),
            json!(format!("{:08x}", r.desc.parent_cid)),
        ));
    }
    info
}

fn extent_json(e: &PlacedExtent) -> Value {
    let mut m = Map::new();
    if let ExtentData::Sparse(sp) = &e.data {
        if sp.header.compressed() {
            m.insert("compressed".into(), json!(true));
        }
    }
    m.insert("virtual-size".into(), json!(e.len));
    if let Some(f) = &e.file {
        m.insert("filename".into(), json!(f.to_string_lossy()));
    }
    if let ExtentData::Sparse(sp) = &e.data {
        m.insert("cluster-size".into(), json!(sp.grain_bytes()));
    }
    m.insert("format".into(), json!(e.type_name));
    Value::Object(m)
}
