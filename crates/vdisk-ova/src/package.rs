//! An OVF package opened for reading (DMTF DSP0243 5.1 "OVF package structure", 5.3 "Distribution
//! as a single file"): an OVA archive whose first file is the descriptor, with the manifest and
//! certificate after it (or at the end), or a bare `.ovf` descriptor with its files beside it
//! (5.4). Opening indexes the archive and parses the descriptor; it never reads the disks (checking
//! their digests is [`Package::verify`]'s job, for `check`).

use crate::limits::MAX_DESCRIPTOR_BYTES;
use crate::manifest::{self, DigestCheck, Manifest};
pub use crate::member::MemberMap;
use crate::member::{member_path, member_storage, ChunkedStorage, MemberFiles};
use crate::ovf::{self, DiskDrive, Envelope, VirtualSystem};
use crate::package_disks::{self, Source};
use crate::tar::{self, ArchiveEnd, Member};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vdisk_core::storage::{resolve_relative, FileOpener};
use vdisk_core::{Error, Result, Storage};

/// Where one file of a package is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A member of the archive: its name and the range of its data in the archive.
    Member {
        name: String,
        offset: u64,
        size: u64,
    },
    /// A file beside a bare descriptor.
    File { path: PathBuf, size: u64 },
}

impl Location {
    /// Bytes in the file.
    pub fn size(&self) -> u64 {
        match self {
            Location::Member { size, .. } | Location::File { size, .. } => *size,
        }
    }
}

/// A named file of the package (descriptor, manifest, certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    /// The member name, or the file name beside the descriptor.
    pub name: String,
    pub location: Location,
}

/// The manifest of a package, parsed (or why it could not be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageManifest {
    pub file: PackageFile,
    pub manifest: std::result::Result<Manifest, String>,
}

/// Where a disk's image is, and whether it can be read in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskData {
    /// Stored as is: one file, or the chunks of a chunked file in order. Readable in place.
    Stored { pieces: Vec<Location>, size: u64 },
    /// Compressed (`ovf:compression`, e.g. `gzip`): found, but not readable in place.
    Compressed {
        compression: String,
        pieces: Vec<Location>,
    },
    /// No `ovf:fileRef`: a blank disk that importers create empty.
    Blank,
    /// The file is not in the package; the reason says what is missing.
    Missing { reason: String },
}

/// A disk of the package, in DiskSection order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageDisk {
    /// `ovf:diskId`.
    pub disk_id: String,
    /// `ovf:fileRef`.
    pub file_id: Option<String>,
    /// The File's `ovf:href`.
    pub href: Option<String>,
    /// Virtual size in bytes.
    pub capacity: u64,
    /// `ovf:populatedSize`.
    pub populated_size: Option<u64>,
    /// `ovf:format`.
    pub format_uri: Option<String>,
    /// A short name for the format (`vmdk streamOptimized`), when the URI is recognised.
    pub format_name: Option<&'static str>,
    /// `ovf:parentRef`: this is a differencing disk of that disk.
    pub parent_ref: Option<String>,
    /// The File's `ovf:chunkSize`.
    pub chunk_size: Option<u64>,
    /// Where its image is.
    pub data: DiskData,
}

/// An opened OVF package.
pub struct Package {
    pub(crate) source: Source,
    pub(crate) path: PathBuf,
    pub(crate) end: Option<ArchiveEnd>,
    pub(crate) descriptor: PackageFile,
    pub(crate) envelope: Envelope,
    pub(crate) manifest: Option<PackageManifest>,
    pub(crate) certificate: Option<PackageFile>,
    pub(crate) disks: Vec<PackageDisk>,
    pub(crate) warnings: Vec<String>,
}

