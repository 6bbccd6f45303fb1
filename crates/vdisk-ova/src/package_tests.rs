//! Tests of packages built in memory (DSP0243 5.3): disk lookup, in-place reads, refusals and warnings.

use super::*;
use crate::manifest::hex;
use sha2::Digest;
use vdisk_core::MemStorage;

use crate::test_support::samples::{disk as spec, vmware_ovf, DiskSpec, VMDK_STREAM};
use crate::test_support::tarbuild::*;

fn ova(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut t = Vec::new();
    for (name, data) in files {
        push_file(&mut t, name, data);
    }
    push_end(&mut t);
    t
}

fn open(bytes: Vec<u8>) -> Result<Package> {
    Package::open(MemStorage::new("/lab/appliance.ova", bytes).shared())
}

fn read_all(s: &dyn Storage) -> Vec<u8> {
    let mut v = vec![0u8; s.len().unwrap() as usize];
    s.read_exact_at(&mut v, 0).unwrap();
    v
}

fn two_disks() -> Vec<DiskSpec> {
    vec![
        spec(1, "disk1.vmdk", 16, VMDK_STREAM, Some(1000)),
        spec(2, "disk2.vmdk", 2, VMDK_STREAM, Some(700)),
    ]
}

#[test]
fn lists_disks_and_reads_them_in_place() {
    let ovf = vmware_ovf(&two_disks());
    let d1 = vec![0xabu8; 1000];
    let d2: Vec<u8> = (0..700u32).map(|i| i as u8).collect();
    let mf = format!(
        "SHA256(appliance.ovf)= {}\nSHA256(disk1.vmdk)= {}\nSHA1(disk2.vmdk)= {}\n",
        hex(&sha2::Sha256::digest(ovf.as_bytes())),
        hex(&sha2::Sha256::digest(&d1)),
        hex(&sha1::Sha1::digest(&d2)),
    );
    let bytes = ova(&[
        ("appliance.ovf", ovf.as_bytes()),
        ("appliance.mf", mf.as_bytes()),
        ("appliance.cert", b"-----BEGIN CERTIFICATE-----\n"),
        ("disk1.vmdk", &d1),
        ("disk2.vmdk", &d2),
    ]);
    let p = open(bytes.clone()).unwrap();
    assert!(p.is_archive());
    assert_eq!(p.archive_end(), Some(ArchiveEnd::Marker));
    assert_eq!(p.descriptor().name, "appliance.ovf");
    assert_eq!(p.certificate().unwrap().name, "appliance.cert");
    let m = p.manifest().unwrap();
    assert_eq!(m.manifest.as_ref().unwrap().entries.len(), 3);
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
    let disks = p.disks();
    assert_eq!(disks.len(), 2);
    let d = &disks[0];
    assert_eq!(
        (d.disk_id.as_str(), d.href.as_deref(), d.capacity),
        ("vmdisk1", Some("disk1.vmdk"), 16 << 30)
    );
    assert_eq!(d.format_name, Some("vmdk streamOptimized"));
    assert_eq!(d.populated_size, Some(65536));
    // disk1's header is the 4th header: descriptor, manifest and certificate blocks before it.
    let ovf_blocks = ovf.len().div_ceil(512) as u64;
    let d1_at = 512 * (1 + ovf_blocks + 2 + 2 + 1);
    assert_eq!(
        d.data,
        DiskData::Stored {
            pieces: vec![Location::Member {
                name: "disk1.vmdk".into(),
                offset: d1_at,
                size: 1000
            }],
            size: 1000
        }
    );
    assert_eq!(&bytes[d1_at as usize..][..1000], &d1[..]);
    for (i, want) in [(0, &d1), (1, &d2)] {
        let s = p.disk_storage(i).unwrap();
        assert_eq!(&read_all(s.as_ref()), want);
        assert_eq!(
            s.path(),
            Path::new(&format!("/lab/appliance.ova/disk{}.vmdk", i + 1))
        );
    }
    assert!(p.disk_storage(2).is_err());
    let drives = p.drives_for("vmdisk2");
    assert_eq!(drives.len(), 1);
    let (vm, drive) = drives[0];
    assert_eq!(vm.id, "lab-db01");
    assert_eq!(drive.address_on_parent.as_deref(), Some("1"));
    assert_eq!(
        drive.controller.as_ref().map(|c| c.kind.name()),
        Some("SCSI")
    );
    assert!(p.drives_for("nosuch").is_empty());
    let checks = p.verify().unwrap();
    assert_eq!(checks.len(), 3);
    assert!(checks.iter().all(|c| c.ok()), "{checks:?}");
    assert_eq!(p.members().len(), 5);

    // One byte of disk2 changed: its check fails, the others pass.
    let mut bad = bytes;
    let at = p.members()[4].offset as usize + 5;
    bad[at] ^= 1;
    let checks = open(bad).unwrap().verify().unwrap();
    assert_eq!(
        checks.iter().map(|c| c.ok()).collect::<Vec<_>>(),
        [true, true, false]
    );
}

