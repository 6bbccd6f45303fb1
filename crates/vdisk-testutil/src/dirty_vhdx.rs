//! VHDX images whose log needs replaying, left by qemu itself. qemu-io writes guest data into a
//! new block, then journals the BAT update: it writes a log entry, flushes, and replays it at once
//! (`vhdx_log_write_and_flush`). Under strace, the replay's write of the BAT sector is made to
//! fail (EIO), so qemu-io stops with the entry written and flushed, the log GUID in both headers
//! and the BAT not updated: a log that needs replaying, as a crash there would leave it.
//!
//! strace counts a syscall's invocations per thread, and qemu's default thread pool spreads the
//! `pwrite64` calls over several threads, so counting them is not reproducible. With
//! `-n -i native` (O_DIRECT, Linux AIO) every read and write is an `io_submit` from qemu-io's main
//! thread: a dry run under strace finds the number of the `io_submit` that writes the BAT, and the
//! real run fails that one.

use std::ops::Range;
use std::path::Path;
use std::process::Command;

/// Whether strace can trace a program here. Panics under `CI` when it cannot.
pub fn strace_available() -> bool {
    let ok = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "strace is required when CI is set (apt-get install strace)"
        );
        eprintln!("note: strace cannot run here; skipping a qemu-made dirty log test");
    }
    ok
}

/// Runs `qemu-io -n -i native -f vhdx -c CMD P` under strace with `inject` (if any), the trace
/// written to `trace`; returns whether qemu-io succeeded and the trace.
fn traced_write(p: &Path, cmd: &str, trace: &Path, inject: Option<usize>) -> (bool, String) {
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-e", "trace=io_submit"]);
    if let Some(n) = inject {
        c.arg("-e")
            .arg(format!("inject=io_submit:error=EIO:when={n}"));
    }
    c.arg("-o").arg(trace);
    c.args(["qemu-io", "-n", "-i", "native", "-f", "vhdx", "-c", cmd]);
    let out = c.arg(p).output().expect("run strace");
    (
        out.status.success(),
        std::fs::read_to_string(trace).unwrap(),
    )
}

/// Makes qemu-io's `cmd` on the VHDX image `p`, whose BAT occupies the file's bytes `bat`, stop
/// after its log entry is durable and before the BAT write. `scratch` holds the traces.
pub fn interrupted_vhdx_write(scratch: &Path, p: &Path, bat: Range<u64>, cmd: &str) {
    let probe = scratch.join("probe.vhdx");
    std::fs::copy(p, &probe).unwrap();
    let (ok, trace) = traced_write(&probe, cmd, &scratch.join("probe.trace"), None);
    assert!(ok, "dry run: {trace}");
    // The first write into the BAT region, numbered among its thread's io_submit calls.
    let is_bat_write = |line: &str| {
        line.contains("IOCB_CMD_PWRITEV")
            && line
                .split("aio_offset=")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|o| bat.contains(&o))
    };
    let lines: Vec<&str> = trace.lines().filter(|l| l.contains("io_submit(")).collect();
    let at = lines
        .iter()
        .position(|l| is_bat_write(l))
        .expect("a BAT write");
    let pid = lines[at].split_whitespace().next().unwrap();
    let n = 1 + lines[..at]
        .iter()
        .filter(|l| l.split_whitespace().next() == Some(pid))
        .count();
    let (ok, trace) = traced_write(p, cmd, &scratch.join("real.trace"), Some(n));
    assert!(!ok, "qemu-io should fail its write");
    let injected: Vec<&str> = trace.lines().filter(|l| l.contains("INJECTED")).collect();
    assert!(
        injected.len() == 1 && is_bat_write(injected[0]),
        "the injected failure hit {injected:?}"
    );
}
