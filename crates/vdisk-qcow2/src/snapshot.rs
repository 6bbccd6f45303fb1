//! The internal snapshot table (qcow2.txt "Snapshots"): variable-length entries with the snapshot's
//! L1 table, id, name, dates, VM state size and the optional extra data (large VM state size, disk
//! size, icount). Entries are parsed from bytes and serialized back; `read_table` does the bounded
//! I/O.

use crate::limits;
use std::path::Path;
pub use vdisk_core::StoredName;
use vdisk_core::{Error, Result, Storage};

/// Fixed part of a snapshot table entry.
pub const ENTRY_FIXED: usize = 40;

/// One snapshot table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub l1_table_offset: u64,
    pub l1_size: u32,
    pub id: StoredName,
    pub name: StoredName,
    pub date_sec: u32,
    pub date_nsec: u32,
    pub vm_clock_nsec: u64,
    /// The VM state size (the 64-bit extra field when present, else the 32-bit one).
    pub vm_state_size: u64,
    /// Virtual disk size when the snapshot was taken (extra data), if stored.
    pub disk_size: Option<u64>,
    /// Instruction count (extra data), if stored.
    pub icount: Option<u64>,
    /// Extra data beyond the fields above, kept verbatim.
    pub extra_rest: Vec<u8>,
}

fn be(b: &[u8], at: usize, n: usize) -> u64 {
    b.get(at..at + n)
        .map(|s| s.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x)))
        .unwrap_or(0)
}

impl Snapshot {
    /// Bytes of the variable part following the 40 fixed bytes: (extra, id, name).
    pub fn variable_sizes(fixed: &[u8]) -> (usize, usize, usize) {
        (
            be(fixed, 36, 4) as usize,
            be(fixed, 12, 2) as usize,
            be(fixed, 14, 2) as usize,
        )
    }

    /// Parses one entry from its fixed part and its variable part (extra data, id, name).
    pub fn parse(fixed: &[u8], var: &[u8]) -> Snapshot {
        let (extra_len, id_len, name_len) = Self::variable_sizes(fixed);
        let extra = var.get(..extra_len).unwrap_or(&[]);
        let id = var.get(extra_len..extra_len + id_len).unwrap_or(&[]);
        let name = var
            .get(extra_len + id_len..extra_len + id_len + name_len)
            .unwrap_or(&[]);
        let large = (extra.len() >= 8).then(|| be(extra, 0, 8));
        Snapshot {
            l1_table_offset: be(fixed, 0, 8),
            l1_size: be(fixed, 8, 4) as u32,
            id: StoredName::from_stored(id),
            name: StoredName::from_stored(name),
            date_sec: be(fixed, 16, 4) as u32,
            date_nsec: be(fixed, 20, 4) as u32,
            vm_clock_nsec: be(fixed, 24, 8),
            vm_state_size: large.unwrap_or(be(fixed, 32, 4)),
            disk_size: (extra.len() >= 16).then(|| be(extra, 8, 8)),
            icount: (extra.len() >= 24).then(|| be(extra, 16, 8)),
            extra_rest: extra.get(24..).unwrap_or(&[]).to_vec(),
        }
    }

    /// The entry as bytes, padded to 8 (extra data always holds the large VM state size and disk
    /// size, as QEMU writes it; icount when known).
    pub fn serialize(&self) -> Vec<u8> {
        let mut extra = self.vm_state_size.to_be_bytes().to_vec();
        extra.extend_from_slice(&self.disk_size.unwrap_or(0).to_be_bytes());
        if self.icount.is_some() || !self.extra_rest.is_empty() {
            extra.extend_from_slice(&self.icount.unwrap_or(u64::MAX).to_be_bytes());
            extra.extend_from_slice(&self.extra_rest);
        }
        let mut b =
            Vec::with_capacity(ENTRY_FIXED + extra.len() + self.id.len() + self.name.len() + 8);
        b.extend_from_slice(&self.l1_table_offset.to_be_bytes());
        b.extend_from_slice(&self.l1_size.to_be_bytes());
        // Both come from a u16 length field or from `snapshot -c`, which refuses longer names.
        b.extend_from_slice(&(self.id.len() as u16).to_be_bytes());
        b.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        b.extend_from_slice(&self.date_sec.to_be_bytes());
        b.extend_from_slice(&self.date_nsec.to_be_bytes());
        b.extend_from_slice(&self.vm_clock_nsec.to_be_bytes());
        let small = u32::try_from(self.vm_state_size).unwrap_or(0);
        b.extend_from_slice(&small.to_be_bytes());
        b.extend_from_slice(&(extra.len() as u32).to_be_bytes());
        b.extend_from_slice(&extra);
        b.extend_from_slice(self.id.as_bytes());
        b.extend_from_slice(self.name.as_bytes());
        b.resize(b.len().next_multiple_of(8), 0);
        b
    }
}

