//! OVA packages (DMTF DSP0243: a tar archive of an OVF descriptor, its manifest and its disks) read
//! as the disk they hold, in place: the package is indexed and its descriptor parsed by
//! `vdisk-ova`, the disk's member is probed and opened by its format's reader (a VMDK descriptor
//! member finds its extents among the other members), and [`OvaReader`] presents it with the
//! package's description for `info` and the manifest's digests for `check`. qemu-img has no OVA
//! driver: it reads the tar file as raw. Host offsets in block status are the disk's bytes in the
//! archive, where qemu-img's raw driver with an `offset` option would report them.

use crate::registry::open_layer_with;
use serde_json::{json, Map, Value};
use std::path::Path;
use std::sync::Arc;
use vdisk_core::probe::probe_format;
use vdisk_core::{
    CheckReport, ChildFile, Error, Extent, Format, ImageInfo, ImageReader, Result, Storage,
};
use vdisk_ova::{DiskData, Location, Package};

/// The disk of an OVA package, read in place.
pub struct OvaReader {
    package: Arc<Package>,
    /// The disk read (index into the package's disks).
    index: usize,
    /// Whether that disk was chosen ([`choose_disk`]): a package of several disks is then read.
    chosen: bool,
    /// Its reader, as its format opens it from the archive.
    inner: Arc<dyn ImageReader>,
    /// Its format.
    format: Format,
    /// Where the disk's single member starts in the archive, to translate host offsets (`None`
    /// for a chunked file, whose bytes are not contiguous).
    member_start: Option<(Arc<Path>, u64, u64)>,
}

/// Opens the package in `storage` and the disk it holds (`for_check` opens the disk as `check`
/// does). A package of several disks opens the disk chosen by [`choose_disk`]; without a choice it
/// opens its first for `info`, and reading data from it is refused (see
/// [`OvaReader::ready_for_io`]).
pub fn open(storage: Arc<dyn Storage>, for_check: bool) -> Result<Arc<dyn ImageReader>> {
    let archive_path: Arc<Path> = Arc::from(storage.path());
    let package = Arc::new(Package::open(storage)?);
    let chosen = chosen_disk(&archive_path)
        .map(|want| {
            package
                .disks()
                .iter()
                .position(|d| d.href.as_deref() == Some(want.as_str()) || d.disk_id == want)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "{}: the package has no disk '{want}' (its disks: {})",
                        archive_path.display(),
                        disk_names(&package).join(", ")
                    ))
                })
        })
        .transpose()?;
    let index = chosen
        .or_else(|| {
            package
                .disks()
                .iter()
                .position(|d| matches!(d.data, DiskData::Stored { .. }))
        })
        .or(if package.disks().is_empty() {
            None
        } else {
            Some(0)
        })
        .ok_or_else(|| {
            Error::invalid(format!(
                "{}: the package's descriptor lists no disk",
                archive_path.display()
            ))
        })?;
    let disk = package.disk_storage(index)?;
    let format = match probe_format(disk.as_ref())? {
        Format::Ova => Format::Raw,
        f => f,
    };
    let inner = open_layer_with(format, disk, package.opener(), for_check)?;
    let member_start = match &package.disks()[index].data {
        DiskData::Stored { pieces, .. } => match pieces.as_slice() {
            [Location::Member { offset, size, .. }] => Some((archive_path, *offset, *size)),
            _ => None,
        },
        _ => None,
    };
    Ok(Arc::new(OvaReader {
        package,
        index,
        chosen: chosen.is_some(),
        inner,
        format,
        member_start,
    }))
}

/// The disks chosen by archive path (`--image-opts driver=ova,file.filename=P,disk=NAME`).
static CHOSEN: std::sync::Mutex<Vec<(std::path::PathBuf, String)>> =
    std::sync::Mutex::new(Vec::new());

/// Makes [`open`] read the disk `disk` (its file name in the archive, or its OVF disk ID) of the
/// package at `archive` (the path as it will be opened), instead of refusing a package of several
/// disks.
pub fn choose_disk(archive: &Path, disk: &str) {
    let mut c = CHOSEN.lock().unwrap_or_else(|p| p.into_inner());
    c.retain(|(p, _)| p != archive);
    c.push((archive.to_path_buf(), disk.to_string()));
}

fn chosen_disk(archive: &Path) -> Option<String> {
    let c = CHOSEN.lock().unwrap_or_else(|p| p.into_inner());
    c.iter().find(|(p, _)| p == archive).map(|(_, d)| d.clone())
}

