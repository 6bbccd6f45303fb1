//! Reading a data task straight from a memory map of the source's host file, instead of `pread`
//! into a buffer: for data the source stores uncompressed and contiguously in one host file (what
//! block status reports with a host offset, as `-C` uses), the task's bytes are the file's bytes,
//! so zero detection and the write can work on the page cache's pages directly, one kernel copy
//! per byte fewer (measurements: `benches/README.md`, session 6).

use crate::chunk::Ctx;
use crate::plan::{SegKind, Segment};
use std::path::Path;
use std::sync::{Arc, Mutex};
use vdisk_core::reader::checked_block_status;
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

/// The bytes of data task `seg`, as a view of the mapped host file, when every byte of it is data
/// stored at consecutive offsets of one host file that lie inside the file; `None` sends the task
/// down the read path (compressed or encrypted data, zeros, in-memory sources, data spread over
/// files or out of order, data past the end of its file, which the reader knows how to read).
pub(crate) fn task_bytes(ctx: &Ctx<'_>, maps: &MapCache, seg: &Segment) -> Result<Option<DataBuf>> {
    if seg.kind != SegKind::Data {
        return Ok(None);
    }
    // The host file and offset of the task's first byte; every later extent must continue them.
    let mut first: Option<(Arc<Path>, u64)> = None;
    let mut pos = seg.start;
    while pos < seg.end {
        let e = checked_block_status(ctx.src, pos, seg.end - pos)?;
        let host = match (&e.kind, &e.host) {
            (ExtentKind::Data, Some(h)) => h,
            _ => return Ok(None),
        };
        match &first {
            None => first = Some((host.file.clone(), host.offset)),
            Some((file, offset)) => {
                if host.file != *file || offset.checked_add(pos - seg.start) != Some(host.offset) {
                    return Ok(None);
                }
            }
        }
        pos += e.length.min(seg.end - pos);
    }
    let Some((file, offset)) = first else {
        return Ok(None);
    };
    let Some(storage) = ctx.src.host_storage(&file) else {
        return Ok(None);
    };
    let Some(map) = maps.get(&storage)? else {
        return Ok(None);
    };
    let len = seg.end - seg.start;
    let (Ok(start), Ok(len)) = (usize::try_from(offset), usize::try_from(len)) else {
        return Ok(None);
    };
    match start.checked_add(len) {
        Some(end) if end <= map.len() => {}
        _ => return Ok(None),
    }
    map.prefetch(start, len);
    DataBuf::mapped(map, start, len).map(Some)
}
