//! `vdisk filesystems`, `df`, `ls` and `cat` on a guest disk stored as qcow2 and VMDK: a GPT disk
//! with a FAT EFI system partition and an ext4 root whose /etc/fstab mounts the ESP on
//! /boot/efi by UUID, built at test time with sfdisk, mkfs.fat + mcopy and mkfs.ext4 -d. What vdisk
//! shows is compared with the source tree, blkid and the tools' own view of the filesystems.

mod common;
use common::*;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use vdisk_testutil::{qemu_available, Scratch};

fn tools_available() -> bool {
    let ok = ["sfdisk", "mkfs.ext4", "mkfs.fat", "mcopy", "blkid"]
        .iter()
        .all(|t| {
            Command::new(t)
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success() || !o.stderr.is_empty())
        });
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "sfdisk, mkfs.ext4 (e2fsprogs), mkfs.fat (dosfstools), mcopy (mtools) and blkid are needed when CI is set"
        );
    }
    ok && qemu_available()
}

/// The guest disk as disk.raw (and the ESP as esp.img, the root tree under root/); returns the
/// ESP's and the root's UUIDs as blkid prints them.
fn guest_disk(d: &Path) -> (String, String) {
    sh(
        d,
        "mkdir -p root/etc root/home/u/deep/er root/boot/efi root/srv esp/EFI/BOOT
         printf 'hello\\n' > root/home/u/hi.txt
         head -c 300000 /dev/urandom > root/home/u/deep/er/blob
         : > root/srv/empty
         ln -s ../home/u/hi.txt root/etc/link
         ln -s /home/u root/srv/abs
         printf 'latin1\\n' > \"root/srv/$(printf 'caf\\351')\"
         printf 'grub' > esp/EFI/BOOT/BOOTX64.EFI
         printf 'Long Name.txt' > 'esp/Long Name.txt'
         truncate -s 96M disk.raw
         printf 'label: gpt\\nsize=32M, type=U, name=\"EFI\"\\ntype=L, name=\"root\"\\n' | sfdisk -q disk.raw
         mkfs.fat -F 16 -n ESP -C esp.img 32768 >/dev/null
         mcopy -s -i esp.img esp/EFI esp/'Long Name.txt' ::",
    );
    let esp = sh(d, "blkid -o value -s UUID esp.img").trim().to_string();
    std::fs::write(
        d.join("root/etc/fstab"),
        format!(
            "# made by the test\nLABEL=guestroot / ext4 errors=remount-ro 0 1\nUUID={esp} /boot/efi vfat umask=0077 0 1\n/dev/sr0 /media/cdrom0 udf,iso9660 user,noauto 0 0\n"
        ),
    )
    .unwrap();
    sh(
        d,
        "mkfs.ext4 -q -F -L guestroot -d root root.img 60M
         dd if=esp.img of=disk.raw bs=512 seek=2048 conv=notrunc status=none
         dd if=root.img of=disk.raw bs=512 seek=67584 conv=notrunc status=none",
    );
    let root = sh(d, "blkid -o value -s UUID root.img").trim().to_string();
    qemu_ok(d, &["convert", "-O", "qcow2", "disk.raw", "disk.qcow2"]);
    qemu_ok(d, &["convert", "-O", "vmdk", "disk.raw", "disk.vmdk"]);
    (esp, root)
}