#[test]
fn the_descriptor_must_come_first() {
    let ovf = vmware_ovf(&two_disks());
    let e = open(ova(&[
        ("disk1.vmdk", b"x"),
        ("appliance.ovf", ovf.as_bytes()),
    ]))
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("first file is 'disk1.vmdk'") && e.contains("'appliance.ovf' is file 2"),
        "{e}"
    );
    let e = open(ova(&[("readme.txt", b"x")]))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no .ovf file"), "{e}");
    let e = open(ova(&[])).err().unwrap().to_string();
    assert!(e.contains("holds no files"), "{e}");
    // A directory entry before it is fine.
    let mut t = Vec::new();
    push_member(&mut t, "./", b"", b'5', Magic::Gnu);
    push_member(&mut t, "./appliance.ovf", ovf.as_bytes(), b'0', Magic::Gnu);
    push_end(&mut t);
    assert_eq!(open(t).unwrap().descriptor().name, "./appliance.ovf");
}

#[test]
fn disks_that_cannot_be_read_say_why() {
    let doc = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References>
    <File ovf:id="gz" ovf:href="gz.vmdk" ovf:compression="gzip"/>
    <File ovf:id="gone" ovf:href="gone.vmdk"/>
    <File ovf:id="url" ovf:href="https://example.com/d.vmdk"/>
    <File ovf:id="up" ovf:href="../etc/d.vmdk"/>
    <File ovf:id="delta" ovf:href="delta.vmdk"/>
    <File ovf:id="sp" ovf:href="sparse.raw"/>
  </References>
  <DiskSection>
    <Disk ovf:diskId="gz" ovf:fileRef="gz" ovf:capacity="1"/>
    <Disk ovf:diskId="gone" ovf:fileRef="gone" ovf:capacity="1"/>
    <Disk ovf:diskId="url" ovf:fileRef="url" ovf:capacity="1"/>
    <Disk ovf:diskId="up" ovf:fileRef="up" ovf:capacity="1"/>
    <Disk ovf:diskId="nofile" ovf:fileRef="nosuch" ovf:capacity="1"/>
    <Disk ovf:diskId="blank" ovf:capacity="4096"/>
    <Disk ovf:diskId="delta" ovf:fileRef="delta" ovf:parentRef="gz" ovf:capacity="1"/>
    <Disk ovf:diskId="sp" ovf:fileRef="sp" ovf:capacity="1"/>
  </DiskSection>
</Envelope>"#;
    let mut t = Vec::new();
    push_file(&mut t, "a.ovf", doc.as_bytes());
    push_file(&mut t, "gz.vmdk", b"\x1f\x8b");
    push_file(&mut t, "delta.vmdk", b"KDMV");
    push_member(&mut t, "sparse.raw", b"data", b'S', Magic::Gnu);
    push_end(&mut t);
    let p = open(t).unwrap();
    let err = |i: usize| p.disk_storage(i).err().expect("an error").to_string();
    assert!(matches!(p.disks()[0].data, DiskData::Compressed { .. }));
    let e = err(0);
    assert!(
        e.contains("gzip-compressed")
            && e.contains("cannot be read in place")
            && e.contains("tar -xOf /lab/appliance.ova gz.vmdk | gzip -d"),
        "{e}"
    );
    let e = err(1);
    assert!(
        e.starts_with("Could not open '/lab/appliance.ova/gone.vmdk'")
            && e.contains("not in the archive"),
        "{e}"
    );
    assert!(err(2).contains("URL"), "{}", err(2));
    assert!(err(3).contains("climbs out"), "{}", err(3));
    assert!(
        err(4).contains("which References does not list"),
        "{}",
        err(4)
    );
    assert_eq!(p.disks()[5].data, DiskData::Blank);
    assert!(err(5).contains("blank disk of 4096 bytes"), "{}", err(5));
    assert_eq!(p.disks()[6].parent_ref.as_deref(), Some("gz"));
    assert!(
        err(6).contains("differencing disk") && err(6).contains("parent disk 'gz'"),
        "{}",
        err(6)
    );
    assert!(err(7).contains("tar --sparse"), "{}", err(7));
    // The member itself is readable when asked for by name.
    assert_eq!(
        read_all(p.member_storage("delta.vmdk").unwrap().as_ref()),
        b"KDMV"
    );
    assert!(matches!(p.member_storage("nope"), Err(Error::Open { .. })));
    let w = p.warnings().join("\n");
    assert!(!w.contains("gz.vmdk"), "{w}");
}