impl std::fmt::Debug for Package {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Package")
            .field("path", &self.path)
            .field("archive", &self.is_archive())
            .field("descriptor", &self.descriptor)
            .field("disks", &self.disks)
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

impl Package {
    /// Opens an OVA archive: indexes it, checks that its first file is the descriptor, parses the
    /// descriptor and the manifest, and locates each disk's file.
    pub fn open(storage: Arc<dyn Storage>) -> Result<Package> {
        let index = tar::index(storage.as_ref())?;
        let path = storage.path().to_path_buf();
        let members = Arc::new(MemberMap::new(index.members));
        let list = members.members();
        let Some(first) = list.first() else {
            return Err(Error::corrupt(
                &path,
                None,
                "not an OVA package: the tar archive holds no files",
            ));
        };
        if !is_ext(&first.name, "ovf") {
            let hint = match list.iter().position(|m| is_ext(&m.name, "ovf")) {
                Some(i) => format!(
                    "; '{}' is file {} of the archive: re-pack with the descriptor first",
                    list[i].name,
                    i + 1
                ),
                None => "; the archive has no .ovf file".into(),
            };
            return Err(Error::corrupt(
                &path,
                None,
                format!(
                    "not an OVA package: its first file is '{}', and an OVA's first file must be the OVF descriptor (.ovf, DSP0243 5.3){hint}",
                    first.name
                ),
            ));
        }
        let mut warnings = Vec::new();
        match index.end {
            ArchiveEnd::Marker => {}
            ArchiveEnd::LoneZeroBlock => warnings.push(format!(
                "the archive ends with a single zero block at offset {:#x}, not the two tar writes",
                index.end_offset
            )),
            ArchiveEnd::Eof => warnings.push(
                "the archive has no end-of-archive blocks: it may be truncated (files after the last one listed would be missing)".into(),
            ),
        }
        for d in members.duplicates() {
            warnings.push(format!(
                "'{d}' is stored more than once in the archive; the last copy is used, as tar would extract it"
            ));
        }
        let descriptor_storage = member_storage(&storage, first)?;
        let envelope = read_descriptor(descriptor_storage.as_ref())?;
        let descriptor = PackageFile {
            name: first.name.clone(),
            location: member_location(first),
        };
        let (manifest, certificate) =
            package_disks::archive_signing(&storage, &members, &mut warnings)?;
        let source = Source::Archive {
            storage: Arc::clone(&storage),
            members,
        };
        Self::assemble(
            source,
            path,
            Some(index.end),
            descriptor,
            envelope,
            manifest,
            certificate,
            warnings,
        )
    }

