//! Bounded sets of open extent files and loaded sparse extents, so that a descriptor naming tens of
//! thousands of extents ("Extent Descriptions" of Virtual Disk Format 1.1; up to `MAX_EXTENTS`) holds
//! a bounded number of file descriptors, grain directories and grain-table caches: a small
//! least-recently-used map, and the table of the distinct files an image names (see `limits`:
//! `MAX_OPEN_FILES`, `MAX_OPEN_SPARSE`, `GD_CACHE_ENTRIES`).

use crate::limits::MAX_OPEN_FILES;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use vdisk_core::storage::FileOpener;
use vdisk_core::{Result, Storage};

/// A least-recently-used map from an index to a shared value, bounded by its number of entries and
/// by the total weight of its values (one value heavier than the budget is kept alone).
pub(crate) struct Lru<V> {
    max_len: usize,
    max_weight: u64,
    inner: Mutex<Inner<V>>,
}

struct Inner<V> {
    tick: u64,
    weight: u64,
    slots: HashMap<u32, Slot<V>>,
}

struct Slot<V> {
    value: V,
    weight: u64,
    used: u64,
}

impl<V: Clone> Lru<V> {
    /// An empty map of at most `max_len` values (at least one) weighing `max_weight` in all.
    pub(crate) fn new(max_len: usize, max_weight: u64) -> Self {
        Lru {
            max_len: max_len.max(1),
            max_weight,
            inner: Mutex::new(Inner {
                tick: 0,
                weight: 0,
                slots: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<V>> {
        // The map is consistent after every statement, so a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value for `key`, marked as just used.
    pub(crate) fn get(&self, key: u32) -> Option<V> {
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        g.slots.get_mut(&key).map(|s| {
            s.used = tick;
            s.value.clone()
        })
    }

    /// Stores `value` for `key`, evicting the least recently used values until it fits. When another
    /// thread stored one first, that one is kept and returned.
    pub(crate) fn insert(&self, key: u32, value: V, weight: u64) -> V {
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        if let Some(s) = g.slots.get_mut(&key) {
            s.used = tick;
            return s.value.clone();
        }
        while !g.slots.is_empty()
            && (g.slots.len() >= self.max_len || g.weight.saturating_add(weight) > self.max_weight)
        {
            let Some(oldest) = g.slots.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| *k) else {
                break;
            };
            if let Some(s) = g.slots.remove(&oldest) {
                g.weight = g.weight.saturating_sub(s.weight);
            }
        }
        g.weight = g.weight.saturating_add(weight);
        g.slots.insert(
            key,
            Slot {
                value: value.clone(),
                weight,
                used: tick,
            },
        );
        value
    }

    /// The value for `key`, loaded (outside the lock, so other keys stay usable) when absent.
    pub(crate) fn get_or_load(
        &self,
        key: u32,
        load: impl FnOnce() -> Result<(V, u64)>,
    ) -> Result<V> {
        if let Some(v) = self.get(key) {
            return Ok(v);
        }
        let (v, weight) = load()?;
        Ok(self.insert(key, v, weight))
    }

    /// How many values are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().slots.len()
    }
}

/// The distinct files an image's extents name, each opened once when the image is opened (so that a
/// missing or unreadable file is an open error, as in qemu). The first [`MAX_OPEN_FILES`] stay open;
/// the others are reopened on use through a least-recently-used set of as many handles.
pub(crate) struct Files {
    opener: Arc<dyn FileOpener>,
    paths: Vec<Arc<Path>>,
    pinned: Vec<Arc<dyn Storage>>,
    lru: Lru<Arc<dyn Storage>>,
}

/// Builds a [`Files`] while the descriptor is read: one id per distinct resolved name.
pub(crate) struct FilesBuilder {
    ids: HashMap<PathBuf, u32>,
    files: Files,
}

impl FilesBuilder {
    pub(crate) fn new(opener: Arc<dyn FileOpener>) -> Self {
        FilesBuilder {
            ids: HashMap::new(),
            files: Files {
                opener,
                paths: Vec::new(),
                pinned: Vec::new(),
                lru: Lru::new(MAX_OPEN_FILES, u64::MAX),
            },
        }
    }

    /// Adds a file that is already open (the image file itself).
    pub(crate) fn add_open(&mut self, storage: Arc<dyn Storage>) -> u32 {
        let path = storage.path().to_path_buf();
        match self.ids.get(&path) {
            Some(id) => *id,
            None => self.push(path, storage),
        }
    }

    /// The id of `path` and an open handle, opening the file the first time it is named.
    pub(crate) fn add(&mut self, path: PathBuf) -> Result<(u32, Arc<dyn Storage>)> {
        if let Some(id) = self.ids.get(&path) {
            let id = *id;
            return Ok((id, self.files.get(id)?));
        }
        let storage = self.files.opener.open(&path)?;
        Ok((self.push(path, Arc::clone(&storage)), storage))
    }

    /// Records a newly opened file: the first [`MAX_OPEN_FILES`] stay open, the handles of the others
    /// are dropped by the caller once used (they were opened to check that they open).
    fn push(&mut self, path: PathBuf, storage: Arc<dyn Storage>) -> u32 {
        let f = &mut self.files;
        // At most MAX_EXTENTS + 1 files, far below u32::MAX.
        let id = u32::try_from(f.paths.len()).unwrap_or(u32::MAX);
        if f.pinned.len() == f.paths.len() && f.pinned.len() < MAX_OPEN_FILES {
            f.pinned.push(storage);
        }
        f.paths.push(Arc::from(path.as_path()));
        self.ids.insert(path, id);
        id
    }

    pub(crate) fn finish(self) -> Files {
        self.files
    }
}

impl Files {
    /// The name of file `id` (as resolved from the descriptor).
    pub(crate) fn path(&self, id: u32) -> Option<&Arc<Path>> {
        self.paths.get(id as usize)
    }

    /// The id of the file named `path` (as [`Files::path`] gives it), if the image names it.
    pub(crate) fn id_of(&self, path: &Path) -> Option<u32> {
        let i = self.paths.iter().position(|p| &**p == path)?;
        u32::try_from(i).ok()
    }

    /// The open handle of file `id`, reopening it when it was closed to stay within the limit.
    pub(crate) fn get(&self, id: u32) -> Result<Arc<dyn Storage>> {
        if let Some(s) = self.pinned.get(id as usize) {
            return Ok(Arc::clone(s));
        }
        let path = self
            .paths
            .get(id as usize)
            .ok_or_else(|| vdisk_core::Error::Other(format!("no extent file {id}")))?;
        self.lru
            .get_or_load(id, || Ok((self.opener.open(path)?, 1)))
    }

    /// Runs `f` with the open handle of file `id` (without touching the shared set when it is one of
    /// the files kept open).
    pub(crate) fn with<R>(&self, id: u32, f: impl FnOnce(&dyn Storage) -> Result<R>) -> Result<R> {
        match self.pinned.get(id as usize) {
            Some(s) => f(&**s),
            None => f(&*self.get(id)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let lru = Lru::new(3, u64::MAX);
        for k in 0..3 {
            assert_eq!(lru.insert(k, k * 10, 1), k * 10);
        }
        assert_eq!(lru.get(0), Some(0)); // 1 is now the oldest
        lru.insert(3, 30, 1);
        assert_eq!((lru.get(1), lru.len()), (None, 3));
        assert_eq!(
            (lru.get(0), lru.get(2), lru.get(3)),
            (Some(0), Some(20), Some(30))
        );
        // A value stored first by another thread is kept.
        assert_eq!(lru.insert(3, 99, 1), 30);
    }

    #[test]
    fn lru_keeps_within_its_weight_and_one_heavy_value_alone() {
        let lru = Lru::new(100, 10);
        lru.insert(0, 'a', 4);
        lru.insert(1, 'b', 4);
        lru.insert(2, 'c', 4); // 12 > 10: 'a' goes
        assert_eq!((lru.get(0), lru.len()), (None, 2));
        lru.insert(3, 'd', 50); // heavier than the budget: kept alone
        assert_eq!((lru.get(3), lru.len()), (Some('d'), 1));
        lru.insert(4, 'e', 1);
        assert_eq!((lru.get(3), lru.get(4)), (None, Some('e')));
    }

    #[test]
    fn lru_loads_once_and_reports_load_errors() {
        let lru: Lru<u32> = Lru::new(2, u64::MAX);
        let mut loads = 0;
        for _ in 0..3 {
            let v = lru.get_or_load(7, || {
                loads += 1;
                Ok((70, 1))
            });
            assert_eq!(v.unwrap(), 70);
        }
        assert_eq!(loads, 1);
        let e = lru.get_or_load(8, || Err(vdisk_core::Error::invalid("no such extent")));
        assert!(e.unwrap_err().to_string().contains("no such extent"));
        assert_eq!(lru.len(), 1);
    }

    /// Opens in-memory files by name, counting the opens; refuses them once `gone` is set.
    #[derive(Default)]
    struct Counted(
        std::sync::atomic::AtomicUsize,
        std::sync::atomic::AtomicBool,
    );

    impl FileOpener for Counted {
        fn open(&self, path: &Path) -> Result<Arc<dyn Storage>> {
            if self.1.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(vdisk_core::Error::Open {
                    path: path.to_path_buf(),
                    source: std::io::ErrorKind::NotFound.into(),
                });
            }
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = path.to_string_lossy().into_owned();
            Ok(Arc::new(vdisk_core::MemStorage::new(
                &name,
                name.clone().into_bytes(),
            )))
        }
    }

    #[test]
    fn files_are_opened_once_kept_open_up_to_the_limit_and_reopened() {
        let opener = Arc::new(Counted::default());
        let mut b = FilesBuilder::new(Arc::clone(&opener) as Arc<dyn FileOpener>);
        // 5 more files than the kept ones and the set of reopened ones hold.
        let n = 2 * MAX_OPEN_FILES + 5;
        for round in 0..2 {
            for i in 0..n {
                let (id, s) = b.add(PathBuf::from(format!("f{i}"))).unwrap();
                assert_eq!((id as usize, s.path()), (i, Path::new(&format!("f{i}"))));
            }
            // Named twice: the kept files are not opened again; the others are reopened (in order,
            // each evicts the one needed next).
            let opens = opener.0.load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(
                opens,
                if round == 0 {
                    n
                } else {
                    2 * n - MAX_OPEN_FILES
                }
            );
        }
        let files = b.finish();
        assert_eq!(files.pinned.len(), MAX_OPEN_FILES);
        let last = (n - 1) as u32;
        let name = files.with(last, |s| {
            let mut buf = [0u8; 8];
            let k = s.read_at(&mut buf, 0)?;
            Ok(String::from_utf8_lossy(&buf[..k]).into_owned())
        });
        assert_eq!(name.unwrap(), format!("f{}", n - 1));
        assert_eq!(
            files.path(last).map(|p| p.to_path_buf()),
            Some(PathBuf::from(format!("f{last}")))
        );
        assert!(files.get(n as u32).is_err());
        // A file that can no longer be opened: the kept ones still work, a reopen is an error.
        opener.1.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(files.get(0).is_ok());
        let first_closed = MAX_OPEN_FILES as u32;
        let e = (first_closed..n as u32).find_map(|id| files.get(id).err());
        assert!(e.is_some_and(|e| e.to_string().contains(&format!("f{first_closed}"))));
    }
}
