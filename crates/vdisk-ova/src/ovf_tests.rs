//! Tests of descriptor parsing (DSP0243 7-9) on VirtualBox- and ovftool-style samples, OVF 2 items, and refused descriptors.

use super::*;

use crate::test_support::samples::{
    disk as spec, virtualbox_ovf1, virtualbox_ovf2, vmware_ovf, QCOW2_URI, VMDK_STREAM,
};

fn parse_str(s: &str) -> Result<Envelope> {
    parse(s.as_bytes(), Path::new("t.ova/t.ovf"))
}

fn system(env: &Envelope) -> &VirtualSystem {
    match env.content.as_ref().expect("content") {
        Content::System(s) => s,
        Content::Collection(_) => panic!("a collection"),
    }
}

#[test]
fn virtualbox_ovf1_export() {
    let disks = [
        spec(1, "lab-web01-disk001.vmdk", 21474836480, VMDK_STREAM, None),
        spec(2, "lab-web01-disk002.vmdk", 1 << 30, VMDK_STREAM, None),
    ];
    let env = parse_str(&virtualbox_ovf1(&disks)).unwrap();
    assert_eq!(env.version, OvfVersion::V1);
    assert_eq!(env.version_attr.as_deref(), Some("1.0"));
    assert_eq!(env.files.len(), 2);
    assert_eq!(env.files[0].href, "lab-web01-disk001.vmdk");
    assert_eq!(env.files[0].size, None);
    let d = &env.disks[0];
    assert_eq!(
        (d.disk_id.as_str(), d.file_ref.as_deref(), d.capacity),
        ("vmdisk1", Some("file1"), 21474836480)
    );
    assert_eq!(d.format.as_deref(), Some(VMDK_STREAM));
    assert_eq!(env.disks[1].capacity, 1 << 30);
    assert_eq!(env.networks[0].name, "NAT");
    let s = system(&env);
    assert_eq!(s.id, "lab-web01");
    let os = s.operating_system.as_ref().unwrap();
    assert_eq!(
        (os.id, os.os_type.as_deref()),
        (Some(94), Some("Ubuntu_64"))
    );
    assert_eq!(
        s.product.as_ref().unwrap().product.as_deref(),
        Some("Lab web server")
    );
    let hw = &s.hardware[0];
    assert_eq!(hw.system_types, ["virtualbox-2.2"]);
    assert_eq!(hw.cpus, Some(2));
    assert_eq!(hw.memory_bytes, Some(2048 << 20));
    assert_eq!(hw.controllers.len(), 2);
    assert_eq!(hw.controllers[0].kind, ControllerKind::Ide);
    assert_eq!(hw.controllers[1].kind, ControllerKind::Sata);
    let disks: Vec<_> = hw
        .drives
        .iter()
        .filter(|d| d.kind == DriveKind::Disk)
        .collect();
    assert_eq!(disks.len(), 2);
    assert_eq!(
        disks[1].disk_id.as_deref(),
        Some("vmdisk2"),
        "VirtualBox writes /disk/ID"
    );
    assert_eq!(
        disks[0].controller.as_ref().unwrap().kind,
        ControllerKind::Sata
    );
    let cd = hw.drives.iter().find(|d| d.kind == DriveKind::Cd).unwrap();
    assert_eq!(
        cd.controller.as_ref().unwrap().sub_type.as_deref(),
        Some("PIIX4")
    );
    assert_eq!(cd.disk_id, None);
    let nic = &hw.network_adapters[0];
    assert_eq!(
        (nic.connection.as_deref(), nic.sub_type.as_deref()),
        (Some("NAT"), Some("E1000"))
    );
    assert!(env.warnings.is_empty(), "{:?}", env.warnings);
}

