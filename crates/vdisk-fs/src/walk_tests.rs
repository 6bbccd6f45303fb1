//! Both walks on a small in-memory tree with damage: an entry whose node cannot be read, a
//! directory that cannot be listed, an entry leading back to the root (a cycle), a walk stopped
//! by its callback, and directories nested one past the depth limit.

use super::*;
use crate::test_fake::Fake;

/// An id whose node cannot be read.
const BAD: u64 = 1 << 40;

/// `/a/x`, `/a/bad` (its node damaged), `/a/y`, `/b` (cannot be listed) with `/b/z`, `/c/back`
/// (the root again) and `/c/w`.
fn tree() -> Fake {
    let mut f = Fake::new();
    for (parent, name, id, kind) in [
        (1, "a", 2, FileKind::Directory),
        (1, "b", 3, FileKind::Directory),
        (1, "c", 4, FileKind::Directory),
        (2, "x", 5, FileKind::Regular),
        (2, "bad", BAD, FileKind::Regular),
        (2, "y", 6, FileKind::Regular),
        (3, "z", 7, FileKind::Regular),
    ] {
        f.add(parent, name, id, kind, "");
    }
    f.link(4, "back", 1);
    f.add(4, "w", 8, FileKind::Regular, "");
    f.damaged.push(BAD);
    f.unlisted.push(3);
    f
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
                    fs.nodes.iter().find_map(|(id, (_, c, _))| {
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
    let mut fs = Fake::new();
    let deepest = MAX_WALK_DEPTH as u64 + 1;
    for id in 2..=deepest {
        fs.add(id - 1, "d", id, FileKind::Directory, "");
    }
    let mut n = 0;
    let r = walk_listed(&fs, &fs.root().unwrap(), b"/", &mut |_, _| {
        n += 1;
        Ok(())
    });
    assert_eq!(n, MAX_WALK_DEPTH);
    assert!(r.unwrap_err().to_string().contains("nested deeper"));

    // One level fewer is walked whole.
    fs.nodes.get_mut(&(deepest - 1)).unwrap().1.clear();
    let mut n = 0;
    walk_listed(&fs, &fs.root().unwrap(), b"/", &mut |_, _| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, MAX_WALK_DEPTH - 1);
}
