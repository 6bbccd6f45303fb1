//! OVF descriptors in the styles of the exporters learners meet, written for these tests: VirtualBox
//! 7's OVF 1.0 and 2.0 exports (default namespace, `vbox:` extensions, `/disk/ID` host resources,
//! `MegaBytes`) and VMware ovftool's OVF 1.x exports (`vmw:` extensions, `byte * 2^30` capacities,
//! sizes and populated sizes, `ovf:/disk/ID`).
#![allow(dead_code)]

/// One disk of a sample descriptor.
#[derive(Clone, Debug)]
pub struct DiskSpec {
    pub disk_id: String,
    pub file_id: String,
    pub href: String,
    /// In GiB for the VMware style (`byte * 2^30`), in bytes otherwise.
    pub capacity: u64,
    pub format: String,
    pub size: Option<u64>,
}

pub const VMDK_STREAM: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
pub const QCOW2_URI: &str = "http://www.gnome.org/~markmc/qcow-image-format.html";

pub fn disk(n: usize, href: &str, capacity: u64, format: &str, size: Option<u64>) -> DiskSpec {
    DiskSpec {
        disk_id: format!("vmdisk{n}"),
        file_id: format!("file{n}"),
        href: href.to_string(),
        capacity,
        format: format.to_string(),
        size,
    }
}

fn size_attr(size: Option<u64>) -> String {
    size.map(|s| format!(" ovf:size=\"{s}\""))
        .unwrap_or_default()
}

