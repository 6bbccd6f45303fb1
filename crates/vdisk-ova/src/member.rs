//! Members of an OVA read in place: a read-only [`Storage`] that is the window of the archive holding
//! one member's data (so any vdisk format reader opens a disk without extracting it), one that joins
//! the chunk files of a chunked file reference (DMTF DSP0243 7.1 "File references", `ovf:chunkSize`:
//! `href.000000000`, `href.000000001`, ... read back to back), and a [`FileOpener`] that opens
//! members by the path a member's own names resolve to (a VMDK descriptor's extent files).

use crate::tar::Member;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use vdisk_core::storage::FileOpener;
use vdisk_core::{Error, Result, Storage};

/// Bytes `offset..offset + len` of an archive, read-only, named `archive/member`.
pub struct MemberStorage {
    inner: Arc<dyn Storage>,
    offset: u64,
    len: u64,
    path: PathBuf,
}

impl MemberStorage {
    /// The window `offset..offset + len` of `inner`, named `path`. The range must lie inside `inner`
    /// (the tar index checked it).
    pub fn new(inner: Arc<dyn Storage>, offset: u64, len: u64, path: PathBuf) -> Result<Self> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::invalid("member range overflows"))?;
        if end > inner.len()? {
            return Err(Error::corrupt(
                inner.path(),
                Some(offset),
                format!(
                    "member '{}' runs past the end of the archive",
                    path.display()
                ),
            ));
        }
        Ok(MemberStorage {
            inner,
            offset,
            len,
            path,
        })
    }

    /// Offset of the member's data in the archive.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl Storage for MemberStorage {
    fn path(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> Result<u64> {
        Ok(self.len)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let n = usize::try_from(self.len - offset).map_or(buf.len(), |r| r.min(buf.len()));
        // offset < len and offset + len fits (checked in new).
        self.inner.read_at(&mut buf[..n], self.offset + offset)
    }

    fn data_run(&self, offset: u64, end: u64) -> Result<Option<(bool, u64)>> {
        let end = end.min(self.len);
        if offset >= end {
            return Ok(Some((true, end)));
        }
        Ok(self
            .inner
            .data_run(self.offset + offset, self.offset + end)?
            .map(|(data, run_end)| (data, run_end.saturating_sub(self.offset).clamp(offset, end))))
    }

    // No `as_file`: the host file starts at the archive's start, not at the member's, so copy
    // offloading through it would copy the wrong bytes.
}

/// Several stores read back to back as one (the chunks of a chunked file), read-only.
pub struct ChunkedStorage {
    parts: Vec<(u64, Arc<dyn Storage>)>,
    len: u64,
    path: PathBuf,
}

impl ChunkedStorage {
    /// Joins `parts` in order, named `path`.
    pub fn new(parts: Vec<Arc<dyn Storage>>, path: PathBuf) -> Result<Self> {
        let mut len = 0u64;
        let mut v = Vec::with_capacity(parts.len());
        for p in parts {
            let l = p.len()?;
            v.push((len, p));
            len = len
                .checked_add(l)
                .ok_or_else(|| Error::invalid("total size of the chunks overflows"))?;
        }
        Ok(ChunkedStorage {
            parts: v,
            len,
            path,
        })
    }

    fn part_at(&self, offset: u64) -> Option<(u64, &Arc<dyn Storage>)> {
        let i = self.parts.partition_point(|(start, _)| *start <= offset);
        self.parts[..i].last().map(|(s, p)| (offset - s, p))
    }
}

impl Storage for ChunkedStorage {
    fn path(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> Result<u64> {
        Ok(self.len)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset.saturating_add(done as u64);
            if pos >= self.len {
                break;
            }
            let Some((local, part)) = self.part_at(pos) else {
                break;
            };
            let n = part.read_at(&mut buf[done..], local)?;
            if n == 0 {
                // The part holding `pos` is the last one starting at or before it, so `local` is
                // inside it: it is shorter than when it was opened.
                return Err(Error::corrupt(
                    part.path(),
                    Some(local),
                    "chunk ended before its recorded length",
                ));
            }
            done += n;
        }
        Ok(done)
    }
}

