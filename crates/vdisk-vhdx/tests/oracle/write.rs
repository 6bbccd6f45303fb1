//! The writer against qemu-img: empty images against `qemu-img create -f vhdx`, written images
//! against `qemu-img convert -O vhdx` of the same raw source, and option refusals against
//! qemu-img's messages. Files are compared byte for byte except the fields that are random or
//! name their creator (and, after a convert, the log qemu wrote its BAT updates through).

use crate::fixtures::{open, MIB};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use vdisk_core::{CreateOptions, ImageReader, Payload};
use vdisk_testutil::*;
use vdisk_vhdx::limits::{HEADER1_OFFSET, HEADER2_OFFSET};

/// `info --output=json` without the file names, and without `actual-size` unless `allocation`.
fn info_without_names(p: &Path, allocation: bool) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value, allocation: bool) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("filename");
                if !allocation {
                    m.remove("actual-size");
                }
                m.values_mut().for_each(|c| strip(c, allocation));
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|c| strip(c, allocation)),
            _ => {}
        }
    }
    let mut v = qemu_info_json(p);
    strip(&mut v, allocation);
    v
}

/// The byte ranges allowed to differ between vdisk's file and qemu's: the creator, each header's
/// checksum, sequence number and write GUIDs, the page 83 GUID, and `extra`.
fn random_fields(p: &Path, extra: &[Range<u64>]) -> Vec<Range<u64>> {
    let r = open(p);
    let page83 = r.regions().metadata.file_offset + u64::from(r.metadata().table.page83.offset);
    let mut v = vec![8..8 + 512, page83..page83 + 16];
    for h in [HEADER1_OFFSET, HEADER2_OFFSET] {
        v.push(h + 4..h + 48);
    }
    v.extend_from_slice(extra);
    v
}

/// Asserts `ours` and `theirs` have the same length and the same bytes outside `skip`.
fn assert_same_file(ours: &Path, theirs: &Path, skip: &[Range<u64>]) {
    let (a, b) = (std::fs::read(ours).unwrap(), std::fs::read(theirs).unwrap());
    assert_eq!(a.len(), b.len(), "file length of {}", ours.display());
    // Whole 64 KiB pieces compare as slices (fast in a debug build); only unequal ones by byte.
    let first = (0..a.len())
        .step_by(1 << 16)
        .filter(|at| a[*at..(at + (1 << 16)).min(a.len())] != b[*at..(at + (1 << 16)).min(a.len())])
        .flat_map(|at| at..(at + (1 << 16)).min(a.len()))
        .find(|i| a[*i] != b[*i] && !skip.iter().any(|r| r.contains(&(*i as u64))));
    assert!(
        first.is_none(),
        "{} differs from qemu's file at byte {first:?}",
        ours.display()
    );
}

/// vdisk's headers: both sealed, the second current (one higher), the log empty.
fn assert_headers_sound(p: &Path) {
    let f = std::fs::File::open(p).unwrap();
    let (mut h1, mut h2) = (vec![0u8; 4096], vec![0u8; 4096]);
    f.read_exact_at(&mut h1, HEADER1_OFFSET).unwrap();
    f.read_exact_at(&mut h2, HEADER2_OFFSET).unwrap();
    let (i, h) = vdisk_vhdx::header::choose(&h1, &h2).unwrap();
    assert_eq!(i, 1);
    let first = vdisk_vhdx::Header::parse(&h1);
    assert_eq!(h.sequence_number, first.sequence_number + 1);
    assert!(h.log_guid.is_zero() && h.file_write_guid == first.file_write_guid);
}

fn opts(o: &str) -> CreateOptions {
    CreateOptions::parse(&[o]).unwrap()
}

/// The file length qemu's size argument means, for our `create`.
fn bytes(size: &str) -> u64 {
    vdisk_core::size::parse_size(size).unwrap()
}

