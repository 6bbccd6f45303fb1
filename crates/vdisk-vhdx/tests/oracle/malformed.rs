//! Damaged and unusual images made from qemu's own: vdisk must open exactly those `qemu-img info`
//! opens, read the same bytes where `qemu-img convert` reads them and fail where it fails, and
//! refuse the others with an error, never a panic, a hang or a write.

use crate::fixtures::*;
use vdisk_core::ImageReader;
use vdisk_testutil::*;
use vdisk_vhdx::guid;

const H1: usize = 64 << 10;
const H2: usize = 128 << 10;
const RT: usize = 192 << 10;

/// Where the structures of the base image are.
pub struct Layout {
    bat: usize,
    md: usize,
    log: usize,
}

impl Layout {
    fn of(b: &[u8]) -> Layout {
        let mut l = Layout {
            bat: 0,
            md: 0,
            log: le64(b, H1 + 72) as usize,
        };
        for i in 0..le32(b, RT + 8) as usize {
            let e = RT + 16 + 32 * i;
            let off = le64(b, e + 16) as usize;
            if b[e..e + 16] == guid::BAT.0 {
                l.bat = off;
            } else if b[e..e + 16] == guid::METADATA.0 {
                l.md = off;
            }
        }
        l
    }

    /// The table entry of metadata item `g`.
    fn md_entry(&self, b: &[u8], g: vdisk_vhdx::Guid) -> usize {
        (0..le32(b, self.md + 8) as usize >> 16)
            .map(|j| self.md + 32 + 32 * j)
            .find(|e| b[*e..*e + 16] == g.0)
            .unwrap()
    }

    /// The file offset of metadata item `g`.
    fn item(&self, b: &[u8], g: vdisk_vhdx::Guid) -> usize {
        self.md + le32(b, self.md_entry(b, g) + 16) as usize
    }
}

fn both_headers(b: &mut [u8], f: impl Fn(&mut [u8])) {
    for h in [H1, H2] {
        f(&mut b[h..h + 4096]);
        reseal(b, h, 4096);
    }
}

fn region_edit(b: &mut [u8], f: impl Fn(&mut [u8])) {
    f(&mut b[RT..RT + 65536]);
    reseal(b, RT, 65536);
}

fn set_bat(b: &mut [u8], l: &Layout, i: usize, v: u64) {
    put64(b, l.bat + 8 * i, v);
}

/// A log entry of one 4 KiB sector at the log's start, with the header's log GUID set to match.
fn log_entry(b: &mut [u8], l: &Layout, descriptor_sig: &[u8; 4]) {
    let g = [0x42u8; 16];
    both_headers(b, |h| h[48..64].copy_from_slice(&g));
    let e = l.log;
    b[e..e + 4096].fill(0);
    b[e..e + 4].copy_from_slice(b"loge");
    put32(b, e + 8, 4096);
    put64(b, e + 16, 7);
    put32(b, e + 24, 1);
    b[e + 32..e + 48].copy_from_slice(&g);
    b[e + 64..e + 68].copy_from_slice(descriptor_sig);
    put64(b, e + 64 + 16, 0x40_0000);
    put64(b, e + 64 + 24, 7);
    reseal(b, e, 4096);
}

type Edit = fn(&mut Vec<u8>, &Layout);

