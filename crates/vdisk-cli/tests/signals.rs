//! A `vdisk convert` ended by a signal leaves no file behind: Ctrl-C, `kill` and a hang-up remove
//! the hidden temporary output and the process still dies of the signal; a source truncated under
//! its memory map (SIGBUS) removes it too and exits with 1 and a message.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vdisk_testutil::Scratch;

/// Incompressible bytes: compressing them into qcow2 takes long enough (seconds in a debug build)
/// for a signal to arrive mid-conversion, and their size is well above what vdisk maps.
const SOURCE_BYTES: usize = 96 << 20;

fn random_source(path: &Path) {
    let mut x = vdisk_testutil::XorShift64::new(0x9e37_79b9_7f4a_7c15);
    let mut data = Vec::with_capacity(SOURCE_BYTES);
    while data.len() < SOURCE_BYTES {
        data.extend_from_slice(&x.next_u64().to_le_bytes());
    }
    std::fs::write(path, data).unwrap();
}

/// Starts a compressing convert of `src` (of format `fmt`) into `out.qcow2` in `dir`, with one
/// worker, so that it runs for seconds.
fn start_convert(dir: &Path, fmt: &str, src: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vdisk"))
        .current_dir(dir)
        .args([
            "convert",
            "-m",
            "1",
            "-f",
            fmt,
            "-O",
            "qcow2",
            "-c",
            src,
            "out.qcow2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vdisk")
}

/// Waits until `child` has written at least `bytes` to its temporary output (it is then
/// converting).
fn wait_for_temp_output(dir: &Path, child: &Child, bytes: u64) {
    let temp = dir.join(format!(".out.qcow2.vdisk-{}.tmp", child.id()));
    let start = Instant::now();
    while std::fs::metadata(&temp).map_or(true, |m| m.len() < bytes) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "vdisk never wrote {bytes} bytes to {}",
            temp.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_convert_ended_by_sigint_sigterm_or_sighup_removes_its_output_and_dies_of_the_signal() {
    let s = Scratch::new("signals-kill");
    random_source(&s.join("src.raw"));
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let mut child = start_convert(s.path(), "raw", "src.raw");
        wait_for_temp_output(s.path(), &child, 0);
        // SAFETY: kill(2) on the child we started and have not waited for yet.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(sig),
            "vdisk should die of signal {sig}, not {status:?}"
        );
        assert_eq!(
            names_in(s.path()),
            ["src.raw"],
            "signal {sig} left files behind"
        );
    }
}

#[test]
fn a_source_truncated_mid_convert_ends_with_a_message_exit_1_and_no_output() {
    let s = Scratch::new("signals-sigbus");
    random_source(&s.join("src.raw"));
    // A qcow2 source: its block status comes from its tables, so after the truncation the data
    // still to convert is read from the map (a raw file's holes would turn it into zeros).
    let o = Command::new(env!("CARGO_BIN_EXE_vdisk"))
        .current_dir(s.path())
        .args([
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "src.raw",
            "src.qcow2",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(s.join("src.raw")).unwrap();
    let child = start_convert(s.path(), "qcow2", "src.qcow2");
    // A few MiB in: the tables are read, the rest of the data is still to come.
    wait_for_temp_output(s.path(), &child, 4 << 20);
    // The source's pages are mapped, not read: those not yet converted are gone from the map now,
    // and the next access to one raises SIGBUS.
    std::fs::OpenOptions::new()
        .write(true)
        .open(s.join("src.qcow2"))
        .unwrap()
        .set_len(0)
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "status {:?}: {stderr}", o.status);
    assert!(
        stderr.contains("a source file shrank while it was being read"),
        "stderr: {stderr}"
    );
    assert_eq!(names_in(s.path()), ["src.qcow2"], "output left behind");
}
