//! An OVF VirtualHardwareSection (DMTF DSP0243 clause 8, "Virtual hardware description"): items
//! (CIM_ResourceAllocationSettingData, and OVF 2's StorageItem and EthernetPortItem) read for CPUs
//! (ResourceType 3), memory (4, with AllocationUnits), controllers (5 IDE, 6 parallel SCSI, 7 FC,
//! 8 iSCSI, 9 InfiniBand, 20 other storage: SATA, NVMe), network adapters (10) and drives (14
//! floppy, 15 CD, 16 DVD, 17 disk, 31 logical disk) with the controller their `Parent` names. Items
//! of a deployment option other than the default one are left out (`ovf:configuration`, with
//! DeploymentOptionSection).

use crate::ovf::{number, text, Ctx};
use crate::units;
use roxmltree::Node;
use std::collections::HashMap;

/// A `VirtualHardwareSection`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtualHardware {
    /// `System/VirtualSystemType`, split at spaces (`vmx-13`, `virtualbox-2.2`).
    pub system_types: Vec<String>,
    /// Virtual CPUs (ResourceType 3, VirtualQuantity).
    pub cpus: Option<u64>,
    /// Memory in bytes (ResourceType 4, VirtualQuantity times AllocationUnits).
    pub memory_bytes: Option<u64>,
    /// Storage controllers.
    pub controllers: Vec<Controller>,
    /// Disk, CD, DVD and floppy drives.
    pub drives: Vec<DiskDrive>,
    /// Ethernet adapters (ResourceType 10).
    pub network_adapters: Vec<NetworkAdapter>,
    /// Every item of the default configuration, as written.
    pub items: Vec<HardwareItem>,
}

/// One hardware item (`Item`, `StorageItem`, `EthernetPortItem`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HardwareItem {
    pub instance_id: Option<String>,
    /// CIM ResourceType (see [`resource_type_name`]).
    pub resource_type: Option<u32>,
    pub resource_sub_type: Option<String>,
    pub element_name: Option<String>,
    pub description: Option<String>,
    /// InstanceID of the item this one is attached to (a drive's controller).
    pub parent: Option<String>,
    pub address: Option<String>,
    pub address_on_parent: Option<String>,
    pub host_resources: Vec<String>,
    pub connections: Vec<String>,
    pub virtual_quantity: Option<u64>,
    pub allocation_units: Option<String>,
    pub automatic_allocation: Option<bool>,
    /// `ovf:configuration`: the deployment options it belongs to (none: all).
    pub configuration: Option<String>,
}

/// The kind of a storage controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerKind {
    Ide,
    Scsi,
    Sata,
    Nvme,
    FibreChannel,
    Iscsi,
    InfiniBand,
    /// ResourceType 20 with a sub-type not recognised.
    Other,
}

impl ControllerKind {
    /// A short name for people.
    pub fn name(self) -> &'static str {
        match self {
            ControllerKind::Ide => "IDE",
            ControllerKind::Scsi => "SCSI",
            ControllerKind::Sata => "SATA",
            ControllerKind::Nvme => "NVMe",
            ControllerKind::FibreChannel => "Fibre Channel",
            ControllerKind::Iscsi => "iSCSI",
            ControllerKind::InfiniBand => "InfiniBand",
            ControllerKind::Other => "other storage",
        }
    }

    fn of(resource_type: u32, sub_type: Option<&str>) -> Option<ControllerKind> {
        let sub = sub_type.unwrap_or("").to_ascii_lowercase();
        Some(match resource_type {
            5 => ControllerKind::Ide,
            6 => ControllerKind::Scsi,
            7 => ControllerKind::FibreChannel,
            8 => ControllerKind::Iscsi,
            9 => ControllerKind::InfiniBand,
            // VirtualBox writes "AHCI", VMware "vmware.sata.ahci"; VMware's NVMe is
            // "vmware.nvme.controller".
            20 if sub.contains("ahci") || sub.contains("sata") => ControllerKind::Sata,
            20 if sub.contains("nvme") => ControllerKind::Nvme,
            20 => ControllerKind::Other,
            _ => return None,
        })
    }
}

