//! What `qemu-img info` shows for a qcow2 image: cluster size, dirty flag, encryption, backing file,
//! snapshots, and the "format-specific" object with QEMU's keys in the order qemu-img 10 prints them.
//! Bitmap names come from the bitmap directory (qcow2.txt "Bitmaps extension", "Bitmap directory").

use crate::header::{autoclear, compat, incompat, COMPRESSION_ZSTD};
use crate::reader::Qcow2Reader;
use serde_json::{json, Map, Value};
use vdisk_core::{BackingRef, ChildFile, ImageInfo, Result, SnapshotInfo};

/// One bitmap of the bitmap directory, as `info` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapInfo {
    pub name: String,
    pub flags: u32,
    pub granularity_bits: u8,
    pub table_offset: u64,
    pub table_size: u32,
}

/// The bitmap directory (names, flags, granularity and tables), as `open` loaded and validated it.
pub fn read_bitmaps(r: &Qcow2Reader) -> Result<Vec<BitmapInfo>> {
    Ok(r.bitmaps().to_vec())
}

/// QEMU prints JSON objects in the iteration order of its QDict: hash buckets in increasing order
/// (qobject/qdict.c, `tdb_hash` modulo 512 buckets). Sorting keys by that bucket reproduces
/// qemu-img's key order (e.g. `encrypt` between `data-file` and `data-file-raw`).
pub fn qdict_bucket(key: &str) -> u32 {
    let mut v = 0x238f_13afu32.wrapping_mul(key.len() as u32);
    for (i, c) in key.bytes().enumerate() {
        v = v.wrapping_add(u32::from(c) << ((i * 5) % 24));
    }
    1_103_515_243u32.wrapping_mul(v).wrapping_add(12345) % 512
}

/// `m` with its keys (recursively) in QEMU's QDict order.
pub fn qdict_order(m: Map<String, Value>) -> Map<String, Value> {
    let mut v: Vec<(String, Value)> = m.into_iter().collect();
    v.sort_by_key(|(k, _)| qdict_bucket(k));
    v.into_iter()
        .map(|(k, x)| match x {
            Value::Object(o) => (k, Value::Object(qdict_order(o))),
            Value::Array(a) => (
                k,
                Value::Array(
                    a.into_iter()
                        .map(|e| match e {
                            Value::Object(o) => Value::Object(qdict_order(o)),
                            e => e,
                        })
                        .collect(),
                ),
            ),
            other => (k, other),
        })
        .collect()
}

/// The `format-specific` data object.
pub fn format_specific(r: &Qcow2Reader) -> Result<Value> {
    let h = &r.header;
    let mut m = Map::new();
    m.insert(
        "compat".into(),
        json!(if h.version >= 3 { "1.1" } else { "0.10" }),
    );
    let ct = if h.compression_type == COMPRESSION_ZSTD {
        "zstd"
    } else {
        "zlib"
    };
    m.insert("compression-type".into(), json!(ct));
    if h.version >= 3 {
        m.insert(
            "lazy-refcounts".into(),
            json!(h.compatible_features & compat::LAZY_REFCOUNTS != 0),
        );
        let bitmaps = read_bitmaps(r)?;
        if !bitmaps.is_empty() {
            let list: Vec<Value> = bitmaps
                .iter()
                .map(|b| {
                    let mut flags = Vec::new();
                    if b.flags & 2 != 0 {
                        flags.push("auto");
                    }
                    if b.flags & 1 != 0 {
                        flags.push("in-use");
                    }
                    let granularity = 1u64.checked_shl(b.granularity_bits.into()).unwrap_or(0);
                    json!({"flags": flags, "name": b.name, "granularity": granularity})
                })
                .collect();
            m.insert("bitmaps".into(), Value::Array(list));
        }
    }
    m.insert("refcount-bits".into(), json!(h.refcount_bits()));
    if h.version >= 3 {
        if h.has_data_file() {
            m.insert("data-file".into(), json!(h.data_file().unwrap_or_default()));
            m.insert(
                "data-file-raw".into(),
                json!(h.autoclear_features & autoclear::DATA_FILE_RAW != 0),
            );
        }
        m.insert(
            "corrupt".into(),
            json!(h.incompatible_features & incompat::CORRUPT != 0),
        );
        m.insert("extended-l2".into(), json!(h.extended_l2()));
    }
    if h.crypt_method != 0 {
        let encrypt = match &r.luks {
            Some(luks) => luks.info(),
            None => json!({"format": if h.crypt_method == 1 { "aes" } else { "luks" }}),
        };
        m.insert("encrypt".into(), encrypt);
    }
    Ok(Value::Object(qdict_order(m)))
}

