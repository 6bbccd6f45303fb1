//! Extension headers that qualify the entry after them, decoded from bytes alone (no I/O): pax
//! extended headers `x` and global headers `g` (IEEE 1003.1 `pax`, "pax Interchange Format",
//! "pax Extended Header": records `"%d %s=%s\n"`; the `path` and `size` keywords; GNU tar's
//! `GNU.sparse.*` keywords for sparse files), and GNU tar's `L` long names and `K` long link names.

use crate::tar_header::{cstr, EntryKind, Header};

/// What a pax header says that vdisk uses. A value of `Some(None)` is a record with an empty value,
/// which POSIX says deletes the keyword (the header field, or a global value, applies again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaxRecords {
    /// `path`: the entry's name.
    pub path: Option<Option<Vec<u8>>>,
    /// `size`: the entry's data size, replacing the header's (files of 8 GiB or more).
    pub size: Option<Option<u64>>,
    /// Any `GNU.sparse.*` keyword: the entry is a sparse file whose data is not its content.
    pub gnu_sparse: bool,
    /// `GNU.sparse.name`: the real name of a sparse file (its `path` is a made-up one).
    pub gnu_sparse_name: Option<Vec<u8>>,
}

/// Decodes the data of a pax header: records `LEN KEY=VALUE\n` where LEN, in decimal, counts the
/// whole record. NUL bytes where a record would start end the data (padding some writers leave
/// inside the size). Keywords vdisk does not use are skipped; a record that is not well formed is
/// an error naming its offset.
pub fn parse_pax(data: &[u8]) -> Result<PaxRecords, String> {
    let mut out = PaxRecords::default();
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest[0] == 0 {
            break;
        }
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 20 || rest.get(digits) != Some(&b' ') {
            return Err(format!(
                "malformed pax record at byte {pos}: no length before a space"
            ));
        }
        let len = decimal(&rest[..digits]).ok_or_else(|| {
            format!("malformed pax record at byte {pos}: length does not fit 64 bits")
        })?;
        let len = match usize::try_from(len) {
            Ok(l) if l > digits + 1 && l <= rest.len() => l,
            Ok(l) if l <= digits + 1 => {
                return Err(format!(
                    "malformed pax record at byte {pos}: its length {len} is too small to hold it"
                ))
            }
            _ => {
                return Err(format!(
                    "malformed pax record at byte {pos}: its length {len} runs past the header's {} bytes",
                    data.len()
                ))
            }
        };
        let record = &rest[digits + 1..len];
        let Some((&b'\n', body)) = record.split_last() else {
            return Err(format!(
                "malformed pax record at byte {pos}: it does not end with a newline"
            ));
        };
        let Some(eq) = body.iter().position(|&c| c == b'=') else {
            return Err(format!("malformed pax record at byte {pos}: no '='"));
        };
        let (key, value) = (&body[..eq], &body[eq + 1..]);
        if key.is_empty() {
            return Err(format!("malformed pax record at byte {pos}: empty keyword"));
        }
        apply_record(&mut out, key, value).map_err(|e| format!("pax record at byte {pos}: {e}"))?;
        pos += len;
    }
    Ok(out)
}

fn apply_record(out: &mut PaxRecords, key: &[u8], value: &[u8]) -> Result<(), String> {
    match key {
        b"path" => out.path = Some((!value.is_empty()).then(|| value.to_vec())),
        b"size" => {
            out.size = Some(if value.is_empty() {
                None
            } else {
                Some(decimal(value).ok_or("size is not a decimal number of 64 bits")?)
            })
        }
        b"GNU.sparse.name" => {
            out.gnu_sparse = true;
            out.gnu_sparse_name = Some(value.to_vec());
        }
        k if k.starts_with(b"GNU.sparse.") => out.gnu_sparse = true,
        _ => {}
    }
    Ok(())
}

/// A string of ASCII decimal digits (1 to 20 of them) as a `u64`.
pub fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |v, &c| {
        v.checked_mul(10)?.checked_add(u64::from(c - b'0'))
    })
}

/// An entry with its extension headers applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name: pax `path` (or `GNU.sparse.name`), else GNU long name, else the header's.
    pub name: Vec<u8>,
    /// Bytes of data after the header: pax `size`, else the header's.
    pub size: u64,
    /// What the header describes.
    pub kind: EntryKind,
    /// Stored as a sparse file (GNU `S` header, or pax `GNU.sparse.*` records): the data that follows
    /// is not the file's content byte for byte.
    pub sparse: bool,
}

/// Extension headers seen since the last entry, and the pax global records in force.
#[derive(Debug, Default)]
pub struct Pending {
    pax: Option<PaxRecords>,
    long_name: Option<Vec<u8>>,
    global: PaxRecords,
}

impl Pending {
    /// Whether an extension header waits for its entry.
    pub fn is_waiting(&self) -> bool {
        self.pax.is_some() || self.long_name.is_some()
    }

    /// Takes in the data of an extension header of `kind`.
    pub fn absorb(&mut self, kind: EntryKind, data: &[u8]) -> Result<(), String> {
        match kind {
            EntryKind::PaxExtended => {
                let recs = parse_pax(data)?;
                let mut cur = self.pax.take().unwrap_or_default();
                merge(&mut cur, recs);
                self.pax = Some(cur);
            }
            EntryKind::PaxGlobal => {
                let recs = parse_pax(data)?;
                // In a global header an empty value removes the keyword's global value.
                if let Some(p) = recs.path {
                    self.global.path = p.map(Some);
                }
                if let Some(s) = recs.size {
                    self.global.size = s.map(Some);
                }
            }
            EntryKind::GnuLongName => self.long_name = Some(cstr(data).to_vec()),
            _ => {}
        }
        Ok(())
    }

    /// Applies the waiting extension headers (and the global records) to `header`, and forgets the
    /// former.
    pub fn apply(&mut self, header: Header) -> Entry {
        let pax = self.pax.take().unwrap_or_default();
        let long_name = self.long_name.take();
        let global_path = self.global.path.clone().flatten();
        let mut name = match pax.path {
            Some(Some(p)) => p,
            // An empty `path` record deletes the value: the header's own name applies.
            Some(None) => long_name.unwrap_or(header.name),
            // A GNU long name is the entry's own; a global `path` only a default.
            None => long_name.or(global_path).unwrap_or(header.name),
        };
        let size = match pax.size {
            Some(Some(s)) => s,
            Some(None) => header.size,
            None => self.global.size.flatten().unwrap_or(header.size),
        };
        if let Some(n) = pax.gnu_sparse_name {
            name = n;
        }
        Entry {
            name,
            size,
            kind: header.kind,
            sparse: pax.gnu_sparse || header.kind == EntryKind::GnuSparse,
        }
    }
}

/// Later records of the same keyword win (consecutive `x` headers are read as one).
fn merge(into: &mut PaxRecords, from: PaxRecords) {
    if from.path.is_some() {
        into.path = from.path;
    }
    if from.size.is_some() {
        into.size = from.size;
    }
    into.gnu_sparse |= from.gnu_sparse;
    if from.gnu_sparse_name.is_some() {
        into.gnu_sparse_name = from.gnu_sparse_name;
    }
}

#[cfg(test)]
#[path = "tar_ext_tests.rs"]
mod tests;
