//! The filesystems inside an image, found and mounted as libguestfs finds and mounts a guest's
//! (what `virt-filesystems`, `virt-df`, `virt-ls` and `virt-cat` show), read through any vdisk
//! reader with no VM appliance: a filesystem on the whole disk (`/dev/sda`), or one per partition
//! of its MBR or GPT (`/dev/sdaN`, numbered as Linux numbers them). Mounting follows libguestfs's
//! inspection: the filesystem holding `/etc/fstab` is the root, and the entries of that fstab
//! that name filesystems of this disk are mounted where it says ([`crate::fstab`]). A path is
//! resolved in the filesystem mounted on its longest mount-point prefix.

use crate::fstab::{self, FsIdentity};
use std::sync::Arc;
use vdisk_core::window::Window;
use vdisk_core::{Error, ImageReader, Result};
use vdisk_fs::{Filesystem, Node, OpenOptions};

/// The largest `/etc/fstab` read (see [`fstab::MAX_FSTAB_BYTES`]).
const FSTAB_READ: usize = fstab::MAX_FSTAB_BYTES;

/// MBR partition types that hold other partitions (DOS, LBA and Linux extended), never a
/// filesystem.
const EXTENDED_TYPES: &[&str] = &["5", "f", "85"];

/// One device of the disk that may hold a filesystem.
pub struct Found {
    /// What it is, to match fstab lines against.
    pub identity: FsIdentity,
    /// Where it is on the disk, in bytes.
    pub start: u64,
    pub size: u64,
    /// The partition's number, or `None` for the whole disk or a logical volume.
    pub partition: Option<u32>,
    /// An LVM logical volume (`/dev/VG/LV`); `start` is then 0 and `size` its size: its
    /// extents may lie anywhere on the disk's physical volumes.
    pub logical_volume: bool,
    /// An LVM physical volume whose label and header read (its volume group may not).
    pub physical_volume: bool,
    /// The UUID of a logical or physical volume, as libguestfs's `lvuuid` and `pvuuid` give
    /// it (32 characters, without the dashes lvm2 prints); `None` for every other device.
    pub lvm_uuid: Option<String>,
    /// Why a logical volume's extents cannot be read (a thin, RAID or cache volume, a
    /// physical volume missing from the image); `None` for every other device.
    pub unreadable: Option<String>,
    /// The filesystem type blkid would name (`ext4`, `vfat`), when one was recognised.
    pub vfs: Option<&'static str>,
    /// The opened filesystem, or why it could not be opened.
    pub fs: std::result::Result<Box<dyn Filesystem>, String>,
}

impl Found {
    /// The opened filesystem, or the error that kept it closed.
    pub fn filesystem(&self) -> Result<&dyn Filesystem> {
        self.fs
            .as_deref()
            .map_err(|e| Error::Other(format!("{}: {e}", self.identity.device)))
    }
}

/// The devices of `image` and their filesystems: the whole disk when a filesystem starts at its
/// first byte (an unpartitioned disk: a FAT boot sector also looks like an MBR), otherwise each
/// partition of its table but extended-partition containers. Devices without a recognised
/// filesystem are listed with `vfs: None`.
pub fn find(image: Arc<dyn ImageReader>, opts: &OpenOptions) -> Result<Vec<Found>> {
    let size = image.virtual_size();
    if vdisk_fs::probe(image.as_ref())?.is_some() {
        let whole = open_device(image.clone(), "/dev/sda".into(), 0, size, None, opts)?;
        return Ok(vec![whole]);
    }
    let mut out = Vec::new();
    let mut pvs = Vec::new();
    // A physical volume on the whole disk (no partition table).
    if let Some(f) = physical_volume(&image, "/dev/sda", 0, None, &mut pvs) {
        out.push(f);
        out.extend(logical_volumes(&pvs, opts)?);
        return Ok(out);
    }
    let Some(table) = vdisk_part::read(image.as_ref())? else {
        return Ok(Vec::new());
    };
    for p in &table.partitions {
        if table.scheme == vdisk_part::Scheme::Dos && EXTENDED_TYPES.contains(&p.type_id.as_str()) {
            continue;
        }
        let start = p.start.saturating_mul(512);
        let len = p
            .sectors
            .saturating_mul(512)
            .min(size.saturating_sub(start));
        if start >= size || len == 0 {
            continue;
        }
        let window: Arc<dyn ImageReader> = Arc::new(Window::new(image.clone(), start, len)?);
        let device = format!("/dev/sda{}", p.number);
        let mut f = match physical_volume(&window, &device, start, Some(p.number), &mut pvs) {
            Some(pv) => pv,
            None => open_device(window, device, start, len, Some(p.number), opts)?,
        };
        f.identity.partuuid = match table.scheme {
            vdisk_part::Scheme::Gpt => p.uuid.as_ref().map(|u| u.to_ascii_lowercase()),
            // blkid: the disk signature and the partition number, "%08x-%02x".
            vdisk_part::Scheme::Dos => Some(format!(
                "{}-{:02x}",
                table.id.trim_start_matches("0x"),
                p.number
            )),
        };
        f.identity.partlabel = p.name.as_ref().map(|n| n.as_bytes().to_vec());
        out.push(f);
    }
    out.extend(logical_volumes(&pvs, opts)?);
    Ok(out)
}

