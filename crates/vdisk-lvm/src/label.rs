//! The LVM2 physical volume label and metadata area header (lvm2's lib/label/label.h and
//! lib/format_text/layout.h): `LABELONE` in one of the first four sectors, the PV header after
//! it (the PV's UUID, its size, its data and metadata areas), and at the start of each
//! metadata area the `mda_header` whose first raw location points at the current volume group
//! text in the area's circular buffer. Each is sealed with lvm2's CRC (lib/misc/crc.c), checked
//! as lvm2 checks it: a label with a wrong one is passed over, a metadata area header or
//! metadata text with a wrong one is not used. Pure parsing: no I/O.

use vdisk_core::crc32c::{reflected_table, reflected_update};

/// `LABELONE`.
pub const LABEL_ID: &[u8; 8] = b"LABELONE";
/// The label type of the lvm2 text format.
pub const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
/// Sectors searched for the label.
pub const LABEL_SCAN_SECTORS: u64 = 4;
pub const SECTOR: u64 = 512;
/// The metadata area header's magic.
pub const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
/// Bytes of the metadata area header; the circular buffer follows it.
pub const MDA_HEADER_SIZE: u64 = 512;
/// A raw location flag: this copy of the metadata is to be ignored.
const RAW_LOCN_IGNORED: u32 = 1;
/// The value lvm2's checksums start from (lib/misc/crc.h).
pub const INITIAL_CRC: u32 = 0xf597_a6cf;

static CRC_TABLE: [u32; 256] = reflected_table(0xEDB8_8320);

/// lvm2's `calc_crc`: CRC-32's register (reflected polynomial 0xEDB88320) run over `data` from
/// `initial`, with no inversion at either end.
pub fn calc_crc(initial: u32, data: &[u8]) -> u32 {
    reflected_update(&CRC_TABLE, initial, data)
}

/// Whether a stored checksum matches. Fuzzing builds (`--cfg fuzzing`) take every one as
/// matching, so that mutated inputs reach the parsers behind the checks.
pub fn crc_matches(stored: u32, computed: u32) -> bool {
    cfg!(fuzzing) || stored == computed
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from(u32_at(b, off)) | (u64::from(u32_at(b, off + 4)) << 32)
}

/// An area of the PV: byte offset from its start, and size (0: to the end of the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    pub offset: u64,
    pub size: u64,
}

/// The PV label and header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLabel {
    /// The sector the label was found in.
    pub sector: u64,
    /// The PV's UUID as stored: 32 characters, without the dashes lvm2 prints.
    pub uuid: String,
    /// The device size lvm2 recorded, in bytes.
    pub device_size: u64,
    pub data_areas: Vec<Area>,
    pub metadata_areas: Vec<Area>,
}

/// Whether `sector` (512 bytes, found at sector number `n`) holds an lvm2 label: `LABELONE`,
/// its own sector number, the checksum of the rest of the sector from byte 20, and the text
/// format's type. lvm2 passes over a sector that fails any of these and looks at the next.
pub fn is_label(sector: &[u8], n: u64) -> bool {
    sector.len() == SECTOR as usize
        && sector.get(..8) == Some(LABEL_ID)
        && u64_at(sector, 8) == n
        && crc_matches(u32_at(sector, 16), calc_crc(INITIAL_CRC, &sector[20..]))
        && sector.get(24..32) == Some(LABEL_TYPE)
}

