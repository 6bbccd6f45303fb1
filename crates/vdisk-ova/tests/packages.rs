//! Packages built at test time with qemu-img and GNU tar (ustar, pax and gnu formats, short and long
//! names), opened with vdisk-ova: the disks are listed as the descriptor says, each disk's storage is
//! the member's bytes, and the offsets found are the ones qemu-img needs to read the member in place
//! (its raw driver's `offset`/`size`), as vdisk's own readers do through the storage.

mod common;

use common::samples::{disk, virtualbox_ovf1, vmware_ovf, QCOW2_URI, VMDK_STREAM};
use common::*;
use std::path::Path;
use std::sync::Arc;
use vdisk_core::storage::HostFiles;
use vdisk_core::{FileStorage, ImageReader, Storage};
use vdisk_ova::{DiskData, Location, Package};
use vdisk_testutil::{assert_same_bytes, qemu_available, qemu_raw_bytes, read_all, Scratch};

fn open_pkg(path: &Path) -> Package {
    Package::open(Arc::new(FileStorage::open(path).expect("open package"))).expect("open OVA")
}

fn all_bytes(s: &dyn Storage) -> Vec<u8> {
    let mut v = vec![0u8; s.len().unwrap() as usize];
    s.read_exact_at(&mut v, 0).unwrap();
    v
}

/// A package's files: a streamOptimized VMDK and a qcow2, at `names`, the OVF in the VirtualBox or
/// VMware style, and a manifest.
fn fixture(names: [&str; 2], vmware: bool) -> (Scratch, String, String) {
    let dir = Scratch::new("ova");
    for n in names {
        if let Some(parent) = Path::new(n).parent() {
            std::fs::create_dir_all(dir.join(&parent.to_string_lossy())).unwrap();
        }
    }
    stream_vmdk(&dir, names[0]);
    patterned_qcow2(&dir, names[1]);
    let size = |n: &str| std::fs::metadata(dir.join(n)).unwrap().len();
    let ovf = if vmware {
        // ovftool's units, in MiB here: the disks are small.
        vmware_ovf(&[
            disk(1, names[0], 16, VMDK_STREAM, Some(size(names[0]))),
            disk(2, names[1], 8, QCOW2_URI, Some(size(names[1]))),
        ])
        .replace("byte * 2^30", "byte * 2^20")
    } else {
        virtualbox_ovf1(&[
            disk(1, names[0], 16 << 20, VMDK_STREAM, None),
            disk(2, names[1], 8 << 20, QCOW2_URI, None),
        ])
    };
    std::fs::write(dir.join("appliance.ovf"), ovf).unwrap();
    let mf = manifest(dir.path(), &["appliance.ovf", names[0], names[1]]);
    std::fs::write(dir.join("appliance.mf"), mf).unwrap();
    (dir, names[0].to_string(), names[1].to_string())
}

fn check_package(dir: &Scratch, pkg: &Path, names: [&str; 2], tar_oracle: bool) {
    let p = open_pkg(pkg);
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
    assert_eq!(p.descriptor().name, "appliance.ovf");
    let disks = p.disks();
    assert_eq!(disks.len(), 2);
    assert_eq!(
        (
            disks[0].disk_id.as_str(),
            disks[0].href.as_deref(),
            disks[0].capacity
        ),
        ("vmdisk1", Some(names[0]), 16 << 20)
    );
    assert_eq!(disks[0].format_name, Some("vmdk streamOptimized"));
    assert_eq!(
        (
            disks[1].href.as_deref(),
            disks[1].capacity,
            disks[1].format_name
        ),
        (Some(names[1]), 8 << 20, Some("qcow2"))
    );
    let checks = p.verify().unwrap();
    assert_eq!(checks.len(), 3);
    assert!(checks.iter().all(|c| c.ok()), "{checks:?}");
    let blocks = tar_blocks(pkg);
    let out = dir.join("inplace.raw");
    for (i, (name, driver)) in [(names[0], "vmdk"), (names[1], "qcow2")]
        .into_iter()
        .enumerate()
    {
        let DiskData::Stored { pieces, .. } = &disks[i].data else {
            panic!("{:?}", disks[i].data)
        };
        let [Location::Member { offset, size, .. }] = pieces[..] else {
            panic!("{pieces:?}")
        };
        let file = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(size, file.len() as u64);
        if tar_oracle {
            assert_eq!(offset, (blocks[name] + 1) * 512, "GNU tar -R places {name}");
        }
        let s = p.disk_storage(i).unwrap();
        assert_eq!(s.path(), pkg.join(name));
        assert_same_bytes(&all_bytes(s.as_ref()), &file, name);
        let original = qemu_raw_bytes(&dir.join(name), Some(driver));
        let in_place = qemu_raw_in_place(driver, pkg, offset, size, &out);
        assert_same_bytes(
            &in_place,
            &original,
            &format!("qemu-img reading {name} in place"),
        );
        let reader: Box<dyn ImageReader> = match driver {
            "vmdk" => Box::new(vdisk_vmdk::open(s, p.opener()).unwrap()),
            _ => Box::new(
                vdisk_qcow2::open(s, p.opener(), &vdisk_qcow2::OpenOptions::default()).unwrap(),
            ),
        };
        assert_same_bytes(
            &read_all(reader.as_ref(), 1 << 20),
            &original,
            &format!("vdisk reading {name} in place"),
        );
    }
    // vdisk's format probe (vdisk-core) sees the package in its first 512 bytes.
    let head = std::fs::read(pkg).unwrap();
    assert_eq!(
        vdisk_core::probe::probe_bytes(&head[..512], pkg),
        vdisk_core::Format::Ova,
        "probe of the first block"
    );
}

