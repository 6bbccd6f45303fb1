//! Finding a package's files (DMTF DSP0243 5.1 "OVF package structure", 5.3 "Distribution as a
//! single file", 7.1 "File references"): each Disk's File by `ovf:href` (relative to the
//! descriptor, percent-encoded as a URI), a chunked File's chunks `href.000000000`, ... in order,
//! and the manifest (`.mf`) and certificate (`.cert`), which an archive holds right after the
//! descriptor or as its last files.

use crate::limits::MAX_CHUNKS;
use crate::manifest;
use crate::member::{member_storage, normalize, MemberMap};
use crate::ovf::Envelope;
use crate::package::{
    is_ext, member_location, DiskData, Location, PackageDisk, PackageFile, PackageManifest,
};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vdisk_core::storage::{resolve_relative, FileOpener};
use vdisk_core::{Error, Result, Storage};

/// Where a package's files come from.
pub(crate) enum Source {
    /// Members of an OVA archive.
    Archive {
        storage: Arc<dyn Storage>,
        members: Arc<MemberMap>,
    },
    /// Files beside a bare descriptor.
    Directory { files: Arc<dyn FileOpener> },
}

/// The manifest and certificate of an archive: the first `.mf` and `.cert` members, with a warning
/// when they are not where DSP0243 5.3 puts them or not named after the descriptor.
pub(crate) fn archive_signing(
    storage: &Arc<dyn Storage>,
    members: &MemberMap,
    warnings: &mut Vec<String>,
) -> Result<(Option<PackageManifest>, Option<PackageFile>)> {
    let list = members.members();
    let base = list.first().map(|d| stem(&d.name)).unwrap_or_default();
    let n = list.len();
    let mf = list.iter().position(|m| is_ext(&m.name, "mf"));
    let cert = list.iter().position(|m| is_ext(&m.name, "cert"));
    // Right after the descriptor, manifest first; or as the last files, certificate last.
    let front =
        mf.is_none_or(|i| i == 1) && cert.is_none_or(|c| c == 1 + usize::from(mf.is_some()));
    let back = cert.is_none_or(|c| c + 1 == n)
        && mf.is_none_or(|i| i + 1 + usize::from(cert.is_some()) == n);
    for (i, ext) in [(mf, "mf"), (cert, "cert")] {
        let Some(i) = i else { continue };
        let name = &list[i].name;
        if !front && !back {
            warnings.push(format!(
                "'{name}' is file {} of {n} in the archive; DSP0243 5.3 puts the manifest and certificate right after the descriptor or at the end",
                i + 1
            ));
        }
        if stem(name) != base {
            warnings.push(format!(
                "'{name}' is not named after the descriptor ('{base}.{ext}' expected)"
            ));
        }
    }
    let mf = mf.map(|i| list[i].clone());
    let cert = cert.map(|i| list[i].clone());
    let manifest = match mf {
        Some(m) => {
            // Not fatal: the package is usable without its manifest, and `check` says why.
            let manifest = member_storage(storage, &m)
                .and_then(|s| manifest::read(s.as_ref()))
                .unwrap_or_else(|e| Err(e.to_string()));
            Some(PackageManifest {
                file: PackageFile {
                    name: m.name.clone(),
                    location: member_location(&m),
                },
                manifest,
            })
        }
        None => None,
    };
    let certificate = cert.map(|c| PackageFile {
        name: c.name.clone(),
        location: member_location(&c),
    });
    Ok((manifest, certificate))
}