    /// Opens a bare descriptor (`appliance.ovf`) whose files lie beside it, opened through `files`
    /// (`vdisk_core::storage::HostFiles` for real files). Hrefs that are absolute or climb out of
    /// the descriptor's directory are refused.
    pub fn open_ovf(storage: Arc<dyn Storage>, files: Arc<dyn FileOpener>) -> Result<Package> {
        let path = storage.path().to_path_buf();
        let envelope = read_descriptor(storage.as_ref())?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let descriptor = PackageFile {
            name,
            location: Location::File {
                path: path.clone(),
                size: storage.len()?,
            },
        };
        let mut warnings = Vec::new();
        let (manifest, certificate) =
            package_disks::directory_signing(&path, files.as_ref(), &mut warnings)?;
        let source = Source::Directory { files };
        Self::assemble(
            source,
            path,
            None,
            descriptor,
            envelope,
            manifest,
            certificate,
            warnings,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        source: Source,
        path: PathBuf,
        end: Option<ArchiveEnd>,
        descriptor: PackageFile,
        envelope: Envelope,
        manifest: Option<PackageManifest>,
        certificate: Option<PackageFile>,
        mut warnings: Vec<String>,
    ) -> Result<Package> {
        warnings.extend(envelope.warnings.iter().cloned());
        let disks = package_disks::locate_disks(&source, &path, &envelope, &mut warnings)?;
        if let Source::Archive { members, .. } = &source {
            package_disks::unreferenced(members, &envelope, &descriptor, &manifest, &certificate)
                .into_iter()
                .for_each(|w| warnings.push(w));
        }
        Ok(Package {
            source,
            path,
            end,
            descriptor,
            envelope,
            manifest,
            certificate,
            disks,
            warnings,
        })
    }

    /// The package's path (the `.ova`, or the bare `.ovf`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this is an OVA archive (not a bare descriptor).
    pub fn is_archive(&self) -> bool {
        matches!(self.source, Source::Archive { .. })
    }

    /// How the archive ended (`None` for a bare descriptor).
    pub fn archive_end(&self) -> Option<ArchiveEnd> {
        self.end
    }

    /// The archive's regular files in order (empty for a bare descriptor).
    pub fn members(&self) -> &[Member] {
        match &self.source {
            Source::Archive { members, .. } => members.members(),
            Source::Directory { .. } => &[],
        }
    }

    /// The descriptor file.
    pub fn descriptor(&self) -> &PackageFile {
        &self.descriptor
    }

    /// The parsed descriptor.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The manifest, if the package has one.
    pub fn manifest(&self) -> Option<&PackageManifest> {
        self.manifest.as_ref()
    }

    /// The certificate (`.cert`), if the package has one (reported, not checked).
    pub fn certificate(&self) -> Option<&PackageFile> {
        self.certificate.as_ref()
    }

    /// The disks, in DiskSection order.
    pub fn disks(&self) -> &[PackageDisk] {
        &self.disks
    }

    /// Things a reader should know (a missing end-of-archive marker, unreferenced files, sizes that
    /// differ from the descriptor's, descriptor parts not understood), one sentence each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The path disk `i`'s store is named by: for a member, the archive's path joined with the
    /// member's name (`appliance.ova/disk1.vmdk`; for a chunked file, with the href, without the
    /// chunk number); for a bare descriptor, the file's path.
    pub fn disk_path(&self, i: usize) -> Option<PathBuf> {
        let d = self.disks.get(i)?;
        let pieces = match &d.data {
            DiskData::Stored { pieces, .. } | DiskData::Compressed { pieces, .. } => &pieces[..],
            DiskData::Blank | DiskData::Missing { .. } => &[],
        };
        if let [one] = pieces {
            return Some(match one {
                Location::Member { name, .. } => member_path(&self.path, name),
                Location::File { path, .. } => path.clone(),
            });
        }
        let href = d.href.as_deref().unwrap_or(&d.disk_id);
        let href = package_disks::decode_href(href);
        Some(match &self.source {
            Source::Archive { .. } => member_path(&self.path, &href),
            Source::Directory { .. } => resolve_relative(&self.path, href.trim_start_matches('/')),
        })
    }

    /// The drives that hold disk `disk_id` (DiskSection `ovf:diskId`), with the VirtualSystem each
    /// belongs to: where the disk is attached (controller, unit) in each virtual machine.
    pub fn drives_for(&self, disk_id: &str) -> Vec<(&VirtualSystem, &DiskDrive)> {
        let Some(content) = &self.envelope.content else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for s in content.systems() {
            for hw in &s.hardware {
                for d in &hw.drives {
                    if d.disk_id.as_deref() == Some(disk_id) {
                        out.push((s, d));
                    }
                }
            }
        }
        out
    }

    /// A read-only store of disk `i`'s image, read in place: the window of the archive holding its
    /// member, the chunks of a chunked file joined, or the file beside a bare descriptor. Any vdisk
    /// format reader opens it (with [`Package::opener`] for files it names). Refused, saying why:
    /// blank, missing, compressed and differencing disks, and members stored sparse.
    pub fn disk_storage(&self, i: usize) -> Result<Arc<dyn Storage>> {
        let d = self.disks.get(i).ok_or_else(|| {
            Error::invalid(format!(
                "disk index {i} is out of range: the package has {} disks",
                self.disks.len()
            ))
        })?;
        let path = self.disk_path(i).unwrap_or_else(|| self.path.clone());
        if let Some(parent) = &d.parent_ref {
            return Err(Error::unsupported(
                &path,
                format!(
                    "differencing disk: disk '{}' holds only the changes to its parent disk '{parent}' (ovf:parentRef), and reading it on top of its parent is not supported",
                    d.disk_id
                ),
            ));
        }
        let href = d.href.as_deref().unwrap_or("FILE");
        match &d.data {
            DiskData::Stored { pieces, .. } => self.open_pieces(pieces, path),
            DiskData::Compressed { compression, .. } => Err(Error::unsupported(
                &path,
                format!(
                    "{compression}-compressed file (ovf:compression=\"{compression}\"): a compressed disk cannot be read in place; extract and decompress it first (tar -xOf {} {href} | {compression} -d > {href})",
                    self.path.display(),
                ),
            )),
            DiskData::Blank => Err(Error::invalid(format!(
                "disk '{}' of {} has no file (no ovf:fileRef): it is a blank disk of {} bytes that importers create empty, so there is nothing to read",
                d.disk_id,
                self.path.display(),
                d.capacity
            ))),
            DiskData::Missing { reason } => Err(Error::Open {
                path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, reason.clone()),
            }),
        }
    }