/// The device `dev` as an LVM physical volume (added to `pvs`), or `None` when it carries no
/// LVM label. A PV holds no filesystem: its logical volumes are found from all of them.
fn physical_volume(
    dev: &Arc<dyn ImageReader>,
    device: &str,
    start: u64,
    partition: Option<u32>,
    pvs: &mut Vec<(Arc<dyn ImageReader>, vdisk_lvm::PhysicalVolume)>,
) -> Option<Found> {
    let mut uuid = None;
    let why = match vdisk_lvm::read_pv(dev.as_ref()) {
        Ok(None) => return None,
        Ok(Some(pv)) => {
            uuid = Some(pv.label.uuid.clone());
            let why = match (&pv.vg, &pv.metadata_error) {
                (Some(vg), _) => format!(
                    "an LVM physical volume of volume group {0}: its logical volumes are \
                     /dev/{0}/NAME",
                    vg.name
                ),
                (None, Some(e)) => {
                    format!("an LVM physical volume whose metadata cannot be read: {e}")
                }
                (None, None) => "an LVM physical volume in no volume group".to_string(),
            };
            pvs.push((dev.clone(), pv));
            why
        }
        Err(e) => format!("an LVM physical volume that cannot be read: {e}"),
    };
    Some(Found {
        identity: FsIdentity {
            device: device.to_string(),
            ..FsIdentity::default()
        },
        start,
        size: dev.virtual_size(),
        partition,
        logical_volume: false,
        physical_volume: uuid.is_some(),
        lvm_uuid: uuid,
        unreadable: None,
        vfs: None,
        fs: Err(why),
    })
}

/// The visible logical volumes of the volume groups on `pvs`, with their filesystems.
fn logical_volumes(
    pvs: &[(Arc<dyn ImageReader>, vdisk_lvm::PhysicalVolume)],
    opts: &OpenOptions,
) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    for lv in vdisk_lvm::logical_volumes(pvs) {
        let mut f = match &lv.reader {
            Ok(r) => open_device(r.clone(), lv.device(), 0, lv.size, None, opts)?,
            Err(e) => Found {
                identity: FsIdentity {
                    device: lv.device(),
                    ..FsIdentity::default()
                },
                start: 0,
                size: lv.size,
                partition: None,
                logical_volume: true,
                physical_volume: false,
                lvm_uuid: None,
                unreadable: Some(e.clone()),
                vfs: None,
                fs: Err(e.clone()),
            },
        };
        f.logical_volume = true;
        f.lvm_uuid = Some(lv.id.replace('-', ""));
        f.identity.aliases = lv.aliases();
        out.push(f);
    }
    Ok(out)
}