#[test]
fn gnu_tar_packages_in_every_format() {
    if !qemu_available() {
        return;
    }
    let names = ["appliance-disk1.vmdk", "appliance-disk2.qcow2"];
    for (format, vmware) in [("ustar", false), ("pax", true), ("gnu", false)] {
        let (dir, a, b) = fixture(names, vmware);
        let pkg = dir.join("appliance.ova");
        pack(
            dir.path(),
            format,
            &[],
            &["appliance.ovf", "appliance.mf", &a, &b],
            &pkg,
        );
        check_package(&dir, &pkg, names, true);
    }
}

#[test]
fn gnu_tar_packages_with_long_names() {
    if !qemu_available() {
        return;
    }
    // Over 100 bytes: a ustar prefix, a GNU 'L' header, a pax path record.
    let long_a = format!("images/{}/{}-disk1.vmdk", "d".repeat(80), "n".repeat(85));
    let long_b = format!("images/{}/{}-disk2.qcow2", "d".repeat(80), "n".repeat(85));
    let names = [long_a.as_str(), long_b.as_str()];
    for format in ["ustar", "pax", "gnu"] {
        let (dir, a, b) = fixture(names, false);
        let pkg = dir.join("long.ova");
        pack(
            dir.path(),
            format,
            &[],
            &["appliance.ovf", "appliance.mf", &a, &b],
            &pkg,
        );
        let p = open_pkg(&pkg);
        let m = &p.members()[2];
        assert_eq!(m.name, long_a, "{format}");
        // GNU tar -R numbers the L header of a GNU long name, the real header otherwise.
        check_package(&dir, &pkg, names, format != "gnu");
    }
}

#[test]
fn a_vmdk_descriptor_opens_its_extent_from_the_package() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("ova-flat");
    let vmdk = dir.join("flat.vmdk");
    vdisk_testutil::qemu_create(&vmdk, "vmdk", "subformat=monolithicFlat", "4M");
    vdisk_testutil::qemu_io(
        "vmdk",
        &vmdk,
        &["write -P 0x42 1M 8k", "write -P 0x24 3M 4k"],
    );
    assert!(dir.join("flat-flat.vmdk").exists());
    let ovf = virtualbox_ovf1(&[disk(1, "flat.vmdk", 4 << 20, VMDK_STREAM, None)])
        .replace("vmdk.html#streamOptimized", "vmdk.html#monolithicFlat");
    std::fs::write(dir.join("a.ovf"), ovf).unwrap();
    let pkg = dir.join("flat.ova");
    pack(
        dir.path(),
        "ustar",
        &[],
        &["a.ovf", "flat.vmdk", "flat-flat.vmdk"],
        &pkg,
    );
    let original = qemu_raw_bytes(&vmdk, Some("vmdk"));
    // The extent is found in the package only: remove the host copies.
    std::fs::remove_file(&vmdk).unwrap();
    std::fs::remove_file(dir.join("flat-flat.vmdk")).unwrap();
    let p = open_pkg(&pkg);
    assert_eq!(p.disks()[0].format_name, Some("vmdk monolithicFlat"));
    let r = vdisk_vmdk::open(p.disk_storage(0).unwrap(), p.opener()).unwrap();
    assert_same_bytes(
        &read_all(&r, 1 << 20),
        &original,
        "flat VMDK from the package",
    );
    // With host files instead, the extent is missing.
    let e = vdisk_vmdk::open(p.disk_storage(0).unwrap(), Arc::new(HostFiles))
        .err()
        .expect("no extent on the host")
        .to_string();
    assert!(e.contains("flat-flat.vmdk"), "{e}");
}

