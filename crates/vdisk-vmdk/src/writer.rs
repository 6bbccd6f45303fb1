//! Creating VMDK images (`qemu-img create -f vmdk` / `convert -O vmdk`): the options qemu accepts, the
//! descriptor qemu writes ("The Descriptor File"), and the subformats monolithicSparse,
//! monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat (2 GiB extents) and streamOptimized. Every
//! file is written under a temporary name; the descriptor file is renamed into place last.

use crate::descriptor::{Access, Descriptor, ExtentLine, ExtentType, NO_PARENT_CID};
use crate::limits::{MAX_EXTENTS, MAX_VIRTUAL_BYTES, SECTOR};
use crate::sparse_out::{SparseOut, ZeroMode, GRAIN_SECTORS};
use crate::stream_out::{StreamEncoder, StreamOut};
use std::path::Path;
use std::sync::Arc;
use vdisk_core::options::OptionSpec;
use vdisk_core::storage::{resolve_relative, HostFiles};
use vdisk_core::{
    ChunkEncoder, CreateOptions, Error, FileStorage, Format, ImageReader, ImageWriter, OutputFile,
    Payload, Result, Storage, WriterCaps,
};

/// The options `qemu-img create -f vmdk -o help` lists, in qemu's order.
pub const CREATE_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "adapter_type",
        kind: "str",
        help: "Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX",
    },
    OptionSpec { name: "backing_file", kind: "str", help: "File name of a base image" },
    OptionSpec { name: "backing_fmt", kind: "str", help: "Must be 'vmdk' if present" },
    OptionSpec { name: "compat6", kind: "bool (on/off)", help: "VMDK version 6 image" },
    OptionSpec { name: "hwversion", kind: "str", help: "VMDK hardware version" },
    OptionSpec { name: "size", kind: "size", help: "Virtual disk size" },
    OptionSpec {
        name: "subformat",
        kind: "str",
        help: "VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | twoGbMaxExtentSparse | twoGbMaxExtentFlat | streamOptimized} ",
    },
    OptionSpec { name: "toolsversion", kind: "str", help: "VMware guest tools version" },
    OptionSpec {
        name: "zeroed_grain",
        kind: "bool (on/off)",
        help: "Enable efficient zero writes using the zeroed-grain GTE feature",
    },
];

const SUBFORMATS: &[&str] = &[
    "monolithicSparse",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "streamOptimized",
];

/// Size of each extent of the twoGbMaxExtent subformats.
const SPLIT_BYTES: u64 = 2 << 30;

/// One output file of the image and the guest range it covers.
enum Part {
    Sparse(SparseOut),
    Stream(StreamOut),
    Flat {
        out: OutputFile,
        storage: FileStorage,
    },
}

struct PlacedPart {
    start: u64,
    len: u64,
    part: Part,
}

/// A VMDK being written.
struct VmdkWriter {
    parts: Vec<PlacedPart>,
    /// The separate descriptor file (flat and split subformats), written and renamed last.
    descriptor: Option<(OutputFile, String)>,
    caps: WriterCaps,
    stream: bool,
}

/// A random CID (qemu draws one at creation).
fn random_cid() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let v = h.finish();
    match (v ^ (v >> 32)) as u32 {
        NO_PARENT_CID | 0xffff_fffe => 0x1234_5678,
        c => c,
    }
}

/// The file name as the descriptor will quote it: it cannot hold a quote or a line break.
fn file_name(path: &Path) -> Result<String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::invalid(format!("'{}' is not a file name", path.display())))?;
    if name.contains(['"', '\n', '\r']) {
        return Err(Error::invalid(format!(
            "a VMDK descriptor cannot name the file '{name}'"
        )));
    }
    Ok(name)
}

/// `stem-<suffix>.ext` as qemu names extent files: the suffix goes before the last `.` of the name
/// (`disk.vmdk` -> `disk-s001.vmdk`, `bar` -> `bar-flat`).
fn extent_name(path: &Path, suffix: &str) -> Result<String> {
    let name = file_name(path)?;
    Ok(match name.rfind('.') {
        Some(dot) => format!("{}-{suffix}{}", &name[..dot], &name[dot..]),
        None => format!("{name}-{suffix}"),
    })
}