/// Each damage, named.
const EDITS: &[(&str, Edit)] = &[
    ("intact", |_, _| {}),
    ("signature damaged", |b, _| b[0] = b'X'),
    ("header 1 checksum bad", |b, _| b[H1 + 200] ^= 1),
    ("header 2 checksum bad", |b, _| b[H2 + 200] ^= 1),
    ("both header checksums bad", |b, _| {
        b[H1 + 200] ^= 1;
        b[H2 + 200] ^= 1;
    }),
    ("header 2 sequence 0, header 1 current", |b, _| {
        put64(b, H2 + 8, 0);
        reseal(b, H2, 4096);
    }),
    ("equal sequence numbers, different headers", |b, _| {
        let s = le64(b, H1 + 8);
        put64(b, H2 + 8, s);
        reseal(b, H2, 4096);
    }),
    ("identical headers", |b, _| {
        let h: Vec<u8> = b[H1..H1 + 4096].to_vec();
        b[H2..H2 + 4096].copy_from_slice(&h);
    }),
    ("header version 2", |b, _| both_headers(b, |h| h[66] = 2)),
    ("header signature", |b, _| both_headers(b, |h| h[0] = b'x')),
    ("log offset not aligned", |b, _| {
        both_headers(b, |h| h[73] = 0x10)
    }),
    ("log offset 0", |b, _| {
        both_headers(b, |h| h[72..80].fill(0))
    }),
    ("log version 1", |b, _| both_headers(b, |h| h[64] = 1)),
    ("log length not whole MiB, no guid", |b, _| {
        both_headers(b, |h| h[68] = 1)
    }),
    ("log guid set, log empty", |b, _| {
        both_headers(b, |h| h[48..64].fill(0x42))
    }),
    ("log guid set, length not whole MiB", |b, _| {
        both_headers(b, |h| {
            h[48..64].fill(0x42);
            h[68] = 1;
        })
    }),
    ("log with a valid entry", |b, l| log_entry(b, l, b"zero")),
    ("log entry with a bad descriptor", |b, l| {
        log_entry(b, l, b"junk")
    }),
    ("log entry with a bad checksum", |b, l| {
        log_entry(b, l, b"zero");
        b[l.log + 100] ^= 1;
    }),
    ("region table checksum bad", |b, _| b[RT + 100] ^= 1),
    ("region table signature", |b, _| {
        region_edit(b, |r| r[0] = b'x')
    }),
    ("region count 2048", |b, _| {
        region_edit(b, |r| r[8..12].copy_from_slice(&2048u32.to_le_bytes()))
    }),
    ("no BAT region", |b, _| region_edit(b, |r| r[16] ^= 0xff)),
    ("BAT region required unknown", |b, _| {
        region_edit(b, |r| {
            r[16] ^= 0xff;
            r[44] = 1;
        })
    }),
    ("extra optional region", |b, _| {
        region_edit(b, |r| {
            r[8] = 3;
            r[80..96].fill(0x33);
            r[96..104].copy_from_slice(&(40u64 << 20).to_le_bytes());
            r[104..108].copy_from_slice(&(1u32 << 20).to_le_bytes());
        })
    }),
    ("extra required region", |b, _| {
        region_edit(b, |r| {
            r[8] = 3;
            r[80..96].fill(0x33);
            r[96..104].copy_from_slice(&(40u64 << 20).to_le_bytes());
            r[104..108].copy_from_slice(&(1u32 << 20).to_le_bytes());
            r[108] = 1;
        })
    }),
    ("regions overlap", |b, _| {
        region_edit(b, |r| {
            let off: [u8; 8] = r[32..40].try_into().unwrap();
            r[64..72].copy_from_slice(&off);
        })
    }),
    ("region overlaps the log", |b, l| {
        let log = l.log as u64;
        region_edit(b, |r| r[32..40].copy_from_slice(&log.to_le_bytes()))
    }),
    ("metadata signature", |b, l| b[l.md] = b'x'),
    ("metadata count 2048", |b, l| put32(b, l.md + 8, 2048 << 16)),
    ("metadata unknown required item", |b, l| {
        let e = l.md_entry(b, guid::PAGE83);
        b[e] ^= 0xff;
    }),
    ("metadata extra optional item", |b, l| {
        let n = le32(b, l.md + 8) >> 16;
        put32(b, l.md + 8, (n + 1) << 16);
        let e = l.md + 32 + 32 * n as usize;
        b[e..e + 16].fill(0x55);
        put32(b, e + 24, 0);
    }),
    ("metadata item twice", |b, l| {
        let n = le32(b, l.md + 8) >> 16;
        put32(b, l.md + 8, (n + 1) << 16);
        let src = l.md_entry(b, guid::PAGE83);
        let e = l.md + 32 + 32 * n as usize;
        let copy: Vec<u8> = b[src..src + 32].to_vec();
        b[e..e + 32].copy_from_slice(&copy);
    }),
    ("block size 3 MiB", |b, l| {
        let at = l.item(b, guid::FILE_PARAMETERS);
        put32(b, at, 3 << 20);
    }),
    ("block size 512 KiB", |b, l| {
        let at = l.item(b, guid::FILE_PARAMETERS);
        put32(b, at, 512 << 10);
    }),
    ("block size 512 MiB", |b, l| {
        let at = l.item(b, guid::FILE_PARAMETERS);
        put32(b, at, 512 << 20);
    }),
    ("has parent", |b, l| {
        let at = l.item(b, guid::FILE_PARAMETERS);
        b[at + 4] |= 2;
    }),
    ("leave blocks allocated", |b, l| {
        let at = l.item(b, guid::FILE_PARAMETERS);
        b[at + 4] |= 1;
    }),
    ("logical sector 4096", |b, l| {
        let at = l.item(b, guid::LOGICAL_SECTOR_SIZE);
        put32(b, at, 4096);
    }),
    ("physical sector 1000", |b, l| {
        let at = l.item(b, guid::PHYSICAL_SECTOR_SIZE);
        put32(b, at, 1000);
    }),
    ("virtual size 1000", |b, l| {
        let at = l.item(b, guid::VIRTUAL_DISK_SIZE);
        put64(b, at, 1000);
    }),
    ("virtual size 3 MiB + 700", |b, l| {
        let at = l.item(b, guid::VIRTUAL_DISK_SIZE);
        put64(b, at, (3 << 20) + 700);
    }),
    ("virtual size beyond the BAT region", |b, l| {
        let at = l.item(b, guid::VIRTUAL_DISK_SIZE);
        put64(b, at, 1 << 40);
    }),
    ("virtual size 2^63", |b, l| {
        let at = l.item(b, guid::VIRTUAL_DISK_SIZE);
        put64(b, at, 1 << 63);
    }),
    ("item offset past the end", |b, l| {
        let e = l.md_entry(b, guid::PHYSICAL_SECTOR_SIZE);
        put32(b, e + 16, 0xffff_0000);
    }),
    ("BAT state undefined", |b, l| set_bat(b, l, 5, 1)),
    ("BAT state unmapped", |b, l| set_bat(b, l, 0, 3)),
    ("BAT state unmapped v0.95", |b, l| set_bat(b, l, 0, 5)),
    ("BAT state zero over data", |b, l| set_bat(b, l, 0, 2)),
    ("BAT state 4", |b, l| set_bat(b, l, 5, 4)),
    ("BAT state partially present", |b, l| set_bat(b, l, 5, 7)),
    ("BAT entry past the end", |b, l| {
        set_bat(b, l, 5, 6 | 1 << 40)
    }),
    ("BAT entry at the last MiB", |b, l| {
        let end = (b.len() as u64 - (1 << 20)) & !0xfffff;
        set_bat(b, l, 5, 6 | end);
    }),
    ("BAT entry over the metadata", |b, l| {
        set_bat(b, l, 5, 6 | l.md as u64)
    }),
    ("BAT entry over the log", |b, l| {
        set_bat(b, l, 5, 6 | l.log as u64)
    }),
    ("BAT entry at offset 0", |b, l| set_bat(b, l, 5, 6)),
    ("BAT entry reserved bits", |b, l| {
        let e = le64(b, l.bat);
        set_bat(b, l, 0, e | 0xff8);
    }),
    ("BAT entry offset overflow", |b, l| {
        set_bat(b, l, 5, 6 | 0xffff_ffff_fff0_0000)
    }),
    ("cut inside the last block", |b, _| {
        b.truncate(b.len() - 4096)
    }),
    ("cut inside the last sector", |b, _| {
        b.truncate(b.len() - 100)
    }),
    ("cut to 300 KiB", |b, _| b.truncate(300 << 10)),
    ("cut to 100 KiB", |b, _| b.truncate(100 << 10)),
    ("cut to nothing", |b, _| b.clear()),
];