fn open_device(
    dev: Arc<dyn ImageReader>,
    device: String,
    start: u64,
    size: u64,
    partition: Option<u32>,
    opts: &OpenOptions,
) -> Result<Found> {
    let vfs = vdisk_fs::probe(dev.as_ref())?;
    let fs = match vfs {
        Some(_) => vdisk_fs::open_with(dev, opts).map_err(|e| e.to_string()),
        None => Err("no filesystem that vdisk reads".to_string()),
    };
    let (uuid, label) = match &fs {
        Ok(f) => (f.uuid(), f.label()),
        Err(_) => (None, None),
    };
    Ok(Found {
        identity: FsIdentity {
            device,
            uuid,
            label,
            ..FsIdentity::default()
        },
        start,
        size,
        partition,
        logical_volume: false,
        physical_volume: false,
        lvm_uuid: None,
        unreadable: None,
        vfs,
        fs,
    })
}

/// Which filesystem is mounted where: mount points (absolute, without a trailing `/` but for the
/// root) and indices into the [`Found`] list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    pub points: Vec<(Vec<u8>, usize)>,
}

/// Mounts as libguestfs's inspection does: the first filesystem holding a regular `/etc/fstab` is
/// the root, and its fstab's entries that name filesystems of this disk are mounted where it
/// says. A disk with no such root but a single readable filesystem has it mounted on `/`.
pub fn inspect(found: &[Found]) -> Result<Mounts> {
    for (i, f) in found.iter().enumerate() {
        let Ok(fs) = f.fs.as_deref() else { continue };
        let Ok(node) = vdisk_fs::resolve(fs, b"/etc/fstab", true) else {
            continue;
        };
        if node.kind != vdisk_fs::FileKind::Regular {
            continue;
        }
        let text = read_whole(fs, &node, FSTAB_READ)?;
        let identities: Vec<FsIdentity> = found.iter().map(|f| f.identity.clone()).collect();
        let mut points = vec![(b"/".to_vec(), i)];
        for e in fstab::parse(&text) {
            let Some(j) = fstab::find(&e.spec, &identities) else {
                continue;
            };
            let mp = normalize(&e.mountpoint);
            if mp != b"/" && found[j].fs.is_ok() && !points.iter().any(|(p, _)| *p == mp) {
                points.push((mp, j));
            }
        }
        return Ok(Mounts { points });
    }
    let readable: Vec<usize> = (0..found.len()).filter(|&i| found[i].fs.is_ok()).collect();
    match readable.as_slice() {
        [one] => Ok(Mounts {
            points: vec![(b"/".to_vec(), *one)],
        }),
        [] => {
            // Filesystems recognised but not opened: say why (a journal or log to recover,
            // a feature not read), or the message would hide it.
            let why: Vec<String> = found
                .iter()
                .filter(|f| f.vfs.is_some() || f.unreadable.is_some())
                .filter_map(|f| Some(format!("{}: {}", f.identity.device, f.fs.as_ref().err()?)))
                .collect();
            Err(Error::Other(if why.is_empty() {
                "no filesystem that vdisk reads was found in the image".into()
            } else {
                format!(
                    "no filesystem that vdisk reads could be opened: {}",
                    why.join("; ")
                )
            }))
        }
        many => Err(Error::Other(format!(
            "no operating system found (no /etc/fstab); choose a filesystem with -m DEVICE: {}",
            many.iter()
                .map(|&i| {
                    let f = &found[i];
                    format!("{} ({})", f.identity.device, f.vfs.unwrap_or("?"))
                })
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Mounts as `-m DEVICE[:MOUNTPOINT]` options say (libguestfs's `-m`; the mount point defaults to
/// `/`).
pub fn mount_explicit(found: &[Found], specs: &[String]) -> Result<Mounts> {
    let mut points = Vec::new();
    for spec in specs {
        let (dev, mp) = match spec.split_once(':') {
            Some((d, m)) => (d, m),
            None => (spec.as_str(), "/"),
        };
        let i = found
            .iter()
            .position(|f| f.identity.device == dev || f.identity.aliases.iter().any(|a| a == dev))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "-m {spec}: no device {dev} in the image (devices: {})",
                    found
                        .iter()
                        .map(|f| f.identity.device.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        found[i].filesystem()?;
        if !mp.starts_with('/') {
            return Err(Error::invalid(format!(
                "-m {spec}: the mount point must be an absolute path"
            )));
        }
        points.push((normalize(mp.as_bytes()), i));
    }
    if !points.iter().any(|(p, _)| p == b"/") {
        return Err(Error::invalid(
            "-m: one filesystem must be mounted on / (-m DEVICE or -m DEVICE:/)",
        ));
    }
    Ok(Mounts { points })
}

/// `p` without repeated or trailing slashes, `.` components, and `..` components with what they
/// cancel (`/` stays `/`; `..` at the root stays there). Mount points are chosen on this lexical
/// form; symlinks are resolved inside the filesystem chosen.
fn normalize(p: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in p.split(|&c| c == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(p.len());
    for c in &parts {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// The filesystem (index into `found`) and the rest of `path` below its mount point.
pub fn mounted_at(mounts: &Mounts, path: &[u8]) -> Option<(usize, Vec<u8>)> {
    let p = normalize(path);
    let mut best: Option<(usize, usize)> = None;
    for (mp, i) in &mounts.points {
        let inside =
            mp == b"/" || p == *mp || (p.starts_with(mp) && p.get(mp.len()) == Some(&b'/'));
        if inside && best.is_none_or(|(len, _)| mp.len() > len) {
            best = Some((mp.len(), *i));
        }
    }
    let (len, i) = best?;
    let rest = if len == 1 { p } else { p[len..].to_vec() };
    let rest = if rest.is_empty() { b"/".to_vec() } else { rest };
    Some((i, rest))
}

/// The node at the guest path `path` (absolute), resolved in the filesystem mounted there;
/// symlinks are followed in every component but the last, and in the last too with `follow`.
pub fn lookup<'f>(
    found: &'f [Found],
    mounts: &Mounts,
    path: &[u8],
    follow: bool,
) -> Result<(&'f dyn Filesystem, Node)> {
    if !path.starts_with(b"/") {
        return Err(Error::invalid(format!(
            "{}: paths inside the image must be absolute",
            String::from_utf8_lossy(path)
        )));
    }
    let (i, rest) = mounted_at(mounts, path)
        .ok_or_else(|| Error::Other("no filesystem is mounted on /".into()))?;
    let fs = found[i].filesystem()?;
    let node = vdisk_fs::resolve(fs, &rest, follow)?;
    Ok((fs, node))
}

/// The whole content of a regular file, refusing one larger than `limit` bytes.
pub fn read_whole(fs: &dyn Filesystem, node: &Node, limit: usize) -> Result<Vec<u8>> {
    let len = usize::try_from(node.size)
        .ok()
        .filter(|&n| n <= limit)
        .ok_or_else(|| {
            Error::Other(format!(
                "file of {} bytes is larger than the {limit} bytes read here",
                node.size
            ))
        })?;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = fs.read(node, done as u64, &mut buf[done..])?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_go_to_the_longest_mount_point() {
        let m = Mounts {
            points: vec![
                (b"/".to_vec(), 1),
                (b"/boot".to_vec(), 0),
                (b"/boot/efi".to_vec(), 2),
            ],
        };
        assert_eq!(
            mounted_at(&m, b"/etc/fstab"),
            Some((1, b"/etc/fstab".to_vec()))
        );
        assert_eq!(mounted_at(&m, b"/boot"), Some((0, b"/".to_vec())));
        assert_eq!(mounted_at(&m, b"/boot/"), Some((0, b"/".to_vec())));
        assert_eq!(
            mounted_at(&m, b"/boot/grub/x"),
            Some((0, b"/grub/x".to_vec()))
        );
        assert_eq!(
            mounted_at(&m, b"/boot/efi/EFI"),
            Some((2, b"/EFI".to_vec()))
        );
        assert_eq!(mounted_at(&m, b"/bootx"), Some((1, b"/bootx".to_vec())));
        assert_eq!(mounted_at(&m, b"//boot//efi"), Some((2, b"/".to_vec())));
        assert_eq!(mounted_at(&Mounts::default(), b"/x"), None);
    }

    #[test]
    fn mount_points_are_normalised() {
        assert_eq!(normalize(b"/"), b"/");
        assert_eq!(normalize(b""), b"/");
        assert_eq!(normalize(b"/boot/"), b"/boot");
        assert_eq!(normalize(b"//a///b"), b"/a/b");
        assert_eq!(normalize(b"/boot/../etc/./fstab"), b"/etc/fstab");
        assert_eq!(normalize(b"/../.."), b"/");
    }
}
