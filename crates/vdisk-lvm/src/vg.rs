//! A volume group as its metadata text describes it (lvm2's lib/format_text/import_vsn1.c):
//! the extent size, the physical volumes (`pv0`, ... with their UUIDs and first extent) and the
//! logical volumes with their segments, each mapping a run of the volume's extents onto
//! physical extents of one PV (`striped` with one stripe: linear), several (`striped`), or
//! something vdisk-lvm does not read (mirrors, RAID, thin and cache volumes, snapshots).
//! Pure interpretation of the parsed text: no I/O.

use crate::config::{Section, Value};
use crate::limits::{MAX_LVS, MAX_PVS, MAX_SEGMENTS};

/// One physical volume of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvInfo {
    /// The name the segments use (`pv0`).
    pub name: String,
    /// Its UUID without dashes (as in the PV label).
    pub uuid: String,
    /// Where its first extent starts, in 512-byte sectors.
    pub pe_start: u64,
    pub pe_count: u64,
}

/// How a segment's extents are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentKind {
    /// Extents `pe..` of PV number `pv` (an index into [`VolumeGroup::pvs`]).
    Linear { pv: usize, pe: u64 },
    /// Striped over several PVs in chunks of `stripe_size` sectors.
    Striped {
        stripe_size: u64,
        stripes: Vec<(usize, u64)>,
    },
    /// A segment type vdisk-lvm does not read.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub start_extent: u64,
    pub extent_count: u64,
    pub kind: SegmentKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvInfo {
    pub name: String,
    /// The UUID as the metadata writes it (with dashes).
    pub id: String,
    /// Listed to users (`VISIBLE` in its status): hidden ones are parts of others.
    pub visible: bool,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeGroup {
    pub name: String,
    pub id: String,
    pub seqno: u64,
    /// Bytes of an extent.
    pub extent_bytes: u64,
    pub pvs: Vec<PvInfo>,
    pub lvs: Vec<LvInfo>,
}

fn positive(s: &Section, key: &str, what: &str) -> Result<u64, String> {
    s.int(key)
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| format!("{what}: no {key}"))
}

fn has_flag(s: &Section, key: &str, flag: &str) -> bool {
    s.array(key)
        .is_some_and(|a| a.iter().any(|v| *v == Value::Str(flag.into())))
}

/// The PV names of a `stripes` array (`["pv0", 0, "pv1", 0]`) resolved to indices.
fn stripes(seg: &Section, pvs: &[PvInfo], what: &str) -> Result<Vec<(usize, u64)>, String> {
    let a = seg
        .array("stripes")
        .ok_or_else(|| format!("{what}: no stripes"))?;
    if a.is_empty() || a.len() % 2 != 0 {
        return Err(format!(
            "{what}: stripes is not a list of (PV, extent) pairs"
        ));
    }
    a.chunks(2)
        .map(|pair| match pair {
            [Value::Str(pv), Value::Int(pe)] => {
                let i = pvs
                    .iter()
                    .position(|p| p.name == *pv)
                    .ok_or_else(|| format!("{what}: stripe on unknown PV {pv}"))?;
                let pe = u64::try_from(*pe).map_err(|_| format!("{what}: extent {pe}"))?;
                Ok((i, pe))
            }
            _ => Err(format!(
                "{what}: stripes is not a list of (PV, extent) pairs"
            )),
        })
        .collect()
}

fn segment(seg: &Section, pvs: &[PvInfo], what: &str) -> Result<Segment, String> {
    let start_extent = positive(seg, "start_extent", what)?;
    let extent_count = positive(seg, "extent_count", what)?;
    let kind = match seg.str("type") {
        Some("striped") => {
            let st = stripes(seg, pvs, what)?;
            let count = positive(seg, "stripe_count", what)?;
            if count != st.len() as u64 {
                return Err(format!(
                    "{what}: stripe_count {count} but {} stripes",
                    st.len()
                ));
            }
            if let [(pv, pe)] = st[..] {
                SegmentKind::Linear { pv, pe }
            } else {
                SegmentKind::Striped {
                    stripe_size: positive(seg, "stripe_size", what)?,
                    stripes: st,
                }
            }
        }
        Some(t) => SegmentKind::Other(t.to_string()),
        None => return Err(format!("{what}: no type")),
    };
    Ok(Segment {
        start_extent,
        extent_count,
        kind,
    })
}

