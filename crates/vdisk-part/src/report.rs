//! A partition table as `sfdisk --json` prints it (the same field names, so that scripts written
//! for sfdisk read vdisk's), and as text for people: one line per partition with its place, size
//! and what its type means.

use crate::limits::SECTOR_SIZE;
use crate::{names, PartitionTable, Scheme};
use serde_json::{json, Map, Value};
use vdisk_core::humansize::size_to_str;

/// The largest disk libfdisk aligns partitions to single sectors on (its grain; 1 MiB above).
const SMALL_DISK_BYTES: u64 = 4 << 20;

/// `sfdisk --json`'s object for the disk `device` of `disk_bytes` bytes (partition nodes are
/// `device` followed by the number).
pub fn sfdisk_json(t: &PartitionTable, device: &str, disk_bytes: u64) -> Value {
    let parts: Vec<Value> = t
        .partitions
        .iter()
        .map(|p| {
            let mut o = Map::new();
            o.insert("node".into(), json!(format!("{device}{}", p.number)));
            o.insert("start".into(), json!(p.start));
            o.insert("size".into(), json!(p.sectors));
            o.insert("type".into(), json!(p.type_id));
            if let Some(u) = &p.uuid {
                o.insert("uuid".into(), json!(u));
            }
            if let Some(n) = &p.name {
                o.insert("name".into(), json!(n));
            }
            if let Some(a) = &p.attrs {
                o.insert("attrs".into(), json!(a));
            }
            if p.bootable {
                o.insert("bootable".into(), json!(true));
            }
            Value::Object(o)
        })
        .collect();
    let mut o = Map::new();
    o.insert("label".into(), json!(t.scheme.label()));
    o.insert("id".into(), json!(t.id));
    o.insert("device".into(), json!(device));
    o.insert("unit".into(), json!("sectors"));
    if let (Some(f), Some(l)) = (t.first_lba, t.last_lba) {
        o.insert("firstlba".into(), json!(f));
        o.insert("lastlba".into(), json!(l));
    }
    // libfdisk aligns partitions to 1 MiB, but to a sector on a disk of at most 4 MiB, and sfdisk
    // names such a grain.
    if disk_bytes <= SMALL_DISK_BYTES {
        o.insert("grain".into(), json!(SECTOR_SIZE.to_string()));
    }
    // sfdisk names an entry array of another size than the usual 128 entries, as a string.
    if let Some(n) = t.entries.filter(|n| *n != 128) {
        o.insert("table-length".into(), json!(n.to_string()));
    }
    o.insert("sectorsize".into(), json!(SECTOR_SIZE));
    // sfdisk leaves the key out of a table without partitions.
    if !parts.is_empty() {
        o.insert("partitions".into(), Value::Array(parts));
    }
    json!({ "partitiontable": Value::Object(o) })
}

/// The table as text, with a line saying what kind of table it is and where it lives.
pub fn human_text(t: &PartitionTable, disk_bytes: u64) -> String {
    let mut s = match t.scheme {
        Scheme::Dos => format!(
            "partition table: MBR (\"dos\": four primary entries in sector 0, logical \
             partitions from 5 in an extended partition's chain)\ndisk identifier: {}\n",
            t.id
        ),
        Scheme::Gpt => {
            let mut s = format!(
                "partition table: GPT (GUID Partition Table, behind a protective MBR)\ndisk \
                 GUID: {}\n",
                t.id
            );
            if let (Some(f), Some(l)) = (t.first_lba, t.last_lba) {
                s += &format!("usable sectors: {f} to {l}\n");
            }
            if let (Some(h), Some(a)) = (t.header_lba, t.alternate_lba) {
                s += &format!("header used: sector {h}; its other copy: sector {a}\n");
            }
            if t.used_backup {
                s += "warning: the primary header or its entries are damaged; the backup \
                      was used\n";
            }
            s
        }
    };
    s += &format!(
        "sector size: {SECTOR_SIZE} bytes; disk: {} sectors ({})\n\n",
        disk_bytes / SECTOR_SIZE,
        size_to_str(disk_bytes)
    );
    let rows: Vec<[String; 7]> = t
        .partitions
        .iter()
        .map(|p| {
            let end = (p.start + p.sectors).saturating_sub(1);
            let type_name = match t.scheme {
                Scheme::Dos => u8::from_str_radix(&p.type_id, 16)
                    .ok()
                    .and_then(names::mbr_type),
                Scheme::Gpt => names::gpt_type(&p.type_id),
            };
            let ty = match type_name {
                Some(n) => format!("{n} ({})", p.type_id),
                None => p.type_id.clone(),
            };
            let mut extra = Vec::new();
            if p.bootable {
                extra.push("bootable".to_string());
            }
            if let Some(n) = &p.name {
                extra.push(format!("name \"{n}\""));
            }
            if let Some(a) = &p.attrs {
                extra.push(a.clone());
            }
            [
                p.number.to_string(),
                p.start.to_string(),
                end.to_string(),
                p.sectors.to_string(),
                size_to_str(p.sectors.saturating_mul(SECTOR_SIZE)),
                ty,
                extra.join(", "),
            ]
        })
        .collect();
    let head = ["#", "start", "end", "sectors", "size", "type", ""];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i < 4 {
                l += &format!("{c:>w$}  ");
            } else {
                l += &format!("{c:<w$}  ");
            }
        }
        l.trim_end().to_string() + "\n"
    };
    if rows.is_empty() {
        s += "no partitions\n";
    } else {
        s += &line(head.to_vec());
        for r in &rows {
            s += &line(r.iter().map(String::as_str).collect());
        }
    }
    s
}
