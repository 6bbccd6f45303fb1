//! Other tools as oracles (e2fsprogs, xfsprogs, lvm2, ...): whether they are there, a failure
//! under `CI` and a skip otherwise, as [`crate::qemu_available`]; and lvm2 run on loop devices
//! over byte ranges of scratch files (activation off, no backups), as the LVM tests need it.

use std::path::Path;
use std::process::{Command, Stdio};

/// PATH with the sbin directories that mkfs, lvm2 and losetup live in.
pub fn sbin_path() -> String {
    format!(
        "{}:/usr/sbin:/sbin",
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Whether every tool is on PATH (with the sbin directories) and, when `root`, whether we are
/// root (loop devices). Under `CI` anything missing is a failure naming `install` (how to get
/// it), not a skip.
pub fn tools_available(tools: &[&str], root: bool, install: &str) -> bool {
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| {
            !Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .env("PATH", sbin_path())
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|t| t.to_string())
        .collect();
    let is_root = || {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    };
    if root && !is_root() {
        missing.push("root (for loop devices)".into());
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{missing:?} required when CI is set ({install})");
    }
    eprintln!(
        "note: {missing:?} not available; skipping an oracle test (set CI=1 to make this fail)"
    );
    false
}

/// Activation off (no device-mapper needed), and no backups in /etc/lvm of scratch groups.
pub const LVM_CONFIG: &str = "global { activation = 0 } backup { backup = 0 archive = 0 }";

/// A loop device over `size` bytes at `offset` of a file, detached when dropped.
pub struct Loop {
    pub dev: String,
    pub offset: u64,
    pub size: u64,
}

impl Loop {
    pub fn new(file: &Path, offset: u64, size: u64) -> Loop {
        let out = Command::new("losetup")
            .env("PATH", sbin_path())
            .args(["-f", "--show", "-o", &offset.to_string()])
            .args(["--sizelimit", &size.to_string()])
            .arg(file)
            .output()
            .expect("run losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        Loop { dev, offset, size }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup")
            .env("PATH", sbin_path())
            .args(["-d", &self.dev])
            .status();
    }
}

/// Runs an lvm2 command restricted to `devs`; returns its stdout, or its stderr as the error.
pub fn try_lvm(cmd: &str, devs: &[&Loop], args: &[&str]) -> Result<String, String> {
    let mut c = Command::new(cmd);
    c.env("PATH", sbin_path())
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .args(["--config", LVM_CONFIG]);
    for d in devs {
        c.args(["--devices", &d.dev]);
    }
    let out = c.args(args).output().expect("run lvm2");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Runs an lvm2 command restricted to `devs`, which must succeed; returns its stdout.
pub fn lvm(cmd: &str, devs: &[&Loop], args: &[&str]) -> String {
    try_lvm(cmd, devs, args).unwrap_or_else(|e| panic!("{cmd} {args:?} failed:\n{e}"))
}

/// The rows of a report (`lvs`, `pvs`, `vgs`) with the fields `fields`, in bytes.
pub fn report(cmd: &str, devs: &[&Loop], fields: &str, extra: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec![
        "-o",
        fields,
        "--units",
        "b",
        "--nosuffix",
        "--noheadings",
        "--separator",
        "|",
    ];
    args.extend_from_slice(extra);
    lvm(cmd, devs, &args)
        .lines()
        // Rows only: lvm2 also prints notes such as "Retrying metadata scan." on stdout.
        .filter(|l| l.contains('|'))
        .map(|l| l.trim().split('|').map(|f| f.trim().to_string()).collect())
        .collect()
}

/// A number lvm2 printed.
pub fn num(s: &str) -> u64 {
    s.parse()
        .unwrap_or_else(|_| panic!("lvm2 printed {s:?} for a number"))
}