#[test]
fn files_inside_a_guest_disk_read_as_the_guest_mounts_them() {
    if !tools_available() {
        return;
    }
    let s = Scratch::new("cli-guest-files");
    let d = s.path();
    // The root partition starts at sector 67584 = 2048 + 32M / 512.
    let (esp, root) = guest_disk(d);
    for img in ["disk.qcow2", "disk.vmdk"] {
        assert_eq!(vdisk_ok(d, &["filesystems", img]), "/dev/sda1\n/dev/sda2\n");
        let long = vdisk_ok(d, &["filesystems", "-l", img]);
        let rows: Vec<Vec<&str>> = long
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0], ["Name", "Type", "VFS", "Label", "UUID", "Size"]);
        assert_eq!(
            rows[1],
            [
                "/dev/sda1",
                "filesystem",
                "vfat",
                "ESP",
                esp.as_str(),
                "33554432"
            ]
        );
        assert_eq!(
            rows[2][..5],
            [
                "/dev/sda2",
                "filesystem",
                "ext4",
                "guestroot",
                root.as_str()
            ]
        );
        // Files, through the fstab's mounts.
        assert_eq!(
            vdisk_ok(d, &["cat", img, "/etc/fstab"]).as_bytes(),
            std::fs::read(d.join("root/etc/fstab")).unwrap()
        );
        let blob = vdisk(d, &["cat", img, "/home/u/deep/er/blob"]);
        assert_eq!(
            blob.stdout,
            std::fs::read(d.join("root/home/u/deep/er/blob")).unwrap()
        );
        assert_eq!(
            vdisk_ok(
                d,
                &["cat", img, "/etc/link", "/boot/efi/EFI/BOOT/BOOTX64.EFI"]
            ),
            "hello\ngrub"
        );
        // FAT names: the long name, and case-insensitive lookups as the vfat driver does them.
        assert_eq!(
            vdisk_ok(d, &["cat", img, "/boot/efi/long name.TXT"]),
            "Long Name.txt"
        );
        // Listings: names sorted; -R every path below, mount points crossed.
        assert_eq!(
            vdisk_ok(d, &["ls", img, "/"]),
            "boot\netc\nhome\nlost+found\nsrv\n"
        );
        let mut want: Vec<String> = sh(d, "cd root && find . -mindepth 1 | sed 's/^.//'")
            .lines()
            .map(str::to_string)
            .chain(
                [
                    "/lost+found",
                    "/boot/efi/EFI",
                    "/boot/efi/EFI/BOOT",
                    "/boot/efi/EFI/BOOT/BOOTX64.EFI",
                    "/boot/efi/Long Name.txt",
                ]
                .map(String::from),
            )
            .collect();
        want.sort();
        let got = vdisk_ok(d, &["ls", "-R", img, "/"]);
        let mut got: Vec<String> = got.lines().map(str::to_string).collect();
        got.sort();
        assert_eq!(got, want);
        // -l: what stat says of the source files (ext4 keeps modes, sizes and times).
        let l = vdisk_ok(d, &["ls", "-l", img, "/home/u"]);
        let meta = std::fs::metadata(d.join("root/home/u/hi.txt")).unwrap();
        let line = l.lines().find(|l| l.ends_with(" hi.txt")).unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[0], "-rw-r--r--");
        assert_eq!(f[4], meta.len().to_string());
        assert_eq!(f[2], meta.uid().to_string());
        let link = vdisk_ok(d, &["ls", "-l", img, "/srv/abs"]);
        assert!(link.starts_with("lrwxrwxrwx"), "{link}");
        assert!(link.ends_with(" /srv/abs -> /home/u\n"), "{link}");
        // An absolute link is followed inside the guest, not on the host.
        assert_eq!(vdisk_ok(d, &["ls", img, "/srv/abs"]), "deep\nhi.txt\n");
        // A name that is not UTF-8 (Latin-1 "café"): listed as its bytes, and named by them.
        let o = vdisk(d, &["ls", img, "/srv"]);
        assert_eq!(o.stdout, b"abs\ncaf\xe9\nempty\n");
        let o = Command::new(env!("CARGO_BIN_EXE_vdisk"))
            .current_dir(d)
            .arg("cat")
            .arg(img)
            .arg(std::ffi::OsStr::from_bytes(b"/srv/caf\xe9"))
            .output()
            .unwrap();
        assert_eq!(
            (o.status.code(), &o.stdout[..]),
            (Some(0), &b"latin1\n"[..])
        );
        // -m: the ESP alone on /.
        assert_eq!(
            vdisk_ok(d, &["ls", "-m", "/dev/sda1", img, "/EFI/BOOT"]),
            "BOOTX64.EFI\n"
        );
        // df: one row per filesystem, named IMAGE:DEVICE.
        let df = vdisk_ok(d, &["df", img]);
        let rows: Vec<Vec<&str>> = df.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            rows[0],
            ["Filesystem", "1K-blocks", "Used", "Available", "Use%"]
        );
        assert_eq!(rows[1][0], format!("{img}:/dev/sda1"));
        assert_eq!(rows[2][0], format!("{img}:/dev/sda2"));
        for r in &rows[1..] {
            let n: Vec<u64> = r[1..4].iter().map(|v| v.parse().unwrap()).collect();
            assert!(n[1] + n[2] <= n[0] && n[0] > 0, "{r:?}");
        }
        // Errors: exit 1 with the path named.
        for (args, msg) in [
            (
                &["cat", img, "/etc/nope"][..],
                "Could not open '/etc/nope': No such file or directory",
            ),
            (
                &["cat", img, "/etc"],
                "/etc: not a regular file (a directory)",
            ),
            (&["ls", img, "/home/u/hi.txt/x"], "Not a directory"),
            (
                &["ls", img, "etc"],
                "paths inside the image must be absolute",
            ),
            (
                &["ls", "-m", "/dev/sda9", img, "/"],
                "no device /dev/sda9 in the image",
            ),
        ] {
            let o = vdisk(d, args);
            assert_eq!(o.status.code(), Some(1), "{args:?}");
            assert!(err(&o).contains(msg), "{args:?}: {}", err(&o));
        }
    }
}

