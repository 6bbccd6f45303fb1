//! An in-memory filesystem for the unit tests of path resolution and walks: a tree of nodes
//! made by [`Fake::add`], with symlink targets, and damage on demand (a node that cannot be
//! read, a directory that cannot be listed).

use crate::{all_read, DirEntry, FileKind, Filesystem, Listed, Node, Usage};
use std::collections::HashMap;
use vdisk_core::{Error, Result};

/// A node, its children (name, id), its link target.
type Entry = (Node, Vec<(Vec<u8>, u64)>, Vec<u8>);

pub(crate) struct Fake {
    pub nodes: HashMap<u64, Entry>,
    /// Nodes that cannot be read ("inode N is damaged").
    pub damaged: Vec<u64>,
    /// Directories that cannot be listed ("directory N is damaged").
    pub unlisted: Vec<u64>,
}

/// A node with only its id and kind set.
fn bare(id: u64, kind: FileKind) -> Node {
    Node {
        id,
        kind,
        size: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        nlink: 1,
        mtime: 0,
        mtime_nsec: 0,
        rdev: None,
    }
}

impl Fake {
    /// An empty root directory, id 1.
    pub fn new() -> Fake {
        let mut nodes = HashMap::new();
        nodes.insert(1, (bare(1, FileKind::Directory), vec![], vec![]));
        Fake {
            nodes,
            damaged: Vec::new(),
            unlisted: Vec::new(),
        }
    }

    /// Node `id` of `kind` named `name` in directory `parent`; `target` for a symlink.
    pub fn add(&mut self, parent: u64, name: &str, id: u64, kind: FileKind, target: &str) {
        self.nodes
            .insert(id, (bare(id, kind), vec![], target.as_bytes().to_vec()));
        self.link(parent, name, id);
    }

    /// An entry `name` in directory `parent` for the existing node `id` (a hard link, or a
    /// cycle when `id` is a directory above).
    pub fn link(&mut self, parent: u64, name: &str, id: u64) {
        self.nodes
            .get_mut(&parent)
            .unwrap()
            .1
            .push((name.as_bytes().to_vec(), id));
    }

    fn node(&self, id: u64) -> Result<Node> {
        match self.nodes.get(&id) {
            Some(e) if !self.damaged.contains(&id) => Ok(e.0.clone()),
            _ => Err(Error::invalid(format!("inode {id} is damaged"))),
        }
    }
}

impl Filesystem for Fake {
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn label(&self) -> Option<Vec<u8>> {
        None
    }
    fn uuid(&self) -> Option<String> {
        None
    }
    fn usage(&self) -> Result<Usage> {
        Err(Error::invalid("none"))
    }
    fn root(&self) -> Result<Node> {
        self.node(1)
    }
    fn read_dir(&self, dir: &Node) -> Result<Vec<DirEntry>> {
        all_read(self.list_dir(dir)?)
    }
    fn list_dir(&self, dir: &Node) -> Result<Vec<Listed>> {
        if self.unlisted.contains(&dir.id) {
            return Err(Error::invalid(format!("directory {} is damaged", dir.id)));
        }
        Ok(self.nodes[&dir.id]
            .1
            .iter()
            .map(|(name, id)| Listed {
                name: name.clone(),
                node: self.node(*id),
            })
            .collect())
    }
    fn lookup(&self, dir: &Node, name: &[u8]) -> Result<Option<Node>> {
        self.nodes[&dir.id]
            .1
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| self.node(*id))
            .transpose()
    }
    fn read(&self, _: &Node, _: u64, _: &mut [u8]) -> Result<usize> {
        Ok(0)
    }
    fn read_link(&self, link: &Node) -> Result<Vec<u8>> {
        Ok(self.nodes[&link.id].2.clone())
    }
}
