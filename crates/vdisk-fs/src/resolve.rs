//! Path resolution as libguestfs resolves paths inside a guest, chroot-like: absolute paths,
//! components split on `/`, symbolic links followed in every intermediate component (and in the
//! last when asked), relative targets from the directory holding the link, absolute targets from
//! the filesystem's root, `..` at the root staying at the root, and at most
//! [`MAX_SYMLINK_FOLLOWS`] links followed (then ELOOP, as Linux).
//!
//! `..` is taken from the directories walked through, never from the `..` entries on disk, so a
//! damaged `..` cannot lead outside the tree or into a loop.

use crate::limits::{MAX_PATH_BYTES, MAX_SYMLINK_FOLLOWS};
use crate::{FileKind, Filesystem, Node};
use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use vdisk_core::{Error, Result};

/// The file at `path` (absolute). A trailing `/` asks for a directory and follows a final link.
pub fn resolve(fs: &dyn Filesystem, path: &[u8], follow: bool) -> Result<Node> {
    if path.first() != Some(&b'/') {
        return Err(Error::invalid(format!(
            "{}: path must be absolute",
            String::from_utf8_lossy(path)
        )));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(Error::invalid(format!(
            "path of {} bytes is longer than {MAX_PATH_BYTES}",
            path.len()
        )));
    }
    let must_be_dir = path.len() > 1 && path.ends_with(b"/");
    let follow = follow || must_be_dir;
    let mut todo: VecDeque<Vec<u8>> = components(path).collect();
    let mut stack = vec![fs.root()?];
    let mut links = 0u32;
    let mut queued = path.len();
    while let Some(name) = todo.pop_front() {
        if name == b"." {
            continue;
        }
        if name == b".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let dir = stack.last().ok_or_else(|| not_found(path))?;
        if dir.kind != FileKind::Directory {
            return Err(os_error(
                path,
                io::ErrorKind::NotADirectory,
                "Not a directory",
            ));
        }
        let node = fs.lookup(dir, &name)?.ok_or_else(|| not_found(path))?;
        if node.kind == FileKind::Symlink && (follow || !todo.is_empty()) {
            links += 1;
            if links > MAX_SYMLINK_FOLLOWS {
                return Err(os_error(
                    path,
                    io::ErrorKind::Other,
                    "Too many levels of symbolic links",
                ));
            }
            let target = fs.read_link(&node)?;
            if target.is_empty() {
                return Err(not_found(path));
            }
            queued = queued.saturating_add(target.len());
            if queued > MAX_PATH_BYTES {
                return Err(os_error(
                    path,
                    io::ErrorKind::InvalidInput,
                    "File name too long",
                ));
            }
            if target.first() == Some(&b'/') {
                stack.truncate(1);
            }
            for c in components(&target).collect::<Vec<_>>().into_iter().rev() {
                todo.push_front(c);
            }
            continue;
        }
        stack.push(node);
    }
    let node = stack.pop().ok_or_else(|| not_found(path))?;
    if must_be_dir && node.kind != FileKind::Directory {
        return Err(os_error(
            path,
            io::ErrorKind::NotADirectory,
            "Not a directory",
        ));
    }
    Ok(node)
}

/// The non-empty components of a path.
fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
}

/// The path as an error carries it.
fn path_buf(path: &[u8]) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(path))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(path).into_owned())
    }
}

/// `Could not open 'PATH': MESSAGE`, with the `io::ErrorKind` a caller can match.
pub fn os_error(path: &[u8], kind: io::ErrorKind, msg: &str) -> Error {
    Error::Open {
        path: path_buf(path),
        source: io::Error::new(kind, msg.to_string()),
    }
}

/// `Could not open 'PATH': No such file or directory`.
pub fn not_found(path: &[u8]) -> Error {
    os_error(path, io::ErrorKind::NotFound, "No such file or directory")
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