/// A storage controller item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    pub instance_id: Option<String>,
    pub kind: ControllerKind,
    /// ResourceSubType: the model (`PIIX4`, `lsilogic`, `VirtualSCSI`, `AHCI`).
    pub sub_type: Option<String>,
    pub name: Option<String>,
    /// Address: the controller's bus number.
    pub address: Option<String>,
}

/// The kind of a drive item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveKind {
    /// ResourceType 17 (disk drive) or 31 (logical disk).
    Disk,
    /// 15.
    Cd,
    /// 16.
    Dvd,
    /// 14.
    Floppy,
}

/// A drive item and what it is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskDrive {
    pub instance_id: Option<String>,
    pub kind: DriveKind,
    pub name: Option<String>,
    /// The HostResource as written (`ovf:/disk/vmdisk1`).
    pub host_resource: Option<String>,
    /// The DiskSection disk it holds (`ovf:/disk/ID`).
    pub disk_id: Option<String>,
    /// The File it holds directly (`ovf:/file/ID`, e.g. an ISO image).
    pub file_id: Option<String>,
    /// The controller its `Parent` names, when that item is a controller.
    pub controller: Option<Controller>,
    /// AddressOnParent: the unit on the controller.
    pub address_on_parent: Option<String>,
}

/// An Ethernet adapter item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkAdapter {
    pub instance_id: Option<String>,
    pub name: Option<String>,
    /// ResourceSubType: the model (`E1000`, `PCNet32`, `VmxNet3`, `virtio`).
    pub sub_type: Option<String>,
    /// Connection: the NetworkSection network it is attached to.
    pub connection: Option<String>,
}

/// CIM_ResourceAllocationSettingData's name of a ResourceType, for people.
pub fn resource_type_name(t: u32) -> &'static str {
    const NAMES: [&str; 36] = [
        "DMTF reserved",
        "Other",
        "Computer system",
        "Processor",
        "Memory",
        "IDE controller",
        "Parallel SCSI HBA",
        "FC HBA",
        "iSCSI HBA",
        "IB HCA",
        "Ethernet adapter",
        "Other network adapter",
        "I/O slot",
        "I/O device",
        "Floppy drive",
        "CD drive",
        "DVD drive",
        "Disk drive",
        "Tape drive",
        "Storage extent",
        "Other storage device",
        "Serial port",
        "Parallel port",
        "USB controller",
        "Graphics controller",
        "IEEE 1394 controller",
        "Partitionable unit",
        "Base partitionable unit",
        "Power",
        "Cooling capacity",
        "Ethernet switch port",
        "Logical disk",
        "Storage volume",
        "Ethernet connection",
        "DMTF reserved",
        "Sound card",
    ];
    usize::try_from(t)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("vendor or reserved type")
}

/// Element children with local name `name` in any namespace (RASD, SASD, EPASD, VSSD and the
/// exporters' own all name the same properties).
fn any_children<'a, 'i>(
    node: Node<'a, 'i>,
    name: &'static str,
) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

pub(crate) fn any_child_text(node: Node<'_, '_>, name: &'static str) -> Option<String> {
    any_children(node, name).next().and_then(text)
}

fn item(cx: &Ctx<'_>, n: Node<'_, '_>) -> HardwareItem {
    let t = |name| any_child_text(n, name);
    let all = |name| any_children(n, name).filter_map(text).collect::<Vec<_>>();
    HardwareItem {
        instance_id: t("InstanceID"),
        resource_type: t("ResourceType")
            .and_then(|v| number(&v))
            .and_then(|v| u32::try_from(v).ok()),
        resource_sub_type: t("ResourceSubType"),
        element_name: t("ElementName").or_else(|| t("Caption")),
        description: t("Description"),
        parent: t("Parent"),
        address: t("Address"),
        address_on_parent: t("AddressOnParent"),
        host_resources: all("HostResource"),
        connections: all("Connection"),
        virtual_quantity: t("VirtualQuantity").and_then(|v| number(&v)),
        allocation_units: t("AllocationUnits"),
        automatic_allocation: t("AutomaticAllocation").map(|v| v == "true" || v == "1"),
        configuration: cx.attr(n, "configuration").map(str::to_string),
    }
}