/// The members of an archive by normalized name ([`normalize`]); when a name is stored twice the
/// later member wins, as extracting the archive would leave it.
#[derive(Debug, Clone, Default)]
pub struct MemberMap {
    members: Vec<Member>,
    by_name: HashMap<String, usize>,
}

impl MemberMap {
    /// Indexes `members` (in archive order).
    pub fn new(members: Vec<Member>) -> Self {
        let mut by_name = HashMap::with_capacity(members.len());
        for (i, m) in members.iter().enumerate() {
            if let Some(n) = normalize(&m.name) {
                by_name.insert(n, i);
            }
        }
        MemberMap { members, by_name }
    }

    /// All members, in archive order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member a name or relative href names.
    pub fn get(&self, name: &str) -> Option<&Member> {
        let n = normalize(name)?;
        self.by_name.get(&n).and_then(|&i| self.members.get(i))
    }

    /// Names stored more than once.
    pub fn duplicates(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let mut reported = std::collections::HashSet::new();
        let mut out = Vec::new();
        for m in &self.members {
            if let Some(n) = normalize(&m.name) {
                if !seen.insert(n.clone()) && reported.insert(n.clone()) {
                    out.push(n);
                }
            }
        }
        out
    }
}

/// The path a member is known by: the archive's path joined with the member's name
/// (`appliance.ova/disk1.vmdk`).
pub fn member_path(archive: &Path, name: &str) -> PathBuf {
    archive.join(normalize(name).unwrap_or_else(|| name.trim_start_matches('/').to_string()))
}

/// A read-only store of `member`'s data in `archive`. A member stored sparse by `tar --sparse` is
/// refused: its data in the archive leaves the holes out, so it is not the file.
pub fn member_storage(archive: &Arc<dyn Storage>, member: &Member) -> Result<Arc<dyn Storage>> {
    let path = member_path(archive.path(), &member.name);
    if member.sparse {
        return Err(Error::unsupported(
            &path,
            "member stored as a sparse file (tar --sparse): its data in the archive leaves out the holes, so it cannot be read in place; extract it with tar, or re-pack the package without --sparse",
        ));
    }
    Ok(Arc::new(MemberStorage::new(
        Arc::clone(archive),
        member.offset,
        member.size,
        path,
    )?))
}

/// Opens members of an archive by path: `archive/name` (as [`vdisk_core::storage::resolve_relative`]
/// resolves a name written in a member named `archive/member`) opens member `name`. Paths outside
/// the archive are refused, so a disk inside a package never reads host files.
pub struct MemberFiles {
    pub archive: Arc<dyn Storage>,
    pub members: Arc<MemberMap>,
}

impl FileOpener for MemberFiles {
    fn open(&self, path: &Path) -> Result<Arc<dyn Storage>> {
        let not_found = |why: String| Error::Open {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, why),
        };
        let base = self.archive.path();
        let rel = path.strip_prefix(base).map_err(|_| {
            not_found(format!(
                "not in the package {} (a disk in a package may only name files of that package)",
                base.display()
            ))
        })?;
        let rel = rel.to_string_lossy();
        let name =
            normalize(&rel).ok_or_else(|| not_found("names a path outside the package".into()))?;
        let m = self
            .members
            .get(&name)
            .ok_or_else(|| not_found(format!("no member '{name}' in the package")))?;
        member_storage(&self.archive, m)
    }
}

/// A member name or href in one form for lookups: `/`-separated, without `.` or empty components,
/// `..` resolved inside the name; `None` when it leaves the top (or is absolute with `..` above it).
pub fn normalize(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(name.trim_start_matches('/')).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
#[path = "member_tests.rs"]
mod tests;

/// The whole of `storage`, refused (before anything is allocated) when it is larger than `max`
/// bytes: the descriptor's and the manifest's bound (`what` names the file in the error).
pub(crate) fn read_bounded(storage: &dyn Storage, what: &'static str, max: u64) -> Result<Vec<u8>> {
    let len = storage.len()?;
    if len > max {
        return Err(Error::limit(storage.path(), what, len, max));
    }
    let mut buf = vec![0u8; len as usize];
    storage.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}