/// VirtualBox 7, "Open Virtualization Format 1.0".
pub fn virtualbox_ovf1(disks: &[DiskSpec]) -> String {
    let files: String = disks
        .iter()
        .map(|d| {
            format!(
                "    <File ovf:id=\"{}\" ovf:href=\"{}\"{}/>\n",
                d.file_id,
                d.href,
                size_attr(d.size)
            )
        })
        .collect();
    let disk_lines: String = disks
        .iter()
        .map(|d| {
            format!(
                "    <Disk ovf:capacity=\"{}\" ovf:diskId=\"{}\" ovf:fileRef=\"{}\" ovf:format=\"{}\" vbox:uuid=\"6f1c2f7e-0000-4000-8000-00000000000{}\"/>\n",
                d.capacity, d.disk_id, d.file_id, d.format, d.disk_id.len()
            )
        })
        .collect();
    let drive_items: String = disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            format!(
                "      <Item>\n        <rasd:AddressOnParent>{i}</rasd:AddressOnParent>\n        <rasd:Caption>disk{i}</rasd:Caption>\n        <rasd:Description>Disk Image</rasd:Description>\n        <rasd:ElementName>disk{i}</rasd:ElementName>\n        <rasd:HostResource>/disk/{}</rasd:HostResource>\n        <rasd:InstanceID>{}</rasd:InstanceID>\n        <rasd:Parent>5</rasd:Parent>\n        <rasd:ResourceType>17</rasd:ResourceType>\n      </Item>\n",
                d.disk_id,
                10 + i
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:vbox="http://www.virtualbox.org/ovf/machine">
  <References>
{files}  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
{disk_lines}  </DiskSection>
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT">
      <Description>Logical network used by this appliance.</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="lab-web01">
    <Info>A virtual machine</Info>
    <ProductSection>
      <Info>Meta-information about the installed software</Info>
      <Product>Lab web server</Product>
      <Vendor>LPI lab</Vendor>
      <Version>1.2</Version>
    </ProductSection>
    <OperatingSystemSection ovf:id="94">
      <Info>The kind of installed guest operating system</Info>
      <Description>Ubuntu_64</Description>
      <vbox:OSType ovf:required="false">Ubuntu_64</vbox:OSType>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>lab-web01</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:Caption>2 virtual CPU</rasd:Caption>
        <rasd:Description>Number of virtual CPUs</rasd:Description>
        <rasd:ElementName>2 virtual CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:Caption>2048 MB of memory</rasd:Caption>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>2048 MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Caption>ideController0</rasd:Caption>
        <rasd:Description>IDE Controller</rasd:Description>
        <rasd:ElementName>ideController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>PIIX4</rasd:ResourceSubType>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Caption>sataController0</rasd:Caption>
        <rasd:Description>SATA Controller</rasd:Description>
        <rasd:ElementName>sataController0</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>AHCI</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </Item>
{drive_items}      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Caption>cdrom1</rasd:Caption>
        <rasd:Description>CD-ROM Drive</rasd:Description>
        <rasd:ElementName>cdrom1</rasd:ElementName>
        <rasd:InstanceID>8</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>15</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Caption>Ethernet adapter on 'NAT'</rasd:Caption>
        <rasd:Connection>NAT</rasd:Connection>
        <rasd:ElementName>Ethernet adapter on 'NAT'</rasd:ElementName>
        <rasd:InstanceID>9</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
    <vbox:Machine ovf:required="false" version="1.19-linux" uuid="{{d0e1c7a4-0000-4000-8000-000000000001}}" name="lab-web01">
      <ovf:Info>Complete VirtualBox machine configuration in VirtualBox format</ovf:Info>
      <Hardware>
        <CPU count="2"/>
        <Memory RAMSize="2048"/>
      </Hardware>
    </vbox:Machine>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// VMware ovftool 4.x, OVF 1.x namespace with `vmw:` extensions; capacities in GiB.
pub fn vmware_ovf(disks: &[DiskSpec]) -> String {
    let files: String = disks
        .iter()
        .map(|d| {
            format!(
                "    <File ovf:href=\"{}\" ovf:id=\"{}\"{}/>\n",
                d.href,
                d.file_id,
                size_attr(d.size)
            )
        })
        .collect();
    let disk_lines: String = disks
        .iter()
        .map(|d| {
            format!(
                "    <Disk ovf:capacity=\"{}\" ovf:capacityAllocationUnits=\"byte * 2^30\" ovf:diskId=\"{}\" ovf:fileRef=\"{}\" ovf:format=\"{}\" ovf:populatedSize=\"65536\"/>\n",
                d.capacity, d.disk_id, d.file_id, d.format
            )
        })
        .collect();
    let drive_items: String = disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            format!(
                "      <Item>\n        <rasd:AddressOnParent>{i}</rasd:AddressOnParent>\n        <rasd:ElementName>Hard disk {}</rasd:ElementName>\n        <rasd:HostResource>ovf:/disk/{}</rasd:HostResource>\n        <rasd:InstanceID>{}</rasd:InstanceID>\n        <rasd:Parent>3</rasd:Parent>\n        <rasd:ResourceType>17</rasd:ResourceType>\n        <vmw:Config ovf:required=\"false\" vmw:key=\"backing.writeThrough\" vmw:value=\"false\"/>\n      </Item>\n",
                i + 1,
                d.disk_id,
                20 + i
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!--Generated by VMware ovftool 4.6.0 (build-21452615), UTC time: 2024-05-02T10:11:12.123456Z-->
<Envelope vmw:buildId="build-21452615" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
{files}  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
{disk_lines}  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The VM Network network</Description>
    </Network>
  </NetworkSection>
  <DeploymentOptionSection>
    <Info>Deployment options</Info>
    <Configuration ovf:id="small">
      <Label>Small</Label>
      <Description>2 vCPUs</Description>
    </Configuration>
    <Configuration ovf:default="true" ovf:id="large">
      <Label>Large</Label>
      <Description>8 vCPUs</Description>
    </Configuration>
  </DeploymentOptionSection>
  <VirtualSystem ovf:id="lab-db01">
    <Info>A virtual machine</Info>
    <Name>lab-db01</Name>
    <OperatingSystemSection ovf:id="101" vmw:osType="otherLinux64Guest">
      <Info>The kind of installed guest operating system</Info>
      <Description>Other Linux (64-bit)</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>lab-db01</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-13 vmx-14</vssd:VirtualSystemType>
      </System>
      <Item ovf:configuration="small">
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item ovf:configuration="large">
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>8 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>8</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>4096MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>4096</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
        <vmw:Config ovf:required="false" vmw:key="slotInfo.pciSlotNumber" vmw:value="160"/>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SATA Controller</rasd:Description>
        <rasd:ElementName>SATA Controller 0</rasd:ElementName>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:ResourceSubType>vmware.sata.ahci</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </Item>
{drive_items}      <Item ovf:required="false">
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:ElementName>CD/DVD drive 1</rasd:ElementName>
        <rasd:InstanceID>30</rasd:InstanceID>
        <rasd:Parent>4</rasd:Parent>
        <rasd:ResourceSubType>vmware.cdrom.atapi</rasd:ResourceSubType>
        <rasd:ResourceType>15</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:Description>VmxNet3 ethernet adapter on "VM Network"</rasd:Description>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>31</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
        <vmw:Config ovf:required="false" vmw:key="wakeOnLanEnabled" vmw:value="true"/>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
      <vmw:ExtraConfig ovf:required="false" vmw:key="nvram" vmw:value="lab-db01.nvram"/>
    </VirtualHardwareSection>
    <AnnotationSection ovf:required="false">
      <Info>A human-readable annotation</Info>
      <Annotation>Database server for the LPIC-3 lab</Annotation>
    </AnnotationSection>
    <EulaSection>
      <Info>An end-user license agreement</Info>
      <License>Use it to learn.</License>
    </EulaSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// VirtualBox 7, "Open Virtualization Format 2.0" (OVF 2 namespace, byte units for memory).
pub fn virtualbox_ovf2(disks: &[DiskSpec]) -> String {
    virtualbox_ovf1(disks)
        .replace(
            "<Envelope ovf:version=\"1.0\"",
            "<Envelope ovf:version=\"2.0\"",
        )
        .replace(
            "http://schemas.dmtf.org/ovf/envelope/1",
            "http://schemas.dmtf.org/ovf/envelope/2",
        )
        .replace(
            "<rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>",
            "<rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>",
        )
}