/// Creates a VMDK image of `size` bytes at `path` with qemu's `-o` options.
pub fn create(path: &Path, size: u64, opts: &CreateOptions) -> Result<Box<dyn ImageWriter>> {
    opts.ensure_known("vmdk", CREATE_OPTIONS)?;
    let sub = opts.get("subformat").unwrap_or("monolithicSparse");
    if !SUBFORMATS.contains(&sub) {
        // qemu-img's words (its QAPI enum parser).
        return Err(Error::invalid(format!("invalid parameter value: {sub}")));
    }
    let adapter = opts.get("adapter_type").unwrap_or("ide");
    if !["ide", "lsilogic", "buslogic", "legacyESX"].contains(&adapter) {
        return Err(Error::invalid(format!(
            "invalid parameter value: {adapter}"
        )));
    }
    let compat6 = opts.get_bool("compat6", false)?;
    if compat6 && opts.get("hwversion").is_some() {
        return Err(Error::invalid(
            "compat6 cannot be enabled with hwversion set",
        ));
    }
    let hw = opts
        .get("hwversion")
        .unwrap_or(if compat6 { "6" } else { "4" });
    let tools = opts.get("toolsversion").unwrap_or("2147483647");
    let zeroed_grain = opts.get_bool("zeroed_grain", false)?;
    if let Some(b) = opts.get("backing_file") {
        if b.contains(['"', '\n', '\r']) {
            return Err(Error::invalid(format!(
                "a VMDK descriptor cannot name the backing file '{b}'"
            )));
        }
    }
    if let Some(f) = opts.get("backing_fmt") {
        if f != "vmdk" {
            return Err(Error::invalid("backing_file must be a vmdk image"));
        }
    }
    let flat = sub.ends_with("Flat");
    if flat && zeroed_grain {
        return Err(Error::invalid("Flat image can't enable zeroed grain"));
    }
    let backing = opts.get("backing_file");
    let mut size = size;
    let mut parent_cid = NO_PARENT_CID;
    if let Some(b) = backing {
        if flat {
            return Err(Error::invalid("Flat image can't have backing file"));
        }
        // As QEMU's vmdk_co_do_create: the backing file is probed, and must be a VMDK image.
        let storage = Arc::new(FileStorage::open(&resolve_relative(path, b))?);
        let probed = vdisk_core::probe_format(storage.as_ref())?;
        if probed != Format::Vmdk {
            return Err(Error::invalid(format!(
                "Invalid backing file format: {}. Must be vmdk",
                probed.name()
            )));
        }
        let parent = crate::open(storage, Arc::new(HostFiles)).map_err(|e| {
            Error::invalid(format!("Could not open backing file '{b}' as vmdk: {e}"))
        })?;
        parent_cid = parent.cid();
        if size == 0 {
            size = parent.virtual_size();
        }
    }
    let size = size
        .checked_next_multiple_of(SECTOR)
        .ok_or_else(|| Error::invalid("Image size must be less than 8 EiB!"))?;
    if size > MAX_VIRTUAL_BYTES {
        return Err(Error::invalid("Image size must be less than 8 EiB!"));
    }
    if sub.starts_with("twoGb") && size.div_ceil(SPLIT_BYTES) > MAX_EXTENTS as u64 {
        return Err(Error::invalid(format!(
            "a {sub} image of {size} bytes would need more than {MAX_EXTENTS} extent files"
        )));
    }
    let sectors = size / SECTOR;
    let heads: u64 = if adapter == "ide" { 16 } else { 255 };
    let mut desc = Descriptor {
        version: 1,
        cid: random_cid(),
        parent_cid,
        create_type: Some(sub.to_string()),
        parent_hint: backing.map(str::to_string),
        extents: Vec::new(),
        ddb: vec![
            ("virtualHWVersion".into(), hw.to_string()),
            (
                "geometry.cylinders".into(),
                (sectors / (heads * 63)).to_string(),
            ),
            ("geometry.heads".into(), heads.to_string()),
            ("geometry.sectors".into(), "63".into()),
            ("adapterType".into(), adapter.to_string()),
            ("toolsVersion".into(), tools.to_string()),
        ],
    };
    // With zeroed_grain=on zero runs become zeroed-grain entries (and the header says so, version 2);
    // otherwise they are left unallocated, or written out when a backing file must be hidden.
    let zero = match (backing.is_some(), zeroed_grain) {
        (_, true) => ZeroMode::ZeroGrain,
        (false, false) => ZeroMode::Skip,
        (true, false) => ZeroMode::WriteZeros,
    };
    let line = |sectors: u64, kind: ExtentType, file: String| ExtentLine {
        access: Access::ReadWrite,
        sectors,
        kind,
        file: Some(file.into()),
        offset: 0,
    };
    let granularity = if flat { SECTOR } else { GRAIN_SECTORS * SECTOR };
    let caps = WriterCaps {
        granularity,
        out_of_order: sub != "streamOptimized",
        zero_initialized: backing.is_none(),
        copy_range: false,
    };
    let mut parts = Vec::new();
    let mut descriptor = None;
    match sub {
        "monolithicSparse" | "streamOptimized" => {
            desc.extents
                .push(line(sectors, ExtentType::Sparse, file_name(path)?));
            let out = OutputFile::create(path)?;
            let part = if sub == "streamOptimized" {
                Part::Stream(StreamOut::new(
                    out,
                    sectors,
                    desc.render(),
                    backing.is_some(),
                )?)
            } else {
                Part::Sparse(SparseOut::new(out, sectors, Some(desc.render()), zero)?)
            };
            parts.push(PlacedPart {
                start: 0,
                len: size,
                part,
            });
        }
        _ => {
            let split = sub.starts_with("twoGb");
            let step = if split { SPLIT_BYTES } else { size.max(1) };
            let mut start = 0u64;
            let mut n = 1;
            while start < size || (size == 0 && n == 1) {
                let len = step.min(size - start);
                let name = match (flat, split) {
                    (true, false) => extent_name(path, "flat")?,
                    (true, true) => extent_name(path, &format!("f{n:03}"))?,
                    _ => extent_name(path, &format!("s{n:03}"))?,
                };
                let out = OutputFile::create(&path.with_file_name(&name))?;
                let part = if flat {
                    let storage = out.storage();
                    storage.set_len(len)?;
                    desc.extents
                        .push(line(len / SECTOR, ExtentType::Flat, name));
                    Part::Flat { out, storage }
                } else {
                    desc.extents
                        .push(line(len / SECTOR, ExtentType::Sparse, name));
                    Part::Sparse(SparseOut::new(out, len / SECTOR, None, zero)?)
                };
                parts.push(PlacedPart { start, len, part });
                start += len;
                n += 1;
                if size == 0 {
                    break;
                }
            }
            descriptor = Some((OutputFile::create(path)?, desc.render()));
        }
    }
    Ok(Box::new(VmdkWriter {
        parts,
        descriptor,
        caps,
        stream: sub == "streamOptimized",
    }))
}

