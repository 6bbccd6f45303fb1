//! vdisk-lvm: LVM2 volume groups inside disk images, read-only and with no device-mapper, as
//! libguestfs finds them: each physical volume's label and current metadata (lvm2's text
//! format, version 1: lib/format_text), and each visible logical volume read as a disk of its
//! own (`/dev/VG/LV`), its linear and striped segments mapped onto the PVs' extents. Mirrors,
//! RAID, thin and cache volumes and snapshots are listed with an error saying so.
//!
//! Everything read from a PV is untrusted: the label and the metadata area header are checked
//! before the metadata text is read, the text is parsed with bounded depth and size, and every
//! extent a segment names must lie inside its PV ([`limits`]).

pub mod config;
pub mod label;
pub mod limits;
pub mod striped;
pub mod vg;

use label::{Area, PvLabel, LABEL_SCAN_SECTORS, MDA_HEADER_SIZE, SECTOR};
use limits::MAX_METADATA_BYTES;
use std::path::Path;
use std::sync::Arc;
use vdisk_core::window::Window;
use vdisk_core::{Concat, Error, ImageReader, Result};
use vg::{SegmentKind, VolumeGroup};

/// blkid's `TYPE` for an LVM2 physical volume.
pub const BLKID_TYPE: &str = "LVM2_member";

fn corrupt(what: String) -> Error {
    Error::corrupt(Path::new("lvm"), None, what)
}

/// The label of the PV on `dev`, if it is one (a `LABELONE` sector of the lvm2 text format).
pub fn probe(dev: &dyn ImageReader) -> Result<Option<PvLabel>> {
    let scan = LABEL_SCAN_SECTORS * SECTOR;
    if dev.virtual_size() < scan {
        return Ok(None);
    }
    let mut b = vec![0u8; scan as usize];
    dev.read_at(&mut b, 0)?;
    for n in 0..LABEL_SCAN_SECTORS {
        let s = &b[(n * SECTOR) as usize..((n + 1) * SECTOR) as usize];
        if label::is_label(s, n) {
            return label::parse_label(s, n).map(Some).map_err(corrupt);
        }
    }
    Ok(None)
}

/// A physical volume: its label, and the volume group its metadata describes (`None` for a PV
/// in no group, or whose metadata areas hold no metadata that can be read).
#[derive(Debug, Clone)]
pub struct PhysicalVolume {
    pub label: PvLabel,
    pub vg: Option<VolumeGroup>,
    /// Why no copy of the metadata could be read, when none could. A damaged copy is passed
    /// over when another copy reads, as lvm2 passes it over; and a PV whose own metadata is
    /// damaged still serves the volumes that the other PVs' metadata places on it.
    pub metadata_error: Option<String>,
}

/// The metadata text of one metadata area, if it holds one.
fn read_area(dev: &dyn ImageReader, area: Area) -> Result<Option<Vec<u8>>> {
    let mut h = vec![0u8; MDA_HEADER_SIZE as usize];
    let end = area.offset.checked_add(area.size);
    if end.is_none_or(|e| e > dev.virtual_size()) {
        return Err(corrupt(format!(
            "metadata area of {} bytes at {} lies outside the PV",
            area.size, area.offset
        )));
    }
    dev.read_at(&mut h, area.offset)?;
    let Some(loc) = label::parse_mda_header(&h, area).map_err(corrupt)? else {
        return Ok(None);
    };
    if loc.size > MAX_METADATA_BYTES {
        return Err(Error::limit(
            Path::new("lvm"),
            "LVM metadata text",
            loc.size,
            MAX_METADATA_BYTES,
        ));
    }
    let mut text = Vec::with_capacity(loc.size as usize);
    for (at, len) in label::metadata_pieces(loc, area.size) {
        let start = text.len();
        text.resize(start + len as usize, 0);
        dev.read_at(&mut text[start..], area.offset + at)?;
    }
    let computed = label::calc_crc(label::INITIAL_CRC, &text);
    if !label::crc_matches(loc.checksum, computed) {
        return Err(corrupt(format!(
            "checksum error in the metadata text at {} (stored {:08x}, computed {computed:08x})",
            area.offset + loc.offset,
            loc.checksum
        )));
    }
    while text.last() == Some(&0) {
        text.pop();
    }
    Ok(Some(text))
}