/// The cases qemu 10 opens (found with qemu-img; checked again on every run).
const OPENS: &[&str] = &[
    "intact",
    "header 1 checksum bad",
    "header 2 checksum bad",
    "header 2 sequence 0, header 1 current",
    "identical headers",
    "log guid set, log empty",
    "log entry with a bad checksum",
    "extra optional region",
    "metadata extra optional item",
    "leave blocks allocated",
    "physical sector 1000",
    "virtual size 1000",
    "virtual size 3 MiB + 700",
    "item offset past the end",
    "BAT state undefined",
    "BAT state unmapped",
    "BAT state unmapped v0.95",
    "BAT state zero over data",
    "BAT state 4",
    "BAT state partially present",
    "BAT entry at the last MiB",
    "BAT entry at offset 0",
    "BAT entry reserved bits",
    "cut inside the last sector",
];

#[test]
fn damaged_images_open_exactly_when_qemu_opens_them() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-malformed");
    let good = std::fs::read(patterned(
        &s,
        "g.vhdx",
        "block_size=1M,block_state_zero=off",
        "6M",
    ))
    .unwrap();
    let layout = Layout::of(&good);
    assert!(layout.bat > 0 && layout.md > 0 && layout.log > 0);
    for (name, edit) in EDITS {
        let mut b = good.clone();
        edit(&mut b, &layout);
        let p = s.join(&format!("{}.vhdx", name.replace([' ', ':', '/', ','], "_")));
        std::fs::write(&p, &b).unwrap();
        let ours = try_open(&p);
        let q = qemu_opens(&p);
        assert_eq!(q.is_ok(), OPENS.contains(name), "{name}: qemu says {q:?}");
        match (q, ours) {
            (Ok(()), Ok(r)) => {
                assert_info_like_qemu(&r, &p);
                assert_map_like_qemu(&r, &p);
                let mut all = vec![0u8; r.virtual_size() as usize];
                let read = r.read_at(&mut all, 0);
                match (qemu_reads(&p), read) {
                    (Ok(()), Ok(())) => {
                        assert_same_bytes(&all, &qemu_raw_bytes(&p, Some("vhdx")), name)
                    }
                    (Err(_), Err(_)) => {}
                    (q, o) => panic!("{name}: qemu reads {q:?}, vdisk reads {o:?}"),
                }
            }
            (Err(_), Err(_)) => {}
            (Ok(()), Err(e)) => panic!("{name}: qemu opens it, vdisk says {e}"),
            (Err(q), Ok(_)) => panic!("{name}: vdisk opens it, qemu says {q}"),
        }
        assert_eq!(
            std::fs::read(&p).unwrap(),
            b,
            "{name}: opening wrote to the file"
        );
    }
}