#[test]
fn chunked_files_are_joined() {
    let doc = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:id="f" ovf:href="big disk.vmdk" ovf:size="2501" ovf:chunkSize="1000"/>
    <File ovf:id="e" ovf:href="my%20disk.vmdk"/></References>
  <DiskSection><Disk ovf:diskId="d" ovf:fileRef="f" ovf:capacity="1"/>
    <Disk ovf:diskId="e" ovf:fileRef="e" ovf:capacity="1"/></DiskSection>
</Envelope>"#;
    let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
    let p = open(ova(&[
        ("a.ovf", doc.as_bytes()),
        ("big disk.vmdk.000000000", &data[..1000]),
        ("big disk.vmdk.000000001", &data[1000..2000]),
        ("big disk.vmdk.000000002", &data[2000..]),
        ("my disk.vmdk", b"percent"),
    ]))
    .unwrap();
    let DiskData::Stored { pieces, size } = &p.disks()[0].data else {
        panic!("{:?}", p.disks()[0].data)
    };
    assert_eq!((pieces.len(), *size), (3, 2500));
    assert_eq!(p.disks()[0].chunk_size, Some(1000));
    let s = p.disk_storage(0).unwrap();
    assert_eq!(read_all(s.as_ref()), data);
    assert_eq!(s.path(), Path::new("/lab/appliance.ova/big disk.vmdk"));
    let s = p.disk_storage(1).unwrap();
    assert_eq!(read_all(s.as_ref()), b"percent");
    assert_eq!(s.path(), Path::new("/lab/appliance.ova/my disk.vmdk"));
    assert_eq!(p.disk_path(1).as_deref(), Some(s.path()));
    assert_eq!(
        p.disk_path(0).unwrap(),
        Path::new("/lab/appliance.ova/big disk.vmdk")
    );
    let w = p.warnings().join("\n");
    assert!(
        w.contains("2500 bytes in the package, but the descriptor says 2501"),
        "{w}"
    );
    assert!(!w.contains("does not refer"), "chunks are referenced: {w}");
}

#[test]
fn warnings_for_a_learner() {
    let ovf = vmware_ovf(&two_disks());
    let mut t = Vec::new();
    push_file(&mut t, "appliance.ovf", ovf.as_bytes());
    push_file(&mut t, "disk1.vmdk", &[0u8; 1000]);
    push_file(&mut t, "notes.txt", b"n");
    push_file(&mut t, "disk2.vmdk", &[0u8; 10]);
    push_file(&mut t, "disk2.vmdk", &[0u8; 700]);
    push_file(&mut t, "other.mf", b"");
    let p = open(t).unwrap();
    let w = p.warnings().join("\n");
    for want in [
        "no end-of-archive blocks",
        "'notes.txt' is in the archive but the descriptor does not refer to it",
        "'disk2.vmdk' is stored more than once",
        "'other.mf' is not named after the descriptor",
    ] {
        assert!(w.contains(want), "{want}\n{w}");
    }
    assert!(
        !w.contains("right after the descriptor"),
        "at the end is a place: {w}"
    );
    assert_eq!(
        p.disk_storage(1).unwrap().len().unwrap(),
        700,
        "the last copy"
    );
    // A manifest in the middle.
    let p = open(ova(&[
        ("appliance.ovf", ovf.as_bytes()),
        ("disk1.vmdk", &[0u8; 1000]),
        ("appliance.mf", b""),
        ("disk2.vmdk", &[0u8; 700]),
    ]))
    .unwrap();
    let w = p.warnings().join("\n");
    assert!(w.contains("'appliance.mf' is file 3 of 4"), "{w}");
    assert!(p.manifest().is_some());
    // A manifest that does not parse is reported, not fatal.
    let p = open(ova(&[
        ("appliance.ovf", ovf.as_bytes()),
        ("appliance.mf", b"MD5(x)= 00"),
    ]))
    .unwrap();
    assert!(p.manifest().unwrap().manifest.is_err());
    assert!(p.verify().unwrap_err().to_string().contains("MD5"));
    let p = open(ova(&[("appliance.ovf", ovf.as_bytes())])).unwrap();
    assert!(p.verify().unwrap_err().to_string().contains("no manifest"));
    // Nor is a manifest stored sparse.
    let mut t = Vec::new();
    push_file(&mut t, "appliance.ovf", ovf.as_bytes());
    push_member(&mut t, "appliance.mf", b"", b'S', Magic::Gnu);
    push_end(&mut t);
    let p = open(t).unwrap();
    let e = p.manifest().unwrap().manifest.as_ref().unwrap_err();
    assert!(e.contains("sparse"), "{e}");
}

#[test]
fn many_disks_naming_one_chunked_file_are_bounded() {
    let mut doc = String::from(
        r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><References><File ovf:id="f" ovf:href="c" ovf:chunkSize="1"/></References><DiskSection>"#,
    );
    for i in 0..3000 {
        doc.push_str(&format!(
            "<Disk ovf:diskId='d{i}' ovf:fileRef='f' ovf:capacity='1'/>"
        ));
    }
    doc.push_str("</DiskSection></Envelope>");
    let mut t = Vec::new();
    push_file(&mut t, "a.ovf", doc.as_bytes());
    for i in 0..30 {
        push_file(&mut t, &format!("c.{i:09}"), b"x");
    }
    // 3000 disks x 30 chunks is more than the limit of pieces listed.
    let e = open(t).err().unwrap();
    assert!(matches!(e, Error::Limit { .. }), "{e}");
}
