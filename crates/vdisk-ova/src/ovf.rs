//! The OVF descriptor (DMTF DSP0243, OVF 1.x and 2.x): the Envelope's file references (7.1 "File
//! references") and, among clause 9's "Core metadata sections", DiskSection (and OVF 2's
//! SharedDiskSection), NetworkSection, DeploymentOptionSection and ProductSection properties (for
//! capacities given as `${property}`), and its content, a VirtualSystem or VirtualSystemCollection (see `ovf_system`).
//! Elements are matched in the Envelope's OVF namespace (`http://schemas.dmtf.org/ovf/envelope/1`
//! for OVF 1.0 and 1.1, `.../envelope/2` for 2.x); anything else (VMware's `vmw:`, VirtualBox's
//! `vbox:` extensions) is skipped. The text is bounded and pre-scanned (`xml_guard`) before it is
//! parsed, and parsed without DTDs, so entity expansion cannot happen.

use crate::limits::{MAX_DESCRIPTOR_BYTES, MAX_XML_NODES};
pub use crate::ovf_hardware::{
    Controller, ControllerKind, DiskDrive, DriveKind, HardwareItem, NetworkAdapter, VirtualHardware,
};
pub use crate::ovf_system::{
    Content, OperatingSystem, Product, VirtualSystem, VirtualSystemCollection,
};
use crate::units;
use roxmltree::{Document, Node, ParsingOptions};
use std::collections::HashMap;
use std::path::Path;
use vdisk_core::{Error, Result};

/// The OVF 1.0 and 1.1 envelope namespace.
pub const OVF1_NS: &str = "http://schemas.dmtf.org/ovf/envelope/1";
/// The OVF 2.0 and 2.1 envelope namespace.
pub const OVF2_NS: &str = "http://schemas.dmtf.org/ovf/envelope/2";

/// Which OVF schema the Envelope uses, by its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OvfVersion {
    /// OVF 1.0 or 1.1 ([`OVF1_NS`]).
    V1,
    /// OVF 2.0 or 2.1 ([`OVF2_NS`]).
    V2,
}

/// A parsed descriptor.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The schema, by namespace.
    pub version: OvfVersion,
    /// The Envelope's `ovf:version` attribute when present (`1.0`, `2.0`: the exporter's claim).
    pub version_attr: Option<String>,
    /// `References/File`, in order.
    pub files: Vec<FileReference>,
    /// `DiskSection/Disk` then `SharedDiskSection/SharedDisk`, in order.
    pub disks: Vec<VirtualDisk>,
    /// `NetworkSection/Network`.
    pub networks: Vec<Network>,
    /// `DeploymentOptionSection/Configuration` ids, and the one used for hardware items (the one
    /// marked `ovf:default="true"`, else the first).
    pub configurations: Vec<String>,
    /// The configuration hardware items are chosen for.
    pub default_configuration: Option<String>,
    /// The VirtualSystem or VirtualSystemCollection.
    pub content: Option<Content>,
    /// What was skipped or not understood, one sentence each.
    pub warnings: Vec<String>,
}

/// `References/File`: a file of the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReference {
    /// `ovf:id`, referred to by `ovf:fileRef`.
    pub id: String,
    /// `ovf:href`: a path relative to the descriptor, or a URL.
    pub href: String,
    /// `ovf:size` in bytes (of the compressed file when compressed, of the whole file when chunked).
    pub size: Option<u64>,
    /// `ovf:compression` other than `identity` (`gzip`, or `bzip2` in OVF 1.0's schema).
    pub compression: Option<String>,
    /// `ovf:chunkSize`: the file is split in files `href.000000000`, `href.000000001`, ...
    pub chunk_size: Option<u64>,
}

/// `DiskSection/Disk`: a virtual disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualDisk {
    /// `ovf:diskId`, referred to as `ovf:/disk/ID` by disk drives.
    pub disk_id: String,
    /// `ovf:fileRef`: the File holding its image (none: a blank disk, created on import).
    pub file_ref: Option<String>,
    /// Virtual size in bytes: `ovf:capacity` times `ovf:capacityAllocationUnits`.
    pub capacity: u64,
    /// `ovf:capacityAllocationUnits` as written (`byte * 2^30`); none means bytes.
    pub capacity_units: Option<String>,
    /// `ovf:populatedSize`: bytes of the disk in use, when the exporter says.
    pub populated_size: Option<u64>,
    /// `ovf:format`: a URI naming the image format.
    pub format: Option<String>,
    /// `ovf:parentRef`: the disk this one is a differencing disk of.
    pub parent_ref: Option<String>,
    /// From OVF 2's SharedDiskSection.
    pub shared: bool,
}

/// `NetworkSection/Network`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// `ovf:name`.
    pub name: String,
    /// Its `Description`.
    pub description: Option<String>,
}

/// Names resolved while parsing: the OVF namespace and the configuration in use.
pub(crate) struct Ctx<'a> {
    pub ns: &'a str,
    pub config: Option<String>,
    pub warnings: Vec<String>,
}