    fn open_pieces(&self, pieces: &[Location], path: PathBuf) -> Result<Arc<dyn Storage>> {
        let mut stores = Vec::with_capacity(pieces.len());
        for p in pieces {
            stores.push(self.open_location(p)?);
        }
        match stores.len() {
            1 => Ok(stores.remove(0)),
            _ => Ok(Arc::new(ChunkedStorage::new(stores, path)?)),
        }
    }

    /// A read-only store of one file of the package.
    pub fn open_location(&self, loc: &Location) -> Result<Arc<dyn Storage>> {
        match (&self.source, loc) {
            (Source::Archive { storage, members }, Location::Member { name, .. }) => {
                let m = members.get(name).ok_or_else(|| {
                    Error::invalid(format!("no member '{name}' in {}", self.path.display()))
                })?;
                member_storage(storage, m)
            }
            (Source::Directory { files, .. }, Location::File { path, .. }) => files.open(path),
            _ => Err(Error::invalid("location of another kind of package")),
        }
    }

    /// A read-only store of the file `name` names in the package (a member name, or a file name
    /// beside a bare descriptor), whatever its role.
    pub fn member_storage(&self, name: &str) -> Result<Arc<dyn Storage>> {
        match &self.source {
            Source::Archive { storage, members } => {
                let m = members.get(name).ok_or_else(|| Error::Open {
                    path: member_path(&self.path, name),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no such member in the package",
                    ),
                })?;
                member_storage(storage, m)
            }
            Source::Directory { files, .. } => {
                let rel = package_disks::safe_relative(name).ok_or_else(|| {
                    Error::invalid(format!("'{name}' is not a file beside the descriptor"))
                })?;
                files.open(&resolve_relative(&self.path, rel))
            }
        }
    }

    /// Opens files named inside the package's disks (a VMDK descriptor's extents): for an archive,
    /// members by `archive/name` paths only; for a bare descriptor, the opener it was given.
    pub fn opener(&self) -> Arc<dyn FileOpener> {
        match &self.source {
            Source::Archive { storage, members } => Arc::new(MemberFiles {
                archive: Arc::clone(storage),
                members: Arc::clone(members),
            }),
            Source::Directory { files, .. } => Arc::clone(files),
        }
    }

    /// Checks every manifest entry's digest against its file, streaming each file (for `check`;
    /// reads every byte of the package). A file the manifest lists but the package lacks is checked
    /// as failed (`actual` is `None`). Fails if there is no manifest, or it could not be parsed.
    pub fn verify(&self) -> Result<Vec<DigestCheck>> {
        let m = self.manifest.as_ref().ok_or_else(|| {
            Error::invalid(format!(
                "{} has no manifest (.mf) to check",
                self.path.display()
            ))
        })?;
        let parsed = m.manifest.as_ref().map_err(|e| {
            Error::corrupt(&self.path, None, format!("manifest '{}': {e}", m.file.name))
        })?;
        let mut out = Vec::with_capacity(parsed.entries.len());
        for e in &parsed.entries {
            match self.member_storage(&e.name) {
                Ok(s) => out.push(manifest::verify(e, s.as_ref())?),
                Err(Error::Open { .. }) | Err(Error::InvalidArgument(_)) => out.push(DigestCheck {
                    entry: e.clone(),
                    actual: None,
                }),
                Err(other) => return Err(other),
            }
        }
        Ok(out)
    }
}

/// Whether `name` ends in `.ext`, any case, after a non-empty stem.
pub(crate) fn is_ext(name: &str, ext: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    base.len() > ext.len() + 1
        && base
            .get(base.len() - ext.len() - 1..)
            .is_some_and(|e| e.starts_with('.') && e[1..].eq_ignore_ascii_case(ext))
}

pub(crate) fn member_location(m: &Member) -> Location {
    Location::Member {
        name: m.name.clone(),
        offset: m.offset,
        size: m.size,
    }
}

/// Reads and parses a descriptor of at most [`MAX_DESCRIPTOR_BYTES`].
fn read_descriptor(s: &dyn Storage) -> Result<Envelope> {
    let buf = crate::member::read_bounded(s, "size of the OVF descriptor", MAX_DESCRIPTOR_BYTES)?;
    ovf::parse(&buf, s.path())
}

#[cfg(test)]
#[path = "package_tests.rs"]
mod tests;
