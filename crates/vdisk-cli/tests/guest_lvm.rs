//! `vdisk filesystems`, `df`, `ls` and `cat` on guests whose filesystems lie in LVM logical
//! volumes, laid out as a Rocky Linux install lays them out: a GPT disk with an XFS /boot
//! partition and an LVM physical volume holding volume group `rl` with `root` (XFS, in two
//! segments), `swap` (mkswap) and `home` (XFS), the root's /etc/fstab naming them as
//! `/dev/mapper/rl-root`, `UUID=...` and (a second variant) udev's
//! `/dev/disk/by-id/dm-uuid-LVM-...`; and a disk that is a physical volume as a whole. The PV,
//! group and volumes are made by lvm2 (pvcreate, vgcreate, lvcreate, lvextend on a loop device
//! over the partition, activation off: no device-mapper is needed), the filesystems by
//! `mkfs.xfs -p` and mkswap on files of their own, copied to the extents `lvs` reports, and
//! the disk converted to qcow2 by qemu-img. The oracles: lvm2's report (volume sizes, the
//! UUIDs in the dm-uuid names, where each extent lies), blkid's UUIDs of the filesystem
//! images, the trees the protofiles describe, and `vdisk df` of the standalone filesystem
//! images.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use vdisk_testutil::tools::{self, num, sbin_path, Loop};
use vdisk_testutil::{qemu_available, Scratch};

const TOOLS: &[&str] = &[
    "pvcreate", "vgcreate", "lvcreate", "lvextend", "lvs", "vgs", "pvs", "losetup", "sfdisk",
    "mkfs.xfs", "mkswap", "blkid", "dd",
];

const MIB: u64 = 1 << 20;

/// lvm2, util-linux, xfsprogs and qemu-img, and root for the loop devices; under `CI` their
/// absence is a failure, not a skip.
fn tools_available() -> bool {
    vdisk_testutil::tools::tools_available(
        TOOLS,
        true,
        "apt-get install lvm2 xfsprogs fdisk; run as root",
    ) && qemu_available()
}

/// Runs an lvm2 command restricted to the loop device; returns its stdout.
fn lvm(l: &Loop, cmd: &str, args: &[&str]) -> String {
    tools::lvm(cmd, &[l], args)
}

/// The rows of an lvm2 report with `fields`, sizes in bytes.
fn report(l: &Loop, cmd: &str, fields: &str) -> Vec<Vec<String>> {
    tools::report(cmd, &[l], fields, &[])
}

/// What lvm2 says of one logical volume.
struct Volume {
    uuid: String,
    size: u64,
    /// Where its segments lie: (disk offset, volume offset, bytes), in volume order.
    pieces: Vec<(u64, u64, u64)>,
}

/// What lvm2 says of a group on one PV that starts `pv_at` bytes into the disk file.
struct Lvm {
    vg_uuid: String,
    pv_uuid: String,
    lvs: BTreeMap<String, Volume>,
}

fn lvm_facts(l: &Loop, pv_at: u64) -> Lvm {
    let vg = report(l, "vgs", "vg_uuid,vg_extent_size");
    let extent = num(&vg[0][1]);
    let pv = report(l, "pvs", "pv_name,pe_start,pv_uuid");
    let pe_start = num(&pv[0][1]);
    let mut lvs: BTreeMap<String, Volume> = BTreeMap::new();
    for r in report(
        l,
        "lvs",
        "lv_name,lv_uuid,lv_size,segtype,seg_start_pe,seg_pe_ranges",
    ) {
        assert_eq!(r[3], "linear", "{r:?}");
        let (_, span) = r[5].rsplit_once(':').unwrap();
        let (first, last) = span.split_once('-').unwrap();
        let (first, last) = (num(first), num(last));
        let e = lvs.entry(r[0].clone()).or_insert(Volume {
            uuid: r[1].clone(),
            size: num(&r[2]),
            pieces: Vec::new(),
        });
        e.pieces.push((
            pv_at + pe_start + first * extent,
            num(&r[4]) * extent,
            (last - first + 1) * extent,
        ));
    }
    for v in lvs.values_mut() {
        v.pieces.sort_by_key(|p| p.1);
        assert_eq!(v.pieces.iter().map(|p| p.2).sum::<u64>(), v.size);
    }
    Lvm {
        vg_uuid: vg[0][0].clone(),
        pv_uuid: pv[0][2].clone(),
        lvs,
    }
}