/// The volume group of one metadata area, if it holds metadata.
fn read_copy(dev: &dyn ImageReader, area: Area) -> Result<Option<VolumeGroup>> {
    let Some(text) = read_area(dev, area)? else {
        return Ok(None);
    };
    let top = config::parse(&text).map_err(corrupt)?;
    vg::volume_group(&top).map(Some).map_err(corrupt)
}

/// Reads the PV on `dev`: `None` when it carries no LVM2 label, an error when its label is
/// damaged. Of its metadata copies, the newest that reads describes its group.
pub fn read_pv(dev: &dyn ImageReader) -> Result<Option<PhysicalVolume>> {
    let Some(label) = probe(dev)? else {
        return Ok(None);
    };
    let mut best: Option<VolumeGroup> = None;
    let mut error = None;
    for &area in &label.metadata_areas {
        match read_copy(dev, area) {
            Ok(Some(vg)) if best.as_ref().is_none_or(|b| vg.seqno > b.seqno) => best = Some(vg),
            Ok(_) => {}
            Err(e) => {
                error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Ok(Some(PhysicalVolume {
        metadata_error: if best.is_none() { error } else { None },
        label,
        vg: best,
    }))
}

/// A logical volume, and its contents as a disk (or why they cannot be read).
pub struct LogicalVolume {
    pub vg_name: String,
    pub vg_id: String,
    pub name: String,
    pub id: String,
    /// Bytes: its extents times the extent size.
    pub size: u64,
    pub reader: std::result::Result<Arc<dyn ImageReader>, String>,
}

impl LogicalVolume {
    /// The name libguestfs gives it.
    pub fn device(&self) -> String {
        format!("/dev/{}/{}", self.vg_name, self.name)
    }

    /// The names Linux gives it besides [`Self::device`]: `/dev/mapper/VG-LV` (dashes in
    /// the names doubled), and the `/dev/disk/by-id` links udev makes (`dm-name-`, and
    /// `dm-uuid-LVM-` with both UUIDs without dashes).
    pub fn aliases(&self) -> Vec<String> {
        let dm = format!(
            "{}-{}",
            self.vg_name.replace('-', "--"),
            self.name.replace('-', "--")
        );
        vec![
            format!("/dev/mapper/{dm}"),
            format!("/dev/disk/by-id/dm-name-{dm}"),
            format!(
                "/dev/disk/by-id/dm-uuid-LVM-{}{}",
                self.vg_id.replace('-', ""),
                self.id.replace('-', "")
            ),
        ]
    }
}

/// A window of `bytes` at extent `pe` of PV `pv` (a device with its metadata entry).
fn pv_window(
    vg: &VolumeGroup,
    pvs: &[Option<Arc<dyn ImageReader>>],
    pv: usize,
    pe: u64,
    bytes: u64,
) -> std::result::Result<Arc<dyn ImageReader>, String> {
    let info = &vg.pvs[pv];
    let dev = pvs[pv]
        .as_ref()
        .ok_or_else(|| format!("physical volume {} ({}) is missing", info.name, info.uuid))?;
    let at = info
        .pe_start
        .checked_mul(512)
        .and_then(|s| pe.checked_mul(vg.extent_bytes)?.checked_add(s))
        .ok_or_else(|| format!("extent {pe} of {} overflows", info.name))?;
    Window::new(dev.clone(), at, bytes)
        .map(|w| Arc::new(w) as Arc<dyn ImageReader>)
        .map_err(|_| {
            format!(
                "{bytes} bytes at extent {pe} lie outside physical volume {}",
                info.name
            )
        })
}

/// The reader of logical volume `lv` of `vg`: its segments in order, back to back.
fn lv_reader(
    vg: &VolumeGroup,
    lv: &vg::LvInfo,
    pvs: &[Option<Arc<dyn ImageReader>>],
) -> std::result::Result<Arc<dyn ImageReader>, String> {
    let mut segs: Vec<&vg::Segment> = lv.segments.iter().collect();
    segs.sort_by_key(|s| s.start_extent);
    let mut parts = Vec::with_capacity(segs.len());
    let mut next = 0u64;
    for s in segs {
        if s.start_extent != next {
            return Err(format!("segments leave extent {next} unmapped"));
        }
        next = s
            .start_extent
            .checked_add(s.extent_count)
            .ok_or("segment extents overflow")?;
        let bytes = s
            .extent_count
            .checked_mul(vg.extent_bytes)
            .ok_or("segment size overflows")?;
        parts.push(match &s.kind {
            SegmentKind::Linear { pv, pe } => pv_window(vg, pvs, *pv, *pe, bytes)?,
            SegmentKind::Striped {
                stripe_size,
                stripes,
            } => {
                let n = stripes.len() as u64;
                if s.extent_count % n != 0 {
                    return Err(format!("{} extents over {n} stripes", s.extent_count));
                }
                let each = (s.extent_count / n) * vg.extent_bytes;
                let areas = stripes
                    .iter()
                    .map(|(pv, pe)| pv_window(vg, pvs, *pv, *pe, each))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let chunk = stripe_size
                    .checked_mul(512)
                    .ok_or("stripe size overflows")?;
                Arc::new(striped::Striped::new(areas, chunk).ok_or("bad stripe geometry")?)
            }
            SegmentKind::Other(t) => {
                return Err(format!(
                    "a {t} segment: vdisk reads linear and striped volumes"
                ))
            }
        });
    }
    Concat::new(parts)
        .map(|c| Arc::new(c) as Arc<dyn ImageReader>)
        .map_err(|e| e.to_string())
}

/// The visible logical volumes of the volume groups on `pvs` (devices with the PV read from
/// each), in the order of their groups' first PV and of the metadata. A group is known by its
/// UUID, and its newest metadata (highest `seqno`) among its PVs describes it, its name
/// included (a PV left with the metadata from before a `vgrename` makes no second group); a
/// PV it names that is not among `pvs` makes the volumes on it unreadable, not the others.
pub fn logical_volumes(pvs: &[(Arc<dyn ImageReader>, PhysicalVolume)]) -> Vec<LogicalVolume> {
    let mut groups: Vec<&VolumeGroup> = Vec::new();
    for (_, pv) in pvs {
        let Some(vg) = &pv.vg else { continue };
        match groups.iter_mut().find(|g| g.id == vg.id) {
            Some(g) if vg.seqno > g.seqno => *g = vg,
            Some(_) => {}
            None => groups.push(vg),
        }
    }
    let mut out = Vec::new();
    for vg in groups {
        let devices: Vec<Option<Arc<dyn ImageReader>>> = vg
            .pvs
            .iter()
            .map(|info| {
                pvs.iter()
                    .find(|(_, pv)| pv.label.uuid == info.uuid)
                    .map(|(dev, _)| dev.clone())
            })
            .collect();
        for lv in vg.lvs.iter().filter(|lv| lv.visible) {
            let extents: u64 = lv
                .segments
                .iter()
                .fold(0u64, |a, s| a.saturating_add(s.extent_count));
            out.push(LogicalVolume {
                vg_name: vg.name.clone(),
                vg_id: vg.id.clone(),
                name: lv.name.clone(),
                id: lv.id.clone(),
                size: extents.saturating_mul(vg.extent_bytes),
                reader: lv_reader(vg, lv, &devices),
            });
        }
    }
    out
}
