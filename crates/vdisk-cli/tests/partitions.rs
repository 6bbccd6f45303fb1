//! `vdisk partitions`: the partition table of a disk stored as qcow2, VMDK, VDI, VHD or VHDX,
//! read without converting it, printed as `sfdisk --json` prints the same disk as a raw file
//! (the same JSON but for the device name), and as text naming each type; a disk without a table
//! is an error with sfdisk's words and exit code 1.

mod common;
use common::*;
use std::process::Command;
use vdisk_testutil::{qemu_available, Scratch};

fn sfdisk(d: &std::path::Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut c = Command::new("sfdisk")
        .args(args)
        .current_dir(d)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sfdisk");
    let mut i = c.stdin.take().unwrap();
    if let Some(s) = stdin {
        i.write_all(s.as_bytes()).unwrap();
    }
    drop(i);
    c.wait_with_output().unwrap()
}

fn sfdisk_available() -> bool {
    let ok = Command::new("sfdisk")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var_os("CI").is_some() {
        panic!("sfdisk is missing (util-linux's fdisk package) and CI is set");
    }
    ok && qemu_available()
}

#[test]
fn partitions_of_images_in_every_format_read_as_sfdisk_reads_the_raw_disk() {
    if !sfdisk_available() {
        return;
    }
    let s = Scratch::new("cli-partitions");
    let d = s.path();
    for (raw, script) in [
        (
            "g.raw",
            "label: gpt\nsize=8M, type=U, name=\"EFI\"\nsize=16M, type=L, name=\"root\"\ntype=S\n",
        ),
        ("m.raw", "label: dos\n,8M,c,*\n,16M,83\n,,5\n,4M,82\n,,83\n"),
    ] {
        qemu_ok(d, &["create", "-q", "-f", "raw", raw, "64M"]);
        assert!(sfdisk(d, &["-q", raw], Some(script)).status.success());
        let theirs = sfdisk(d, &["--json", raw], None);
        assert!(theirs.status.success());
        let want: serde_json::Value = serde_json::from_slice(&theirs.stdout).unwrap();
        for (fmt, ext) in [
            ("qcow2", "qcow2"),
            ("vmdk", "vmdk"),
            ("vdi", "vdi"),
            ("vpc", "vhd"),
            ("vhdx", "vhdx"),
        ] {
            let img = format!("{raw}.{ext}");
            qemu_ok(d, &["convert", "-O", fmt, raw, &img]);
            let out = vdisk_ok(d, &["partitions", "--output=json", &img]);
            let mut got: serde_json::Value = serde_json::from_str(&out).unwrap();
            // The device is the file named; the partition nodes follow it.
            let text = got.to_string().replace(&img, raw);
            got = serde_json::from_str(&text).unwrap();
            assert_eq!(got, want, "{img}");
            let human = vdisk_ok(d, &["partitions", &img]);
            for (word, marker) in [
                ("EFI System (C12A7328", "C12A7328"),
                ("Linux swap (0657FD6D", "0657FD6D"),
                ("W95 FAT32 (LBA) (c)", "\"type\":\"c\""),
                ("Extended (5)", "\"type\":\"5\""),
            ] {
                let expected = want.to_string().contains(marker);
                assert_eq!(human.contains(word), expected, "{img}: {word}\n{human}");
            }
        }
    }
    // No table: sfdisk's words, exit 1, as sfdisk exits.
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "n.qcow2", "8M"]);
    let o = vdisk(d, &["partitions", "n.qcow2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("does not contain a recognized partition table"),
        "{}",
        err(&o)
    );
}