/// A directory tree for a protofile: directories map names to entries, files hold their bytes.
enum Entry {
    Dir(BTreeMap<String, Entry>),
    File(Vec<u8>),
}

/// The tree of `paths` (`etc/fstab`, or `home/` for an empty directory) and their contents.
fn tree(paths: &[(&str, &[u8])]) -> Entry {
    let mut root = BTreeMap::new();
    for (p, data) in paths {
        let mut dir = &mut root;
        let parts: Vec<&str> = p.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty() {
                break;
            }
            if i + 1 == parts.len() {
                dir.insert(part.to_string(), Entry::File(data.to_vec()));
            } else {
                let e = dir
                    .entry(part.to_string())
                    .or_insert_with(|| Entry::Dir(BTreeMap::new()));
                let Entry::Dir(sub) = e else { panic!("{p}") };
                dir = sub;
            }
        }
    }
    Entry::Dir(root)
}

/// The names in directory `path` (`/` or `/etc`) of a tree, sorted, one a line as `vdisk ls`.
fn listing(t: &Entry, path: &str) -> String {
    let mut e = t;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let Entry::Dir(m) = e else { panic!("{path}") };
        e = &m[part];
    }
    let Entry::Dir(m) = e else { panic!("{path}") };
    m.keys().map(|k| format!("{k}\n")).collect()
}

