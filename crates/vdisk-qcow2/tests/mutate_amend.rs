//! `amend -o compat=0.10` of images with zero clusters, against qemu-img on twin images: the zero
//! clusters of the active state and of every snapshot are expanded (unallocated without a backing
//! file, data clusters of zeros otherwise); content, snapshot contents, info, check and the map's
//! kinds must agree. Plus the case where qemu-img damages a snapshot, and crash tests.

mod mutate_common;

use mutate_common::*;
use std::path::{Path, PathBuf};
use vdisk_core::CreateOptions;
use vdisk_qcow2::mutate;
use vdisk_testutil::*;

fn v2() -> CreateOptions {
    CreateOptions::parse(&["compat=0.10"]).unwrap()
}

/// qemu's map without host offsets, adjacent ranges of one kind merged. The zero flag of data
/// ranges is left out: qemu derives it from holes in the host file, and how its write-zeroes
/// request (which fills the clusters it expands) lands in the file depends on the cluster size
/// and file system, where vdisk's new clusters are holes.
fn map_kinds(p: &Path) -> Vec<(u64, u64, String)> {
    let mut out: Vec<(u64, u64, String)> = Vec::new();
    for e in qemu_map_json(p, Some("qcow2")).as_array().unwrap() {
        let zero = e["zero"].as_bool().unwrap() && !e["data"].as_bool().unwrap();
        let kind = format!("{} {} {} {}", e["depth"], e["present"], zero, e["data"]);
        let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        match out.last_mut() {
            Some(l) if l.2 == kind && l.0 + l.1 == start => l.1 += len,
            _ => out.push((start, len, kind)),
        }
    }
    out
}

fn agree(ours: &Path, theirs: &Path, what: &str) {
    assert_clean(ours);
    assert_clean(theirs);
    assert_eq!(state(ours), state(theirs), "{what}");
    assert_eq!(map_kinds(ours), map_kinds(theirs), "{what}: map");
    assert_eq!(
        qemu_info_json(ours)["format-specific"]["data"]["compat"],
        "0.10"
    );
}

/// Zero clusters without a host cluster, and with one when `alloc` (a zero write over data
/// without unmapping), data, a compressed cluster.
fn zeros(p: &Path, alloc: bool) {
    let mut cmds = vec![
        "write -P 0x41 0 192k",
        "write -z 640k 64k",
        "write -c -P 0x42 768k 64k",
        "write -z -u 128k 4k",
    ];
    if alloc {
        cmds.push("write -z 64k 64k");
    }
    qemu_io("qcow2", p, &cmds);
}

fn image(d: &Scratch, name: &str, opts: &str, backing: Option<&str>, alloc: bool) -> PathBuf {
    let p = d.join(name);
    let ps = s(&p);
    let mut a = vec!["create", "-q", "-f", "qcow2"];
    if !opts.is_empty() {
        a.extend(["-o", opts]);
    }
    if let Some(b) = backing {
        a.extend(["-b", b, "-F", "raw"]);
    }
    a.extend([ps.as_str(), "1M"]);
    qemu_img(&a);
    zeros(&p, alloc);
    p
}

#[test]
fn downgrade_expands_zero_clusters_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("mut-expand");
    let b = d.join("b.raw");
    qemu_create(&b, "raw", "", "1M");
    qemu_io("raw", &b, &["write -P 0x77 0 1M"]);
    for (i, (opts, backing, snap)) in [
        ("", None, false),
        ("cluster_size=4k", None, true),
        ("", Some("b.raw"), false),
        ("cluster_size=16k", Some("b.raw"), true),
    ]
    .iter()
    .enumerate()
    {
        // With a snapshot, only zero clusters without a host cluster: see the next test.
        let p = image(&d, &format!("z{i}.qcow2"), opts, *backing, !*snap);
        if *snap {
            // A snapshot sharing the L2 tables that hold zero entries, then more zeros.
            qemu_img(&["snapshot", "-c", "sn", &s(&p)]);
            qemu_io("qcow2", &p, &["write -z 256k 64k", "write -P 0x43 64k 4k"]);
        }
        let ours = copy(&p, "ours.qcow2");
        let theirs = copy(&p, "theirs.qcow2");
        mutate::amend(&ours, &v2()).unwrap();
        qemu_img(&["amend", "-o", "compat=0.10", &s(&theirs)]);
        agree(
            &ours,
            &theirs,
            &format!("case {i}: {opts} {backing:?} snapshot {snap}"),
        );
        // Still a usable v2 image for qemu: written and checked again.
        qemu_io("qcow2", &ours, &["write -P 0x44 100k 200k"]);
        assert_clean(&ours);
    }
}

