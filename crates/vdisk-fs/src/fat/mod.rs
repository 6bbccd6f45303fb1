//! FAT12, FAT16 and FAT32 (the Linux `vfat` filesystem), read-only, following Microsoft's "FAT:
//! General Overview of On-Disk Format" (fatgen103): the BPB, the FAT, the FAT12/16 root
//! directory region and the FAT32 root cluster chain, 8.3 and VFAT long names. Files show as
//! the Linux vfat driver shows them with its defaults (`shortname=mixed`, `codepage=437`,
//! UTF-8 names, umask 022, no time zone offset).

pub mod bpb;
pub mod dir;
pub mod names;
pub mod table;

use crate::device::Device;
use crate::limits::{FAT_MAX_DIR_BYTES, MAX_DIR_ENTRIES};
use crate::{DirEntry, FileKind, Filesystem, Node, Usage};
use bpb::{FatType, Layout};
use dir::{Parser, Short, Slot, ATTR_READ_ONLY};
use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use table::{Next, Table};
use vdisk_core::{Error, ImageReader, Result};

/// The root directory's id (the Linux driver's MSDOS_ROOT_INO).
pub const ROOT_ID: u64 = 1;

/// A callback given each directory slot's offset and bytes; it breaks to stop the walk.
type SlotFn<'a> = dyn FnMut(u64, &[u8]) -> Result<ControlFlow<()>> + 'a;
/// A callback given each file's 8.3 entry offset, entry and name.
type FileFn<'a> = dyn FnMut(u64, Short, Vec<u8>) -> Result<ControlFlow<()>> + 'a;

/// Whether sector 0 is a FAT boot sector.
pub fn probe(dev: &dyn ImageReader) -> Result<Option<&'static str>> {
    if dev.virtual_size() < 512 {
        return Ok(None);
    }
    let mut b = [0u8; 512];
    dev.read_at(&mut b, 0)?;
    Ok(bpb::looks_like_fat(&b).then_some("vfat"))
}

/// Where a directory's entries are.
#[derive(Debug, Clone, Copy)]
enum DirLoc {
    /// The FAT12/16 root directory region.
    FixedRoot,
    /// A cluster chain from this cluster.
    Chain(u32),
}

/// An opened FAT filesystem.
pub struct Fat {
    dev: Device,
    l: Layout,
    table: Table,
    /// Where the last read ended: (first cluster, cluster index, cluster), so that reading a
    /// file in order does not walk its chain from the start each time.
    cursor: Mutex<Option<(u32, u64, u32)>>,
}

impl Fat {
    pub fn open(reader: Arc<dyn ImageReader>) -> Result<Fat> {
        let dev = Device::new(reader, "vfat");
        let b = dev.read_vec(0, 512, "boot sector")?;
        let l = Layout::parse(&dev, &b)?;
        Ok(Fat {
            dev,
            l,
            table: Table::new(),
            cursor: Mutex::new(None),
        })
    }

    /// The checked layout.
    pub fn layout(&self) -> &Layout {
        &self.l
    }

    fn fat32(&self) -> bool {
        self.l.fat_type == FatType::Fat32
    }

    fn valid_cluster(&self, c: u32) -> bool {
        c >= 2 && u64::from(c) < self.l.clusters + 2
    }

    fn bad_chain(&self, first: u32, what: &str) -> Error {
        self.dev
            .corrupt(None, format!("cluster chain from {first}: {what}"))
    }

