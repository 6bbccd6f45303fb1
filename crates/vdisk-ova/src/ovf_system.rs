//! An OVF descriptor's content (DMTF DSP0243 7.2 "Content element"): VirtualSystem and
//! VirtualSystemCollection, and of clause 9's "Core metadata sections" their OperatingSystemSection,
//! ProductSection, AnnotationSection and EulaSection; their VirtualHardwareSections are read by
//! `ovf_hardware`.

use crate::ovf::{number, Ctx};
use crate::ovf_hardware::{any_child_text, hardware, VirtualHardware};
use roxmltree::Node;

/// The content of an Envelope.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// One virtual machine.
    System(VirtualSystem),
    /// Several, possibly nested.
    Collection(VirtualSystemCollection),
}

impl Content {
    /// Every VirtualSystem, depth first.
    pub fn systems(&self) -> Vec<&VirtualSystem> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(c) = stack.pop() {
            match c {
                Content::System(s) => out.push(s),
                Content::Collection(col) => stack.extend(col.content.iter().rev()),
            }
        }
        out
    }
}

/// `VirtualSystemCollection`.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualSystemCollection {
    /// `ovf:id`.
    pub id: String,
    /// `Name`.
    pub name: Option<String>,
    /// `Info`.
    pub info: Option<String>,
    /// Its first ProductSection.
    pub product: Option<Product>,
    /// The systems and collections it holds.
    pub content: Vec<Content>,
}

/// `VirtualSystem`: one virtual machine.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualSystem {
    /// `ovf:id`.
    pub id: String,
    /// `Name`.
    pub name: Option<String>,
    /// `Info`.
    pub info: Option<String>,
    /// `OperatingSystemSection`.
    pub operating_system: Option<OperatingSystem>,
    /// Its first ProductSection.
    pub product: Option<Product>,
    /// `AnnotationSection/Annotation`.
    pub annotation: Option<String>,
    /// Whether it has a EulaSection (a licence to accept on import).
    pub has_eula: bool,
    /// Each `VirtualHardwareSection` (usually one).
    pub hardware: Vec<VirtualHardware>,
}

/// `OperatingSystemSection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatingSystem {
    /// `ovf:id`: the CIM_OperatingSystem OsType number (e.g. 94 for 64-bit Ubuntu).
    pub id: Option<u32>,
    /// `ovf:version`.
    pub version: Option<String>,
    /// `Description`.
    pub description: Option<String>,
    /// The exporter's own guest type: VMware's `vmw:osType` attribute (`ubuntu64Guest`) or
    /// VirtualBox's `vbox:OSType` element (`Ubuntu_64`).
    pub os_type: Option<String>,
}

/// `ProductSection`'s description of the appliance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Product {
    pub product: Option<String>,
    pub vendor: Option<String>,
    pub version: Option<String>,
    pub full_version: Option<String>,
    pub product_url: Option<String>,
    pub vendor_url: Option<String>,
}

pub(crate) fn content(cx: &mut Ctx<'_>, node: Node<'_, '_>) -> Content {
    let id = cx.attr(node, "id").unwrap_or("").to_string();
    let name = cx.child_text(node, "Name");
    let info = cx.child_text(node, "Info");
    let product = cx.child(node, "ProductSection").map(|p| product(cx, p));
    if node.tag_name().name() == "VirtualSystemCollection" {
        let kids: Vec<Node<'_, '_>> = node
            .children()
            .filter(|c| {
                c.is_element()
                    && c.tag_name().namespace() == Some(cx.ns)
                    && matches!(
                        c.tag_name().name(),
                        "VirtualSystem" | "VirtualSystemCollection"
                    )
            })
            .collect();
        // Recursion is bounded by the nesting depth xml_guard allows.
        let content = kids.into_iter().map(|k| content(cx, k)).collect();
        return Content::Collection(VirtualSystemCollection {
            id,
            name,
            info,
            product,
            content,
        });
    }
    let operating_system = cx.child(node, "OperatingSystemSection").map(|os| {
        let os_type = os
            .attributes()
            .find(|a| a.name() == "osType")
            .map(|a| a.value().trim().to_string())
            .or_else(|| any_child_text(os, "OSType"));
        OperatingSystem {
            id: cx
                .attr(os, "id")
                .and_then(number)
                .and_then(|n| u32::try_from(n).ok()),
            version: cx.attr(os, "version").map(str::to_string),
            description: cx.child_text(os, "Description"),
            os_type,
        }
    });
    let annotation = cx
        .child(node, "AnnotationSection")
        .and_then(|a| cx.child_text(a, "Annotation"));
    let has_eula = cx.child(node, "EulaSection").is_some();
    let sections: Vec<Node<'_, '_>> = cx.children(node, "VirtualHardwareSection").collect();
    let hardware = sections.into_iter().map(|h| hardware(cx, h, &id)).collect();
    Content::System(VirtualSystem {
        id,
        name,
        info,
        operating_system,
        product,
        annotation,
        has_eula,
        hardware,
    })
}

fn product(cx: &Ctx<'_>, p: Node<'_, '_>) -> Product {
    let t = |name| cx.child_text(p, name);
    Product {
        product: t("Product"),
        vendor: t("Vendor"),
        version: t("Version"),
        full_version: t("FullVersion"),
        product_url: t("ProductUrl"),
        vendor_url: t("VendorUrl"),
    }
}
