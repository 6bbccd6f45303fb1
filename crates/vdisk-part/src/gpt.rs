//! The GUID Partition Table (UEFI 2.10 section 5.3): a protective MBR, the header at sector 1
//! ("EFI PART", HeaderCRC32 over HeaderSize bytes, MyLBA, AlternateLBA, the usable sectors, the
//! disk GUID, where the partition entry array is and its CRC32), the array's 128-byte entries
//! (type GUID, unique GUID, first and last sector, attributes, a UTF-16 name), and the backup
//! header in the last sector, used when the primary header or its array is damaged, as `sfdisk`
//! uses it.

use crate::crc32::crc32;
use crate::limits::{MAX_GPT_ARRAY_BYTES, MAX_GPT_ENTRIES, MAX_GPT_ENTRY_SIZE, SECTOR_SIZE};
use crate::mbr::Sector;
use crate::{Partition, PartitionTable, Scheme};
use vdisk_core::{Error, ImageReader, Result};

/// The fields of a GPT header that were checked and are used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub disk_guid: [u8; 16],
    pub entries_lba: u64,
    pub entries: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

/// A GUID as text: the first three fields stored little-endian (UEFI appendix A), in capitals as
/// sfdisk prints them.
pub fn guid_text(g: &[u8]) -> String {
    format!(
        "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13],
        g[14], g[15]
    )
}

/// Parses the header in `b` (one sector) read at sector `lba` of a disk of `disk_sectors`, or
/// says why it is not a valid one.
pub fn parse_header(
    b: &[u8; 512],
    lba: u64,
    disk_sectors: u64,
) -> std::result::Result<Header, String> {
    if &b[..8] != b"EFI PART" {
        return Err("no \"EFI PART\" signature".into());
    }
    let size = le32(b, 12) as usize;
    if !(92..=512).contains(&size) {
        return Err(format!("header size {size} is outside 92..=512"));
    }
    let mut copy = b[..size].to_vec();
    copy[16..20].fill(0);
    if crc32(&copy) != le32(b, 16) {
        return Err("header checksum mismatch".into());
    }
    let mut disk_guid = [0u8; 16];
    disk_guid.copy_from_slice(&b[56..72]);
    let h = Header {
        my_lba: le64(b, 24),
        alternate_lba: le64(b, 32),
        first_usable: le64(b, 40),
        last_usable: le64(b, 48),
        disk_guid,
        entries_lba: le64(b, 72),
        entries: le32(b, 80),
        entry_size: le32(b, 84),
        entries_crc: le32(b, 88),
    };
    if h.my_lba != lba {
        return Err(format!(
            "header at sector {lba} says it is at sector {}",
            h.my_lba
        ));
    }
    if h.first_usable > h.last_usable || h.last_usable >= disk_sectors {
        return Err(format!(
            "usable sectors {}..={} do not fit the disk of {disk_sectors} sectors",
            h.first_usable, h.last_usable
        ));
    }
    if h.entries > MAX_GPT_ENTRIES
        || h.entry_size < 128
        || h.entry_size > MAX_GPT_ENTRY_SIZE
        || h.entry_size % 8 != 0
    {
        return Err(format!(
            "{} entries of {} bytes (at most {MAX_GPT_ENTRIES} of 128 to {MAX_GPT_ENTRY_SIZE})",
            h.entries, h.entry_size
        ));
    }
    Ok(h)
}

/// Reads the entry array `h` names and checks its CRC32.
fn read_entries(r: &dyn ImageReader, h: &Header) -> std::result::Result<Vec<u8>, String> {
    let bytes = u64::from(h.entries) * u64::from(h.entry_size);
    if bytes > MAX_GPT_ARRAY_BYTES {
        return Err(format!("entry array of {bytes} bytes"));
    }
    let at = h
        .entries_lba
        .checked_mul(SECTOR_SIZE)
        .filter(|at| at.checked_add(bytes).is_some_and(|e| e <= r.virtual_size()))
        .ok_or_else(|| {
            format!(
                "entry array at sector {} is outside the disk",
                h.entries_lba
            )
        })?;
    let mut array = vec![0u8; bytes as usize];
    r.read_at(&mut array, at).map_err(|e| e.to_string())?;
    if crc32(&array) != h.entries_crc {
        return Err("entry array checksum mismatch".into());
    }
    Ok(array)
}