/// Reads `count` entries at `offset`, bounded by the named limits. Returns them with the total
/// table size in bytes. With `zeros_past_end` (as `open` reads it), what lies past the end of the
/// file reads as zeros, as QEMU reads it; otherwise an entry there is an error.
pub fn read_table(
    s: &dyn Storage,
    offset: u64,
    count: u32,
    zeros_past_end: bool,
) -> Result<(Vec<Snapshot>, u64)> {
    let path: &Path = s.path();
    let file_len = if zeros_past_end { s.len()? } else { 0 };
    let read = |buf: &mut [u8], at: u64| {
        if zeros_past_end {
            crate::refcount::read_block(s, buf, at, file_len)
        } else {
            s.read_exact_at(buf, at)
        }
    };
    let mut out = Vec::new();
    let mut at = offset;
    for i in 0..count {
        let mut fixed = [0u8; ENTRY_FIXED];
        read(&mut fixed, at)?;
        let (extra, id, name) = Snapshot::variable_sizes(&fixed);
        if extra as u64 > limits::MAX_SNAPSHOT_EXTRA_DATA {
            return Err(Error::limit(
                path,
                "snapshot extra data size",
                extra as u64,
                limits::MAX_SNAPSHOT_EXTRA_DATA,
            ));
        }
        let var_len = extra + id + name;
        let total = (ENTRY_FIXED + var_len).next_multiple_of(8) as u64;
        let end = at
            .checked_add(total)
            .ok_or_else(|| Error::corrupt(path, Some(at), "snapshot table overflows"))?;
        if end - offset > limits::MAX_SNAPSHOT_TABLE_BYTES {
            return Err(Error::limit(
                path,
                "snapshot table size",
                end - offset,
                limits::MAX_SNAPSHOT_TABLE_BYTES,
            ));
        }
        let mut var = vec![0u8; var_len];
        read(&mut var, at + ENTRY_FIXED as u64).map_err(|_| {
            Error::corrupt(
                path,
                Some(at),
                format!("snapshot table entry {i} truncated"),
            )
        })?;
        out.push(Snapshot::parse(&fixed, &var));
        at = end;
    }
    Ok((out, at - offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdisk_core::MemStorage;

    fn sample() -> Snapshot {
        Snapshot {
            l1_table_offset: 0x30000,
            l1_size: 1,
            id: "1".into(),
            name: "first".into(),
            date_sec: 1_700_000_000,
            date_nsec: 5,
            vm_clock_nsec: 7,
            vm_state_size: 0,
            disk_size: Some(1 << 20),
            icount: Some(42),
            extra_rest: Vec::new(),
        }
    }

    #[test]
    fn round_trips_and_reads_tables() {
        let a = sample();
        let b = Snapshot {
            id: "2".into(),
            name: "second".into(),
            icount: None,
            ..sample()
        };
        let mut bytes = vec![0u8; 16];
        bytes.extend(a.serialize());
        bytes.extend(b.serialize());
        let m = MemStorage::new("m", bytes);
        let (v, size) = read_table(&m, 16, 2, false).unwrap();
        assert_eq!(v, vec![a, b]);
        assert_eq!(size, m.len().unwrap() - 16);
        assert!(
            read_table(&m, 16, 3, false).is_err(),
            "third entry is past the end"
        );
    }

    #[test]
    fn ids_and_names_are_c_strings_kept_byte_for_byte() {
        // The qcow2_tables finding: a name of bytes that are not UTF-8 (and one with a NUL) must
        // serialize back as read, up to the NUL, as QEMU writes it.
        let mut e = sample().serialize();
        let var = ENTRY_FIXED + 16 + 8; // extra data: VM state size, disk size, icount
        e.truncate(var);
        e.extend_from_slice(&[0xff, b'a', 0xfe, 0, b'z']);
        e[12..14].copy_from_slice(&1u16.to_be_bytes());
        e[14..16].copy_from_slice(&4u16.to_be_bytes());
        let sn = Snapshot::parse(&e[..ENTRY_FIXED], &e[ENTRY_FIXED..]);
        assert_eq!(sn.id.as_bytes(), [0xff]);
        assert_eq!(sn.name.as_bytes(), [b'a', 0xfe]);
        assert_eq!(sn.name.to_string(), "a\u{fffd}");
        let b = sn.serialize();
        assert_eq!(&b[12..16], [0, 1, 0, 2]);
        assert_eq!(&b[var..var + 3], [0xff, b'a', 0xfe]);
        assert_eq!(Snapshot::parse(&b[..ENTRY_FIXED], &b[ENTRY_FIXED..]), sn);
    }

    #[test]
    fn refuses_huge_extra_data() {
        let mut e = sample().serialize();
        e[36..40].copy_from_slice(&100_000u32.to_be_bytes());
        let m = MemStorage::new("m", e);
        assert!(matches!(
            read_table(&m, 0, 1, false),
            Err(Error::Limit { .. })
        ));
    }
}
