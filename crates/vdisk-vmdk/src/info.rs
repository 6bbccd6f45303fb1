//! What `info` shows for a VMDK, with qemu's `format-specific` keys and order (`cid`, `parent-cid`,
//! `create-type`, `extents` of {`compressed`?, `virtual-size`, `filename`, `cluster-size`?, `format`}),
//! the child files in qemu's order (extents last to first, then `file`), and the descriptor's disk
//! database as vdisk details.

use crate::descriptor::NO_PARENT_CID;
use crate::reader::{ExtentData, PlacedExtent, VmdkReader};
use serde_json::{json, Map, Value};
use vdisk_core::{BackingRef, ChildFile, ImageInfo, Result};

/// The `info` of an opened image.
pub fn info(r: &VmdkReader) -> Result<ImageInfo> {
    let mut info = ImageInfo::new("vmdk", r.size);
    if let Some(ExtentData::Sparse { grain, .. }) = r.extents.first().map(|e| &e.data) {
        info.cluster_size = Some(*grain);
    }
    if let Some(hint) = &r.parent {
        info.backing = Some(BackingRef {
            filename: hint.to_lossy(),
            path: hint.to_path(),
            // qemu opens a VMDK's parent as a VMDK (vmdk_parent_open sets the backing format).
            format: Some("vmdk".into()),
        });
    }
    let extents: Vec<Value> = r.extents.iter().map(|e| extent_json(r, e)).collect();
    // Built by hand: `json!` would serialize a copy of the (possibly 32768-entry) extent list.
    let mut data = Map::with_capacity(4);
    data.insert("cid".into(), json!(r.desc.cid));
    data.insert("parent-cid".into(), json!(r.desc.parent_cid));
    data.insert("create-type".into(), Value::String(r.create_type()));
    data.insert("extents".into(), Value::Array(extents));
    info.format_specific = Some(("vmdk".to_string(), Value::Object(data)));
    if !r.monolithic {
        // Extents with a file, numbered in order and listed last to first.
        let named = r.extents.iter().filter_map(|e| e.file()).count();
        info.children.reserve_exact(named + 1);
        let files = r.extents.iter().rev().filter_map(|e| e.file());
        for (i, f) in (0..named).rev().zip(files) {
            if let Some(p) = r.files.path(f) {
                info.children.push(ChildFile {
                    name: format!("extents.{i}"),
                    path: p.to_path_buf(),
                });
            }
        }
    }
    info.children.push(ChildFile {
        name: "file".into(),
        path: r.path.clone(),
    });
    for (k, v) in &r.desc.ddb {
        info.details.push((format!("ddb.{k}"), json!(v)));
    }
    if let Some(ExtentData::Sparse { .. }) = r.extents.first().map(|e| &e.data) {
        let sp = r.sparse_extent(0)?;
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
    Ok(info)
}

fn extent_json(r: &VmdkReader, e: &PlacedExtent) -> Value {
    let (compressed, grain) = match e.data {
        ExtentData::Sparse {
            compressed, grain, ..
        } => (compressed, Some(grain)),
        _ => (false, None),
    };
    let file = e.file().and_then(|f| r.files.path(f));
    let keys =
        2 + usize::from(compressed) + usize::from(file.is_some()) + usize::from(grain.is_some());
    let mut m = Map::with_capacity(keys);
    if compressed {
        m.insert("compressed".into(), json!(true));
    }
    m.insert("virtual-size".into(), json!(e.len));
    if let Some(f) = file {
        m.insert("filename".into(), json!(f.to_string_lossy()));
    }
    if let Some(g) = grain {
        m.insert("cluster-size".into(), json!(g));
    }
    m.insert("format".into(), json!(e.type_name));
    Value::Object(m)
}
