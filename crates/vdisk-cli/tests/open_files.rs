//! Split VMDK outputs (one file per 2 GiB extent) fit the open-file limit: each extent file holds
//! one descriptor, shared by its writer and the early-writeback thread, so a create or convert of
//! N extents needs about N descriptors, not 3N (which failed with "Too many open files").

mod common;
use common::*;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use vdisk_testutil::{assert_qemu_check_clean, assert_qemu_compare_equal, qemu_available, Scratch};

/// The soft and hard open-file limit the `vdisk` runs get: above 40 extents plus the process's
/// own descriptors, below the three per extent it used to take.
const LIMIT: libc::rlim_t = 64;

/// 40 extents of 2 GiB.
const SIZE: &str = "80G";

fn vdisk_limited(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vdisk"));
    cmd.current_dir(dir).args(args);
    // SAFETY: the closure runs in the child between fork and exec and only calls setrlimit.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("run vdisk")
}

fn assert_ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what} failed: {}", err(o));
}

#[test]
fn split_vmdk_create_and_convert_need_one_descriptor_per_extent() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("open-files");
    for sub in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
        let opt = format!("subformat={sub}");
        let o = vdisk_limited(
            s.path(),
            &["create", "-q", "-f", "vmdk", "-o", &opt, "new.vmdk", SIZE],
        );
        assert_ok(&o, &format!("create {sub}"));
        assert_qemu_check_clean(&s.join("new.vmdk"), "vmdk");

        // Data at both ends and in the middle of a sparse source of the same size.
        qemu_ok(s.path(), &["create", "-q", "-f", "raw", "src.raw", SIZE]);
        qemu_io(
            s.path(),
            "raw",
            "src.raw",
            &[
                "write -P 0x11 0 1M",
                "write -P 0x22 41G 64k",
                "write -P 0x33 85899280384 64k",
            ],
        );
        let o = vdisk_limited(
            s.path(),
            &[
                "convert", "-f", "raw", "-O", "vmdk", "-o", &opt, "src.raw", "out.vmdk",
            ],
        );
        assert_ok(&o, &format!("convert into {sub}"));
        assert_qemu_check_clean(&s.join("out.vmdk"), "vmdk");
        assert_qemu_compare_equal(&s.join("src.raw"), &s.join("out.vmdk"));
        for e in std::fs::read_dir(s.path()).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
    }
}