#[test]
fn a_log_that_needs_replay_is_refused_with_qemus_words() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-log");
    let mut b = std::fs::read(patterned(&s, "g.vhdx", "block_size=1M", "3M")).unwrap();
    let l = Layout::of(&b);
    log_entry(&mut b, &l, b"desc");
    let p = s.join("l.vhdx");
    std::fs::write(&p, &b).unwrap();
    let q = qemu_opens(&p).unwrap_err();
    let ours = try_open(&p).err().unwrap().to_string();
    let words = "opened read-only, but contains a log that needs to be replayed";
    assert!(
        q.contains(words) && ours.contains(words),
        "qemu: {q}\nvdisk: {ours}"
    );
    assert_eq!(std::fs::read(&p).unwrap(), b, "opening wrote to the file");
}

#[test]
fn a_log_search_that_never_ends_in_qemu_is_refused() {
    if !qemu_available() {
        return;
    }
    // One entry as long as the whole log with a bad checksum: qemu's vhdx_log_search comes back
    // to where it started and loops forever; vdisk refuses the image at once.
    let s = Scratch::new("vhdx-log-hang");
    let mut b = std::fs::read(create(&s, "g.vhdx", "block_size=1M", "3M")).unwrap();
    let l = Layout::of(&b);
    log_entry(&mut b, &l, b"zero");
    put32(&mut b, l.log + 8, 1 << 20);
    put32(&mut b, l.log + 4, 0xdead);
    let p = s.join("h.vhdx");
    std::fs::write(&p, &b).unwrap();
    let e = try_open(&p).err().expect("vdisk must refuse it");
    assert!(e.to_string().contains("never ends"), "{e}");
    let mut child = std::process::Command::new("qemu-img")
        .args(["info", "-f", "vhdx"])
        .arg(&p)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        still_running,
        "qemu-img finished: the hang this test documents is gone"
    );
}

