//! Tests of member windows, chunk joining (DSP0243 7.1) and the member file opener.

use super::*;
use vdisk_core::MemStorage;

fn archive() -> Arc<dyn Storage> {
    MemStorage::new("/p/a.ova", (0..=255u8).cycle().take(4096).collect()).shared()
}

fn member(name: &str, offset: u64, size: u64) -> Member {
    Member {
        name: name.into(),
        header_offset: offset.saturating_sub(512),
        offset,
        size,
        sparse: false,
    }
}

#[test]
fn a_member_is_its_window_of_the_archive() {
    let a = archive();
    let m = MemberStorage::new(Arc::clone(&a), 1000, 100, "/p/a.ova/d".into()).unwrap();
    assert_eq!((m.len().unwrap(), m.offset()), (100, 1000));
    let mut b = [0u8; 8];
    m.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(
        b,
        [232, 233, 234, 235, 236, 237, 238, 239],
        "archive bytes 1000.."
    );
    // Reads stop at the member's end, not the archive's.
    assert_eq!(m.read_at(&mut b, 96).unwrap(), 4);
    assert_eq!(m.read_at(&mut b, 100).unwrap(), 0);
    assert_eq!(m.read_at(&mut b, u64::MAX).unwrap(), 0);
    assert!(m.read_exact_at(&mut b, 95).is_err());
    assert!(m.write_at(b"x", 0).is_err(), "read-only");
    assert!(m.as_file().is_none());
    assert_eq!(m.path(), Path::new("/p/a.ova/d"));
    assert!(MemberStorage::new(Arc::clone(&a), 4000, 97, "x".into()).is_err());
    assert!(MemberStorage::new(a, u64::MAX, 2, "x".into()).is_err());
}

#[test]
fn chunks_read_back_to_back() {
    let a = archive();
    let part = |off, len| -> Arc<dyn Storage> {
        Arc::new(MemberStorage::new(Arc::clone(&a), off, len, "c".into()).unwrap())
    };
    let c = ChunkedStorage::new(
        vec![part(10, 3), part(100, 0), part(200, 2), part(300, 4)],
        "/p/a.ova/d.vmdk".into(),
    )
    .unwrap();
    assert_eq!(c.len().unwrap(), 9);
    let mut all = [0u8; 9];
    c.read_exact_at(&mut all, 0).unwrap();
    assert_eq!(all, [10, 11, 12, 200, 201, 44, 45, 46, 47]);
    let mut b = [0u8; 3];
    c.read_exact_at(&mut b, 2).unwrap();
    assert_eq!(b, [12, 200, 201]);
    assert_eq!(c.read_at(&mut b, 8).unwrap(), 1);
    assert_eq!(c.read_at(&mut b, 9).unwrap(), 0);
    assert!(ChunkedStorage::new(vec![], "e".into())
        .unwrap()
        .is_empty()
        .unwrap());
}

#[test]
fn data_runs_are_translated() {
    struct Holes;
    impl Storage for Holes {
        fn path(&self) -> &Path {
            Path::new("h")
        }
        fn len(&self) -> Result<u64> {
            Ok(1 << 20)
        }
        fn read_at(&self, buf: &mut [u8], _: u64) -> Result<usize> {
            Ok(buf.len())
        }
        // Data in 0..4096 and from 65536 on.
        fn data_run(&self, offset: u64, end: u64) -> Result<Option<(bool, u64)>> {
            Ok(Some(if offset < 4096 {
                (true, 4096.min(end))
            } else if offset < 65536 {
                (false, 65536.min(end))
            } else {
                (true, end)
            }))
        }
    }
    let m = MemberStorage::new(Arc::new(Holes), 2048, 100_000, "m".into()).unwrap();
    assert_eq!(m.data_run(0, 100_000).unwrap(), Some((true, 2048)));
    assert_eq!(m.data_run(2048, 100_000).unwrap(), Some((false, 63488)));
    assert_eq!(m.data_run(63488, 200_000).unwrap(), Some((true, 100_000)));
}

#[test]
fn names_are_normalized_for_lookups() {
    assert_eq!(normalize("disk.vmdk").as_deref(), Some("disk.vmdk"));
    assert_eq!(normalize("./disk.vmdk").as_deref(), Some("disk.vmdk"));
    assert_eq!(normalize("a//b/./c").as_deref(), Some("a/b/c"));
    assert_eq!(normalize("a/../b").as_deref(), Some("b"));
    assert_eq!(normalize("/abs/x").as_deref(), Some("abs/x"));
    assert_eq!(normalize("../x"), None);
    assert_eq!(normalize("."), None);
    assert_eq!(normalize(""), None);
}

#[test]
fn the_opener_reaches_members_only() {
    let a = archive();
    let map = Arc::new(MemberMap::new(vec![
        member("./d.vmdk", 512, 10),
        member("dir/e-flat.vmdk", 1024, 20),
        member("d.vmdk", 2048, 30),
    ]));
    assert_eq!(
        map.get("d.vmdk").unwrap().offset,
        2048,
        "the last copy wins"
    );
    assert_eq!(map.duplicates(), ["d.vmdk"]);
    let files = MemberFiles {
        archive: Arc::clone(&a),
        members: map,
    };
    let s = files.open(Path::new("/p/a.ova/dir/e-flat.vmdk")).unwrap();
    assert_eq!(
        (s.len().unwrap(), s.path()),
        (20, Path::new("/p/a.ova/dir/e-flat.vmdk"))
    );
    // What vdisk_core::storage::resolve_relative makes of a name in a member.
    let named =
        vdisk_core::storage::resolve_relative(Path::new("/p/a.ova/dir/e.vmdk"), "e-flat.vmdk");
    assert!(files.open(&named).is_ok());
    for (bad, why) in [
        ("/etc/passwd", "not in the package /p/a.ova"),
        ("/p/other.ova/d.vmdk", "not in the package /p/a.ova"),
        ("/p/a.ova/../secret", "outside the package"),
        ("/p/a.ova/nope", "no member 'nope'"),
    ] {
        let e = files.open(Path::new(bad)).err().expect(bad);
        assert!(matches!(e, Error::Open { .. }), "{bad}: {e}");
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
    let mut sparse = member("s", 512, 1);
    sparse.sparse = true;
    let e = member_storage(&a, &sparse).err().unwrap().to_string();
    assert!(e.contains("sparse") && e.contains("/p/a.ova/s"), "{e}");
    assert_eq!(
        member_path(Path::new("p.ova"), "./x/y"),
        Path::new("p.ova/x/y")
    );
    assert_eq!(
        member_path(Path::new("p.ova"), "/abs"),
        Path::new("p.ova/abs")
    );
}