#[test]
fn chunked_disks_from_split() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("ova-chunks");
    stream_vmdk(&dir, "disk1.vmdk");
    let whole = std::fs::read(dir.join("disk1.vmdk")).unwrap();
    vdisk_testutil::run(
        std::process::Command::new("split")
            .args(["-d", "-a", "9", "-b", "40000", "disk1.vmdk", "disk1.vmdk."])
            .current_dir(dir.path()),
    );
    let chunks: Vec<String> = (0..whole.len().div_ceil(40000))
        .map(|i| format!("disk1.vmdk.{i:09}"))
        .collect();
    assert!(chunks.len() >= 3 && dir.join(&chunks[chunks.len() - 1]).exists());
    let ovf = virtualbox_ovf1(&[disk(
        1,
        "disk1.vmdk",
        16 << 20,
        VMDK_STREAM,
        Some(whole.len() as u64),
    )])
    .replace(
        "ovf:href=\"disk1.vmdk\"",
        "ovf:href=\"disk1.vmdk\" ovf:chunkSize=\"40000\"",
    );
    std::fs::write(dir.join("a.ovf"), ovf).unwrap();
    let pkg = dir.join("chunks.ova");
    let mut names = vec!["a.ovf"];
    names.extend(chunks.iter().map(String::as_str));
    pack(dir.path(), "pax", &[], &names, &pkg);
    let p = open_pkg(&pkg);
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
    let DiskData::Stored { pieces, size } = &p.disks()[0].data else {
        panic!()
    };
    assert_eq!((pieces.len(), *size), (chunks.len(), whole.len() as u64));
    let s = p.disk_storage(0).unwrap();
    assert_eq!(s.path(), pkg.join("disk1.vmdk"));
    assert_same_bytes(&all_bytes(s.as_ref()), &whole, "chunks joined");
    let r = vdisk_vmdk::open(s, p.opener()).unwrap();
    assert_same_bytes(
        &read_all(&r, 1 << 20),
        &qemu_raw_bytes(&dir.join("disk1.vmdk"), Some("vmdk")),
        "a chunked streamOptimized disk",
    );
}

#[test]
fn sparse_and_compressed_members_are_refused_with_a_way_out() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("ova-sparse");
    let raw = dir.join("disk.raw");
    vdisk_testutil::qemu_create(&raw, "raw", "", "8M");
    vdisk_testutil::qemu_io("raw", &raw, &["write -P 0x99 2M 64k"]);
    let ovf = virtualbox_ovf1(&[disk(
        1,
        "disk.raw",
        8 << 20,
        "http://en.wikipedia.org/wiki/Byte",
        None,
    )]);
    std::fs::write(dir.join("a.ovf"), &ovf).unwrap();
    for format in ["gnu", "pax"] {
        let pkg = dir.join(&format!("sparse-{format}.ova"));
        pack(
            dir.path(),
            format,
            &["--sparse"],
            &["a.ovf", "disk.raw"],
            &pkg,
        );
        let p = open_pkg(&pkg);
        assert_eq!(p.disks()[0].format_name, Some("raw"));
        let e = p.disk_storage(0).err().expect("sparse member").to_string();
        assert!(
            e.contains("tar --sparse") && e.contains("disk.raw"),
            "{format}: {e}"
        );
    }
    // Without --sparse the same file reads in place.
    let pkg = dir.join("plain.ova");
    pack(dir.path(), "gnu", &[], &["a.ovf", "disk.raw"], &pkg);
    let p = open_pkg(&pkg);
    assert_same_bytes(
        &all_bytes(p.disk_storage(0).unwrap().as_ref()),
        &std::fs::read(&raw).unwrap(),
        "disk.raw",
    );
    // gzip-compressed, as ovftool --compress writes them.
    run_gzip(&dir);
    std::fs::write(
        dir.join("a.ovf"),
        ovf.replace(
            "ovf:href=\"disk.raw\"",
            "ovf:href=\"disk.raw\" ovf:compression=\"gzip\"",
        ),
    )
    .unwrap();
    let pkg = dir.join("gz.ova");
    pack(dir.path(), "ustar", &[], &["a.ovf", "disk.raw"], &pkg);
    let p = open_pkg(&pkg);
    assert!(matches!(p.disks()[0].data, DiskData::Compressed { .. }));
    let e = p.disk_storage(0).err().unwrap().to_string();
    assert!(
        e.contains("gzip -d") && e.contains("cannot be read in place"),
        "{e}"
    );
}

fn run_gzip(dir: &Scratch) {
    vdisk_testutil::run(
        std::process::Command::new("gzip")
            .args(["-n", "disk.raw"])
            .current_dir(dir.path()),
    );
    std::fs::rename(dir.join("disk.raw.gz"), dir.join("disk.raw")).unwrap();
}