#[test]
fn check_counts_what_open_refuses() {
    if !qemu_available() {
        return;
    }
    // qemu-img check opens without the BAT check and then counts each bad entry.
    let s = Scratch::new("vhdx-check-bad");
    let mut b = std::fs::read(patterned(
        &s,
        "g.vhdx",
        "block_size=1M,block_state_zero=off",
        "6M",
    ))
    .unwrap();
    let l = Layout::of(&b);
    set_bat(&mut b, &l, 5, 6 | 1 << 40);
    let p = s.join("c.vhdx");
    std::fs::write(&p, &b).unwrap();
    assert!(try_open(&p).is_err());
    let out = std::process::Command::new("qemu-img")
        .args(["check", "--output=json", "-f", "vhdx"])
        .arg(&p)
        .output()
        .unwrap();
    let q: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let storage = std::sync::Arc::new(vdisk_core::FileStorage::open(&p).unwrap());
    let rep = vdisk_vhdx::open_for_check(storage)
        .unwrap()
        .check()
        .unwrap();
    assert_eq!(Some(rep.corruptions), q["corruptions"].as_u64(), "{q}");
    assert_eq!(out.status.code(), Some(rep.exit_code()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&rep.messages[0]),
        "qemu: {stderr}\nvdisk: {:?}",
        rep.messages
    );
}

#[test]
fn random_corruption_never_panics() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-fuzz");
    let good = std::fs::read(patterned(
        &s,
        "g.vhdx",
        "block_size=1M,block_state_zero=off",
        "4M",
    ))
    .unwrap();
    let l = Layout::of(&good);
    let hot = [0usize, H1, H2, RT, l.md, l.bat, l.log];
    let mut rng = XorShift64::new(0x0bad_c0de_1234_5678);
    for _ in 0..300 {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(4) {
            let at = if rng.below(4) == 0 {
                rng.below(b.len() as u64) as usize
            } else {
                hot[rng.below(hot.len() as u64) as usize] + rng.below(128) as usize
            };
            b[at] = rng.next_u64() as u8;
        }
        // Keep the damage past the checksums half of the time.
        if rng.below(2) == 0 {
            reseal(&mut b, H1, 4096);
            reseal(&mut b, H2, 4096);
            reseal(&mut b, RT, 65536);
        }
        if rng.below(5) == 0 {
            b.truncate(rng.below(b.len() as u64) as usize);
        }
        if let Ok(r) = vdisk_vhdx::open(vdisk_core::MemStorage::new("f.vhdx", b).shared()) {
            let size = r.virtual_size();
            let mut buf = vec![0u8; 65536];
            for off in [0, size / 2, size.saturating_sub(65536)] {
                let n = (size - off.min(size)).min(65536) as usize;
                let _ = r.read_at(&mut buf[..n], off);
            }
            let _ = vdisk_core::reader::collect_extents(&r);
            let _ = r.info();
            let _ = r.check();
        }
    }
}
