//! Whether an XFS log needs recovery, as vdisk-fs decides it (the head where the cycle number
//! drops, an unmount record just before it), against `xfs_logprint -t`'s verdict (CLEAN or
//! DIRTY) on logs the kernel wrote: fresh from mkfs.xfs, after mount cycles that wrap a small
//! log several times, and after a shutdown that leaves committed transactions in the log. A
//! dirty log makes `open` fail with a message naming `--ignore-journal`; with
//! `ignore_journal_recovery` the filesystem opens and reads as it is on disk (without what the
//! log holds). Needs root and loop devices to mount: a failure under `CI`, a skip otherwise.

mod common;

use common::{raw_reader, run, tools_available, truncate};
use std::path::{Path, PathBuf};
use std::process::Command;
use vdisk_fs::{Filesystem, OpenOptions};
use vdisk_testutil::Scratch;

/// A loop mount, unmounted when dropped.
struct Mounted(PathBuf);

impl Mounted {
    fn new(img: &Path, dir: &Path) -> Option<Mounted> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "xfs", "-o", "loop"])
            .arg(img)
            .arg(dir)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| Mounted(dir.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts `img` on `dir`, or says why not: a failure under `CI`, `None` (skip) otherwise.
fn mount(img: &Path, dir: &Path) -> Option<Mounted> {
    let m = Mounted::new(img, dir);
    if m.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "cannot loop-mount {} (root and loop devices are needed when CI is set)",
            img.display()
        );
        eprintln!("note: cannot loop-mount; skipping the XFS log test");
    }
    m
}

/// xfs_logprint's verdict: `(clean, head block)`.
fn logprint(img: &Path) -> (bool, u64) {
    let out = run(Command::new("xfs_logprint").arg("-t").arg(img));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("state:"))
        .unwrap_or_else(|| panic!("no state in xfs_logprint's output:\n{text}"));
    let head = line
        .split("head:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no head in {line}"));
    (line.contains("<CLEAN>"), head)
}

fn open(img: &Path, ignore: bool) -> vdisk_core::Result<Box<dyn Filesystem>> {
    let opts = OpenOptions {
        ignore_journal_recovery: ignore,
    };
    vdisk_fs::open_with(raw_reader(img), &opts)
}

fn names(fs: &dyn Filesystem) -> Vec<Vec<u8>> {
    let mut n: Vec<Vec<u8>> = fs
        .read_dir(&fs.root().unwrap())
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    n.sort();
    n
}

#[test]
fn log_state_matches_xfs_logprint() {
    if !tools_available(&["mkfs.xfs", "xfs_logprint", "xfs_io", "mount"]) {
        return;
    }
    let s = Scratch::new("xfs-log");
    let d = s.path();
    // The smallest log mkfs.xfs makes (1368 blocks, 5.3 MiB; it allows less than 64 MiB only for
    // fstests, which these variables announce), so that a few thousand file creations wrap it.
    let img = d.join("small-log.img");
    truncate(&img, 300 << 20);
    run(Command::new("mkfs.xfs")
        .args(["-q", "-l", "size=1368b"])
        .envs([
            ("TEST_DIR", "/tmp"),
            ("TEST_DEV", "/dev/null"),
            ("QA_CHECK_FS", "1"),
        ])
        .arg(&img));
    let (clean, fresh_head) = logprint(&img);
    assert!(clean, "mkfs.xfs leaves a clean log");
    assert!(open(&img, false).is_ok(), "a fresh filesystem opens");
    let mnt = d.join("mnt");
    let mut heads = vec![fresh_head];
    const ROUNDS: usize = 8;
    for round in 0..ROUNDS {
        let Some(_m) = mount(&img, &mnt) else { return };
        let dir = mnt.join(format!("r{round}"));
        std::fs::create_dir(&dir).unwrap();
        for i in 0..1500 {
            std::fs::write(dir.join(format!("file-{i}")), b"x").unwrap();
        }
        if round > 0 {
            std::fs::remove_dir_all(mnt.join(format!("r{}", round - 1))).unwrap();
        }
        drop(_m);
        let (clean, head) = logprint(&img);
        assert!(
            clean,
            "round {round}: xfs_logprint says the log is dirty after umount"
        );
        heads.push(head);
        let fs = open(&img, false).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(names(fs.as_ref()), [format!("r{round}").into_bytes()]);
    }
    // The head went round: some round ended below where the previous one ended.
    assert!(
        heads.windows(2).any(|w| w[1] < w[0]),
        "the log never wrapped: heads {heads:?}"
    );

    // Committed transactions left in the log by a shutdown (no unmount record).
    let Some(m) = mount(&img, &mnt) else { return };
    std::fs::write(mnt.join("only-in-the-log"), b"new").unwrap();
    run(&mut Command::new("sync"));
    run(Command::new("xfs_io")
        .args(["-x", "-c", "shutdown"])
        .arg(&mnt));
    drop(m);
    let (clean, _) = logprint(&img);
    assert!(
        !clean,
        "xfs_logprint says the log is clean after a shutdown"
    );
    let e = open(&img, false)
        .err()
        .expect("a dirty log is refused")
        .to_string();
    assert!(
        e.contains("needs recovery") && e.contains("--ignore-journal"),
        "{e}"
    );
    // Read as on disk: the file whose creation is only in the log is not there.
    let fs = open(&img, true).unwrap();
    assert_eq!(
        names(fs.as_ref()),
        [format!("r{}", ROUNDS - 1).into_bytes()]
    );

    // A v5 filesystem (the default 64 MiB log): fresh, and after a mount cycle.
    let v5 = d.join("v5.img");
    truncate(&v5, 300 << 20);
    run(Command::new("mkfs.xfs").arg("-q").arg(&v5));
    assert!(logprint(&v5).0 && open(&v5, false).is_ok());
    let Some(m) = mount(&v5, &mnt) else { return };
    std::fs::write(mnt.join("f"), b"v5").unwrap();
    drop(m);
    assert!(logprint(&v5).0);
    assert_eq!(names(open(&v5, false).unwrap().as_ref()), [b"f".to_vec()]);
}
