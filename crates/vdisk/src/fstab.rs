//! Reading a guest's `/etc/fstab` (fstab(5): six whitespace-separated fields, `#` comments, `\040`
//! octal escapes) and matching its first field (`UUID=`, `LABEL=`, `PARTUUID=`, `PARTLABEL=`, a
//! `/dev/...` name or a `/dev/disk/by-*` link) to the filesystems found in an image, as
//! libguestfs's inspection does to mount a guest's filesystems where the guest mounts them.

/// One line of an fstab that names a filesystem to mount on a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    /// The first field, unescaped (`UUID=...`, `/dev/sda1`, ...).
    pub spec: Vec<u8>,
    /// The mount point, unescaped (absolute).
    pub mountpoint: Vec<u8>,
    /// The filesystem type (`ext4`, `vfat`, `auto`, ...).
    pub vfstype: Vec<u8>,
}

/// Filesystem types an fstab may list that hold no files of the guest's disk.
const VIRTUAL_TYPES: &[&[u8]] = &[
    b"swap",
    b"proc",
    b"sysfs",
    b"tmpfs",
    b"devpts",
    b"devtmpfs",
    b"cgroup",
    b"cgroup2",
    b"securityfs",
    b"debugfs",
    b"nfs",
    b"nfs4",
    b"cifs",
    b"smbfs",
    b"fuse",
    b"none",
    b"bind",
];

/// The longest fstab read (an implementation bound: real ones are a few KiB).
pub const MAX_FSTAB_BYTES: usize = 1 << 20;

/// The entries of `text` that mount a filesystem on an absolute directory, in file order; swap,
/// pseudo and network filesystems, bind mounts and malformed lines are skipped.
pub fn parse(text: &[u8]) -> Vec<FstabEntry> {
    let text = &text[..text.len().min(MAX_FSTAB_BYTES)];
    let mut out = Vec::new();
    for line in text.split(|&c| c == b'\n') {
        let mut fields = line
            .split(|&c| c == b' ' || c == b'\t' || c == b'\r')
            .filter(|f| !f.is_empty());
        let Some(spec) = fields.next() else { continue };
        if spec.starts_with(b"#") {
            continue;
        }
        let (Some(mountpoint), Some(vfstype)) = (fields.next(), fields.next()) else {
            continue;
        };
        let options = fields.next().unwrap_or(b"defaults");
        let (spec, mountpoint, vfstype) = (unescape(spec), unescape(mountpoint), unescape(vfstype));
        let bind = options
            .split(|&c| c == b',')
            .any(|o| o == b"bind" || o == b"rbind");
        if !mountpoint.starts_with(b"/")
            || bind
            || VIRTUAL_TYPES.contains(&vfstype.as_slice())
            || vfstype.starts_with(b"fuse.")
        {
            continue;
        }
        out.push(FstabEntry {
            spec,
            mountpoint,
            vfstype,
        });
    }
    out
}

/// fstab's escapes: `\` followed by three octal digits is that byte (`\040` a space); anything else
/// stays as it is.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field.get(i + 1..i + 4).filter(|d| {
            field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// What is known of one filesystem in the image, to match fstab specs against.
#[derive(Debug, Clone, Default)]
pub struct FsIdentity {
    /// libguestfs's name for its device: `/dev/sda` (the whole disk), `/dev/sdaN`, or
    /// `/dev/VG/LV` for an LVM logical volume.
    pub device: String,
    /// Other names fstab may give the device (an LVM volume's `/dev/mapper/VG-LV` and its
    /// `/dev/disk/by-id` links).
    pub aliases: Vec<String>,
    /// The filesystem's UUID as blkid prints it.
    pub uuid: Option<String>,
    /// The filesystem's label.
    pub label: Option<Vec<u8>>,
    /// The GPT partition's unique GUID (or the MBR's `SIGNATURE-NN`), as blkid's PARTUUID.
    pub partuuid: Option<String>,
    /// The GPT partition's name, as blkid's PARTLABEL.
    pub partlabel: Option<Vec<u8>>,
}

/// The index in `filesystems` of the one `spec` names, if any. UUIDs and PARTUUIDs compare without
/// regard to case; device names are taken as libguestfs canonicalises them (`/dev/vda1`,
/// `/dev/hda1`, `/dev/xvda1` are all the first disk's first partition, `/dev/sda1` here).
pub fn find(spec: &[u8], filesystems: &[FsIdentity]) -> Option<usize> {
    let spec = std::str::from_utf8(spec).ok();
    let by = |prefix: &str| spec.and_then(|s| s.strip_prefix(prefix));
    let link = |dir: &str| spec.and_then(|s| s.strip_prefix(dir)).map(unescape_link);
    let eq_ci =
        |a: &Option<String>, b: &str| a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(b));
    let eq = |a: &Option<Vec<u8>>, b: &[u8]| a.as_deref() == Some(b);
    if let Some(u) = by("UUID=")
        .map(str::to_string)
        .or_else(|| link("/dev/disk/by-uuid/"))
    {
        return filesystems
            .iter()
            .position(|f| eq_ci(&f.uuid, u.trim_matches('"')));
    }
    if let Some(l) = by("LABEL=")
        .map(str::to_string)
        .or_else(|| link("/dev/disk/by-label/"))
    {
        return filesystems
            .iter()
            .position(|f| eq(&f.label, l.trim_matches('"').as_bytes()));
    }
    if let Some(u) = by("PARTUUID=")
        .map(str::to_string)
        .or_else(|| link("/dev/disk/by-partuuid/"))
    {
        return filesystems
            .iter()
            .position(|f| eq_ci(&f.partuuid, u.trim_matches('"')));
    }
    if let Some(l) = by("PARTLABEL=")
        .map(str::to_string)
        .or_else(|| link("/dev/disk/by-partlabel/"))
    {
        return filesystems
            .iter()
            .position(|f| eq(&f.partlabel, l.trim_matches('"').as_bytes()));
    }
    let spec = spec?;
    if let Some(i) = filesystems
        .iter()
        .position(|f| f.device == spec || f.aliases.iter().any(|a| a == spec))
    {
        return Some(i);
    }
    let dev = canonical_device(spec)?;
    filesystems.iter().position(|f| f.device == dev)
}