/// The header at `lba` and its entry array, if both are valid.
fn table_at(
    r: &dyn ImageReader,
    lba: u64,
    disk_sectors: u64,
) -> Result<std::result::Result<(Header, Vec<u8>), String>> {
    let mut b = [0u8; 512];
    r.read_at(&mut b, lba * SECTOR_SIZE)?;
    Ok(parse_header(&b, lba, disk_sectors).and_then(|h| {
        let a = read_entries(r, &h)?;
        Ok((h, a))
    }))
}

/// sfdisk's names of the attribute bits: bits 0-2 by name, bits 48-63 (the type's own) as
/// `GUID:n,m`; the others it does not show.
pub fn attrs_text(a: u64) -> Option<String> {
    let mut words: Vec<String> = [
        (0, "RequiredPartition"),
        (1, "NoBlockIOProtocol"),
        (2, "LegacyBIOSBootable"),
    ]
    .iter()
    .filter(|(bit, _)| a & (1 << bit) != 0)
    .map(|(_, n)| n.to_string())
    .collect();
    let guid_bits: Vec<String> = (48..64)
        .filter(|b| a & (1u64 << b) != 0)
        .map(|b| b.to_string())
        .collect();
    if !guid_bits.is_empty() {
        words.push(format!("GUID:{}", guid_bits.join(",")));
    }
    (!words.is_empty()).then(|| words.join(" "))
}

fn entry(number: u32, e: &[u8]) -> Option<Partition> {
    if e[..16].iter().all(|b| *b == 0) {
        return None;
    }
    let (first, last) = (le64(e, 32), le64(e, 40));
    let units: Vec<u16> = e[56..128]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    let name = String::from_utf16_lossy(&units);
    Some(Partition {
        number,
        start: first,
        sectors: last.wrapping_sub(first).wrapping_add(1),
        type_id: guid_text(&e[..16]),
        uuid: Some(guid_text(&e[16..32])),
        name: (!name.is_empty()).then_some(name),
        bootable: false,
        attrs: attrs_text(le64(e, 48)),
    })
}

/// The GPT of a disk whose MBR is protective: the primary header and array, else the backup
/// ones (at the sector the primary header names, else the last sector). `Ok(None)` when neither
/// is valid (the MBR is then read as a "dos" table, as sfdisk falls back to it).
pub fn read(r: &dyn ImageReader, _pmbr: &Sector) -> Result<Option<PartitionTable>> {
    let disk_sectors = r.virtual_size() / SECTOR_SIZE;
    let last = disk_sectors.saturating_sub(1);
    let (header, array, used_backup) = match table_at(r, 1, disk_sectors)? {
        Ok((h, a)) => (h, a, false),
        Err(_) => match table_at(r, last, disk_sectors)? {
            Ok((h, a)) => (h, a, true),
            Err(_) => return Ok(None),
        },
    };
    let size = header.entry_size as usize;
    let partitions = array
        .chunks_exact(size)
        .enumerate()
        .filter_map(|(i, e)| entry(i as u32 + 1, e))
        .collect();
    if header.entries as usize * size != array.len() {
        return Err(Error::invalid("GPT entry array misread"));
    }
    Ok(Some(PartitionTable {
        scheme: Scheme::Gpt,
        id: guid_text(&header.disk_guid),
        first_lba: Some(header.first_usable),
        last_lba: Some(header.last_usable),
        header_lba: Some(header.my_lba),
        alternate_lba: Some(header.alternate_lba),
        used_backup,
        entries: Some(header.entries),
        partitions,
    }))
}