#[test]
fn empty_images_match_qemu_img_create() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-wcreate");
    let cases = [
        ("1M", ""),
        ("1000", ""),
        ("0", "block_size=1M"),
        ("20M", "block_state_zero=off"),
        ("20M", "subformat=fixed"),
        ("20M", "subformat=fixed,block_state_zero=off,block_size=2M"),
        ("3G", "log_size=3M"),
        ("200G", "log_size=1.5M"),
        ("33T", "block_state_zero=off"),
        ("64T", ""),
        ("5M", "block_size=256M,block_state_zero=on"),
    ];
    for (i, (size, o)) in cases.iter().enumerate() {
        let (ours, theirs) = (s.join(&format!("o{i}.vhdx")), s.join(&format!("q{i}.vhdx")));
        vdisk_vhdx::create(&ours, bytes(size), &opts(o))
            .unwrap()
            .finish()
            .unwrap();
        qemu_create(&theirs, "vhdx", o, size);
        let what = format!("{size} -o {o}");
        assert_eq!(
            info_without_names(&ours, true),
            info_without_names(&theirs, true),
            "{what}"
        );
        assert_eq!(
            qemu_map_json(&ours, Some("vhdx")),
            qemu_map_json(&theirs, Some("vhdx")),
            "{what}"
        );
        assert_qemu_check_clean(&ours, "vhdx");
        assert_headers_sound(&ours);
        let (a, b) = (open(&ours), open(&theirs));
        assert_eq!(a.regions().entries, b.regions().entries, "{what}");
        assert_eq!(a.metadata().block_size, b.metadata().block_size, "{what}");
        assert_same_file(&ours, &theirs, &random_fields(&ours, &[]));
    }
}

/// A sparse raw source of `size` bytes with `(offset, len, byte)` written (byte 0 writes zeros
/// that are data in the file, not a hole).
fn raw_source(p: &Path, size: u64, writes: &[(u64, usize, u8)]) {
    let f = std::fs::File::create(p).unwrap();
    f.set_len(size).unwrap();
    for (at, len, byte) in writes {
        f.write_all_at(&vec![*byte; *len], *at).unwrap();
    }
}

/// Feeds `src` to vdisk's writer as the convert engine would: runs of whole 4 KiB granules, all
/// zero (as zero payloads) or not, each run at most 3 MiB so that data crosses block edges.
fn convert_with_vdisk(src: &Path, dst: &Path, o: &str) {
    let data = std::fs::read(src).unwrap();
    let mut w = vdisk_vhdx::create(dst, data.len() as u64, &opts(o)).unwrap();
    let mut at = 0usize;
    while at < data.len() {
        let zero = |i: usize| data[i..(i + 4096).min(data.len())].iter().all(|b| *b == 0);
        let kind = zero(at);
        let mut end = at;
        while end < data.len() && zero(end) == kind && end - at < 3 * MIB as usize {
            end = (end + 4096).min(data.len());
        }
        let payload = if kind {
            Payload::Zero((end - at) as u64)
        } else {
            Payload::data(data[at..end].to_vec())
        };
        w.write(at as u64, payload).unwrap();
        at = end;
    }
    w.finish().unwrap();
}