/// udev's `/dev/disk/by-*` names escape some bytes as `\xHH`.
fn unescape_link(name: &str) -> String {
    let b = name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i..i + 4).filter(|h| h[0] == b'\\' && h[1] == b'x');
        match hex
            .and_then(|h| std::str::from_utf8(&h[2..]).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/dev/sda1`, `/dev/vda1`, `/dev/hda1`, `/dev/xvda1` -> `/dev/sda1` (the first disk, which is
/// the only one vdisk sees); other disks and other names -> `None`.
fn canonical_device(name: &str) -> Option<String> {
    let rest = name.strip_prefix("/dev/")?;
    let rest = ["sd", "vd", "hd", "xvd"]
        .iter()
        .find_map(|p| rest.strip_prefix(p))?;
    let part = rest.strip_prefix('a')?;
    if !part.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(format!("/dev/sda{part}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_a_debian_installer_writes() {
        let text = b"# /etc/fstab: static file system information.\n\
            #\n\
            # <file system> <mount point>   <type>  <options>       <dump>  <pass>\n\
            UUID=0b6f1c1e-7c4d-4c1d-9d5a-3f1f2e0c9a11 /               ext4    errors=remount-ro 0       1\n\
            UUID=ABCD-1234  /boot/efi       vfat    umask=0077      0       1\n\
            UUID=11111111-2222-3333-4444-555555555555 none            swap    sw              0       0\n\
            /dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0\n\
            proc /proc proc defaults 0 0\n\
            /srv/a /srv/b none bind 0 0\n\
            LABEL=my\\040data /srv/my\\040data ext4 defaults 0 2\n\
            broken-line-with-one-field\n";
        let e = parse(text);
        let got: Vec<(&[u8], &[u8])> = e
            .iter()
            .map(|e| (e.spec.as_slice(), e.mountpoint.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                (&b"UUID=0b6f1c1e-7c4d-4c1d-9d5a-3f1f2e0c9a11"[..], &b"/"[..]),
                (b"UUID=ABCD-1234", b"/boot/efi"),
                (b"/dev/sr0", b"/media/cdrom0"),
                (b"LABEL=my data", b"/srv/my data"),
            ]
        );
        assert_eq!(e[1].vfstype, b"vfat");
    }

    #[test]
    fn specs_name_filesystems_as_libguestfs_matches_them() {
        let fs = vec![
            FsIdentity {
                device: "/dev/sda1".into(),
                uuid: Some("ABCD-1234".into()),
                partuuid: Some("0fc63daf-8483-4772-8e79-3d69d8477de4".into()),
                partlabel: Some(b"EFI system".to_vec()),
                ..Default::default()
            },
            FsIdentity {
                device: "/dev/sda2".into(),
                uuid: Some("0b6f1c1e-7c4d-4c1d-9d5a-3f1f2e0c9a11".into()),
                label: Some(b"root fs".to_vec()),
                ..Default::default()
            },
            FsIdentity {
                device: "/dev/rl/root".into(),
                aliases: vec!["/dev/mapper/rl-root".into()],
                ..Default::default()
            },
        ];
        assert_eq!(find(b"/dev/rl/root", &fs), Some(2));
        assert_eq!(find(b"/dev/mapper/rl-root", &fs), Some(2));
        assert_eq!(find(b"/dev/mapper/rl-home", &fs), None);
        assert_eq!(find(b"UUID=abcd-1234", &fs), Some(0));
        assert_eq!(
            find(b"UUID=\"0B6F1C1E-7C4D-4C1D-9D5A-3F1F2E0C9A11\"", &fs),
            Some(1)
        );
        assert_eq!(find(b"/dev/disk/by-uuid/ABCD-1234", &fs), Some(0));
        assert_eq!(find(b"LABEL=root fs", &fs), Some(1));
        assert_eq!(find(b"/dev/disk/by-label/root\\x20fs", &fs), Some(1));
        assert_eq!(find(b"LABEL=ROOT FS", &fs), None);
        assert_eq!(
            find(b"PARTUUID=0FC63DAF-8483-4772-8E79-3D69D8477DE4", &fs),
            Some(0)
        );
        assert_eq!(find(b"PARTLABEL=EFI system", &fs), Some(0));
        assert_eq!(find(b"/dev/vda2", &fs), Some(1));
        assert_eq!(find(b"/dev/xvda1", &fs), Some(0));
        assert_eq!(find(b"/dev/hda2", &fs), Some(1));
        assert_eq!(find(b"/dev/sdb1", &fs), None);
        assert_eq!(find(b"/dev/sda3", &fs), None);
        assert_eq!(find(b"/dev/mapper/vg-root", &fs), None);
        assert_eq!(find(b"UUID=nope", &fs), None);
    }

    #[test]
    fn escapes_are_octal_bytes() {
        assert_eq!(unescape(b"a\\040b\\011c"), b"a b\tc");
        assert_eq!(unescape(b"\\134"), b"\\");
        // Not three octal digits, or past a byte: left alone.
        assert_eq!(unescape(b"x\\04"), b"x\\04");
        assert_eq!(unescape(b"x\\777"), b"x\\777");
        assert_eq!(unescape(b"x\\089"), b"x\\089");
    }
}