#[test]
fn vmware_ovftool_export() {
    let disks = [
        spec(1, "lab-db01-disk1.vmdk", 16, VMDK_STREAM, Some(123456)),
        spec(2, "lab-db01-disk2.vmdk", 2, VMDK_STREAM, Some(4096)),
    ];
    let env = parse_str(&vmware_ovf(&disks)).unwrap();
    assert_eq!(env.version_attr, None);
    assert_eq!(env.files[0].size, Some(123456));
    let d = &env.disks[0];
    assert_eq!(d.capacity, 16 << 30);
    assert_eq!(d.capacity_units.as_deref(), Some("byte * 2^30"));
    assert_eq!(d.populated_size, Some(65536));
    assert_eq!(env.configurations, ["small", "large"]);
    assert_eq!(env.default_configuration.as_deref(), Some("large"));
    let s = system(&env);
    assert_eq!(s.name.as_deref(), Some("lab-db01"));
    assert_eq!(
        s.operating_system.as_ref().unwrap().os_type.as_deref(),
        Some("otherLinux64Guest")
    );
    assert_eq!(
        s.annotation.as_deref(),
        Some("Database server for the LPIC-3 lab")
    );
    assert!(s.has_eula);
    let hw = &s.hardware[0];
    assert_eq!(hw.system_types, ["vmx-13", "vmx-14"]);
    assert_eq!(hw.cpus, Some(8), "the default configuration's CPU item");
    assert_eq!(
        hw.items
            .iter()
            .filter(|i| i.resource_type == Some(3))
            .count(),
        1,
        "the other configuration's item is left out"
    );
    assert_eq!(hw.memory_bytes, Some(4096 << 20));
    let drive = &hw.drives[0];
    assert_eq!(drive.disk_id.as_deref(), Some("vmdisk1"));
    let c = drive.controller.as_ref().unwrap();
    assert_eq!(
        (c.kind, c.sub_type.as_deref()),
        (ControllerKind::Scsi, Some("VirtualSCSI"))
    );
    assert_eq!(hw.drives[1].address_on_parent.as_deref(), Some("1"));
    assert_eq!(hw.network_adapters[0].sub_type.as_deref(), Some("VmxNet3"));
    assert_eq!(
        hw.network_adapters[0].connection.as_deref(),
        Some("VM Network")
    );
    assert!(env.warnings.is_empty(), "{:?}", env.warnings);
}

#[test]
fn virtualbox_ovf2_export() {
    let disks = [spec(1, "d.vmdk", 1 << 30, VMDK_STREAM, None)];
    let env = parse_str(&virtualbox_ovf2(&disks)).unwrap();
    assert_eq!(env.version, OvfVersion::V2);
    assert_eq!(env.version_attr.as_deref(), Some("2.0"));
    assert_eq!(env.disks[0].capacity, 1 << 30);
    assert_eq!(system(&env).hardware[0].memory_bytes, Some(2048 << 20));
}

const ENV2: &str = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/2" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/2"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:sasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData"
  xmlns:epasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData">"#;

#[test]
fn ovf2_storage_and_ethernet_port_items() {
    let doc = format!(
        r#"{ENV2}
  <References><File ovf:id="f" ovf:href="base.qcow2" ovf:size="1000"/><File ovf:id="g" ovf:href="delta.vmdk"/></References>
  <DiskSection><Info/>
    <Disk ovf:diskId="base" ovf:fileRef="f" ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^40" ovf:format="{QCOW2_URI}"/>
    <Disk ovf:diskId="delta" ovf:fileRef="g" ovf:parentRef="base" ovf:capacity="1099511627776"/>
  </DiskSection>
  <SharedDiskSection><Info/><SharedDisk ovf:diskId="shared" ovf:capacity="4096"/></SharedDiskSection>
  <VirtualSystem ovf:id="vm"><Info/>
    <VirtualHardwareSection><Info/>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>20</rasd:ResourceType><rasd:ResourceSubType>vmware.nvme.controller</rasd:ResourceSubType></Item>
      <StorageItem><sasd:HostResource>ovf:/disk/base</sasd:HostResource><sasd:InstanceID>2</sasd:InstanceID><sasd:Parent>1</sasd:Parent><sasd:ResourceType>17</sasd:ResourceType></StorageItem>
      <EthernetPortItem><epasd:Connection>lan</epasd:Connection><epasd:InstanceID>3</epasd:InstanceID><epasd:ResourceType>10</epasd:ResourceType><epasd:ResourceSubType>virtio</epasd:ResourceSubType></EthernetPortItem>
      <Item><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity><rasd:AllocationUnits>gibibyte</rasd:AllocationUnits></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>"#
    );
    let env = parse_str(&doc).unwrap();
    assert_eq!(env.disks.len(), 3);
    assert_eq!(env.disks[0].capacity, 1 << 40);
    assert_eq!(env.disks[1].parent_ref.as_deref(), Some("base"));
    assert_eq!(env.disks[1].format, None);
    assert!(env.disks[2].shared && env.disks[2].file_ref.is_none());
    let hw = &system(&env).hardware[0];
    assert_eq!(hw.drives[0].disk_id.as_deref(), Some("base"));
    assert_eq!(
        hw.drives[0].controller.as_ref().unwrap().kind,
        ControllerKind::Nvme
    );
    assert_eq!(hw.network_adapters[0].connection.as_deref(), Some("lan"));
    assert_eq!(hw.memory_bytes, Some(1 << 30));
}

