//! Reading a data task straight from a memory map of the source's host file, instead of `pread`
//! into a buffer: for data the source stores uncompressed and contiguously in one host file (what
//! block status reports with a host offset, as `-C` uses), the task's bytes are the file's bytes,
//! so zero detection and the write can work on the page cache's pages directly, one kernel copy
//! per byte fewer (measurements: `benches/README.md`, session 6).

use crate::chunk::Ctx;
use crate::plan::{SegKind, Segment};
use std::path::Path;
use std::sync::{Arc, Mutex};
use vdisk_core::reader::checked_copy_status;
use vdisk_core::{DataBuf, ExtentKind, FileMap, Result, Storage};

/// The maps of the host files a conversion reads, made on first use and kept until it ends.
/// Files that cannot be mapped are remembered as such, so they are asked once.
#[derive(Default)]
pub(crate) struct MapCache {
    maps: Mutex<Vec<Known>>,
}

/// A host file and its map (`None`: it cannot be mapped).
type Known = (Arc<dyn Storage>, Option<Arc<FileMap>>);

impl MapCache {
    fn get(&self, storage: &Arc<dyn Storage>) -> Result<Option<Arc<FileMap>>> {
        let mut maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, m)) = maps.iter().find(|(s, _)| Arc::ptr_eq(s, storage)) {
            return Ok(m.clone());
        }
        let m = FileMap::of(storage)?;
        maps.push((Arc::clone(storage), m.clone()));
        Ok(m)
    }
}

/// A run of a data task stored uncompressed at consecutive offsets of one host file.
pub(crate) struct HostRun {
    /// Guest offset of the run's first byte.
    pub at: u64,
    pub file: Arc<Path>,
    pub offset: u64,
    pub len: u64,
}

/// Data task `seg` as runs of host files, neighbours that continue each other in the same file
/// merged, when every byte of it is data the source stores uncompressed in a host file (what
/// block status reports with a host offset); `None` when any part is not (compressed or
/// encrypted data, zeros, data only the reader can produce). Block status only, no reads.
pub(crate) fn host_runs(ctx: &Ctx<'_>, seg: &Segment) -> Result<Option<Vec<HostRun>>> {
    if seg.kind != SegKind::Data {
        return Ok(None);
    }
    let mut runs: Vec<HostRun> = Vec::new();
    let mut pos = seg.start;
    while pos < seg.end {
        let e = checked_copy_status(ctx.src, pos, seg.end - pos)?;
        let len = e.length.min(seg.end - pos);
        let host = match (&e.kind, &e.host) {
            (ExtentKind::Data, Some(h)) => h,
            _ => return Ok(None),
        };
        match runs.last_mut() {
            Some(r) if r.file == host.file && r.offset.checked_add(r.len) == Some(host.offset) => {
                r.len += len
            }
            _ => runs.push(HostRun {
                at: pos,
                file: Arc::clone(&host.file),
                offset: host.offset,
                len,
            }),
        }
        pos += len;
    }
    Ok(Some(runs))
}

/// The bytes of data task `seg`, as a view of the mapped host file, when all of it is one
/// [`HostRun`] that lies inside its file; `None` sends the task down the read path (see
/// [`host_runs`]; also in-memory sources, data spread over files or out of order, data past the
/// end of its file, which the reader knows how to read).
pub(crate) fn task_bytes(ctx: &Ctx<'_>, maps: &MapCache, seg: &Segment) -> Result<Option<DataBuf>> {
    let run = match host_runs(ctx, seg)? {
        Some(mut runs) if runs.len() == 1 => runs.remove(0),
        _ => return Ok(None),
    };
    let Some(storage) = ctx.src.host_storage(&run.file) else {
        return Ok(None);
    };
    let Some(map) = maps.get(&storage)? else {
        return Ok(None);
    };
    let (Ok(start), Ok(len)) = (usize::try_from(run.offset), usize::try_from(run.len)) else {
        return Ok(None);
    };
    if map.bytes(start, len).is_err() {
        // Past the end of the file as it was mapped: the reader knows what reads there.
        return Ok(None);
    }
    // No MADV_WILLNEED here: asking for the whole task ahead made cold conversions 1.6x slower
    // (qcow2->raw of the bench disk 0.86 s against 0.54 s), the faults' own readahead does better.
    DataBuf::mapped(map, start, len).map(Some)
}