impl Ctx<'_> {
    /// The OVF-namespace element children of `node` named `name`.
    pub fn children<'a, 'i>(
        &self,
        node: Node<'a, 'i>,
        name: &'static str,
    ) -> impl Iterator<Item = Node<'a, 'i>> + use<'a, 'i, '_> {
        let ns = self.ns;
        node.children()
            .filter(move |c| c.is_element() && c.has_tag_name((ns, name)))
    }

    /// The first such child.
    pub fn child<'a, 'i>(&self, node: Node<'a, 'i>, name: &'static str) -> Option<Node<'a, 'i>> {
        self.children(node, name).next()
    }

    /// An `ovf:` attribute (or the same name without a namespace, which some writers use).
    pub fn attr<'a>(&self, node: Node<'a, '_>, name: &str) -> Option<&'a str> {
        node.attribute((self.ns, name))
            .or_else(|| node.attribute(name))
    }

    /// The trimmed text of the OVF-namespace child `name`.
    pub fn child_text(&self, node: Node<'_, '_>, name: &'static str) -> Option<String> {
        self.child(node, name).and_then(text)
    }
}

/// The trimmed text of an element, if not empty.
pub(crate) fn text(node: Node<'_, '_>) -> Option<String> {
    let t: String = node
        .children()
        .filter(|c| c.is_text())
        .filter_map(|c| c.text())
        .collect();
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// An unsigned decimal (xs:unsignedLong), spaces around allowed.
pub(crate) fn number(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    crate::tar_ext::decimal(s.as_bytes())
}

/// Parses a descriptor; `path` names it in errors (`appliance.ova/appliance.ovf`).
pub fn parse(bytes: &[u8], path: &Path) -> Result<Envelope> {
    let corrupt = |what: String| Error::corrupt(path, None, format!("OVF descriptor: {what}"));
    if bytes.len() as u64 > MAX_DESCRIPTOR_BYTES {
        return Err(Error::limit(
            path,
            "size of the OVF descriptor",
            bytes.len() as u64,
            MAX_DESCRIPTOR_BYTES,
        ));
    }
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        corrupt(format!(
            "not UTF-8 text (byte {}); OVF descriptors are UTF-8 XML",
            e.valid_up_to()
        ))
    })?;
    crate::xml_guard::check(bytes).map_err(|e| Error::limit(path, e.what, e.value, e.limit))?;
    let opts = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_XML_NODES,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, opts).map_err(|e| match e {
        roxmltree::Error::NodesLimitReached => Error::limit(
            path,
            "number of XML nodes",
            u64::from(MAX_XML_NODES) + 1,
            u64::from(MAX_XML_NODES),
        ),
        roxmltree::Error::DtdDetected => corrupt(
            "it has a DTD (<!DOCTYPE ...>), which OVF descriptors never use; refused so that no entity is expanded".into(),
        ),
        e => corrupt(format!("not well-formed XML: {e}")),
    })?;
    envelope(&doc).map_err(corrupt)
}

fn envelope(doc: &Document<'_>) -> std::result::Result<Envelope, String> {
    let root = doc.root_element();
    let ns = root.tag_name().namespace().unwrap_or("");
    let version = match ns {
        OVF1_NS => OvfVersion::V1,
        OVF2_NS => OvfVersion::V2,
        _ if root.tag_name().name() == "Envelope" => {
            return Err(format!(
                "the Envelope's namespace '{ns}' is not OVF 1.x ({OVF1_NS}) or 2.x ({OVF2_NS}); pre-standard OVF 0.9 packages are not read"
            ))
        }
        _ => {
            return Err(format!(
                "the root element is '{}', not an OVF Envelope",
                root.tag_name().name()
            ))
        }
    };
    if root.tag_name().name() != "Envelope" {
        return Err(format!(
            "the root element is '{}', not an OVF Envelope",
            root.tag_name().name()
        ));
    }
    let mut cx = Ctx {
        ns,
        config: None,
        warnings: Vec::new(),
    };
    let (configurations, default_configuration) = deployment_options(&cx, root);
    cx.config = default_configuration.clone();
    let files = references(&mut cx, root);
    let properties = properties(&cx, root);
    let mut disks = Vec::new();
    for (section, element, shared) in [
        ("DiskSection", "Disk", false),
        ("SharedDiskSection", "SharedDisk", true),
    ] {
        for s in cx.children(root, section) {
            for d in cx.children(s, element) {
                disks.push(disk(&cx, d, shared, &properties)?);
            }
        }
    }
    let networks = cx
        .children(root, "NetworkSection")
        .flat_map(|s| cx.children(s, "Network"))
        .filter_map(|n| {
            Some(Network {
                name: cx.attr(n, "name")?.to_string(),
                description: cx.child_text(n, "Description"),
            })
        })
        .collect();
    let content = root
        .children()
        .filter(|c| c.is_element() && c.tag_name().namespace() == Some(ns))
        .find(|c| {
            matches!(
                c.tag_name().name(),
                "VirtualSystem" | "VirtualSystemCollection"
            )
        })
        .map(|c| crate::ovf_system::content(&mut cx, c));
    if content.is_none() {
        cx.warnings
            .push("the Envelope has no VirtualSystem or VirtualSystemCollection".into());
    }
    Ok(Envelope {
        version,
        version_attr: cx.attr(root, "version").map(str::to_string),
        files,
        disks,
        networks,
        configurations,
        default_configuration,
        content,
        warnings: cx.warnings,
    })
}