pub(crate) fn hardware(cx: &mut Ctx<'_>, h: Node<'_, '_>, system: &str) -> VirtualHardware {
    let mut hw = VirtualHardware {
        system_types: cx
            .child(h, "System")
            .and_then(|s| any_child_text(s, "VirtualSystemType"))
            .map(|t| t.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        ..VirtualHardware::default()
    };
    for n in h.children().filter(|c| {
        c.is_element()
            && c.tag_name().namespace() == Some(cx.ns)
            && matches!(
                c.tag_name().name(),
                "Item" | "StorageItem" | "EthernetPortItem"
            )
    }) {
        let it = item(cx, n);
        let chosen = match (&it.configuration, &cx.config) {
            (Some(list), Some(cfg)) => list.split_whitespace().any(|c| c == cfg),
            _ => true,
        };
        if chosen {
            hw.items.push(it);
        }
    }
    for it in &hw.items {
        let Some(rt) = it.resource_type else { continue };
        match rt {
            3 if hw.cpus.is_none() => hw.cpus = it.virtual_quantity,
            4 if hw.memory_bytes.is_none() => {
                let Some(q) = it.virtual_quantity else {
                    continue;
                };
                match it.allocation_units.as_deref() {
                    Some(u) => match units::to_bytes(q, Some(u)) {
                        Ok(b) => hw.memory_bytes = Some(b),
                        Err(e) => cx
                            .warnings
                            .push(format!("VirtualSystem '{system}': memory {e}")),
                    },
                    None => cx.warnings.push(format!(
                        "VirtualSystem '{system}': memory item has no AllocationUnits; its size ({q}) is not shown"
                    )),
                }
            }
            10 => hw.network_adapters.push(NetworkAdapter {
                instance_id: it.instance_id.clone(),
                name: it.element_name.clone(),
                sub_type: it.resource_sub_type.clone(),
                connection: it.connections.first().cloned(),
            }),
            _ => {
                if let Some(c) = controller(it) {
                    hw.controllers.push(c);
                }
            }
        }
    }
    // Controllers by InstanceID, the first of each (a hash map: items may be many).
    let mut controllers: HashMap<&str, usize> = HashMap::new();
    for (i, c) in hw.controllers.iter().enumerate() {
        if let Some(id) = c.instance_id.as_deref() {
            controllers.entry(id).or_insert(i);
        }
    }
    let mut drives = Vec::new();
    for it in &hw.items {
        let kind = match it.resource_type {
            Some(17 | 31) => DriveKind::Disk,
            Some(15) => DriveKind::Cd,
            Some(16) => DriveKind::Dvd,
            Some(14) => DriveKind::Floppy,
            _ => continue,
        };
        let host_resource = it.host_resources.first().cloned();
        let target = |kind: &str| {
            host_resource.as_deref().and_then(|h| {
                let h = h.trim();
                let h = h.strip_prefix("ovf:").unwrap_or(h);
                h.strip_prefix(kind).map(|id| id.trim().to_string())
            })
        };
        let controller = it
            .parent
            .as_deref()
            .and_then(|p| controllers.get(p))
            .map(|&i| hw.controllers[i].clone());
        drives.push(DiskDrive {
            instance_id: it.instance_id.clone(),
            kind,
            name: it.element_name.clone(),
            disk_id: target("/disk/"),
            file_id: target("/file/"),
            host_resource,
            controller,
            address_on_parent: it.address_on_parent.clone(),
        });
    }
    hw.drives = drives;
    hw
}

fn controller(it: &HardwareItem) -> Option<Controller> {
    let kind = ControllerKind::of(it.resource_type?, it.resource_sub_type.as_deref())?;
    Some(Controller {
        instance_id: it.instance_id.clone(),
        kind,
        sub_type: it.resource_sub_type.clone(),
        name: it.element_name.clone(),
        address: it.address.clone(),
    })
}