/// Parses the label in `sector` (sector number `n`) and the PV header it points to.
pub fn parse_label(sector: &[u8], n: u64) -> Result<PvLabel, String> {
    if !is_label(sector, n) {
        return Err("no LVM2 label".into());
    }
    let at = u32_at(sector, 20) as usize;
    // The PV header (UUID, size, and at least the two list terminators) must lie in the sector.
    if at < 32 || at.checked_add(40 + 32).is_none_or(|end| end > sector.len()) {
        return Err(format!("PV header at offset {at} of the label sector"));
    }
    let uuid = &sector[at..at + 32];
    if !uuid.iter().all(|c| c.is_ascii_alphanumeric()) {
        return Err("PV UUID is not 32 letters and digits".into());
    }
    let mut p = at + 40;
    let mut lists = [Vec::new(), Vec::new()];
    for list in &mut lists {
        loop {
            if p + 16 > sector.len() {
                return Err("PV header area lists run past the label sector".into());
            }
            let (offset, size) = (u64_at(sector, p), u64_at(sector, p + 8));
            p += 16;
            if offset == 0 {
                break;
            }
            list.push(Area { offset, size });
        }
    }
    let [data_areas, metadata_areas] = lists;
    Ok(PvLabel {
        sector: n,
        uuid: String::from_utf8_lossy(uuid).into_owned(),
        device_size: u64_at(sector, at + 32),
        data_areas,
        metadata_areas,
    })
}

/// Where a metadata area header says the current metadata text lies: offset from the start of
/// the area and size, or `None` when the area holds none (or it is marked ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLocation {
    pub offset: u64,
    pub size: u64,
    /// lvm2's CRC of the `size` bytes of text (across the wrap, when it wraps).
    pub checksum: u32,
}

/// Parses a metadata area header (the first 512 bytes of `area`).
pub fn parse_mda_header(b: &[u8], area: Area) -> Result<Option<RawLocation>, String> {
    if b.len() != MDA_HEADER_SIZE as usize || b.get(4..20) != Some(MDA_MAGIC) {
        return Err("metadata area header magic".into());
    }
    let (stored, computed) = (u32_at(b, 0), calc_crc(INITIAL_CRC, &b[4..]));
    if !crc_matches(stored, computed) {
        return Err(format!(
            "wrong checksum {stored:08x} in the metadata area header (computed {computed:08x})"
        ));
    }
    let (version, start, size) = (u32_at(b, 20), u64_at(b, 24), u64_at(b, 32));
    if version != 1 {
        return Err(format!("metadata area version {version}"));
    }
    if start != area.offset || size != area.size || size <= MDA_HEADER_SIZE {
        return Err(format!(
            "metadata area header says {size} bytes at {start}, the PV header {} at {}",
            area.size, area.offset
        ));
    }
    let (offset, len, flags) = (u64_at(b, 40), u64_at(b, 48), u32_at(b, 60));
    if offset == 0 || flags & RAW_LOCN_IGNORED != 0 {
        return Ok(None);
    }
    if offset < MDA_HEADER_SIZE || offset >= size || len == 0 || len > size - MDA_HEADER_SIZE {
        return Err(format!(
            "metadata of {len} bytes at {offset} in an area of {size}"
        ));
    }
    Ok(Some(RawLocation {
        offset,
        size: len,
        checksum: u32_at(b, 56),
    }))
}