fn deployment_options(cx: &Ctx<'_>, root: Node<'_, '_>) -> (Vec<String>, Option<String>) {
    let mut ids = Vec::new();
    let mut default = None;
    for c in cx
        .children(root, "DeploymentOptionSection")
        .flat_map(|s| cx.children(s, "Configuration"))
    {
        let Some(id) = cx.attr(c, "id") else { continue };
        if default.is_none() && cx.attr(c, "default").is_some_and(|d| d.trim() == "true") {
            default = Some(id.to_string());
        }
        ids.push(id.to_string());
    }
    let default = default.or_else(|| ids.first().cloned());
    (ids, default)
}

fn references(cx: &mut Ctx<'_>, root: Node<'_, '_>) -> Vec<FileReference> {
    let mut out = Vec::new();
    let files: Vec<Node<'_, '_>> = cx
        .children(root, "References")
        .flat_map(|r| cx.children(r, "File"))
        .collect();
    for f in files {
        let (Some(id), Some(href)) = (cx.attr(f, "id"), cx.attr(f, "href")) else {
            cx.warnings
                .push("a References/File without ovf:id or ovf:href was skipped".into());
            continue;
        };
        let mut num = |attr: &str| {
            let v = cx.attr(f, attr)?;
            let n = number(v);
            if n.is_none() {
                cx.warnings.push(format!(
                    "File '{id}': ovf:{attr}=\"{v}\" is not a number of bytes; ignored"
                ));
            }
            n
        };
        let size = num("size");
        let chunk_size = num("chunkSize").filter(|&c| c > 0);
        let compression = cx
            .attr(f, "compression")
            .map(str::trim)
            .filter(|c| !c.is_empty() && *c != "identity")
            .map(str::to_string);
        out.push(FileReference {
            id: id.to_string(),
            href: href.trim().to_string(),
            size,
            compression,
            chunk_size,
        });
    }
    out
}

/// ProductSection properties by their full name (`class.key.instance`, DSP0243's ProductSection), with their
/// default values, for `${name}` references.
fn properties(cx: &Ctx<'_>, root: Node<'_, '_>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for s in root
        .descendants()
        .filter(|n| n.is_element() && n.has_tag_name((cx.ns, "ProductSection")))
    {
        let class = cx.attr(s, "class").unwrap_or("");
        let instance = cx.attr(s, "instance").unwrap_or("");
        for p in cx.children(s, "Property") {
            let (Some(key), Some(value)) = (cx.attr(p, "key"), cx.attr(p, "value")) else {
                continue;
            };
            let mut name = String::new();
            if !class.is_empty() {
                name.push_str(class);
                name.push('.');
            }
            name.push_str(key);
            if !instance.is_empty() {
                name.push('.');
                name.push_str(instance);
            }
            out.insert(name, value.to_string());
        }
    }
    out
}

fn disk(
    cx: &Ctx<'_>,
    d: Node<'_, '_>,
    shared: bool,
    properties: &HashMap<String, String>,
) -> std::result::Result<VirtualDisk, String> {
    let disk_id = cx
        .attr(d, "diskId")
        .ok_or("a Disk has no ovf:diskId")?
        .to_string();
    let raw = cx
        .attr(d, "capacity")
        .ok_or_else(|| format!("Disk '{disk_id}' has no ovf:capacity"))?;
    let resolved = match raw.trim().strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        Some(name) => properties.get(name.trim()).map(String::as_str).ok_or_else(|| {
            format!("Disk '{disk_id}': ovf:capacity refers to property '{name}', which no ProductSection defines with a value")
        })?,
        None => raw,
    };
    let count = number(resolved).ok_or_else(|| {
        format!("Disk '{disk_id}': ovf:capacity=\"{resolved}\" is not a whole number")
    })?;
    let capacity_units = cx
        .attr(d, "capacityAllocationUnits")
        .map(|u| u.trim().to_string());
    let capacity = units::to_bytes(count, capacity_units.as_deref())
        .map_err(|e| format!("Disk '{disk_id}': capacity {e}"))?;
    let opt = |name: &str| {
        cx.attr(d, name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    Ok(VirtualDisk {
        populated_size: cx.attr(d, "populatedSize").and_then(number),
        file_ref: opt("fileRef"),
        format: opt("format"),
        parent_ref: opt("parentRef"),
        disk_id,
        capacity,
        capacity_units,
        shared,
    })
}

#[cfg(test)]
#[path = "ovf_tests.rs"]
mod tests;