/// The volume group of a parsed metadata text (its one top-level section).
pub fn volume_group(top: &Section) -> Result<VolumeGroup, String> {
    let mut groups = top.sections();
    let (name, vg) = groups
        .next()
        .ok_or("the metadata text holds no volume group")?;
    let what = format!("volume group {name}");
    let sectors = positive(vg, "extent_size", &what)?;
    let extent_bytes = sectors
        .checked_mul(512)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("{what}: extent_size {sectors}"))?;
    let mut pvs = Vec::new();
    for (pv_name, pv) in vg
        .section("physical_volumes")
        .map(|s| s.sections().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        if pvs.len() >= MAX_PVS {
            return Err(format!("{what}: more than {MAX_PVS} physical volumes"));
        }
        let pw = format!("{what}, {pv_name}");
        pvs.push(PvInfo {
            name: pv_name.to_string(),
            uuid: pv
                .str("id")
                .ok_or_else(|| format!("{pw}: no id"))?
                .replace('-', ""),
            pe_start: positive(pv, "pe_start", &pw)?,
            pe_count: positive(pv, "pe_count", &pw)?,
        });
    }
    let mut lvs = Vec::new();
    let mut segments_total = 0usize;
    for (lv_name, lv) in vg
        .section("logical_volumes")
        .map(|s| s.sections().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        if lvs.len() >= MAX_LVS {
            return Err(format!("{what}: more than {MAX_LVS} logical volumes"));
        }
        let lw = format!("{what}, logical volume {lv_name}");
        let count = positive(lv, "segment_count", &lw)?;
        let mut segments = Vec::new();
        for n in 1..=count {
            segments_total += 1;
            if segments_total > MAX_SEGMENTS {
                return Err(format!("{what}: more than {MAX_SEGMENTS} segments"));
            }
            let sw = format!("{lw}, segment{n}");
            let s = lv
                .section(&format!("segment{n}"))
                .ok_or_else(|| format!("{sw} is missing"))?;
            segments.push(segment(s, &pvs, &sw)?);
        }
        lvs.push(LvInfo {
            name: lv_name.to_string(),
            id: lv.str("id").unwrap_or_default().to_string(),
            visible: has_flag(lv, "status", "VISIBLE"),
            segments,
        });
    }
    Ok(VolumeGroup {
        name: name.to_string(),
        id: vg.str("id").unwrap_or_default().to_string(),
        seqno: positive(vg, "seqno", &what)?,
        extent_bytes,
        pvs,
        lvs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const TEXT: &[u8] = br#"rl {
id = "Ab12-cd"
seqno = 5
extent_size = 8192
physical_volumes {
pv0 {
id = "RkKTw2-x98o-aUXa-LTY3-qaAw-50ZM-w7w4tk"
pe_start = 2048
pe_count = 49
}
}
logical_volumes {
root {
id = "lv-1"
status = ["READ", "WRITE", "VISIBLE"]
segment_count = 2
segment1 {
start_extent = 0
extent_count = 10
type = "striped"
stripe_count = 1	# linear
stripes = [
"pv0", 0
]
}
segment2 {
start_extent = 10
extent_count = 5
type = "striped"
stripe_count = 1
stripes = ["pv0", 15]
}
}
pool {
id = "lv-2"
status = ["READ", "WRITE"]
segment_count = 1
segment1 {
start_extent = 0
extent_count = 1
type = "thin-pool"
}
}
}
}
"#;

    #[test]
    fn reads_linear_volumes_and_names_other_kinds() {
        let vg = volume_group(&parse(TEXT).unwrap()).unwrap();
        assert_eq!(
            (vg.name.as_str(), vg.seqno, vg.extent_bytes),
            ("rl", 5, 4 << 20)
        );
        assert_eq!(vg.pvs[0].uuid, "RkKTw2x98oaUXaLTY3qaAw50ZMw7w4tk");
        let root = &vg.lvs[0];
        assert!(root.visible);
        assert_eq!(root.segments[1].kind, SegmentKind::Linear { pv: 0, pe: 15 });
        assert_eq!(root.segments[1].start_extent, 10);
        assert!(!vg.lvs[1].visible);
        assert_eq!(
            vg.lvs[1].segments[0].kind,
            SegmentKind::Other("thin-pool".into())
        );
    }

    #[test]
    fn refuses_inconsistent_segments() {
        let text = String::from_utf8_lossy(TEXT);
        for (from, to) in [
            ("\"pv0\", 15", "\"pv9\", 15"),
            ("segment_count = 2", "segment_count = 3"),
            ("stripes = [\"pv0\", 15]", "stripes = [\"pv0\"]"),
            ("extent_size = 8192", "extent_size = 0"),
        ] {
            let bad = text.replace(from, to);
            let e = volume_group(&parse(bad.as_bytes()).unwrap());
            assert!(e.is_err(), "{from} -> {to}");
        }
    }
}
