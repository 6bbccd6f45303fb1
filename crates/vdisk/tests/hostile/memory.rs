//! Memory stays small on huge images: 10 TiB qcow2, VDI and VHDX images, a 2000 GiB VHD and a 1 TiB
//! VMDK with a little data are
//! opened, mapped and converted to (sparse) raw in a child process - this test binary re-run on
//! an ignored helper test, and the built CLI - whose peak RSS (wait4's ru_maxrss, measured by a
//! small launcher process) must stay under [`MAX_RSS_KIB`].

use crate::util::{cli, qemu};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vdisk::convert::{convert, ConvertOptions};
use vdisk::core::reader::for_each_extent;
use vdisk::{create_image, open_image, Format, OpenRequest};
use vdisk_testutil::{qemu_available, qemu_io, Scratch};

/// The peak resident set a child may reach, in KiB.
const MAX_RSS_KIB: i64 = 64 * 1024;

/// Environment variable that turns [`memory_child`] on: `<image>\n<output raw file>`.
const CHILD_ENV: &str = "VDISK_HOSTILE_MEMORY_CHILD";

/// The child side: open, map and convert one image to raw with the library.
#[test]
#[ignore = "helper run in a child process by memory_stays_small_on_huge_images"]
fn memory_child() {
    let Some(arg) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let arg = arg.to_string_lossy().into_owned();
    let (img, out) = arg.split_once('\n').expect("image and output");
    let req = OpenRequest {
        follow_backing: true,
        ..Default::default()
    };
    let opened = open_image(Path::new(img), &req).expect("open");
    let r = opened.image.as_ref();
    let mut n = 0u64;
    for_each_extent(r, 0, r.virtual_size(), |_| {
        n += 1;
        Ok(())
    })
    .expect("map");
    let w = create_image(
        Format::Raw,
        Path::new(out),
        r.virtual_size(),
        &Default::default(),
        false,
    )
    .expect("create raw");
    let stats = convert(r, w, &ConvertOptions::default(), &|_, _| {}).expect("convert");
    println!("extents={n} read={}", stats.bytes_read);
}

/// Environment variable that turns [`memory_launcher`] on: a command line, one argument a line.
const LAUNCH_ENV: &str = "VDISK_HOSTILE_MEMORY_LAUNCH";