#[test]
fn collections_properties_and_odd_values() {
    let doc = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="x">
  <References><File ovf:id="f" ovf:href="a.vmdk" ovf:size="lots" ovf:compression="gzip" ovf:chunkSize="1048576"/><File ovf:href="noid"/><File ovf:id="i" ovf:href="b.vmdk" ovf:compression="identity"/></References>
  <DiskSection><Disk ovf:diskId="d" ovf:fileRef="f" ovf:capacity="${disk.size}" ovf:capacityAllocationUnits="byte * 2^20"/></DiskSection>
  <VirtualSystemCollection ovf:id="app">
    <Info>An application</Info>
    <ProductSection ovf:class="com.example" ovf:instance="1"><Info/><Product>App</Product>
      <Property ovf:key="size" ovf:value="1"/></ProductSection>
    <ProductSection><Info/><Property ovf:key="disk.size" ovf:type="uint32" ovf:value="512"/></ProductSection>
    <VirtualSystem ovf:id="front"><Info/><Name>Front</Name>
      <VirtualHardwareSection><Info/>
        <Item><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>5</rasd:VirtualQuantity><rasd:AllocationUnits>furlongs</rasd:AllocationUnits></Item>
      </VirtualHardwareSection>
    </VirtualSystem>
    <VirtualSystemCollection ovf:id="inner">
      <VirtualSystem ovf:id="back"><Info/>
        <VirtualHardwareSection><Info/>
          <Item><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>5</rasd:VirtualQuantity></Item>
        </VirtualHardwareSection>
      </VirtualSystem>
    </VirtualSystemCollection>
  </VirtualSystemCollection>
</Envelope>"#;
    let env = parse_str(doc).unwrap();
    assert_eq!(env.disks[0].capacity, 512 << 20, "capacity from a property");
    let f = &env.files[0];
    assert_eq!(
        (f.size, f.compression.as_deref(), f.chunk_size),
        (None, Some("gzip"), Some(1 << 20))
    );
    assert_eq!(env.files.len(), 2, "a File without an id is skipped");
    assert_eq!(env.files[1].compression, None, "identity is no compression");
    let Some(Content::Collection(c)) = &env.content else {
        panic!("a collection")
    };
    assert_eq!(c.id, "app");
    assert_eq!(c.product.as_ref().unwrap().product.as_deref(), Some("App"));
    let systems = env.content.as_ref().unwrap().systems();
    let ids: Vec<&str> = systems.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["front", "back"]);
    assert_eq!(systems[0].hardware[0].memory_bytes, None);
    let w = env.warnings.join("\n");
    assert!(w.contains("ovf:size=\"lots\""), "{w}");
    assert!(w.contains("without ovf:id"), "{w}");
    assert!(w.contains("furlongs"), "{w}");
    assert!(w.contains("no AllocationUnits"), "{w}");
}

