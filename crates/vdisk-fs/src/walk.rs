//! A recursive listing (what `virt-ls -R` shows): every entry under a directory, depth first in
//! on-disk order, each directory entered once (a directory reached again through a damaged
//! entry, a cycle, is listed but not re-entered), at most [`MAX_WALK_DEPTH`] deep. Two modes:
//! [`walk_listed`] goes on past damage as `ls -R` does (an entry whose node cannot be read is
//! still listed, a directory below the start that cannot be listed is reported and passed over);
//! [`walk`] stops at the first such damage.

use crate::limits::MAX_WALK_DEPTH;
use crate::{DirEntry, FileKind, Filesystem, Listed, Node};
use std::collections::HashSet;
use vdisk_core::{Error, Result};

/// What [`walk_listed`] meets at a path.
#[derive(Debug)]
pub enum Step<'a> {
    /// An entry of the directory `dir`: its node, or why that node cannot be read.
    Entry { dir: &'a Node, entry: Listed },
    /// A directory below the start whose entries cannot be listed (`ls -R`: "cannot open
    /// directory"); the walk goes on without it.
    Unlisted(Error),
}

/// Calls `f(path, step)` for everything under `dir`, whose path is `prefix` (`/` for the root),
/// going on past damage as `ls -R` does; paths are joined with `/`. Fails when `dir` itself
/// cannot be listed, when directories nest deeper than [`MAX_WALK_DEPTH`], or with the first
/// error `f` returns (which is how `f` stops the walk).
pub fn walk_listed(
    fs: &dyn Filesystem,
    dir: &Node,
    prefix: &[u8],
    f: &mut dyn FnMut(&[u8], Step<'_>) -> Result<()>,
) -> Result<()> {
    let mut seen = HashSet::new();
    seen.insert(dir.id);
    let base = prefix.strip_suffix(b"/").unwrap_or(prefix).to_vec();
    walk_in(fs, dir, &base, &mut seen, f)
}

/// Calls `f(path, entry)` for everything under `dir`, whose path is `prefix` (`/` for the root);
/// paths are joined with `/`. Fails at the first entry whose node cannot be read or directory
/// that cannot be listed (see [`walk_listed`] for a walk that goes on).
pub fn walk(
    fs: &dyn Filesystem,
    dir: &Node,
    prefix: &[u8],
    f: &mut dyn FnMut(&[u8], &DirEntry) -> Result<()>,
) -> Result<()> {
    walk_listed(fs, dir, prefix, &mut |path, step| match step {
        Step::Unlisted(e) => Err(e),
        Step::Entry { entry, .. } => f(
            path,
            &DirEntry {
                name: entry.name,
                node: entry.node?,
            },
        ),
    })
}

/// Refuses to enter the directory at `path` when `listing` directories, the start included,
/// are already being listed: walks go at most [`MAX_WALK_DEPTH`] deep.
pub fn may_enter(listing: usize, path: &[u8]) -> Result<()> {
    if listing >= MAX_WALK_DEPTH {
        return Err(Error::invalid(format!(
            "{}: directories nested deeper than {MAX_WALK_DEPTH}",
            String::from_utf8_lossy(path)
        )));
    }
    Ok(())
}

/// The walk itself, with a stack of the directories being listed rather than recursion, so that
/// directories nested [`MAX_WALK_DEPTH`] deep cost no thread stack.
fn walk_in(
    fs: &dyn Filesystem,
    dir: &Node,
    prefix: &[u8],
    seen: &mut HashSet<u64>,
    f: &mut dyn FnMut(&[u8], Step<'_>) -> Result<()>,
) -> Result<()> {
    // Each level: the directory's path, its node, and its entries not yet visited.
    let mut levels = vec![(prefix.to_vec(), dir.clone(), fs.list_dir(dir)?.into_iter())];
    while let Some((dir_path, dir, entries)) = levels.last_mut() {
        let Some(entry) = entries.next() else {
            levels.pop();
            continue;
        };
        let mut path = dir_path.clone();
        path.push(b'/');
        path.extend_from_slice(&entry.name);
        let below = match &entry.node {
            Ok(n) if n.kind == FileKind::Directory && seen.insert(n.id) => Some(n.clone()),
            _ => None,
        };
        f(&path, Step::Entry { dir, entry })?;
        let Some(sub) = below else { continue };
        may_enter(levels.len(), &path)?;
        match fs.list_dir(&sub) {
            Ok(listed) => levels.push((path, sub, listed.into_iter())),
            Err(e) => f(&path, Step::Unlisted(e))?,
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "walk_tests.rs"]
mod tests;