/// Each disk by its file name in the archive, or its disk ID when it names no file.
fn disk_names(p: &Package) -> Vec<String> {
    p.disks()
        .iter()
        .map(|d| d.href.clone().unwrap_or_else(|| d.disk_id.clone()))
        .collect()
}

impl OvaReader {
    /// The package.
    pub fn package(&self) -> &Package {
        &self.package
    }

    /// The error for reading data from a package of several disks.
    fn several_disks(&self) -> Option<Error> {
        let disks = self.package.disks();
        if disks.len() < 2 || self.chosen {
            return None;
        }
        let names = disk_names(&self.package);
        let path = self.package.path().display();
        Some(Error::invalid(format!(
            "{path} holds {} disks ({}); choose one with --image-opts \
             driver=ova,file.filename={path},disk={}, or extract it (tar -xf {path} {}) and read \
             that file",
            disks.len(),
            names.join(", "),
            names[0],
            names[0]
        )))
    }

    /// An extent of the disk with its host location moved into the archive.
    fn in_archive(&self, mut e: Extent) -> Extent {
        if let Some(h) = e.host.as_mut() {
            match &self.member_start {
                Some((archive, start, size)) if h.offset < *size => {
                    h.file = archive.clone();
                    h.offset += start;
                }
                _ => e.host = None,
            }
        }
        e
    }

    fn description(&self) -> Value {
        let p = &self.package;
        let env = p.envelope();
        let mut m = Map::new();
        m.insert("descriptor".into(), p.descriptor().name.clone().into());
        let version = env.version_attr.clone().unwrap_or_else(|| {
            match env.version {
                vdisk_ova::ovf::OvfVersion::V1 => "1.x",
                vdisk_ova::ovf::OvfVersion::V2 => "2.x",
            }
            .into()
        });
        m.insert("ovf-version".into(), version.into());
        if let Some(mf) = p.manifest() {
            let what = match &mf.manifest {
                Ok(man) => {
                    let mut algs: Vec<&str> =
                        man.entries.iter().map(|e| e.algorithm.name()).collect();
                    algs.dedup();
                    format!(
                        "{} ({} digests, {})",
                        mf.file.name,
                        man.entries.len(),
                        algs.join("/")
                    )
                }
                Err(why) => format!("{} (unreadable: {why})", mf.file.name),
            };
            m.insert("manifest".into(), what.into());
        }
        if let Some(c) = p.certificate() {
            m.insert("certificate".into(), c.name.clone().into());
        }
        let systems: Vec<Value> = env
            .content
            .as_ref()
            .map(|c| c.systems())
            .unwrap_or_default()
            .into_iter()
            .map(|s| {
                let mut v = Map::new();
                v.insert(
                    "name".into(),
                    s.name.clone().unwrap_or_else(|| s.id.clone()).into(),
                );
                if let Some(os) = &s.operating_system {
                    let name = os
                        .description
                        .clone()
                        .or_else(|| os.os_type.clone())
                        .unwrap_or_else(|| format!("OsType {}", os.id.unwrap_or(0)));
                    v.insert("operating-system".into(), name.into());
                }
                if let Some(hw) = s.hardware.first() {
                    if let Some(c) = hw.cpus {
                        v.insert("cpus".into(), c.into());
                    }
                    if let Some(b) = hw.memory_bytes {
                        v.insert("memory".into(), b.into());
                    }
                    v.insert("network-adapters".into(), hw.network_adapters.len().into());
                }
                Value::Object(v)
            })
            .collect();
        m.insert("virtual-systems".into(), systems.into());
        let disks: Vec<Value> =
            p.disks()
                .iter()
                .map(|d| {
                    let mut v = Map::new();
                    v.insert("id".into(), d.disk_id.clone().into());
                    if let Some(h) = &d.href {
                        v.insert("file".into(), h.clone().into());
                    }
                    let fmt = d
                        .format_name
                        .map(str::to_string)
                        .or_else(|| d.format_uri.clone())
                        .unwrap_or_else(|| "-".into());
                    v.insert("format".into(), fmt.into());
                    v.insert("capacity".into(), d.capacity.into());
                    if let Some(s) = d.populated_size {
                        v.insert("populated-size".into(), s.into());
                    }
                    let stored = match &d.data {
                        DiskData::Stored { size, .. } => json!(size),
                        DiskData::Compressed { compression, .. } => {
                            json!(format!("{compression}-compressed"))
                        }
                        DiskData::Blank => json!("none (a blank disk)"),
                        DiskData::Missing { reason } => json!(format!("missing: {reason}")),
                    };
                    v.insert("stored-size".into(), stored);
                    let attached: Vec<Value> =
                        p.drives_for(&d.disk_id)
                            .into_iter()
                            .map(|(s, drive)| {
                                let ctl = drive.controller.as_ref().map_or(
                                    "a controller".to_string(),
                                    |c| {
                                        format!(
                                            "{} controller {}",
                                            c.kind.name(),
                                            c.address.clone().unwrap_or_default()
                                        )
                                        .trim_end()
                                        .to_string()
                                    },
                                );
                                let unit = drive
                                    .address_on_parent
                                    .clone()
                                    .unwrap_or_else(|| "?".into());
                                json!(format!(
                                    "{}: {ctl}, unit {unit}",
                                    s.name.clone().unwrap_or_else(|| s.id.clone())
                                ))
                            })
                            .collect();
                    if !attached.is_empty() {
                        v.insert("attached".into(), attached.into());
                    }
                    Value::Object(v)
                })
                .collect();
        m.insert("disks".into(), disks.into());
        Value::Object(m)
    }
}