#[test]
fn descriptors_that_are_refused() {
    let env1 = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">"#;
    let cases: Vec<(String, &str)> = vec![
        ("not xml".into(), "not well-formed"),
        ("<Envelope/>".into(), "namespace"),
        (
            "<Envelope xmlns='http://www.vmware.com/schema/ovf/1/envelope'/>".into(),
            "OVF 0.9",
        ),
        (
            "<Other xmlns='http://schemas.dmtf.org/ovf/envelope/1'/>".into(),
            "not an OVF Envelope",
        ),
        (format!("{env1}<DiskSection><Disk ovf:capacity='1'/></DiskSection></Envelope>"), "no ovf:diskId"),
        (format!("{env1}<DiskSection><Disk ovf:diskId='d'/></DiskSection></Envelope>"), "no ovf:capacity"),
        (format!("{env1}<DiskSection><Disk ovf:diskId='d' ovf:capacity='-1'/></DiskSection></Envelope>"), "not a whole number"),
        (format!("{env1}<DiskSection><Disk ovf:diskId='d' ovf:capacity='1.5'/></DiskSection></Envelope>"), "not a whole number"),
        (format!("{env1}<DiskSection><Disk ovf:diskId='d' ovf:capacity='${{nope}}'/></DiskSection></Envelope>"), "property 'nope'"),
        (format!("{env1}<DiskSection><Disk ovf:diskId='d' ovf:capacity='20' ovf:capacityAllocationUnits='byte * 2^60'/></DiskSection></Envelope>"), "2^64"),
        (format!("{env1}<DiskSection><Disk ovf:diskId='d' ovf:capacity='2' ovf:capacityAllocationUnits='percent'/></DiskSection></Envelope>"), "unknown unit"),
    ];
    for (doc, want) in cases {
        let e = parse_str(&doc).expect_err(&doc).to_string();
        assert!(e.contains(want), "{doc}\n=> {e}");
        assert!(
            e.starts_with("t.ova/t.ovf: corrupt image: OVF descriptor:"),
            "{e}"
        );
    }
    let e = parse(b"<?xml version='1.0'?>\xff\xfe", Path::new("x")).unwrap_err();
    assert!(e.to_string().contains("not UTF-8"), "{e}");
    // A UTF-8 byte-order mark is fine.
    let mut bom = b"\xef\xbb\xbf".to_vec();
    bom.extend_from_slice(format!("{env1}</Envelope>").as_bytes());
    let env = parse(&bom, Path::new("x")).unwrap();
    assert!(env.content.is_none() && env.warnings[0].contains("no VirtualSystem"));
}

#[test]
fn entity_expansion_and_deep_nesting_are_refused_fast() {
    let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">&lol9;</Envelope>"#;
    let start = std::time::Instant::now();
    let e = parse_str(bomb).unwrap_err().to_string();
    assert!(e.contains("DTD"), "{e}");
    // An external entity, which a DTD would be needed to declare.
    let ext = r#"<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">&x;</Envelope>"#;
    assert!(parse_str(ext).unwrap_err().to_string().contains("DTD"));
    // An undeclared entity is an XML error, not an expansion.
    let undeclared = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">&x;</Envelope>"#;
    assert!(parse_str(undeclared).is_err());
    let deep = format!(
        "<Envelope xmlns='http://schemas.dmtf.org/ovf/envelope/1'>{}{}</Envelope>",
        "<a>".repeat(1 << 20),
        "</a>".repeat(1 << 20)
    );
    let e = parse_str(&deep).unwrap_err();
    assert!(
        matches!(e, Error::Limit { what, .. } if what.contains("depth")),
        "{e}"
    );
    // Quadratic namespace copies: nested elements each declaring a namespace.
    let ns: String = (0..4000).map(|i| format!("<a xmlns:n{i}='u'>")).collect();
    let e = parse_str(&format!(
        "<Envelope xmlns='http://schemas.dmtf.org/ovf/envelope/1'>{ns}</Envelope>"
    ))
    .unwrap_err();
    assert!(matches!(e, Error::Limit { .. }), "{e}");
    // Many nodes in a flat document.
    let flat = format!(
        "<Envelope xmlns='http://schemas.dmtf.org/ovf/envelope/1'>{}</Envelope>",
        "<a/>".repeat(MAX_XML_NODES as usize)
    );
    let e = parse_str(&flat).unwrap_err();
    assert!(
        matches!(e, Error::Limit { what, .. } if what.contains("XML nodes")),
        "{e}"
    );
    let big = vec![b' '; MAX_DESCRIPTOR_BYTES as usize + 1];
    assert!(matches!(
        parse(&big, Path::new("x")),
        Err(Error::Limit { .. })
    ));
    assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
}