#[test]
fn a_bare_descriptor_with_its_files_beside_it() {
    if !qemu_available() {
        return;
    }
    let (dir, a, b) = fixture(["d1.vmdk", "d2.qcow2"], true);
    std::fs::write(dir.join("appliance.cert"), "SHA256(appliance.mf)= 00\n").unwrap();
    let ovf = dir.join("appliance.ovf");
    let p = Package::open_ovf(
        Arc::new(FileStorage::open(&ovf).unwrap()),
        Arc::new(HostFiles),
    )
    .unwrap();
    assert!(!p.is_archive());
    assert!(p.members().is_empty());
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
    assert_eq!(p.certificate().unwrap().name, "appliance.cert");
    assert!(p.verify().unwrap().iter().all(|c| c.ok()));
    for (i, name) in [a, b].iter().enumerate() {
        let s = p.disk_storage(i).unwrap();
        assert_eq!(s.path(), dir.join(name));
        assert_same_bytes(
            &all_bytes(s.as_ref()),
            &std::fs::read(dir.join(name)).unwrap(),
            name,
        );
    }
    let r = vdisk_vmdk::open(p.disk_storage(0).unwrap(), p.opener()).unwrap();
    assert_same_bytes(
        &read_all(&r, 1 << 20),
        &qemu_raw_bytes(&dir.join("d1.vmdk"), Some("vmdk")),
        "d1.vmdk",
    );
    // A missing file and an href climbing out of the directory.
    let text = std::fs::read_to_string(&ovf)
        .unwrap()
        .replace("d1.vmdk", "gone.vmdk")
        .replace("d2.qcow2", "../d2.qcow2");
    std::fs::write(&ovf, text).unwrap();
    let p = Package::open_ovf(
        Arc::new(FileStorage::open(&ovf).unwrap()),
        Arc::new(HostFiles),
    )
    .unwrap();
    let e0 = p.disk_storage(0).err().unwrap().to_string();
    let e1 = p.disk_storage(1).err().unwrap().to_string();
    assert!(
        e0.contains("'gone.vmdk' is not beside the descriptor"),
        "{e0}"
    );
    assert!(e1.contains("climbs out"), "{e1}");
}

#[test]
fn cut_at_each_header_boundary_nothing_passes_for_whole() {
    if !qemu_available() {
        return;
    }
    let names = ["d1.vmdk", "d2.qcow2"];
    let (dir, a, b) = fixture(names, false);
    let pkg = dir.join("full.ova");
    pack(
        dir.path(),
        "pax",
        &[],
        &["appliance.ovf", "appliance.mf", &a, &b],
        &pkg,
    );
    let full = open_pkg(&pkg);
    let len = std::fs::metadata(&pkg).unwrap().len();
    let mut cuts = vec![0, 100, 511];
    for m in full.members() {
        let end = m.offset + m.size;
        cuts.extend([
            m.header_offset,
            m.header_offset + 512,
            m.offset,
            m.offset + 1,
            end - 1,
            end,
        ]);
        cuts.push(end.div_ceil(512) * 512);
    }
    let archive_end = full
        .members()
        .last()
        .map(|m| (m.offset + m.size).div_ceil(512) * 512)
        .unwrap();
    cuts.extend([archive_end + 512, len - 1]);
    let file = Arc::new(FileStorage::open(&pkg).unwrap());
    for cut in cuts {
        let s: Arc<dyn Storage> = Arc::new(Prefix {
            inner: Arc::clone(&file) as Arc<dyn Storage>,
            len: cut,
        });
        match Package::open(s) {
            Err(e) => {
                let t = e.to_string();
                assert!(
                    t.contains("truncated") || t.contains("no files") || t.contains("run past"),
                    "cut at {cut}: {t}"
                );
            }
            Ok(p) => {
                let complete = p
                    .disks()
                    .iter()
                    .all(|d| matches!(d.data, DiskData::Stored { .. }));
                let flagged = p.warnings().iter().any(|w| w.contains("end-of-archive"))
                    || p.archive_end() == Some(vdisk_ova::tar::ArchiveEnd::LoneZeroBlock);
                assert!(
                    !complete || cut >= archive_end,
                    "cut at {cut}: every disk found in a cut archive"
                );
                assert!(
                    cut >= archive_end + 1024 || flagged,
                    "cut at {cut}: a cut archive must say so: {:?}",
                    p.warnings()
                );
            }
        }
    }
}

/// The first `len` bytes of a store.
struct Prefix {
    inner: Arc<dyn Storage>,
    len: u64,
}

impl Storage for Prefix {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn len(&self) -> vdisk_core::Result<u64> {
        Ok(self.len)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> vdisk_core::Result<usize> {
        let n = buf.len().min(self.len.saturating_sub(offset) as usize);
        self.inner.read_at(&mut buf[..n], offset)
    }
}
