//! OVA packages (vdisk only: qemu-img reads an OVA as a raw tar file): `info`, `convert`,
//! `compare`, `map` and `check` of the disk inside, read in place, against qemu-img on the disk
//! file itself and on the archive through its raw driver's `offset` option; the manifest's digests
//! checked; packages of several disks and writing refused with clear errors. Packages are built at
//! test time with qemu-img, sha256sum and GNU tar.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use vdisk_testutil::{qemu_available, Scratch};

fn tar_available() -> bool {
    let ok = Command::new("tar")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "GNU tar is needed when CI is set"
    );
    ok && qemu_available()
}

/// A VirtualBox-style OVF 1.0 descriptor naming `disks` as (file, format URI, capacity).
fn ovf(disks: &[(&str, &str, u64)]) -> String {
    let mut refs = String::new();
    let mut section = String::new();
    let mut items = String::new();
    for (i, (file, uri, cap)) in disks.iter().enumerate() {
        let n = i + 1;
        refs.push_str(&format!("<File ovf:id=\"file{n}\" ovf:href=\"{file}\"/>"));
        section.push_str(&format!(
            "<Disk ovf:capacity=\"{cap}\" ovf:diskId=\"vmdisk{n}\" ovf:fileRef=\"file{n}\" ovf:format=\"{uri}\"/>"
        ));
        items.push_str(&format!(
            "<Item><rasd:AddressOnParent>{i}</rasd:AddressOnParent><rasd:ElementName>disk{n}</rasd:ElementName><rasd:HostResource>/disk/vmdisk{n}</rasd:HostResource><rasd:InstanceID>{}</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>",
            10 + n
        ));
    }
    format!(
        r#"<?xml version="1.0"?>
<Envelope ovf:version="1.0" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References>{refs}</References>
  <DiskSection><Info>Virtual disks</Info>{section}</DiskSection>
  <VirtualSystem ovf:id="lab-vm">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="96"><Info>os</Info><Description>Debian_64</Description></OperatingSystemSection>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:ElementName>2 virtual CPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits><rasd:ElementName>1024 MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>sataController0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>AHCI</rasd:ResourceSubType><rasd:ResourceType>20</rasd:ResourceType></Item>
      {items}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

const STREAM: &str = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
const QCOW2: &str = "http://www.gnome.org/~markmc/qcow-image-format.html";

/// The data disk: 64 MiB with patterned data and holes, as `disk.raw`, and its streamOptimized
/// VMDK and qcow2 copies.
fn disks(d: &Path) {
    qemu_ok(d, &["create", "-q", "-f", "raw", "disk.raw", "64M"]);
    qemu_io(
        d,
        "raw",
        "disk.raw",
        &[
            "write -P 0xab 1M 64k",
            "write -P 0x11 10M 1M",
            "write -P 0x5a 64512k 512",
        ],
    );
    qemu_ok(
        d,
        &[
            "convert",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            "disk.raw",
            "app-disk1.vmdk",
        ],
    );
    qemu_ok(
        d,
        &["convert", "-O", "qcow2", "disk.raw", "app-disk2.qcow2"],
    );
}

/// Packs `name`.ova (tar format `fmt`) from an OVF naming `files`, with a SHA256 manifest.
fn package(d: &Path, name: &str, fmt: &str, files: &[(&str, &str)]) {
    let list: Vec<(&str, &str, u64)> = files.iter().map(|(f, u)| (*f, *u, 64 << 20)).collect();
    std::fs::write(d.join(format!("{name}.ovf")), ovf(&list)).unwrap();
    let names: Vec<&str> = files.iter().map(|(f, _)| *f).collect();
    sh(
        d,
        &format!(
            "for f in {name}.ovf {n}; do echo \"SHA256($f)= $(sha256sum $f | cut -d' ' -f1)\"; done > {name}.mf
             tar --format={fmt} -cf {name}.ova {name}.ovf {name}.mf {n}",
            n = names.join(" ")
        ),
    );
}

/// The byte offset of `member`'s data in the archive, from GNU tar's block numbers (a pax
/// extended header, when there is one, comes before the member's own header).
fn member_offset(d: &Path, ova: &str, member: &str) -> u64 {
    let out = sh(d, &format!("tar -tvRf {ova}"));
    let line = out.lines().find(|l| l.ends_with(member)).unwrap();
    let block: u64 = line
        .trim_start_matches("block ")
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (block + 1) * 512
}

#[test]
fn the_disk_of_a_package_reads_as_the_disk_file_itself() {
    if !tar_available() {
        return;
    }
    let s = Scratch::new("cli-ova");
    let d = s.path();
    disks(d);
    for fmt in ["ustar", "pax", "gnu"] {
        let name = format!("app-{fmt}");
        package(d, &name, fmt, &[("app-disk1.vmdk", STREAM)]);
        let ova = format!("{name}.ova");
        // info: the package described, the disk's size and format.
        let info = vdisk_ok(d, &["info", &ova]);
        for want in [
            "file format: ova\n",
            "virtual size: 64 MiB (67108864 bytes)\n",
            "descriptor: ",
            "manifest: ",
            "cpus: 2",
            "memory: 1073741824",
            "format: vmdk streamOptimized",
            "lab-vm: SATA controller 0, unit 0",
            "create type: streamOptimized",
        ] {
            assert!(info.contains(want), "{fmt}: {want:?} in\n{info}");
        }
        let j = json(&vdisk_ok(d, &["info", "--output=json", &ova]));
        assert_eq!(j["format"], "ova");
        assert_eq!(j["filename"], ova.as_str());
        assert_eq!(j["virtual-size"], 64 << 20);
        assert_eq!(j["format-specific"]["data"]["disk-read"]["format"], "vmdk");
        // -f raw reads the tar file's bytes, as qemu-img does.
        let raw = json(&vdisk_ok(d, &["info", "-f", "raw", "--output=json", &ova]));
        let len = std::fs::metadata(d.join(&ova)).unwrap().len();
        assert_eq!(raw["virtual-size"], len);
        // The guest bytes: those of the disk file, and of qemu-img reading the member in place.
        vdisk_ok(d, &["convert", "-O", "raw", &ova, "out.raw"]);
        assert_eq!(
            std::fs::read(d.join("out.raw")).unwrap(),
            std::fs::read(d.join("disk.raw")).unwrap()
        );
        let off = member_offset(d, &ova, "app-disk1.vmdk");
        let spec = format!(
            "json:{{\"driver\":\"vmdk\",\"file\":{{\"driver\":\"raw\",\"offset\":{off},\"file\":{{\"driver\":\"file\",\"filename\":\"{ova}\"}}}}}}"
        );
        qemu_ok(d, &["convert", "-O", "raw", &spec, "theirs.raw"]);
        assert_eq!(
            std::fs::read(d.join("theirs.raw")).unwrap(),
            std::fs::read(d.join("out.raw")).unwrap()
        );
        let o = vdisk(d, &["compare", &ova, "app-disk1.vmdk"]);
        assert_eq!(
            (o.status.code(), out(&o).as_str()),
            (Some(0), "Images are identical.\n")
        );
        // check: the manifest verifies.
        assert_eq!(
            vdisk_ok(d, &["check", &ova]),
            "No errors were found on the image.\n"
        );
    }
    // A qcow2 disk: map's offsets are where its clusters lie in the archive.
    package(d, "q", "ustar", &[("app-disk2.qcow2", QCOW2)]);
    let off = member_offset(d, "q.ova", "app-disk2.qcow2");
    let ours = json(&vdisk_ok(d, &["map", "--output=json", "q.ova"]));
    let theirs = qemu_map_json_of(d, "app-disk2.qcow2");
    let ours = ours.as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        let mut b = b.clone();
        if let Some(o) = b.get("offset").and_then(|o| o.as_u64()) {
            b["offset"] = (o + off).into();
        }
        assert_eq!(*a, b);
    }
}

fn qemu_map_json_of(d: &Path, file: &str) -> Vec<serde_json::Value> {
    json(&qemu_ok(d, &["map", "--output=json", file]))
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn damaged_packages_several_disks_and_writing_fail_clearly() {
    if !tar_available() {
        return;
    }
    let s = Scratch::new("cli-ova-refusals");
    let d = s.path();
    disks(d);
    package(d, "app", "ustar", &[("app-disk1.vmdk", STREAM)]);
    // A byte of the disk changed: the manifest's digest no longer matches (exit 2, corruption).
    let off = member_offset(d, "app.ova", "app-disk1.vmdk");
    std::fs::copy(d.join("app.ova"), d.join("bad.ova")).unwrap();
    sh(
        d,
        &format!(
            "printf 'x' | dd of=bad.ova bs=1 seek={} conv=notrunc status=none",
            off + 600
        ),
    );
    let o = vdisk(d, &["check", "bad.ova"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(
        err(&o).contains("ERROR manifest: SHA256(app-disk1.vmdk) is "),
        "{}",
        err(&o)
    );
    assert!(out(&o).contains("1 errors were found on the image."));
    // Two disks: described, but not read as one.
    package(
        d,
        "two",
        "ustar",
        &[("app-disk1.vmdk", STREAM), ("app-disk2.qcow2", QCOW2)],
    );
    let info = vdisk_ok(d, &["info", "two.ova"]);
    assert!(
        info.contains("file: app-disk1.vmdk") && info.contains("file: app-disk2.qcow2"),
        "{info}"
    );
    for args in [
        &["convert", "-O", "raw", "two.ova", "x.raw"][..],
        &["compare", "two.ova", "disk.raw"],
    ] {
        let o = vdisk(d, args);
        assert_ne!(o.status.code(), Some(0), "{args:?}");
        assert!(
            err(&o).contains("two.ova holds 2 disks (app-disk1.vmdk, app-disk2.qcow2); choose one with --image-opts driver=ova,file.filename=two.ova,disk=app-disk1.vmdk"),
            "{args:?}: {}",
            err(&o)
        );
    }
    assert!(!d.join("x.raw").exists());
    // One of them chosen by its file name or its disk ID: read as that disk file itself.
    for (pick, file) in [
        ("app-disk2.qcow2", "app-disk2.qcow2"),
        ("vmdisk1", "app-disk1.vmdk"),
    ] {
        let opts = format!("driver=ova,file.filename=two.ova,disk={pick}");
        vdisk_ok(
            d,
            &["convert", "--image-opts", &opts, "-O", "raw", "pick.raw"],
        );
        qemu_ok(d, &["compare", "-f", "raw", "pick.raw", file]);
        vdisk_ok(
            d,
            &[
                "compare",
                "--image-opts",
                &opts,
                "driver=raw,file.filename=disk.raw",
            ],
        );
        let info = vdisk_ok(d, &["info", "--image-opts", &opts]);
        assert!(info.contains(&format!("file: {file}")), "{info}");
        std::fs::remove_file(d.join("pick.raw")).unwrap();
    }
    for (opts, words) in [
        (
            "driver=ova,file.filename=two.ova,disk=nope.vmdk",
            "two.ova: the package has no disk 'nope.vmdk' (its disks: app-disk1.vmdk, app-disk2.qcow2)",
        ),
        (
            "driver=vmdk,file.filename=app-disk1.vmdk,disk=x",
            "the option 'disk' chooses a disk of an OVA package",
        ),
    ] {
        let o = vdisk(d, &["info", "--image-opts", opts]);
        assert_eq!(o.status.code(), Some(1), "{opts}");
        assert!(err(&o).contains(words), "{opts}: {}", err(&o));
    }
    // The descriptor not first: not an OVA (read as raw when probed, refused with -f ova).
    sh(d, "tar --format=ustar -cf late.ova app-disk1.vmdk app.ovf");
    assert!(vdisk_ok(d, &["info", "late.ova"]).contains("file format: raw"));
    let o = vdisk(d, &["info", "-f", "ova", "late.ova"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("app.ovf"), "{}", err(&o));
    // Writing: refused before anything is made.
    for args in [
        &["create", "-f", "ova", "n.ova", "1G"][..],
        &["convert", "-O", "ova", "disk.raw", "n.ova"],
    ] {
        let o = vdisk(d, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            err(&o).contains("vdisk reads OVA packages but does not write them"),
            "{}",
            err(&o)
        );
        assert!(out(&o).is_empty() && !d.join("n.ova").exists());
    }
}