/// The whole `info` for one qcow2 layer.
pub fn info(r: &Qcow2Reader) -> Result<ImageInfo> {
    let h = &r.header;
    let mut i = ImageInfo::new("qcow2", r.size);
    i.cluster_size = Some(h.cluster_size());
    i.dirty = h.incompatible_features & incompat::DIRTY != 0;
    i.encrypted = h.crypt_method != 0;
    i.backing = h.backing_file.as_ref().map(|f| BackingRef {
        filename: f.to_lossy(),
        path: f.to_path(),
        format: h.backing_format().map(str::to_string),
    });
    i.snapshots = r
        .snapshots
        .iter()
        .map(|s| SnapshotInfo {
            id: s.id.to_lossy(),
            name: s.name.to_lossy(),
            vm_state_size: s.vm_state_size,
            date_sec: s.date_sec.into(),
            date_nsec: s.date_nsec,
            vm_clock_nsec: s.vm_clock_nsec,
            icount: s.icount.filter(|c| *c != u64::MAX),
        })
        .collect();
    i.format_specific = Some(("qcow2".into(), format_specific(r)?));
    i.children = vec![ChildFile {
        name: "file".into(),
        path: r.path.to_path_buf(),
    }];
    let d = &mut i.details;
    d.push(("header-version".into(), json!(h.version)));
    d.push(("l1-entries".into(), json!(r.l1.len())));
    d.push(("l1-table-offset".into(), json!(h.l1_table_offset)));
    d.push((
        "refcount-table-offset".into(),
        json!(h.refcount_table_offset),
    ));
    d.push((
        "refcount-table-clusters".into(),
        json!(h.refcount_table_clusters),
    ));
    d.push(("l2-entries-per-table".into(), json!(r.geo.l2_entries())));
    if h.extended_l2() {
        d.push(("subcluster-size".into(), json!(h.cluster_size() / 32)));
    }
    if h.nb_snapshots > 0 {
        d.push(("snapshot-table-offset".into(), json!(h.snapshots_offset)));
        d.push(("snapshot-table-bytes".into(), json!(r.snapshot_table_bytes)));
    }
    if let Some(p) = &r.data_file {
        d.push(("data-file-path".into(), json!(p.to_string_lossy())));
    }
    let unknown: Vec<String> = h
        .extensions
        .iter()
        .filter_map(|e| match e {
            crate::header::Extension::Unknown { kind, .. } => Some(format!("{kind:#010x}")),
            _ => None,
        })
        .collect();
    if !unknown.is_empty() {
        d.push(("unknown-header-extensions".into(), json!(unknown)));
    }
    if h.incompatible_features & incompat::CORRUPT != 0 {
        d.push((
            "note".into(),
            json!("the corrupt bit is set: qemu opens this image read-only only"),
        ));
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_qemu_qdict_order() {
        // Orders observed in qemu-img 10 `info --output=json` and `map --output=json`.
        let mut m = Map::new();
        for k in [
            "extended-l2",
            "corrupt",
            "data-file-raw",
            "encrypt",
            "data-file",
            "refcount-bits",
        ] {
            m.insert(k.into(), json!(1));
        }
        for k in ["bitmaps", "lazy-refcounts", "compression-type", "compat"] {
            m.insert(k.into(), json!(1));
        }
        let keys: Vec<String> = qdict_order(m).keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "compat",
                "compression-type",
                "lazy-refcounts",
                "bitmaps",
                "refcount-bits",
                "data-file",
                "encrypt",
                "data-file-raw",
                "corrupt",
                "extended-l2"
            ]
        );
        let mut b = Map::new();
        for k in ["granularity", "name", "flags"] {
            b.insert(k.into(), json!(1));
        }
        let keys: Vec<String> = qdict_order(b).keys().cloned().collect();
        assert_eq!(keys, ["flags", "name", "granularity"]);
    }
}
