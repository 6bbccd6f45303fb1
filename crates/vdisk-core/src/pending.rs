//! The temporary files of outputs being written ([`crate::OutputFile`]) that are not committed yet,
//! so that a process about to die from a signal (Ctrl-C, `kill`, a source truncated under its map)
//! can remove them first instead of leaving hidden half-written files behind.
//!
//! [`remove_all`] is meant for a thread that a signal handler wakes (as the `vdisk` command does),
//! not for the handler itself: it takes a lock. It neither allocates nor frees, so it works while
//! another thread is stopped anywhere but inside this module.

use crate::error::{Error, Result};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// The registered temporary paths, as the C strings `unlink(2)` takes.
struct Pending {
    paths: Vec<CString>,
    /// Set by [`remove_all`]: the process is going, so no new output may be created.
    closed: bool,
}

static PENDING: Mutex<Pending> = Mutex::new(Pending {
    paths: Vec::new(),
    closed: false,
});

fn pending() -> MutexGuard<'static, Pending> {
    // A panic elsewhere while holding the lock leaves the list itself intact.
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Creates the temporary file `temp` with `create` and records it, both under the list's lock,
/// so that no output is created after [`remove_all`] (one would be left behind).
pub(crate) fn create<T>(temp: &Path, create: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut list = pending();
    if list.closed {
        return Err(Error::Other(
            "not creating an output: vdisk is exiting on a signal".into(),
        ));
    }
    let made = create()?;
    // A path with a NUL byte cannot have been created, so it always converts.
    if let Ok(c) = CString::new(temp.as_os_str().as_bytes()) {
        list.paths.push(c);
    }
    Ok(made)
}

/// Forgets `temp` once it is committed (renamed into place) or removed.
pub(crate) fn forget(temp: &Path) {
    let bytes = temp.as_os_str().as_bytes();
    let mut list = pending();
    if let Some(i) = list.paths.iter().position(|c| c.as_bytes() == bytes) {
        list.paths.swap_remove(i);
    }
}

/// Removes every uncommitted output's temporary file and refuses to create new ones from then on;
/// returns how many were listed. For a process that is about to exit on a signal: the outputs'
/// writers are not told, so nothing may be written afterwards. The list is left as it is (freeing
/// it would call the allocator).
pub fn remove_all() -> usize {
    let mut list = pending();
    list.closed = true;
    for c in list.paths.iter() {
        // SAFETY: `c` is a NUL-terminated path that lives across the call.
        unsafe {
            libc::unlink(c.as_ptr());
        }
    }
    list.paths.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_pending(p: &Path) -> bool {
        pending()
            .paths
            .iter()
            .any(|c| c.as_bytes() == p.as_os_str().as_bytes())
    }

    // `remove_all` itself is exercised by the `vdisk` command's signal tests: here it would also
    // remove the files of other tests running in this binary.
    #[test]
    fn outputs_are_pending_from_creation_until_commit_or_drop() {
        let dir = std::env::temp_dir().join(format!("vdisk-core-pending-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kept = crate::OutputFile::create(&dir.join("kept.raw")).unwrap();
        let dropped = crate::OutputFile::create(&dir.join("dropped.raw")).unwrap();
        let (kept_temp, dropped_temp) =
            (kept.temp_path().to_owned(), dropped.temp_path().to_owned());
        assert!(is_pending(&kept_temp) && is_pending(&dropped_temp));
        kept.commit().unwrap();
        drop(dropped);
        assert!(!is_pending(&kept_temp), "a committed output is forgotten");
        assert!(!is_pending(&dropped_temp), "a dropped output is forgotten");
        assert!(dir.join("kept.raw").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
