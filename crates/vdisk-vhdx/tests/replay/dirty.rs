//! Logs left by qemu itself ([`vdisk_testutil::interrupted_vhdx_write`]: qemu-io's journalled
//! BAT update made to fail under strace after its log entry is durable).

use crate::common::*;
use crate::fixtures::*;
use std::path::Path;
use vdisk_testutil::*;

/// Makes qemu-io's `cmd` on `p` stop after its log entry is durable and before the BAT write.
fn interrupted_write(s: &Scratch, p: &Path, cmd: &str) {
    let l = layout(p);
    interrupted_vhdx_write(s.path(), p, l.bat as u64..l.bat as u64 + MIB, cmd);
}

/// qemu-made dirty logs: refused read-only by both; replayed alike by `qemu-img check -r all` and
/// vdisk; `-r leaks` and `--output=json` as recorded.
#[test]
fn logs_left_by_qemu_replay_as_qemu_replays_them() {
    if !qemu_available() || !strace_available() {
        return;
    }
    let s = Scratch::new("vhdx-replay-dirty");
    // A new image and one write; a patterned image and an unaligned write into a new block.
    let fresh = create(&s, "fresh.vhdx", "", "8M");
    let patterned = patterned(&s, "pat.vhdx", "block_size=1M", "8M");
    let cases = [
        (
            fresh,
            "write -P 0xaa 0 65536".to_string(),
            0usize,
            65536usize,
        ),
        (
            patterned,
            format!("write -P 0x5c {} 3000", 5 * MIB + 512),
            5 * MIB as usize + 512,
            3000,
        ),
    ];
    for (i, (p, cmd, at, len)) in cases.into_iter().enumerate() {
        interrupted_write(&s, &p, &cmd);
        let e = qemu_opens(&p).unwrap_err();
        assert!(
            e.contains("contains a log that needs to be replayed"),
            "{e}"
        );
        let e = try_open(&p)
            .err()
            .expect("vdisk refuses it read-only")
            .to_string();
        assert!(
            e.contains("contains a log that needs to be replayed"),
            "{e}"
        );
        let image = std::fs::read(&p).unwrap();
        let b = both(&s, &format!("dirty{i}"), &image);
        let g = assert_replayed_alike(&b, &cmd);
        let fill = if i == 0 { 0xaa } else { 0x5c };
        assert!(
            g[at..at + len].iter().all(|x| *x == fill),
            "{cmd}: the write is there"
        );
        // Replayed once: neither finds anything more to replay.
        assert_eq!(qemu_check(&b.our_path, &["-r", "all"]).1, CLEAN);
        assert!(!vdisk_vhdx::replay_log_at(&b.qemu_path).unwrap());
        // -r leaks does the same as -r all; --output=json shows the fixed count.
        let leaks = s.join("leaks.vhdx");
        std::fs::write(&leaks, &image).unwrap();
        assert_eq!(
            qemu_check(&leaks, &["-r", "leaks"]),
            (0, REPAIRED.into(), String::new())
        );
        assert_same_but_guids(&std::fs::read(&leaks).unwrap(), &b.our_file(), "-r leaks");
        std::fs::write(&leaks, &image).unwrap();
        let (rc, out, _) = qemu_check(&leaks, &["-r", "all", "--output=json"]);
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        let ours = b.ours.as_ref().unwrap();
        assert_eq!(rc, 0);
        assert_eq!(j["corruptions-fixed"], ours.report.corruptions_fixed);
        assert_eq!(j["check-errors"], 0);
        assert!(
            j.get("corruptions").is_none() && j.get("leaks").is_none(),
            "{j}"
        );
    }
}