#[test]
fn a_disk_without_an_operating_system_needs_a_filesystem_named() {
    if !tools_available() {
        return;
    }
    let s = Scratch::new("cli-guest-noos");
    let d = s.path();
    sh(
        d,
        "truncate -s 48M two.raw
         printf 'label: dos\\n,16M,c\\n,,83\\n' | sfdisk -q two.raw
         mkfs.fat -F 16 -C a.img 16384 >/dev/null
         mkdir t && printf x > t/x
         mkfs.ext4 -q -F -d t b.img 31M
         dd if=a.img of=two.raw bs=512 seek=2048 conv=notrunc status=none
         dd if=b.img of=two.raw bs=512 seek=34816 conv=notrunc status=none
         mkfs.fat -F 12 -C whole.img 2048 >/dev/null
         mcopy -i whole.img t/x ::X.TXT",
    );
    let o = vdisk(d, &["ls", "two.raw", "/"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("choose a filesystem with -m DEVICE: /dev/sda1 (vfat), /dev/sda2 (ext4)"),
        "{}",
        err(&o)
    );
    assert_eq!(
        vdisk_ok(d, &["cat", "-m", "/dev/sda2", "two.raw", "/x"]),
        "x"
    );
    // A filesystem on the whole disk (its boot sector is no partition table) is /dev/sda,
    // mounted on / as the only one.
    assert_eq!(vdisk_ok(d, &["filesystems", "whole.img"]), "/dev/sda\n");
    assert_eq!(vdisk_ok(d, &["ls", "whole.img", "/"]), "X.TXT\n");
}

/// A guest whose ext4 journal holds a committed transaction not yet written to its place (as a
/// crash leaves it; written here by debugfs's journal commands): `cat` reads the replayed file,
/// as the kernel's mount (and e2fsck's replay) would show it, and `--ignore-journal` what is on
/// disk; the image is not written.
#[test]
fn a_journal_that_needs_recovery_is_replayed_in_memory() {
    if !tools_available() {
        return;
    }
    let s = Scratch::new("cli-guest-journal");
    let d = s.path();
    sh(
        d,
        "mkdir t && printf 'old contents\\n' > t/f
         mkfs.ext4 -q -F -b 1024 -d t j.img 8M
         B=$(debugfs -R 'blocks /f' j.img 2>/dev/null | tr -d ' \\n')
         { printf 'new contents\\n'; head -c 1011 /dev/zero; } > blk
         printf 'jo\\njw -b %s blk\\njc\\n' \"$B\" > cmds
         debugfs -w -f cmds j.img >/dev/null 2>&1
         dumpe2fs -h j.img 2>/dev/null | grep -q needs_recovery
         cp j.img replayed.img && e2fsck -fy replayed.img >/dev/null 2>&1 || true
         debugfs -R 'cat /f' replayed.img 2>/dev/null > oracle",
    );
    let before = std::fs::read(d.join("j.img")).unwrap();
    assert_eq!(std::fs::read(d.join("oracle")).unwrap(), b"new contents\n");
    assert_eq!(
        vdisk_ok(d, &["cat", "-f", "raw", "j.img", "/f"]),
        "new contents\n"
    );
    assert_eq!(
        vdisk_ok(d, &["cat", "-f", "raw", "--ignore-journal", "j.img", "/f"]),
        "old contents\n"
    );
    assert_eq!(
        std::fs::read(d.join("j.img")).unwrap(),
        before,
        "the image was written"
    );
}

/// One damaged inode fails `stat` of its entry, not the listing, as with ls on a mounted
/// filesystem (the kernel's readdir reads no inodes): `ls` lists every name; `ls -l` shows
/// the damaged entry with `?` columns, says why on standard error and exits 1; `ls -lR` goes
/// on past a directory it cannot open; the other files still read.
#[test]
fn a_damaged_inode_fails_only_its_own_entry() {
    if !tools_available() {
        return;
    }
    let s = Scratch::new("cli-guest-damaged-entry");
    let d = s.path();
    sh(
        d,
        "mkdir -p t/sub && printf 'a\\n' > t/a && printf 'b\\n' > t/b && printf 'c\\n' > t/c
         printf 'x\\n' > t/sub/x
         mkfs.ext4 -q -F -b 1024 -d t e.img 8M
         debugfs -w -R 'sif /b links_count 0' e.img 2>/dev/null
         debugfs -w -R 'sif /sub/x links_count 0' e.img 2>/dev/null",
    );
    let img = "e.img";
    assert_eq!(
        vdisk_ok(d, &["ls", "-f", "raw", img, "/"]),
        "a\nb\nc\nlost+found\nsub\n"
    );
    let o = vdisk(d, &["ls", "-l", "-f", "raw", img, "/"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("-rw-r--r--") && lines[0].ends_with(" a"));
    assert!(
        lines[1].starts_with("?????????? ") && lines[1].ends_with(" b"),
        "{text}"
    );
    assert!(lines[2].ends_with(" c") && lines[4].ends_with(" sub"));
    assert!(
        err(&o).contains("cannot access '/b'") && err(&o).contains("deleted"),
        "{}",
        err(&o)
    );
    let o = vdisk(d, &["ls", "-lR", "-f", "raw", img, "/"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains(" /sub/x\n") && out(&o).contains(" /sub\n"));
    assert!(err(&o).contains("cannot access '/sub/x'"), "{}", err(&o));
    assert_eq!(
        vdisk_ok(d, &["cat", "-f", "raw", img, "/c", "/a"]),
        "c\na\n"
    );
    let o = vdisk(d, &["cat", "-f", "raw", img, "/b"]);
    assert_eq!(o.status.code(), Some(1));
}

/// Directories nested as deep as the walk's limit (`MAX_WALK_DEPTH`, 4096 levels with the
/// root) are listed whole by `ls -R`; one more ends the listing with an error and exit code 1,
/// not a crash (it overflowed the stack when `ls -R` recursed: session 23). The chains are made
/// by debugfs, one `mkdir` and `cd` at a time, past what a host path can hold.
#[test]
fn directories_nested_past_the_walk_limit_end_ls_r_with_an_error() {
    if !tools_available() {
        return;
    }
    let s = Scratch::new("cli-guest-deep-tree");
    let d = s.path();
    for (name, below_root) in [("ok.img", 4095), ("deep.img", 4096)] {
        let cmds = "mkdir d\ncd d\n".repeat(below_root);
        std::fs::write(d.join("cmds"), cmds).unwrap();
        sh(
            d,
            &format!(
                "mkfs.ext4 -q -F -b 1024 -N 8192 {name} 16M
                 debugfs -w -f cmds {name} >/dev/null 2>&1"
            ),
        );
    }
    let chain = |k: usize| "/d".repeat(k);
    let listed = vdisk_ok(d, &["ls", "-R", "-f", "raw", "ok.img", "/"]);
    let lines: Vec<&str> = listed.lines().collect();
    // The chain, each path one level deeper than the one before, then lost+found.
    assert_eq!(lines.len(), 4095 + 1, "{}", &listed[..200]);
    assert!((0..4095).all(|k| lines[k] == chain(k + 1)));
    assert_eq!(lines[4095], "/lost+found");

    let o = vdisk(d, &["ls", "-R", "-f", "raw", "deep.img", "/"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert_eq!(out(&o).lines().last(), Some(chain(4096).as_str()));
    assert!(
        err(&o).ends_with(&format!(
            "{}: directories nested deeper than 4096\n",
            chain(4096)
        )),
        "{}",
        &err(&o)[err(&o).len().saturating_sub(200)..]
    );
}