/// The pieces (offset in the area, length) of metadata at `loc`: one, or two when it wraps
/// around the end of the circular buffer to just after the header.
pub fn metadata_pieces(loc: RawLocation, area_size: u64) -> Vec<(u64, u64)> {
    let first = loc.size.min(area_size - loc.offset);
    let mut v = vec![(loc.offset, first)];
    if first < loc.size {
        v.push((MDA_HEADER_SIZE, loc.size - first));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label_sector() -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[..8].copy_from_slice(LABEL_ID);
        s[8..16].copy_from_slice(&1u64.to_le_bytes());
        s[20..24].copy_from_slice(&32u32.to_le_bytes());
        s[24..32].copy_from_slice(LABEL_TYPE);
        s[32..64].copy_from_slice(b"RkKTw2x98oaUXaLTY3qaAw50ZMw7w4tk");
        s[64..72].copy_from_slice(&(200u64 << 20).to_le_bytes());
        // Data area at 1 MiB (to the end), terminator; metadata area 4096..1 MiB, terminator.
        s[72..80].copy_from_slice(&(1u64 << 20).to_le_bytes());
        s[104..112].copy_from_slice(&4096u64.to_le_bytes());
        s[112..120].copy_from_slice(&((1u64 << 20) - 4096).to_le_bytes());
        seal_label(&mut s);
        s
    }

    fn seal_label(s: &mut [u8]) {
        let crc = calc_crc(INITIAL_CRC, &s[20..]);
        s[16..20].copy_from_slice(&crc.to_le_bytes());
    }

    fn seal_header(h: &mut [u8]) {
        let crc = calc_crc(INITIAL_CRC, &h[4..]);
        h[..4].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn lvm2_crc() {
        // CRC-32's register from lvm2's initial value: the standard CRC-32 of "123456789"
        // (0xCBF43926) comes from !0 with a final inversion, so these two agree with it.
        assert_eq!(!calc_crc(!0, b"123456789"), 0xCBF4_3926);
        assert_eq!(calc_crc(INITIAL_CRC, b""), INITIAL_CRC);
        // Run in pieces, as over a wrapped metadata text.
        let whole = calc_crc(INITIAL_CRC, b"vg { id = \"x\" }");
        let split = calc_crc(calc_crc(INITIAL_CRC, b"vg { id"), b" = \"x\" }");
        assert_eq!(whole, split);
    }

    #[test]
    fn a_label_with_a_wrong_checksum_is_passed_over() {
        let mut s = label_sector();
        assert!(is_label(&s, 1));
        s[100] ^= 1;
        assert!(!is_label(&s, 1), "a changed byte after the checksum");
        seal_label(&mut s);
        assert!(is_label(&s, 1));
        s[16] ^= 1;
        assert!(!is_label(&s, 1), "a changed checksum");
    }

    #[test]
    fn parses_a_pvcreate_label() {
        let l = parse_label(&label_sector(), 1).unwrap();
        assert_eq!(l.uuid, "RkKTw2x98oaUXaLTY3qaAw50ZMw7w4tk");
        assert_eq!(l.device_size, 200 << 20);
        assert_eq!(
            l.data_areas,
            [Area {
                offset: 1 << 20,
                size: 0
            }]
        );
        assert_eq!(
            l.metadata_areas,
            [Area {
                offset: 4096,
                size: (1 << 20) - 4096
            }]
        );
        // The label names the sector it is in.
        assert!(parse_label(&label_sector(), 0).is_err());
        let mut s = label_sector();
        s[20..24].copy_from_slice(&500u32.to_le_bytes());
        assert!(parse_label(&s, 1).is_err());
    }

    #[test]
    fn metadata_location_and_wrapping() {
        let area = Area {
            offset: 4096,
            size: 8192,
        };
        let mut h = vec![0u8; 512];
        h[4..20].copy_from_slice(MDA_MAGIC);
        h[20..24].copy_from_slice(&1u32.to_le_bytes());
        h[24..32].copy_from_slice(&4096u64.to_le_bytes());
        h[32..40].copy_from_slice(&8192u64.to_le_bytes());
        h[40..48].copy_from_slice(&7000u64.to_le_bytes());
        h[48..56].copy_from_slice(&2000u64.to_le_bytes());
        h[56..60].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        seal_header(&mut h);
        let loc = parse_mda_header(&h, area).unwrap().unwrap();
        assert_eq!(loc.checksum, 0x1234_5678);
        assert_eq!(metadata_pieces(loc, 8192), [(7000, 1192), (512, 808)]);
        h[48..56].copy_from_slice(&9000u64.to_le_bytes());
        seal_header(&mut h);
        assert!(parse_mda_header(&h, area).is_err());
        h[60] = 1;
        seal_header(&mut h);
        assert_eq!(parse_mda_header(&h, area).unwrap(), None);
        // Unsealed: refused, whatever it says.
        h[60] = 0;
        h[48..56].copy_from_slice(&2000u64.to_le_bytes());
        let e = parse_mda_header(&h, area).unwrap_err();
        assert!(e.contains("wrong checksum"), "{e}");
    }
}