#[test]
fn downgrade_keeps_snapshot_data_where_qemu_damages_it() {
    if !qemu_available() {
        return;
    }
    // A zero write without unmapping keeps the host cluster, and a snapshot shares it (or the L2
    // table holding it): qemu-img amend writes zeros into it in place or miscounts, and the
    // image fails qemu-img check (seen with qemu 10 in every layout but one below). vdisk must
    // keep every state's content and leave a clean image.
    let d = Scratch::new("mut-expand-shared");
    let b = d.join("b.raw");
    qemu_create(&b, "raw", "", "1M");
    qemu_io("raw", &b, &["write -P 0x77 0 1M"]);
    let mut qemu_damaged = 0;
    for (i, (opts, backing, then)) in [
        ("cluster_size=4k", None, ""),
        ("cluster_size=16k", Some("b.raw"), "write -P 0x43 64k 4k"),
        ("", None, ""),
        ("", Some("b.raw"), "write -P 0x43 64k 4k"),
    ]
    .iter()
    .enumerate()
    {
        let p = image(&d, &format!("s{i}.qcow2"), opts, *backing, true);
        qemu_img(&["snapshot", "-c", "sn", &s(&p)]);
        let mut cmds = vec!["write -z 256k 64k", "write -z 0 8k"];
        if !then.is_empty() {
            cmds.push(then);
        }
        qemu_io("qcow2", &p, &cmds);
        let before = state(&p);
        let ours = copy(&p, "ours.qcow2");
        mutate::amend(&ours, &v2()).unwrap();
        assert_clean(&ours);
        let after = state(&ours);
        assert_eq!(after.0, before.0, "case {i}: active content");
        assert_eq!(after.1, before.1, "case {i}: snapshot list");
        assert_eq!(after.2, before.2, "case {i}: snapshot content");
        let theirs = copy(&p, "theirs.qcow2");
        qemu_img(&["amend", "-o", "compat=0.10", &s(&theirs)]);
        if check(&theirs).0 != 0 {
            qemu_damaged += 1;
        } else {
            agree(&ours, &theirs, &format!("case {i}"));
        }
    }
    eprintln!("qemu-img amend left {qemu_damaged} of 4 images failing its check");
}

#[test]
fn crash_downgrade_with_zero_clusters() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("crash-expand");
    let b = d.join("b.raw");
    qemu_create(&b, "raw", "", "1M");
    qemu_io("raw", &b, &["write -P 0x77 0 1M"]);
    for (i, backing) in [None, Some("b.raw")].iter().enumerate() {
        let p = image(
            &d,
            &format!("c{i}.qcow2"),
            "cluster_size=4k",
            *backing,
            true,
        );
        qemu_img(&["snapshot", "-c", "sn", &s(&p)]);
        qemu_io("qcow2", &p, &["write -z 256k 64k"]);
        let n = crash_test(&p, &|st| mutate::amend_in(st, &v2()));
        eprintln!("downgrade with zero clusters ({backing:?}): {n} fault points");
    }
}

/// qemu-img's message for a failing `amend`, exit code 1.
fn qemu_refuses(p: &Path, opts: &str) -> String {
    let o = std::process::Command::new("qemu-img")
        .args(["amend", "-o", opts])
        .arg(p)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    e.trim_end().trim_start_matches("qemu-img: ").to_string()
}

#[test]
fn downgrade_checks_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("mut-downgrade-checks");
    let mk = |name: &str, opts: &str| {
        let p = d.join(name);
        qemu_create(&p, "qcow2", opts, "1M");
        qemu_io("qcow2", &p, &["write -P 0x21 0 64k"]);
        p
    };
    // Refused, with qemu's message, nothing written.
    let ext = mk("ext.qcow2", "extended_l2=on");
    let zstd_c = mk("zc.qcow2", "compression_type=zstd");
    qemu_io("qcow2", &zstd_c, &["write -c -P 0x22 128k 64k"]);
    let sized = mk("sn.qcow2", "cluster_size=64k");
    qemu_img(&["snapshot", "-c", "s", &s(&sized)]);
    qemu_img(&["resize", "-q", &s(&sized), "2M"]);
    for p in [&ext, &zstd_c, &sized] {
        let bytes = std::fs::read(p).unwrap();
        let e = mutate::amend(p, &v2()).unwrap_err().to_string();
        assert_eq!(std::fs::read(p).unwrap(), bytes, "{}", p.display());
        let theirs = copy(p, "theirs.qcow2");
        assert_eq!(e, qemu_refuses(&theirs, "compat=0.10"), "{}", p.display());
    }
    // zstd without compressed clusters: downgraded (to zlib), as qemu-img does.
    let zstd = mk("z.qcow2", "compression_type=zstd");
    qemu_io("qcow2", &zstd, &["write -z 256k 64k"]);
    let ours = copy(&zstd, "ours.qcow2");
    let theirs = copy(&zstd, "theirs.qcow2");
    mutate::amend(&ours, &v2()).unwrap();
    qemu_img(&["amend", "-o", "compat=0.10", &s(&theirs)]);
    agree(&ours, &theirs, "zstd without compressed clusters");
}

#[test]
fn upgrade_gives_snapshot_entries_the_extra_data_version_3_needs() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("qcow2-amend-upgrade-snapshots");
    // Version 2 snapshot entries without extra data (valid there; qemu-img itself writes it).
    let p = image(&d, "v2.qcow2", "compat=0.10", None, false);
    qemu_img(&["snapshot", "-c", "s1", &s(&p)]);
    cut_snapshot_extra_data(&p, 0);
    assert_clean(&p);
    let theirs = copy(&p, "theirs.qcow2");
    qemu_img(&["amend", "-o", "compat=1.1", &s(&theirs)]);
    let st = std::sync::Arc::new(vdisk_core::FileStorage::open_rw(&p).unwrap());
    mutate::amend_in(st, &CreateOptions::parse(&["compat=1.1"]).unwrap()).unwrap();
    // A version 3 entry without them is "incomplete" to qemu-img check.
    assert_clean(&p);
    assert_clean(&theirs);
    assert_eq!(state(&p), state(&theirs));
    assert_eq!(
        qemu_info_json(&p)["format-specific"]["data"]["compat"],
        "1.1"
    );
}