/// Makes `img` (`size` bytes) an XFS filesystem holding `t`, with `uuid` (and `label`).
fn mkfs_xfs(d: &Path, img: &str, size: u64, uuid: &str, label: Option<&str>, t: &Entry) {
    fn emit(e: &Entry, d: &Path, img: &str, n: &mut usize, out: &mut String) {
        let Entry::Dir(m) = e else { unreachable!() };
        for (name, e) in m {
            match e {
                Entry::Dir(_) => {
                    out.push_str(&format!("{name} d--755 0 0\n"));
                    emit(e, d, img, n, out);
                    out.push_str("$\n");
                }
                Entry::File(data) => {
                    *n += 1;
                    let src = d.join(format!("{img}.src-{n}"));
                    std::fs::write(&src, data).unwrap();
                    out.push_str(&format!("{name} ---644 0 0 {}\n", src.display()));
                }
            }
        }
    }
    let mut proto = String::from("vdisk-guest-lvm\n0 0\nd--755 0 0\n");
    emit(t, d, img, &mut 0, &mut proto);
    proto.push_str("$\n");
    let pf = d.join(format!("{img}.proto"));
    std::fs::write(&pf, proto).unwrap();
    std::fs::File::create(d.join(img))
        .unwrap()
        .set_len(size)
        .unwrap();
    let mut c = Command::new("mkfs.xfs");
    c.env("PATH", sbin_path())
        .current_dir(d)
        .args(["-q", "-f", "-m", &format!("uuid={uuid}")]);
    if let Some(l) = label {
        c.args(["-L", l]);
    }
    let o = c.arg("-p").arg(&pf).arg(img).output().unwrap();
    assert!(
        o.status.success(),
        "mkfs.xfs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(blkid_uuid(d, img), uuid, "blkid's UUID of {img}");
}

fn blkid_uuid(d: &Path, img: &str) -> String {
    sh(
        d,
        &format!("PATH=$PATH:/usr/sbin:/sbin blkid -p -o value -s UUID {img}"),
    )
    .trim()
    .to_string()
}

/// Copies `len` bytes at `from` of `src` to `to` in `dst`, leaving holes where `src` has zeros.
fn place(d: &Path, src: &str, from: u64, len: u64, dst: &str, to: u64) {
    sh(
        d,
        &format!(
            "dd if={src} of={dst} bs=1M skip={from} count={len} seek={to} \
             iflag=skip_bytes,count_bytes oflag=seek_bytes conv=sparse,notrunc status=none"
        ),
    );
}

/// Copies the filesystem image `img` onto the volume's pieces.
fn place_lv(d: &Path, img: &str, lv: &Volume, dst: &str) {
    let len = std::fs::metadata(d.join(img)).unwrap().len();
    assert_eq!(len, lv.size, "{img} is as large as its volume");
    for &(disk_at, lv_at, n) in &lv.pieces {
        place(d, img, lv_at, n, dst, disk_at);
    }
}

/// A GPT partition's first sector and sector count, as sfdisk reads them.
fn partitions(d: &Path, img: &str) -> Vec<(u64, u64)> {
    let j: serde_json::Value = serde_json::from_str(&sh(
        d,
        &format!("PATH=$PATH:/usr/sbin:/sbin sfdisk -J {img}"),
    ))
    .unwrap();
    j["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap()))
        .collect()
}

/// `vdisk filesystems -l` (or `df`) rows split on blanks, and stderr.
fn rows(d: &Path, args: &[&str]) -> (Vec<Vec<String>>, String) {
    let o = vdisk(d, args);
    assert!(o.status.success(), "vdisk {args:?}: {}", err(&o));
    let rows = out(&o)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    (rows, err(&o))
}

const BOOT_UUID: &str = "0b007b00-1111-4aaa-8bbb-000000000001";
const ROOT_UUID: &str = "2007f500-2222-4aaa-8bbb-000000000002";
const HOME_UUID: &str = "40e0f500-3333-4aaa-8bbb-000000000003";

/// The root filesystem's tree with `fstab`.
fn root_tree(fstab: &str) -> Entry {
    tree(&[
        ("etc/fstab", fstab.as_bytes()),
        ("etc/hostname", b"rocky9.example.com\n"),
        (
            "etc/os-release",
            b"NAME=\"Rocky Linux\"\nVERSION_ID=\"9.4\"\nID=\"rocky\"\n",
        ),
        ("boot/", b""),
        ("home/", b""),
        ("srv/", b""),
        ("root/.bash_history", b"lvs\n"),
        ("var/log/messages", b"booted\n"),
    ])
}

/// A Rocky-like guest: GPT, /boot XFS on sda1, PV on sda2 with `rl/root` (two segments),
/// `rl/swap` and `rl/home`; disk.qcow2 with the /dev/mapper fstab, disk-b.qcow2 with the
/// dm-uuid one.
#[test]
fn a_rocky_linux_layout_on_lvm() {
    if !tools_available() {
        return;
    }
    let s = Scratch::new("cli-guest-lvm");
    let d = s.path();
    sh(
        d,
        "truncate -s 1000M disk.raw
         printf 'label: gpt\\nsize=300M, type=L, name=\"boot\"\\ntype=V, name=\"lvm\"\\n' | PATH=$PATH:/usr/sbin:/sbin sfdisk -q disk.raw",
    );
    let parts = partitions(d, "disk.raw");
    assert_eq!(parts.len(), 2);
    let (p1, p2) = (
        (parts[0].0 * 512, parts[0].1 * 512),
        (parts[1].0 * 512, parts[1].1 * 512),
    );
    assert_eq!(p1.1, 300 * MIB);

    // The group, as anaconda would leave it but with root extended after swap was made.
    let l = Loop::new(&d.join("disk.raw"), p2.0, p2.1);
    lvm(&l, "pvcreate", &["-q", &l.dev]);
    lvm(&l, "vgcreate", &["-q", "rl", &l.dev]);
    lvm(
        &l,
        "lvcreate",
        &["-an", "-Zn", "-L", "160M", "-n", "root", "rl"],
    );
    lvm(
        &l,
        "lvcreate",
        &["-an", "-Zn", "-L", "32M", "-n", "swap", "rl"],
    );
    lvm(&l, "lvextend", &["-L", "320M", "rl/root"]);
    lvm(
        &l,
        "lvcreate",
        &["-an", "-Zn", "-L", "300M", "-n", "home", "rl"],
    );
    let f = lvm_facts(&l, p2.0);
    drop(l);
    let (root, swap, home) = (&f.lvs["root"], &f.lvs["swap"], &f.lvs["home"]);
    assert_eq!(
        root.pieces.len(),
        2,
        "root in two segments: {:?}",
        root.pieces
    );
    assert!(
        root.pieces[1].0 > swap.pieces[0].0,
        "root's second segment lies after swap"
    );
    assert_eq!(
        (root.size, swap.size, home.size),
        (320 * MIB, 32 * MIB, 300 * MIB)
    );
    let dm_uuid = |lv: &str| {
        format!(
            "/dev/disk/by-id/dm-uuid-LVM-{}{}",
            f.vg_uuid.replace('-', ""),
            f.lvs[lv].uuid.replace('-', "")
        )
    };

    // The filesystems.
    let fstab_a = format!(
        "# /etc/fstab\n# Created by anaconda\n\
         /dev/mapper/rl-root     /                       xfs     defaults        0 0\n\
         UUID={BOOT_UUID} /boot                   xfs     defaults        0 0\n\
         /dev/mapper/rl-home     /home                   xfs     defaults        0 0\n\
         /dev/mapper/rl-swap     none                    swap    defaults        0 0\n\
         /dev/mapper/rl-nothere  /srv                    xfs     defaults        0 0\n"
    );
    let fstab_b = format!(
        "{} / xfs defaults 0 0\nUUID={BOOT_UUID} /boot xfs defaults 0 0\n{} /home xfs defaults 0 0\n/dev/rl/swap none swap defaults 0 0\n",
        dm_uuid("root"),
        dm_uuid("home")
    );
    let boot_t = tree(&[
        ("vmlinuz-5.14.0-427.el9.x86_64", b"\x7fELF kernel"),
        ("initramfs-5.14.0-427.el9.x86_64.img", b"initramfs"),
        ("config-5.14.0-427.el9.x86_64", b"CONFIG_XFS_FS=m\n"),
        ("grub2/grub.cfg", b"set default=0\n"),
        ("loader/entries/rocky.conf", b"title Rocky Linux\n"),
    ]);
    let home_t = tree(&[
        ("alice/notes.txt", b"buy milk\n"),
        ("alice/.bashrc", b"# .bashrc\n"),
    ]);
    let root_a = root_tree(&fstab_a);
    mkfs_xfs(d, "boot.img", 300 * MIB, BOOT_UUID, None, &boot_t);
    mkfs_xfs(d, "root-a.img", 320 * MIB, ROOT_UUID, None, &root_a);
    mkfs_xfs(
        d,
        "root-b.img",
        320 * MIB,
        ROOT_UUID,
        None,
        &root_tree(&fstab_b),
    );
    mkfs_xfs(d, "home.img", 300 * MIB, HOME_UUID, Some("home"), &home_t);
    sh(
        d,
        "truncate -s 32M swap.img && PATH=$PATH:/usr/sbin:/sbin mkswap -q swap.img",
    );
    place(d, "boot.img", 0, 300 * MIB, "disk.raw", p1.0);
    place_lv(d, "root-a.img", root, "disk.raw");
    place_lv(d, "swap.img", swap, "disk.raw");
    place_lv(d, "home.img", home, "disk.raw");
    qemu_ok(d, &["convert", "-O", "qcow2", "disk.raw", "disk.qcow2"]);
    place_lv(d, "root-b.img", root, "disk.raw");
    qemu_ok(d, &["convert", "-O", "qcow2", "disk.raw", "disk-b.qcow2"]);
    let img = "disk.qcow2";

    // filesystems: the partition and the volumes holding filesystems; not the PV, not swap.
    assert_eq!(
        vdisk_ok(d, &["filesystems", img]),
        "/dev/sda1\n/dev/rl/root\n/dev/rl/home\n"
    );
    let (t, e) = rows(d, &["filesystems", "-l", img]);
    assert_eq!(e, "", "nothing unreadable");
    assert_eq!(t[0], ["Name", "Type", "VFS", "Label", "UUID", "Size"]);
    let row = |dev: &str, label: &str, uuid: &str, size: u64| {
        vec![
            dev.to_string(),
            "filesystem".into(),
            "xfs".into(),
            label.into(),
            uuid.into(),
            size.to_string(),
        ]
    };
    assert_eq!(
        t[1..],
        [
            row("/dev/sda1", "-", BOOT_UUID, 300 * MIB),
            row("/dev/rl/root", "-", ROOT_UUID, root.size),
            row("/dev/rl/home", "home", HOME_UUID, home.size),
        ]
    );

    // virt-filesystems' --lvs and --pvs: every visible volume, swap included, with the UUID
    // and size lvm2 reports (the UUIDs without dashes, as libguestfs gives them); the PV with
    // its UUID and its partition's size.
    let (t, e) = rows(d, &["filesystems", "--lvs", "--pvs", "-l", img]);
    assert_eq!(e, "");
    let mut want: Vec<Vec<String>> = f
        .lvs
        .iter()
        .map(|(name, v)| {
            vec![
                format!("/dev/rl/{name}"),
                "lv".into(),
                "-".into(),
                "-".into(),
                v.uuid.replace('-', ""),
                v.size.to_string(),
            ]
        })
        .collect();
    let mut got = t[1..t.len() - 1].to_vec();
    got.sort();
    want.sort();
    assert_eq!(got, want, "--lvs against lvm2's lvs");
    assert_eq!(want.len(), 3, "root, swap, home");
    assert_eq!(
        t[t.len() - 1],
        [
            "/dev/sda2".to_string(),
            "pv".into(),
            "-".into(),
            "-".into(),
            f.pv_uuid.replace('-', ""),
            p2.1.to_string()
        ],
        "--pvs against lvm2's pvs"
    );
    let short = vdisk_ok(d, &["filesystems", "--lvs", img]);
    assert_eq!(short.lines().count(), 3, "{short}");
    assert_eq!(
        vdisk_ok(d, &["filesystems", "--filesystems", "--pvs", img]),
        "/dev/sda1\n/dev/rl/root\n/dev/rl/home\n/dev/sda2\n"
    );

    // Files through the fstab's mounts: /boot by UUID, /home by /dev/mapper name; the entry
    // naming a volume the disk does not have is left out.
    assert_eq!(vdisk_ok(d, &["ls", img, "/"]), listing(&root_a, "/"));
    assert_eq!(vdisk_ok(d, &["ls", img, "/boot"]), listing(&boot_t, "/"));
    assert_eq!(
        vdisk_ok(d, &["ls", img, "/boot/loader/entries"]),
        "rocky.conf\n"
    );
    assert_eq!(vdisk_ok(d, &["ls", img, "/etc"]), listing(&root_a, "/etc"));
    assert_eq!(
        vdisk_ok(d, &["cat", img, "/etc/hostname"]),
        "rocky9.example.com\n"
    );
    assert_eq!(vdisk_ok(d, &["cat", img, "/etc/fstab"]), fstab_a);
    assert_eq!(vdisk_ok(d, &["ls", img, "/home"]), "alice\n");
    assert_eq!(
        vdisk_ok(
            d,
            &["cat", img, "/home/alice/notes.txt", "/boot/grub2/grub.cfg"]
        ),
        "buy milk\nset default=0\n"
    );
    assert_eq!(
        vdisk_ok(d, &["ls", img, "/srv"]),
        "",
        "/srv of the root, nothing on it"
    );

    // df: one row per filesystem, the volumes' numbers those of their images on their own.
    let (df, _) = rows(d, &["df", img]);
    assert_eq!(
        df.iter().skip(1).map(|r| r[0].as_str()).collect::<Vec<_>>(),
        [
            format!("{img}:/dev/sda1"),
            format!("{img}:/dev/rl/root"),
            format!("{img}:/dev/rl/home"),
        ]
    );
    for (r, alone) in df[1..].iter().zip(["boot.img", "root-a.img", "home.img"]) {
        let (one, _) = rows(d, &["df", "-f", "raw", alone]);
        assert_eq!(one[1][0], format!("{alone}:/dev/sda"));
        assert_eq!(r[1..], one[1][1..], "df of {} and of {alone}", r[0]);
        let n: Vec<u64> = r[1..4].iter().map(|v| num(v)).collect();
        assert!(n[0] > 0 && n[1] > 0 && n[1] + n[2] <= n[0], "{r:?}");
    }

    // -m: the volume by its /dev/VG/LV name, and by the names Linux gives it.
    let etc = listing(&root_a, "/etc");
    assert_eq!(vdisk_ok(d, &["ls", "-m", "/dev/rl/root", img, "/etc"]), etc);
    assert_eq!(
        vdisk_ok(
            d,
            &[
                "ls",
                "-m",
                "/dev/rl/root",
                "-m",
                "/dev/rl/home:/home",
                img,
                "/home/alice"
            ]
        ),
        ".bashrc\nnotes.txt\n"
    );
    for (dev, msg) in [
        ("/dev/sda2", "LVM physical volume of volume group rl"),
        ("/dev/rl/swap", "/dev/rl/swap"),
        ("/dev/rl/nothere", "no device /dev/rl/nothere"),
    ] {
        let o = vdisk(d, &["ls", "-m", dev, img, "/"]);
        assert_eq!(o.status.code(), Some(1), "-m {dev}");
        assert!(err(&o).contains(msg), "-m {dev}: {}", err(&o));
    }
    // The dm-uuid fstab mounts the same.
    let b = "disk-b.qcow2";
    assert_eq!(
        vdisk_ok(d, &["cat", b, "/etc/fstab"]),
        fstab_b,
        "the second root"
    );
    assert_eq!(
        vdisk_ok(d, &["ls", b, "/home/alice"]),
        ".bashrc\nnotes.txt\n"
    );
    assert_eq!(vdisk_ok(d, &["ls", b, "/boot"]), listing(&boot_t, "/"));
    let (df, _) = rows(d, &["df", b]);
    assert_eq!(df.len(), 4, "{df:?}");

    // -m with the names Linux gives the volume, as libguestfs's -m takes them (they are the
    // appliance's device names) and as the fstab lines above are matched.
    let refused: Vec<String> = [
        "/dev/mapper/rl-root".to_string(),
        "/dev/disk/by-id/dm-name-rl-root".to_string(),
        dm_uuid("root"),
    ]
    .into_iter()
    .filter_map(|dev| {
        let o = vdisk(d, &["ls", "-m", &dev, img, "/etc"]);
        (!o.status.success() || out(&o) != etc).then(|| format!("{dev}: {}{}", out(&o), err(&o)))
    })
    .collect();
    assert!(
        refused.is_empty(),
        "-m refuses the volume's other names:\n{}",
        refused.join("")
    );
}

/// A disk that is a physical volume from its first sector (no partition table), with the
/// root filesystem in `data-vg/web-root` (dashes doubled in its /dev/mapper name).
#[test]
fn a_disk_that_is_a_physical_volume() {
    if !tools_available() {
        return;
    }
    let s = Scratch::new("cli-guest-lvm-pv");
    let d = s.path();
    sh(d, "truncate -s 320M pv.raw");
    let l = Loop::new(&d.join("pv.raw"), 0, 320 * MIB);
    lvm(&l, "pvcreate", &["-q", &l.dev]);
    lvm(&l, "vgcreate", &["-q", "data-vg", &l.dev]);
    lvm(
        &l,
        "lvcreate",
        &["-an", "-Zn", "-L", "300M", "-n", "web-root", "data-vg"],
    );
    let f = lvm_facts(&l, 0);
    drop(l);
    let lv = &f.lvs["web-root"];
    let t = tree(&[
        (
            "etc/fstab",
            b"/dev/mapper/data--vg-web--root / xfs defaults 0 0\n",
        ),
        ("etc/hostname", b"web\n"),
        ("srv/www/index.html", b"<h1>hello</h1>\n"),
    ]);
    mkfs_xfs(d, "web.img", 300 * MIB, ROOT_UUID, Some("web"), &t);
    place_lv(d, "web.img", lv, "pv.raw");
    assert_eq!(
        vdisk_ok(d, &["filesystems", "pv.raw"]),
        "/dev/data-vg/web-root\n"
    );
    let (tbl, e) = rows(d, &["filesystems", "-l", "pv.raw"]);
    assert_eq!(e, "");
    assert_eq!(
        tbl[1],
        [
            "/dev/data-vg/web-root",
            "filesystem",
            "xfs",
            "web",
            ROOT_UUID,
            &lv.size.to_string()
        ]
    );
    assert_eq!(vdisk_ok(d, &["ls", "pv.raw", "/"]), listing(&t, "/"));
    assert_eq!(
        vdisk_ok(
            d,
            &["cat", "pv.raw", "/srv/www/index.html", "/etc/hostname"]
        ),
        "<h1>hello</h1>\nweb\n"
    );
    assert_eq!(
        vdisk_ok(d, &["ls", "-m", "/dev/data-vg/web-root", "pv.raw", "/etc"]),
        "fstab\nhostname\n"
    );
    let (df, _) = rows(d, &["df", "pv.raw"]);
    assert_eq!(df.len(), 2, "{df:?}");
    assert_eq!(df[1][0], "pv.raw:/dev/data-vg/web-root");
}
