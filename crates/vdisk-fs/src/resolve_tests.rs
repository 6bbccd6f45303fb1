//! Path resolution on a small in-memory tree: `.` and `..` (staying at the root), symlinks
//! relative to their directory and absolute ones from the root, chains of exactly 40 links
//! and one more (ELOOP), loops, trailing slashes, empty targets, relative paths refused.

use super::*;
use crate::test_fake::Fake;

fn tree() -> Fake {
    let mut f = Fake::new();
    f.add(1, "etc", 2, FileKind::Directory, "");
    f.add(2, "passwd", 3, FileKind::Regular, "");
    f.add(1, "usr", 4, FileKind::Directory, "");
    f.add(4, "lib", 5, FileKind::Directory, "");
    f.add(5, "abs", 6, FileKind::Symlink, "/etc/passwd");
    f.add(5, "rel", 7, FileKind::Symlink, "../../etc");
    f.add(5, "up", 8, FileKind::Symlink, "../../../../..");
    f.add(1, "empty", 9, FileKind::Symlink, "");
    f.add(1, "self", 10, FileKind::Symlink, "self");
    f.add(1, "dirlink", 11, FileKind::Symlink, "usr/lib/");
    // A chain of 40 links: c0 -> c1 -> ... -> c39 -> /etc/passwd; c40 -> c0 is one more.
    for k in 0..40u64 {
        let target = if k == 39 {
            "/etc/passwd".to_string()
        } else {
            format!("c{}", k + 1)
        };
        f.add(1, &format!("c{k}"), 100 + k, FileKind::Symlink, &target);
    }
    f.add(1, "c40", 140, FileKind::Symlink, "c0");
    f
}

fn id(f: &Fake, p: &str, follow: bool) -> u64 {
    resolve(f, p.as_bytes(), follow).unwrap().id
}

fn err(f: &Fake, p: &str, follow: bool) -> String {
    resolve(f, p.as_bytes(), follow).unwrap_err().to_string()
}

#[test]
fn components_dots_and_root() {
    let f = tree();
    assert_eq!(id(&f, "/", false), 1);
    assert_eq!(id(&f, "//etc//./passwd", false), 3);
    assert_eq!(id(&f, "/../../etc/../etc/passwd", false), 3);
    assert_eq!(id(&f, "/usr/lib/..", false), 4);
    assert_eq!(
        err(&f, "/etc/nope", false),
        "Could not open '/etc/nope': No such file or directory"
    );
    assert_eq!(
        err(&f, "/etc/passwd/x", false),
        "Could not open '/etc/passwd/x': Not a directory"
    );
    assert!(err(&f, "/etc/passwd/", false).ends_with("Not a directory"));
    assert!(err(&f, "etc", false).contains("absolute"));
}

#[test]
fn symlinks_as_in_a_chroot() {
    let f = tree();
    assert_eq!(id(&f, "/usr/lib/abs", true), 3);
    assert_eq!(id(&f, "/usr/lib/abs", false), 6);
    assert_eq!(id(&f, "/usr/lib/rel/passwd", false), 3);
    assert_eq!(id(&f, "/usr/lib/rel", true), 2);
    // Up past the root stays at the root.
    assert_eq!(id(&f, "/usr/lib/up", true), 1);
    assert_eq!(id(&f, "/usr/lib/up/etc/passwd", false), 3);
    // `..` after a link is taken from where the link led.
    assert_eq!(id(&f, "/usr/lib/rel/..", false), 1);
    assert_eq!(id(&f, "/dirlink", true), 5);
    assert_eq!(id(&f, "/dirlink/", false), 5);
    assert!(err(&f, "/empty", true).ends_with("No such file or directory"));
    assert!(err(&f, "/self", true).ends_with("Too many levels of symbolic links"));
    assert!(err(&f, "/self/x", false).ends_with("Too many levels of symbolic links"));
}

#[test]
fn forty_links_and_no_more() {
    let f = tree();
    assert_eq!(id(&f, "/c0", true), 3, "40 links are followed");
    assert!(
        err(&f, "/c40", true).ends_with("Too many levels of symbolic links"),
        "41 are not"
    );
}
