//! Helpers shared by the CLI's end-to-end tests: run the built `vdisk` and `qemu-img` side by side.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs the built `vdisk` with `args` in `dir`.
pub fn vdisk(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vdisk"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run vdisk")
}

/// Runs `qemu-img` with `args` in `dir` (any exit code).
pub fn qemu(dir: &Path, args: &[&str]) -> Output {
    Command::new("qemu-img")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run qemu-img")
}

/// Stdout as text.
pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr as text.
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `vdisk`, asserting exit code 0, and returns stdout.
pub fn vdisk_ok(dir: &Path, args: &[&str]) -> String {
    let o = vdisk(dir, args);
    assert!(
        o.status.success(),
        "vdisk {args:?} failed: {}{}",
        out(&o),
        err(&o)
    );
    out(&o)
}

/// Runs `qemu-img`, asserting exit code 0, and returns stdout.
pub fn qemu_ok(dir: &Path, args: &[&str]) -> String {
    let o = qemu(dir, args);
    assert!(
        o.status.success(),
        "qemu-img {args:?} failed: {}{}",
        out(&o),
        err(&o)
    );
    out(&o)
}

/// `qemu-img create -f qcow2 -b BASE -F BASE_FMT TOP [SIZE]`: an overlay made by qemu, in `dir`.
pub fn qemu_overlay(dir: &Path, base: &str, base_fmt: &str, top: &str, size: Option<&str>) {
    let mut args = vec![
        "create", "-q", "-f", "qcow2", "-b", base, "-F", base_fmt, top,
    ];
    args.extend(size);
    qemu_ok(dir, &args);
}

/// `qemu-img map --output=json -f FMT FILE` in `dir` as (start, length, data, zero) per range:
/// what an image allocates, without the host offsets (which depend on the layout).
pub fn qemu_map_kinds(dir: &Path, fmt: &str, file: &str) -> Vec<(u64, u64, bool, bool)> {
    let m = qemu_ok(dir, &["map", "--output=json", "-f", fmt, file]);
    let v: serde_json::Value = serde_json::from_str(&m).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["start"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                e["data"].as_bool().unwrap(),
                e["zero"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Runs qemu-io commands on an image in `dir`.
pub fn qemu_io(dir: &Path, fmt: &str, file: &str, cmds: &[&str]) {
    vdisk_testutil::qemu_io(fmt, &dir.join(file), cmds);
}

/// The pattern every fixture starts from: data, explicit zeros, holes and an odd tail, in a 64 MiB
/// disk with `tail` extra bytes (a multiple of 512).
pub fn make_pattern_raw(dir: &Path, name: &str, tail: u64) {
    let size = (64u64 << 20) + tail;
    qemu_ok(dir, &["create", "-q", "-f", "raw", name, &size.to_string()]);
    let mut cmds = vec![
        "write -P 0x11 0 64k".to_string(),
        "write -P 0x22 1M 1M".to_string(),
        "write -z 3M 1M".to_string(),
        "write -P 0x33 5M 4k".to_string(),
        "write -P 0x44 8M 3M".to_string(),
        "write -P 0x55 40M 512".to_string(),
    ];
    if tail > 0 {
        cmds.push(format!("write -P 0x66 {} {}", size - tail, tail));
    }
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io(dir, "raw", name, &refs);
}

/// Bytes allocated on disk by a file.
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat").blocks() * 512
}

/// `s` parsed as JSON, without vdisk's own `vdisk-details` fields.
pub fn json(s: &str) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(s).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{s}"));
    // `vdisk-details` is vdisk's own addition; every other field must be qemu's.
    strip_details(&mut v);
    v
}

/// Removes `vdisk-details` from an object, or from each object of an array.
pub fn strip_details(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("vdisk-details");
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_details),
        _ => {}
    }
}

/// Human `info` output without vdisk's own "vdisk details" section (each layer's ends at its blank
/// line or at the end), which must come after everything qemu prints.
pub fn without_details(text: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.split_inclusive('\n') {
        if line.starts_with("vdisk details") {
            skipping = true;
            continue;
        }
        if skipping && line.starts_with("    ") {
            continue;
        }
        skipping = false;
        out.push_str(line);
    }
    out
}

/// Standard output as qemu-img would print it: without vdisk's own details (JSON or human).
pub fn qemu_view(text: &str) -> String {
    match text.trim_start().chars().next() {
        Some('{') | Some('[') => json(text).to_string(),
        _ => without_details(text),
    }
}

/// A line of a tool's standard error without the program's name (`qemu-img: `, `vdisk: `).
pub fn unprefixed(line: &str) -> &str {
    line.trim_start_matches("qemu-img: ")
        .trim_start_matches("vdisk: ")
}

/// The first line of a tool's error output without the program's name (qemu-img may add a "Try
/// 'qemu-img ... --help'" line, vdisk a hint).
pub fn first_message(stderr: &str) -> String {
    unprefixed(stderr.lines().next().unwrap_or("")).to_string()
}

/// Every line of a tool's error output without the program's name.
pub fn unprefixed_lines(stderr: &str) -> String {
    stderr
        .lines()
        .map(unprefixed)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `script` with `sh -e` in `dir` and returns its standard output; panics when it fails.
pub fn sh(dir: &Path, script: &str) -> String {
    let o = std::process::Command::new("sh")
        .args(["-ec", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Lossy: file names from the guest trees need not be UTF-8.
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Writes `bytes` at `at` in the file at `path` (a field of an image damaged or changed).
pub fn patch_file(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}
