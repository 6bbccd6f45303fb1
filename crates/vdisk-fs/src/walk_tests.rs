//! Both walks on a small in-memory tree with damage: an entry whose node cannot be read, a
//! directory that cannot be listed, an entry leading back to the root (a cycle), a walk stopped
//! by its callback, and directories nested one past the depth limit.

use super::*;
use crate::Usage;
use std::collections::HashMap;

/// A node's kind and, for a directory, its children (name, id).
type FakeNode = (FileKind, Vec<(Vec<u8>, u64)>);

/// Nodes by id; `BAD` is an id whose node cannot be read, and a directory in `unlisted` cannot
/// be listed.
struct Fake {
    nodes: HashMap<u64, FakeNode>,
    unlisted: Vec<u64>,
}

const BAD: u64 = 1 << 40;

impl Fake {
    fn node(&self, id: u64) -> Result<Node> {
        match self.nodes.get(&id) {
            Some((kind, _)) if id != BAD => Ok(Node::bare(id, *kind)),
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
        crate::all_read(self.list_dir(dir)?)
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
    fn lookup(&self, _: &Node, _: &[u8]) -> Result<Option<Node>> {
        Ok(None)
    }
    fn read(&self, _: &Node, _: u64, _: &mut [u8]) -> Result<usize> {
        Ok(0)
    }
    fn read_link(&self, _: &Node) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
}

/// `/a/x`, `/a/bad` (its node damaged), `/a/y`, `/b` (cannot be listed) with `/b/z`, `/c/back`
/// (the root again) and `/c/w`.
fn tree() -> Fake {
    let dir = |children: &[(&str, u64)]| {
        (
            FileKind::Directory,
            children
                .iter()
                .map(|(n, id)| (n.as_bytes().to_vec(), *id))
                .collect(),
        )
    };
    let mut nodes = HashMap::new();
    nodes.insert(1, dir(&[("a", 2), ("b", 3), ("c", 4)]));
    nodes.insert(2, dir(&[("x", 5), ("bad", BAD), ("y", 6)]));
    nodes.insert(3, dir(&[("z", 7)]));
    nodes.insert(4, dir(&[("back", 1), ("w", 8)]));
    for id in [5, 6, 7, 8, BAD] {
        nodes.insert(id, (FileKind::Regular, Vec::new()));
    }
    Fake {
        nodes,
        unlisted: vec![3],
    }
}

/// The lines a lenient walk of `fs` from its root gives: `path` for an entry, `path ?` for one
/// whose node cannot be read, `path !` for a directory that cannot be listed; and its result.
fn lenient(fs: &Fake, stop_after: usize) -> (Vec<String>, Result<()>) {
    let mut lines = Vec::new();
    let r = walk_listed(fs, &fs.root().unwrap(), b"/", &mut |path, step| {
        if lines.len() == stop_after {
            return Err(Error::invalid("enough"));
        }
        let path = String::from_utf8_lossy(path);
        lines.push(match step {
            Step::Entry { dir, entry } => {
                // The directory handed over is the one listed.
                assert_eq!(
                    Some(dir.id),
                    fs.nodes.iter().find_map(|(id, (_, c))| {
                        c.iter().any(|(n, _)| *n == entry.name).then_some(*id)
                    })
                );
                match entry.node {
                    Ok(_) => path.into_owned(),
                    Err(_) => format!("{path} ?"),
                }
            }
            Step::Unlisted(_) => format!("{path} !"),
        });
        Ok(())
    });
    (lines, r)
}

#[test]
fn the_lenient_walk_goes_on_past_damage_as_ls_r_does() {
    let (lines, r) = lenient(&tree(), usize::MAX);
    r.unwrap();
    assert_eq!(
        lines,
        ["/a", "/a/x", "/a/bad ?", "/a/y", "/b", "/b !", "/c", "/c/back", "/c/w"]
    );
}

#[test]
fn the_callback_stops_the_walk_with_its_error() {
    let (lines, r) = lenient(&tree(), 3);
    assert_eq!(lines, ["/a", "/a/x", "/a/bad ?"]);
    assert!(r.unwrap_err().to_string().contains("enough"));
}

#[test]
fn the_start_must_be_listed() {
    let mut fs = tree();
    fs.unlisted.push(1);
    let (lines, r) = lenient(&fs, usize::MAX);
    assert!(lines.is_empty());
    assert!(r.unwrap_err().to_string().contains("directory 1"));
}

#[test]
fn the_strict_walk_stops_at_the_first_damage() {
    let fs = tree();
    let mut seen = Vec::new();
    let r = walk(&fs, &fs.root().unwrap(), b"/", &mut |path, _| {
        seen.push(String::from_utf8_lossy(path).into_owned());
        Ok(())
    });
    assert_eq!(seen, ["/a", "/a/x"]);
    assert!(r
        .unwrap_err()
        .to_string()
        .contains(&format!("inode {BAD} ")));

    // Without the damaged inode, the unlisted directory stops it.
    let mut fs = tree();
    fs.nodes.get_mut(&2).unwrap().1.retain(|(_, id)| *id != BAD);
    let mut seen = Vec::new();
    let r = walk(&fs, &fs.root().unwrap(), b"/", &mut |path, _| {
        seen.push(String::from_utf8_lossy(path).into_owned());
        Ok(())
    });
    assert_eq!(seen, ["/a", "/a/x", "/a/y", "/b"]);
    assert!(r.unwrap_err().to_string().contains("directory 3"));

    // Undamaged, it walks everything, the cycle listed once and not entered.
    fs.unlisted.clear();
    let mut seen = Vec::new();
    walk(&fs, &fs.root().unwrap(), b"/", &mut |path, _| {
        seen.push(String::from_utf8_lossy(path).into_owned());
        Ok(())
    })
    .unwrap();
    assert_eq!(
        seen,
        ["/a", "/a/x", "/a/y", "/b", "/b/z", "/c", "/c/back", "/c/w"]
    );
}

#[test]
fn directories_nested_past_the_limit_are_refused() {
    // A chain of MAX_WALK_DEPTH + 1 directories: the deepest is one level too many.
    let mut nodes = HashMap::new();
    let deepest = MAX_WALK_DEPTH as u64 + 1;
    for id in 1..=deepest {
        let children = if id < deepest {
            vec![(b"d".to_vec(), id + 1)]
        } else {
            vec![]
        };
        nodes.insert(id, (FileKind::Directory, children));
    }
    let fs = Fake {
        nodes,
        unlisted: vec![],
    };
    let mut n = 0;
    let r = walk_listed(&fs, &fs.root().unwrap(), b"/", &mut |_, _| {
        n += 1;
        Ok(())
    });
    assert_eq!(n, MAX_WALK_DEPTH);
    assert!(r.unwrap_err().to_string().contains("nested deeper"));

    // One level fewer is walked whole.
    let mut fs = fs;
    fs.nodes.get_mut(&(deepest - 1)).unwrap().1.clear();
    let mut n = 0;
    walk_listed(&fs, &fs.root().unwrap(), b"/", &mut |_, _| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, MAX_WALK_DEPTH - 1);
}
