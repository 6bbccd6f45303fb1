//! A recursive listing (what `virt-ls -R` shows): every entry under a directory, depth first in
//! on-disk order, each directory entered once (a directory reached again through a damaged
//! entry, a cycle, is listed but not re-entered), at most [`MAX_WALK_DEPTH`] deep.

use crate::limits::MAX_WALK_DEPTH;
use crate::{DirEntry, FileKind, Filesystem, Node};
use std::collections::HashSet;
use vdisk_core::{Error, Result};

/// Calls `f(path, entry)` for everything under `dir`, whose path is `prefix` (`/` for the root);
/// paths are joined with `/`.
pub fn walk(
    fs: &dyn Filesystem,
    dir: &Node,
    prefix: &[u8],
    f: &mut dyn FnMut(&[u8], &DirEntry) -> Result<()>,
) -> Result<()> {
    let mut seen = HashSet::new();
    seen.insert(dir.id);
    let base = prefix.strip_suffix(b"/").unwrap_or(prefix).to_vec();
    walk_in(fs, dir, &base, 0, &mut seen, f)
}

fn walk_in(
    fs: &dyn Filesystem,
    dir: &Node,
    prefix: &[u8],
    depth: usize,
    seen: &mut HashSet<u64>,
    f: &mut dyn FnMut(&[u8], &DirEntry) -> Result<()>,
) -> Result<()> {
    if depth >= MAX_WALK_DEPTH {
        return Err(Error::invalid(format!(
            "{}: directories nested deeper than {MAX_WALK_DEPTH}",
            String::from_utf8_lossy(prefix)
        )));
    }
    for e in fs.read_dir(dir)? {
        let mut path = prefix.to_vec();
        path.push(b'/');
        path.extend_from_slice(&e.name);
        f(&path, &e)?;
        if e.node.kind == FileKind::Directory && seen.insert(e.node.id) {
            walk_in(fs, &e.node, &path, depth + 1, seen, f)?;
        }
    }
    Ok(())
}