/// The manifest and certificate beside a bare descriptor: `NAME.mf` and `NAME.cert` for
/// `NAME.ovf`.
pub(crate) fn directory_signing(
    ovf: &Path,
    files: &dyn FileOpener,
    warnings: &mut Vec<String>,
) -> Result<(Option<PackageManifest>, Option<PackageFile>)> {
    let name = ovf
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem(&name);
    let mut open = |ext: &str| -> Option<(String, PathBuf, Arc<dyn Storage>)> {
        let file = format!("{stem}.{ext}");
        let path = resolve_relative(ovf, &file);
        match files.open(&path) {
            Ok(s) => Some((file, path, s)),
            Err(Error::Open { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                None
            }
            Err(e) => {
                warnings.push(format!("{file}: {e}"));
                None
            }
        }
    };
    let manifest = match open("mf") {
        Some((name, path, s)) => Some(PackageManifest {
            file: PackageFile {
                name,
                location: Location::File {
                    path,
                    size: s.len()?,
                },
            },
            // Not fatal: the package is usable without its manifest, and `check` says why.
            manifest: manifest::read(s.as_ref()).unwrap_or_else(|e| Err(e.to_string())),
        }),
        None => None,
    };
    let certificate = match open("cert") {
        Some((name, path, s)) => Some(PackageFile {
            name,
            location: Location::File {
                path,
                size: s.len()?,
            },
        }),
        None => None,
    };
    Ok((manifest, certificate))
}

/// The file name without its last extension.
fn stem(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    match base.rfind('.') {
        Some(i) if i > 0 => base[..i].to_string(),
        _ => base.to_string(),
    }
}

/// A relative href inside the package, normalized; `None` for an absolute path or one climbing out
/// of the descriptor's directory.
pub(crate) fn safe_relative(href: &str) -> Option<String> {
    if href.starts_with('/') {
        return None;
    }
    normalize(href)
}

/// Percent-decodes a URI reference (RFC 3986 2.1); `None` when the result is not UTF-8 or a `%`
/// is not followed by two hex digits.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = b.get(i + 1..i + 3)?;
            let h = std::str::from_utf8(h).ok()?;
            if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// An href percent-decoded, or as written when it does not decode.
pub(crate) fn decode_href(href: &str) -> String {
    percent_decode(href).unwrap_or_else(|| href.to_string())
}

/// Whether an href is a URL (`http://...`, `file:...`) rather than a path in the package.
fn is_url(href: &str) -> bool {
    match href.find(':') {
        Some(i) => {
            let scheme = &href[..i];
            i > 1
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

/// One file found: its location.
type Found = std::result::Result<Vec<Location>, String>;

/// Finds the file (or chunks) an href names.
fn find_file(source: &Source, package: &Path, href: &str, chunked: bool) -> Found {
    if is_url(href) {
        return Err(format!(
            "its file '{href}' is a URL, not part of the package: download it"
        ));
    }
    let decoded = decode_href(href);
    let Some(rel) = safe_relative(&decoded) else {
        return Err(format!(
            "its href '{href}' is absolute or climbs out of the package"
        ));
    };
    let one = |name: &str| -> std::result::Result<Option<Location>, String> {
        match source {
            Source::Archive { members, .. } => Ok(members.get(name).map(member_location)),
            Source::Directory { files, .. } => {
                let path = resolve_relative(package, name);
                match files.open(&path) {
                    Ok(s) => Ok(Some(Location::File {
                        size: s.len().map_err(|e| e.to_string())?,
                        path,
                    })),
                    Err(Error::Open { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    };
    let place = match source {
        Source::Archive { .. } => "in the archive",
        Source::Directory { .. } => "beside the descriptor",
    };
    if !chunked {
        return one(&rel)?
            .map(|l| vec![l])
            .ok_or_else(|| format!("its file '{rel}' is not {place}"));
    }
    let mut pieces = Vec::new();
    for i in 0..MAX_CHUNKS {
        match one(&format!("{rel}.{i:09}"))? {
            Some(l) => pieces.push(l),
            None => break,
        }
    }
    if pieces.is_empty() {
        return Err(format!(
            "its chunked file '{rel}' has no chunks {place} (expected '{rel}.000000000', ...)"
        ));
    }
    Ok(pieces)
}

/// Each Disk of the descriptor with its file located. Files are looked up once per href, and the
/// pieces listed for all disks together are bounded by [`MAX_CHUNKS`] (every chunk of a real
/// package belongs to one disk), so a descriptor naming one large chunked file from many disks
/// cannot make the list grow without bound.
pub(crate) fn locate_disks(
    source: &Source,
    package: &Path,
    env: &Envelope,
    warnings: &mut Vec<String>,
) -> Result<Vec<PackageDisk>> {
    let mut out = Vec::with_capacity(env.disks.len());
    let mut seen: HashMap<(String, bool), Found> = HashMap::new();
    let mut total_pieces = 0usize;
    // By id, the first File of each id (a hash map: a hostile descriptor may list many of both).
    let mut by_id: HashMap<&str, &crate::ovf::FileReference> = HashMap::new();
    for f in &env.files {
        by_id.entry(f.id.as_str()).or_insert(f);
    }
    for d in &env.disks {
        let file = d.file_ref.as_deref().and_then(|r| by_id.get(r).copied());
        let data = match (&d.file_ref, file) {
            (None, _) => DiskData::Blank,
            (Some(r), None) => DiskData::Missing {
                reason: format!(
                    "disk '{}' names file '{r}' (ovf:fileRef), which References does not list",
                    d.disk_id
                ),
            },
            (Some(_), Some(f)) => {
                let key = (f.href.clone(), f.chunk_size.is_some());
                let found = match seen.get(&key) {
                    Some(found) => found.clone(),
                    None => {
                        let found = find_file(source, package, &f.href, key.1);
                        seen.insert(key, found.clone());
                        found
                    }
                };
                match found {
                    Err(reason) => DiskData::Missing {
                        reason: format!("disk '{}': {reason}", d.disk_id),
                    },
                    Ok(pieces) => {
                        total_pieces = total_pieces.saturating_add(pieces.len());
                        if total_pieces > MAX_CHUNKS {
                            return Err(Error::limit(
                                package,
                                "number of files the descriptor's disks name",
                                total_pieces as u64,
                                MAX_CHUNKS as u64,
                            ));
                        }
                        let size = pieces
                            .iter()
                            .try_fold(0u64, |s, p| s.checked_add(p.size()))
                            .unwrap_or(u64::MAX);
                        check_sizes(&f.href, f.size, f.chunk_size, &pieces, size, warnings);
                        match &f.compression {
                            Some(c) => DiskData::Compressed {
                                compression: c.clone(),
                                pieces,
                            },
                            None => DiskData::Stored { pieces, size },
                        }
                    }
                }
            }
        };
        out.push(PackageDisk {
            disk_id: d.disk_id.clone(),
            file_id: d.file_ref.clone(),
            href: file.map(|f| f.href.clone()),
            capacity: d.capacity,
            populated_size: d.populated_size,
            format_uri: d.format.clone(),
            format_name: d.format.as_deref().and_then(crate::formats::short_name),
            parent_ref: d.parent_ref.clone(),
            chunk_size: file.and_then(|f| f.chunk_size),
            data,
        });
    }
    Ok(out)
}

fn check_sizes(
    href: &str,
    declared: Option<u64>,
    chunk_size: Option<u64>,
    pieces: &[Location],
    size: u64,
    warnings: &mut Vec<String>,
) {
    if let Some(want) = declared {
        if want != size {
            warnings.push(format!(
                "file '{href}' is {size} bytes in the package, but the descriptor says {want} (ovf:size)"
            ));
        }
    }
    if let (Some(c), Some((_, init))) = (chunk_size, pieces.split_last()) {
        if let Some(i) = init.iter().position(|p| p.size() != c) {
            warnings.push(format!(
                "chunk {i} of '{href}' is {} bytes, not the {c} of ovf:chunkSize",
                init[i].size()
            ));
        }
    }
}

/// Warnings for archive members nothing refers to (not the descriptor, manifest or certificate,
/// and no File's href or chunk).
pub(crate) fn unreferenced(
    members: &MemberMap,
    env: &Envelope,
    descriptor: &PackageFile,
    manifest: &Option<PackageManifest>,
    certificate: &Option<PackageFile>,
) -> Vec<String> {
    let mut known: HashSet<String> = HashSet::new();
    for n in [
        Some(&descriptor.name),
        manifest.as_ref().map(|m| &m.file.name),
        certificate.as_ref().map(|c| &c.name),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(n) = normalize(n) {
            known.insert(n);
        }
    }
    let hrefs: HashSet<String> = env
        .files
        .iter()
        .filter_map(|f| normalize(&decode_href(&f.href)))
        .collect();
    let mut out = Vec::new();
    for m in members.members() {
        let Some(n) = normalize(&m.name) else {
            continue;
        };
        if known.contains(&n) || hrefs.contains(&n) {
            continue;
        }
        // A chunk: `href.` and nine digits.
        let chunk_of = n
            .len()
            .checked_sub(10)
            .filter(|&i| n.is_char_boundary(i))
            .map(|i| n.split_at(i))
            .filter(|(_, tail)| {
                tail.starts_with('.') && tail[1..].bytes().all(|c| c.is_ascii_digit())
            })
            .map(|(head, _)| head);
        if chunk_of.is_some_and(|h| hrefs.contains(h)) {
            continue;
        }
        out.push(format!(
            "'{}' is in the archive but the descriptor does not refer to it",
            m.name
        ));
    }
    out
}