impl ImageReader for OvaReader {
    fn format_name(&self) -> &'static str {
        "ova"
    }

    fn virtual_size(&self) -> u64 {
        self.inner.virtual_size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if let Some(e) = self.several_disks() {
            return Err(e);
        }
        self.inner.read_at(buf, offset)
    }

    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        if let Some(e) = self.several_disks() {
            return Err(e);
        }
        Ok(self.in_archive(self.inner.block_status(offset, max_len)?))
    }

    fn copy_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        if let Some(e) = self.several_disks() {
            return Err(e);
        }
        Ok(self.in_archive(self.inner.copy_status(offset, max_len)?))
    }

    fn host_storage(&self, _file: &Path) -> Option<Arc<dyn Storage>> {
        // Host offsets name the archive, which convert may then map or copy from; the member
        // stores are read through the disk's reader instead.
        None
    }

    fn ready_for_io(&self) -> Result<()> {
        if let Some(e) = self.several_disks() {
            return Err(e);
        }
        self.inner.ready_for_io()
    }

    fn info(&self) -> Result<ImageInfo> {
        let inner = self.inner.info()?;
        let mut info = ImageInfo::new("ova", self.inner.virtual_size());
        info.cluster_size = inner.cluster_size;
        info.dirty = inner.dirty;
        info.encrypted = inner.encrypted;
        let mut data = match self.description() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let mut disk = Map::new();
        disk.insert("index".into(), (self.index + 1).into());
        disk.insert("format".into(), self.format.name().into());
        if let Some((t, d)) = inner.format_specific {
            disk.insert("format-specific".into(), json!({"type": t, "data": d}));
        }
        data.insert("disk-read".into(), Value::Object(disk));
        info.format_specific = Some(("ova".into(), Value::Object(data)));
        // The one host file is the archive (the disk's files are members of it).
        info.children = vec![ChildFile {
            name: "file".into(),
            path: self.package.path().to_path_buf(),
        }];
        let mut details = vec![(
            "what-this-is".to_string(),
            json!("an OVA package: a tar archive of an OVF descriptor (the virtual machine: CPUs, memory, disks, networks), a manifest of digests, and the disks, read here in place"),
        )];
        if !self.package.warnings().is_empty() {
            details.push(("package-warnings".into(), json!(self.package.warnings())));
        }
        details.extend(inner.details);
        info.details = details;
        Ok(info)
    }

    fn check(&self) -> Result<CheckReport> {
        let mut report = match self.inner.check() {
            Ok(r) => r,
            Err(Error::Unsupported { .. }) => CheckReport::default(),
            Err(e) => return Err(e),
        };
        match self.package.manifest() {
            None => {}
            Some(mf) => match &mf.manifest {
                Err(why) => {
                    report.corruptions += 1;
                    report
                        .messages
                        .push(format!("ERROR manifest {}: {why}", mf.file.name));
                }
                Ok(_) => {
                    for c in self.package.verify()? {
                        if !c.ok() {
                            report.corruptions += 1;
                            let actual = c.actual.as_deref().map_or("missing".to_string(), |a| {
                                a.iter().map(|b| format!("{b:02x}")).collect()
                            });
                            report.messages.push(format!(
                                "ERROR manifest: {}({}) is {actual}, the manifest says {}",
                                c.entry.algorithm.name(),
                                c.entry.name,
                                c.entry.hex()
                            ));
                        }
                    }
                }
            },
        }
        Ok(report)
    }
}