impl ImageWriter for VmdkWriter {
    fn caps(&self) -> WriterCaps {
        self.caps
    }

    fn encoder(&self) -> Option<Arc<dyn ChunkEncoder>> {
        if self.stream {
            Some(Arc::new(StreamEncoder))
        } else {
            None
        }
    }

    fn write(&mut self, offset: u64, payload: Payload) -> Result<()> {
        let end = offset
            .checked_add(payload.len())
            .filter(|e| *e <= self.parts.last().map_or(0, |p| p.start + p.len))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "write of {} bytes at {offset} is past the end of the disk",
                    payload.len()
                ))
            })?;
        let i = self
            .parts
            .partition_point(|p| p.start <= offset)
            .saturating_sub(1);
        let Some(p) = self.parts.get_mut(i) else {
            return Err(Error::invalid("write outside the disk"));
        };
        if end > p.start + p.len {
            // Split across extents (plain payloads only; the split points are grain aligned).
            let cut = p.start + p.len - offset;
            let (a, b) = match payload {
                Payload::Data(mut d) => {
                    let tail = d.split_off(cut as usize);
                    (Payload::data(d), Payload::data(tail))
                }
                Payload::Zero(n) => (Payload::Zero(cut), Payload::Zero(n - cut)),
                Payload::Encoded(_) | Payload::Copy(_) => {
                    return Err(Error::invalid(
                        "encoded or copied chunk crosses an extent boundary",
                    ))
                }
            };
            self.write(offset, a)?;
            return self.write(offset + cut, b);
        }
        let local = offset - p.start;
        match &mut p.part {
            Part::Sparse(s) => s.write(local, payload),
            Part::Stream(s) => s.write(local, payload),
            Part::Flat { storage, .. } => match payload {
                Payload::Data(d) => storage.write_at(&d, local),
                Payload::Zero(_) => Ok(()),
                Payload::Encoded(_) | Payload::Copy(_) => Err(Error::invalid(
                    "flat VMDK extents take no encoded or copied chunks",
                )),
            },
        }
    }

    fn finish(self: Box<Self>) -> Result<()> {
        for p in self.parts {
            match p.part {
                Part::Sparse(s) => s.finish()?,
                Part::Stream(s) => s.finish()?,
                Part::Flat { out, .. } => out.commit()?,
            }
        }
        if let Some((out, text)) = self.descriptor {
            out.storage().write_at(text.as_bytes(), 0)?;
            out.commit()?;
        }
        Ok(())
    }
}
