//! Short names for the disk format URIs of `ovf:format` (DMTF DSP0243 5.2 "Virtual disk formats":
//! the URI names a format specification, the spec lists none). The URIs are the ones exporters
//! write: VMware's VMDK specification page with the subformat as fragment (`...vmdk.html#
//! streamOptimized`), and others for VHD, qcow2, raw and ISO images. Matching is by the parts of the
//! URI that name the format, so variants (`http`/`https`, `/interfaces/` or not) are recognised.

/// A name for people (`vmdk streamOptimized`, `qcow2`, `raw`), or `None` for a URI not recognised.
pub fn short_name(uri: &str) -> Option<&'static str> {
    let u = uri.trim().to_ascii_lowercase();
    let (base, fragment) = match u.split_once('#') {
        Some((b, f)) => (b, f),
        None => (u.as_str(), ""),
    };
    if base.contains("vmdk") {
        return Some(match fragment {
            "streamoptimized" => "vmdk streamOptimized",
            "sparse" => "vmdk sparse",
            "compressed" => "vmdk compressed",
            "monolithicsparse" => "vmdk monolithicSparse",
            "monolithicflat" => "vmdk monolithicFlat",
            _ => "vmdk",
        });
    }
    if base.contains("qcow") {
        return Some("qcow2");
    }
    if base.contains("vhdx") {
        return Some("vhdx");
    }
    // Microsoft's VHD specification link (fwlink 137171), or a page named after VHD.
    if base.contains("137171") || base.contains("vhd") {
        return Some("vhd");
    }
    if base.contains("vdi") || base.contains("virtualbox") {
        return Some("vdi");
    }
    // ECMA-119 is the ISO 9660 CD image standard.
    if base.contains("ecma-119") || base.contains("iso9660") {
        return Some("iso");
    }
    if base.contains("wiki/byte") || base.ends_with("/raw") || fragment == "raw" {
        return Some("raw");
    }
    None
}