#[test]
fn written_images_match_qemu_img_convert() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-wconvert");
    // 1 MiB blocks: data in block 0, written zeros over block 2, 4 KiB in block 3, a run across
    // the 4 MiB edge, and an unaligned tail (the size rounds up to 512).
    let small = s.join("small.raw");
    raw_source(
        &small,
        6 * MIB + 1000,
        &[
            (0, 65536, 0xaa),
            (2 * MIB, MIB as usize, 0),
            (3 * MIB + 4096, 4096, 0xbb),
            (4 * MIB - 8192, 16384, 0xcc),
            (6 * MIB + 8, 992, 0xdd),
        ],
    );
    // Default 8 MiB blocks: the middle block stays empty, the partial last block has data.
    let large = s.join("large.raw");
    raw_source(
        &large,
        20 * MIB + 512,
        &[(4096, 8192, 0x11), (20 * MIB, 512, 0x22)],
    );
    let cases = [
        (&small, "block_size=1M"),
        (&small, "block_size=1M,block_state_zero=off"),
        (&small, "block_size=1M,subformat=fixed"),
        (&small, "block_size=1M,subformat=fixed,block_state_zero=off"),
        (&large, ""),
        (&large, "log_size=2M,subformat=fixed"),
    ];
    for (i, (src, o)) in cases.iter().enumerate() {
        let (ours, theirs) = (s.join(&format!("o{i}.vhdx")), s.join(&format!("q{i}.vhdx")));
        convert_with_vdisk(src, &ours, o);
        let mut c = Command::new("qemu-img");
        c.args(["convert", "-f", "raw", "-O", "vhdx"]);
        if !o.is_empty() {
            c.args(["-o", o]);
        }
        run(c.arg(src.as_path()).arg(&theirs));
        let what = format!("{} -o {o}", src.display());
        assert_qemu_compare_equal_as(src, &ours, &["-f", "raw", "-F", "vhdx"]);
        assert_qemu_compare_equal_as(&ours, &theirs, &["-f", "vhdx", "-F", "vhdx"]);
        assert_qemu_check_clean(&ours, "vhdx");
        assert_eq!(
            qemu_map_json(&ours, Some("vhdx")),
            qemu_map_json(&theirs, Some("vhdx")),
            "{what}"
        );
        assert_eq!(
            info_without_names(&ours, false),
            info_without_names(&theirs, false),
            "{what}"
        );
        assert_headers_sound(&ours);
        // The same BAT, blocks and data at the same offsets; qemu's log holds its BAT updates.
        let r = open(&ours);
        let log =
            r.header().1.log_offset..r.header().1.log_offset + u64::from(r.header().1.log_length);
        assert_same_file(&ours, &theirs, &random_fields(&ours, &[log]));
        let source = std::fs::read(src.as_path()).unwrap();
        let mut back = vec![0u8; r.virtual_size() as usize];
        r.read_at(&mut back, 0).unwrap();
        assert_same_bytes(&back[..source.len()], &source, &what);
        assert!(back[source.len()..].iter().all(|b| *b == 0), "{what}");
    }
}

/// qemu-img's message for `create -f vhdx -o OPTIONS x SIZE`, without its "qemu-img: x: " prefix.
fn qemu_refusal(s: &Scratch, o: &str, size: &str) -> String {
    let p = s.join("refused.vhdx");
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "vhdx", "-o", o])
        .arg(&p)
        .arg(size)
        .output()
        .unwrap();
    assert!(!out.status.success(), "qemu-img accepted -o {o} {size}");
    let _ = std::fs::remove_file(&p);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let prefix = format!("qemu-img: {}: ", p.display());
    let line = err.lines().next().unwrap_or_default();
    line.strip_prefix(&prefix).unwrap_or(line).to_string()
}

#[test]
fn refusals_match_qemu_img() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-wrefuse");
    let cases = [
        ("block_size=3M", "1M"),
        ("block_size=96M", "1M"),
        ("log_size=0", "1M"),
        ("log_size=4G", "1M"),
        ("log_size=8G", "1M"),
        ("block_state_zero=on", "65T"),
        ("subformat=foo", "1M"),
        ("block_state_zero=maybe", "1M"),
        ("block_size=-1", "1M"),
        ("block_size=abc", "1M"),
        ("bogus=1", "1M"),
    ];
    for (o, size) in cases {
        let want = qemu_refusal(&s, o, size);
        let p = s.join("ours.vhdx");
        let got = match vdisk_vhdx::create(&p, bytes(size), &opts(o)) {
            Ok(_) => panic!("vdisk accepted -o {o} {size}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(got.lines().next().unwrap(), want, "-o {o} {size}");
        assert!(!p.exists(), "a refused create leaves no file");
    }
}