    /// The clusters of a directory's chain (a loop or a chain longer than a directory may be
    /// is an error).
    fn dir_chain(&self, first: u32) -> Result<Vec<u32>> {
        let max = (FAT_MAX_DIR_BYTES / self.l.cluster_size).max(1);
        let mut seen = HashSet::new();
        let mut chain = Vec::new();
        let mut c = first;
        loop {
            if !self.valid_cluster(c) {
                return Err(self.bad_chain(first, &format!("cluster {c} is outside the volume")));
            }
            if !seen.insert(c) {
                return Err(self.bad_chain(first, &format!("loops back to cluster {c}")));
            }
            chain.push(c);
            if chain.len() as u64 > max {
                return Err(self.dev.limit(
                    "FAT directory size",
                    chain.len() as u64 * self.l.cluster_size,
                    FAT_MAX_DIR_BYTES,
                ));
            }
            match self.table.next(&self.dev, &self.l, c)? {
                Next::Cluster(n) => c = n,
                Next::End => return Ok(chain),
                Next::Free | Next::Bad => {
                    return Err(self.bad_chain(
                        first,
                        &format!("cluster {c} is followed by a free or bad entry"),
                    ))
                }
            }
        }
    }

    /// Calls `f(offset, slot bytes)` for each 32-byte slot of a directory, in order.
    fn for_each_slot(&self, loc: DirLoc, f: &mut SlotFn) -> Result<()> {
        let regions: Vec<(u64, u64)> = match loc {
            DirLoc::FixedRoot => vec![(self.l.root_offset, self.l.root_entries * 32)],
            DirLoc::Chain(first) => self
                .dir_chain(first)?
                .into_iter()
                .map(|c| (self.l.cluster_offset(c), self.l.cluster_size))
                .collect(),
        };
        for (off, len) in regions {
            let data = self.dev.read_vec(off, len as usize, "directory")?;
            for (k, e) in data.chunks_exact(32).enumerate() {
                if f(off + k as u64 * 32, e)?.is_break() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Calls `f(offset of the 8.3 entry, entry, name)` for each file of a directory.
    fn for_each_file(&self, loc: DirLoc, f: &mut FileFn) -> Result<()> {
        let mut p = Parser::new(self.fat32());
        self.for_each_slot(loc, &mut |off, e| match p.slot(e) {
            Slot::End => Ok(ControlFlow::Break(())),
            Slot::Skip => Ok(ControlFlow::Continue(())),
            Slot::File(s, name) => f(off, s, name),
        })
    }

    /// The 8.3 entry a node id names.
    fn entry_at(&self, id: u64) -> Result<Short> {
        if id % 32 != 0 || id < self.l.root_offset {
            return Err(Error::invalid(format!("{id} is not a FAT file id")));
        }
        let e = self.dev.read_vec(id, 32, "directory entry")?;
        Ok(Short::parse(&e, self.fat32()))
    }

    fn loc_of(&self, node: &Node) -> Result<DirLoc> {
        if node.id == ROOT_ID {
            return Ok(if self.fat32() {
                DirLoc::Chain(self.l.root_cluster)
            } else {
                DirLoc::FixedRoot
            });
        }
        let s = self.entry_at(node.id)?;
        if !s.is_dir() {
            return Err(Error::invalid(format!(
                "FAT file {} is not a directory",
                node.id
            )));
        }
        if s.cluster == 0 {
            return Err(self
                .dev
                .corrupt(Some(node.id), "directory without a first cluster"));
        }
        Ok(DirLoc::Chain(s.cluster))
    }

    /// Directory entries flagged as directories, `.` and `..` included (the Linux driver's
    /// fat_subdirs, its link count for a directory).
    fn subdirs(&self, loc: DirLoc) -> Result<u32> {
        let mut n = 0u32;
        self.for_each_slot(loc, &mut |_, e| {
            let first = e[0];
            if first == 0 {
                return Ok(ControlFlow::Break(()));
            }
            let attr = e[11];
            if first != 0xE5 && attr & dir::ATTR_VOLUME == 0 && attr & dir::ATTR_DIR != 0 {
                n = n.saturating_add(1);
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(n)
    }

    fn dir_size(&self, loc: DirLoc) -> Result<u64> {
        Ok(match loc {
            DirLoc::FixedRoot => self.l.root_entries * 32,
            DirLoc::Chain(c) => self.dir_chain(c)?.len() as u64 * self.l.cluster_size,
        })
    }

    /// The node of an 8.3 entry at `id`.
    fn node_of(&self, id: u64, s: &Short) -> Result<Node> {
        let mtime = names::dos_time(s.wdate, s.wtime);
        if s.is_dir() {
            if s.cluster == 0 {
                return Err(self
                    .dev
                    .corrupt(Some(id), "directory without a first cluster"));
            }
            let loc = DirLoc::Chain(s.cluster);
            return Ok(Node {
                id,
                kind: FileKind::Directory,
                size: self.dir_size(loc)?,
                mode: 0o040755,
                uid: 0,
                gid: 0,
                nlink: self.subdirs(loc)?,
                mtime,
                mtime_nsec: 0,
                rdev: None,
            });
        }
        // The driver's default mode for files is 0777 less the umask (no `showexec`).
        let perm = if s.attr & ATTR_READ_ONLY != 0 {
            0o555
        } else {
            0o755
        };
        Ok(Node {
            id,
            kind: FileKind::Regular,
            size: u64::from(s.size),
            mode: 0o100000 | perm,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime,
            mtime_nsec: 0,
            rdev: None,
        })
    }

    /// The cluster holding byte `index * cluster_size` of the chain from `first`.
    fn seek(&self, first: u32, index: u64) -> Result<u32> {
        let (mut at, mut c) = (0u64, first);
        if let Some((f, i, cl)) = *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) {
            if f == first && i <= index {
                (at, c) = (i, cl);
            }
        }
        while at < index {
            match self.table.next(&self.dev, &self.l, c)? {
                Next::Cluster(n) => c = n,
                Next::End => return Err(self.bad_chain(first, "ends before the file's size")),
                Next::Free | Next::Bad => {
                    return Err(self.bad_chain(
                        first,
                        &format!("cluster {c} is followed by a free or bad entry"),
                    ))
                }
            }
            at += 1;
        }
        Ok(c)
    }
}

impl Filesystem for Fat {
    fn kind(&self) -> &'static str {
        "vfat"
    }

    fn label(&self) -> Option<Vec<u8>> {
        let loc = if self.fat32() {
            DirLoc::Chain(self.l.root_cluster)
        } else {
            DirLoc::FixedRoot
        };
        let mut label = None;
        let _ = self.for_each_slot(loc, &mut |_, e| {
            if e[0] == 0 {
                return Ok(ControlFlow::Break(()));
            }
            label = dir::volume_label(e);
            Ok(if label.is_some() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        });
        label.filter(|l| !l.is_empty())
    }

    fn uuid(&self) -> Option<String> {
        let s = self.l.serial;
        Some(format!("{:04X}-{:04X}", s >> 16, s & 0xFFFF))
    }

    fn usage(&self) -> Result<Usage> {
        let free = self.table.count_free(&self.dev, &self.l)?;
        Ok(Usage {
            block_size: self.l.cluster_size,
            blocks: self.l.clusters,
            free_blocks: free,
            available_blocks: free,
            inodes: None,
            free_inodes: None,
        })
    }

    fn root(&self) -> Result<Node> {
        let loc = if self.fat32() {
            DirLoc::Chain(self.l.root_cluster)
        } else {
            DirLoc::FixedRoot
        };
        Ok(Node {
            id: ROOT_ID,
            kind: FileKind::Directory,
            size: self.dir_size(loc)?,
            mode: 0o040755,
            uid: 0,
            gid: 0,
            nlink: self.subdirs(loc)?.saturating_add(2),
            mtime: 0,
            mtime_nsec: 0,
            rdev: None,
        })
    }

    fn read_dir(&self, dir: &Node) -> Result<Vec<DirEntry>> {
        crate::all_read(self.list_dir(dir)?)
    }

    fn list_dir(&self, dir: &Node) -> Result<Vec<crate::Listed>> {
        let loc = self.loc_of(dir)?;
        let mut found: Vec<(u64, Short, Vec<u8>)> = Vec::new();
        self.for_each_file(loc, &mut |off, s, name| {
            if found.len() >= MAX_DIR_ENTRIES {
                return Err(self.dev.limit(
                    "directory entries",
                    found.len() as u64 + 1,
                    MAX_DIR_ENTRIES as u64,
                ));
            }
            found.push((off, s, name));
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(found
            .into_iter()
            .map(|(off, s, name)| crate::Listed {
                name,
                node: self.node_of(off, &s),
            })
            .collect())
    }

    fn lookup(&self, dir: &Node, name: &[u8]) -> Result<Option<Node>> {
        let loc = self.loc_of(dir)?;
        let mut hit = None;
        // As the vfat driver (`fat_search_long`): case-insensitive (ASCII here), on the long
        // or the 8.3 name, passing over an entry whose 8.3 name is empty even when a long
        // name names it.
        self.for_each_file(loc, &mut |off, s, long| {
            let short = names::short_name(&s.raw_name, 0);
            if short.is_empty() {
                return Ok(ControlFlow::Continue(()));
            }
            if long.eq_ignore_ascii_case(name) || short.eq_ignore_ascii_case(name) {
                hit = Some((off, s));
                return Ok(ControlFlow::Break(()));
            }
            Ok(ControlFlow::Continue(()))
        })?;
        hit.map(|(off, s)| self.node_of(off, &s)).transpose()
    }

    fn read(&self, file: &Node, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if file.id == ROOT_ID {
            return Err(Error::invalid("the root is a directory"));
        }
        let s = self.entry_at(file.id)?;
        if s.is_dir() {
            return Err(Error::invalid(format!(
                "FAT file {} is a directory",
                file.id
            )));
        }
        let size = u64::from(s.size);
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let n = (size - offset).min(buf.len() as u64) as usize;
        if s.cluster == 0 {
            return Err(self
                .dev
                .corrupt(Some(file.id), "a non-empty file without a first cluster"));
        }
        let cs = self.l.cluster_size;
        let mut index = offset / cs;
        if index >= self.l.clusters {
            return Err(self.bad_chain(s.cluster, "longer than the volume's clusters (a loop)"));
        }
        if !self.valid_cluster(s.cluster) {
            return Err(self.bad_chain(s.cluster, "first cluster outside the volume"));
        }
        let mut c = self.seek(s.cluster, index)?;
        let mut done = 0usize;
        let mut within = offset % cs;
        loop {
            // A run of consecutive clusters from c.
            let mut run = 1u64;
            let want = (n - done) as u64 + within;
            while run * cs < want {
                match self.table.next(&self.dev, &self.l, c + run as u32 - 1)? {
                    Next::Cluster(x) if u64::from(x) == u64::from(c) + run => run += 1,
                    _ => break,
                }
            }
            let take = (run * cs - within).min((n - done) as u64) as usize;
            self.dev.read(
                self.l.cluster_offset(c) + within,
                &mut buf[done..done + take],
                "file data",
            )?;
            done += take;
            index += run - 1;
            c += run as u32 - 1;
            if done == n {
                break;
            }
            within = 0;
            c = match self.table.next(&self.dev, &self.l, c)? {
                Next::Cluster(x) => x,
                Next::End => return Err(self.bad_chain(s.cluster, "ends before the file's size")),
                Next::Free | Next::Bad => {
                    return Err(self.bad_chain(
                        s.cluster,
                        &format!("cluster {c} is followed by a free or bad entry"),
                    ))
                }
            };
            index += 1;
            if index >= self.l.clusters {
                return Err(self.bad_chain(s.cluster, "longer than the volume's clusters (a loop)"));
            }
        }
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = Some((s.cluster, index, c));
        Ok(n)
    }

    fn read_link(&self, _link: &Node) -> Result<Vec<u8>> {
        Err(Error::invalid("FAT has no symbolic links"))
    }
}