/// The launcher side: runs one command and prints `ok=<bool> maxrss=<KiB>`. A process forked from
/// the (big, multi-threaded) test harness would count the harness's pages in its peak RSS, so the
/// measured command is always started from this small, freshly executed process instead.
#[test]
#[ignore = "helper run in a child process by memory_stays_small_on_huge_images"]
// The child is reaped by wait4 (for its rusage), not by std's Child::wait.
#[allow(clippy::zombie_processes)]
fn memory_launcher() {
    let Some(line) = std::env::var_os(LAUNCH_ENV) else {
        return;
    };
    let line = line.to_string_lossy().into_owned();
    let mut args = line.split('\n');
    let prog = args.next().expect("program");
    let child = Command::new(prog)
        .args(args)
        .env_remove(LAUNCH_ENV)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data that wait4 fills for our own child.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pid is our child, not yet reaped (std's Child is never waited on here).
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            println!("ok={ok} maxrss={}", ru.ru_maxrss);
            return;
        }
        assert!(r == 0, "wait4 failed: {}", std::io::Error::last_os_error());
        if start.elapsed() > Duration::from_secs(120) {
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{line:?} still running after 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `args` through [`memory_launcher`]; returns whether it succeeded and its peak RSS in KiB.
fn peak_rss_kib(args: &[String], child_env: Option<&str>) -> (bool, i64) {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--ignored",
        "--exact",
        "memory::memory_launcher",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd.env(LAUNCH_ENV, args.join("\n"));
    if let Some(v) = child_env {
        cmd.env(CHILD_ENV, v);
    }
    let out = cmd.output().expect("run launcher");
    let text = String::from_utf8_lossy(&out.stdout);
    // The harness prints the test's name on the same line, before the result.
    let line = text
        .find("ok=")
        .map(|i| text[i..].lines().next().unwrap_or(""))
        .unwrap_or_else(|| {
            panic!(
                "launcher printed no result: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let ok = line.starts_with("ok=true");
    let rss = line
        .rsplit('=')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("maxrss value");
    (ok, rss)
}

fn size_of(name: &str) -> u64 {
    if name.ends_with(".vmdk") {
        1 << 40
    } else if name.ends_with(".vhd") {
        2000 << 30
    } else {
        10 << 40
    }
}

#[test]
fn memory_stays_small_on_huge_images() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-huge");
    let d = s.path();
    let writes = [
        "write -P 0xaa 0 1M",
        "write -P 0xbb 5T 64k",
        "write -P 0xcc 10239G 64k",
    ];
    qemu(d, &["create", "-f", "qcow2", "big.qcow2", "10T"]);
    qemu_io("qcow2", &s.join("big.qcow2"), &writes);
    qemu(d, &["create", "-f", "vdi", "big.vdi", "10T"]);
    qemu_io("vdi", &s.join("big.vdi"), &writes);
    // qemu gives a hosted sparse VMDK 4 bytes of grain table per 64 KiB grain, preallocated: a 10 TiB
    // image would carry 640 MiB of (sparse) tables to scan, so the VMDK is 1 TiB.
    qemu(d, &["create", "-f", "vmdk", "big.vmdk", "1T"]);
    qemu_io(
        "vmdk",
        &s.join("big.vmdk"),
        &["write -P 0xaa 0 1M", "write -P 0xcc 1023G 64k"],
    );
    qemu(d, &["create", "-f", "vhdx", "big.vhdx", "10T"]);
    qemu_io("vhdx", &s.join("big.vhdx"), &writes);
    // VHD stops at 2040 GiB; force_size keeps the size exact (no CHS rounding).
    qemu(
        d,
        &[
            "create",
            "-f",
            "vpc",
            "-o",
            "force_size=on",
            "big.vhd",
            "2000G",
        ],
    );
    qemu_io(
        "vpc",
        &s.join("big.vhd"),
        &["write -P 0xaa 0 1M", "write -P 0xcc 1999G 64k"],
    );
    let exe = std::env::current_exe()
        .expect("test binary")
        .display()
        .to_string();
    for name in ["big.qcow2", "big.vdi", "big.vmdk", "big.vhdx", "big.vhd"] {
        let img = s.join(name);
        let out = s.join("out.raw");
        let arg = format!("{}\n{}", img.display(), out.display());
        let child: Vec<String> = [
            &exe,
            "--ignored",
            "--exact",
            "memory::memory_child",
            "--test-threads=1",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let (ok, rss) = peak_rss_kib(&child, Some(&arg));
        assert!(ok, "{name}: the library child failed");
        assert!(
            rss < MAX_RSS_KIB,
            "{name}: open + map + convert peaked at {rss} KiB"
        );
        let len = std::fs::metadata(&out).expect("output").len();
        assert_eq!(
            len,
            std::fs::metadata(&img).map(|_| size_of(name)).expect("img"),
            "{name}: size"
        );
        std::fs::remove_file(&out).expect("remove output");
        if let Some(bin) = cli() {
            let bin = bin.display().to_string();
            let img = img.display().to_string();
            let out = out.display().to_string();
            for args in [
                vec!["map", "--output=json", &img],
                vec!["info", &img],
                vec!["check", &img],
                vec!["convert", "-O", "raw", &img, &out],
            ] {
                let mut cmd = vec![bin.clone()];
                cmd.extend(args.iter().map(|a| a.to_string()));
                let (_, rss) = peak_rss_kib(&cmd, None);
                assert!(
                    rss < MAX_RSS_KIB,
                    "{name}: vdisk {args:?} peaked at {rss} KiB"
                );
            }
            let len = std::fs::metadata(&out).expect("CLI output").len();
            assert_eq!(len, size_of(name), "{name}: CLI output size");
            std::fs::remove_file(&out).expect("remove output");
        }
    }
}
