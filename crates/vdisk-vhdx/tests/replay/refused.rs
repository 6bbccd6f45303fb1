//! Crafted logs whose replay qemu fails, or that vdisk refuses to replay, each tried by
//! `qemu-img check -r all` on one copy and by vdisk on another: the same refusal (qemu: "Could not
//! open ...: Invalid argument", exit 1) with vdisk leaving the file unchanged where qemu had
//! already written part of it; and what qemu does where vdisk refuses and it does not.

use crate::common::*;
use crate::craft::*;
use crate::fixtures::*;
use vdisk_testutil::*;

#[test]
fn damaged_logs_are_refused_as_qemu_refuses_them() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-replay-refused");
    let (p, l) = base(&s);
    let base = std::fs::read(&p).unwrap();
    let b0 = block_at(&base, &l, 0);
    let data = |seq| {
        Entry::new(
            seq,
            l.len,
            vec![Desc::Data {
                at: b0,
                sector: sector(0x66),
            }],
        )
    };

    // FlushedFileOffset past the end of the file: qemu fails after its first header update
    // (vhdx_user_visible_write), so its copy differs from the input in both headers only.
    let mut e = data(5);
    e.flushed = l.len + 4096;
    let b = both(&s, "ffo", &with_log(&base, &l, &[(0, e.encode())]));
    assert_refused_alike(&b, "FlushedFileOffset", "FlushedFileOffset past the end");
    let q = b.qemu_file();
    let h = (64 << 10)..(132 << 10);
    let input = &b.input;
    assert!(q[..h.start] == input[..h.start] && q[h.end..] == input[h.end..]);
    assert!(
        q[h.clone()] != input[h],
        "qemu updated its headers before failing"
    );

    // A data sector whose sequence number does not match its descriptor's.
    let mut x = data(5).encode();
    put32(&mut x, 2 * SECTOR - 4, 9);
    let n = x.len();
    reseal(&mut x, 0, n);
    let b = both(&s, "dseq", &with_log(&base, &l, &[(0, x)]));
    assert_refused_alike(&b, "sequence number 9", "data sector sequence number");

    // An entry one sector longer than its descriptors read, followed by another: qemu's read
    // position lands on the padding, not on the next entry.
    let mut e5 = data(5);
    e5.pad = 1;
    let x5 = e5.encode();
    let at6 = x5.len();
    let b = both(
        &s,
        "pad",
        &with_log(&base, &l, &[(0, x5), (at6, data(6).encode())]),
    );
    assert_refused_alike(&b, "invalid entry header", "padding before the next entry");

    // One entry as long as the whole log: the sequence ends where it starts.
    let mut e = data(5);
    e.pad = l.log_len / SECTOR - 2;
    let b = both(&s, "full", &with_log(&base, &l, &[(0, e.encode())]));
    assert_refused_alike(&b, "ends before it", "entry filling the log");

    // 127 descriptors: qemu reads the second descriptor sector over the first and checks
    // descriptor 126 in memory it never filled.
    let descs = (0..127)
        .map(|i| Desc::Zero {
            at: b0 + 4096 * i,
            len: 4096,
        })
        .collect();
    let b = both(
        &s,
        "127",
        &with_log(&base, &l, &[(0, Entry::new(5, l.len, descs).encode())]),
    );
    assert_refused_alike(&b, "127 descriptors", "127 descriptors");
    let e = qemu_opens(&b.qemu_path).unwrap_err();
    assert!(
        e.contains("Invalid argument"),
        "qemu refuses it read-only too: {e}"
    );
    assert!(try_open(&b.our_path).is_err());

    // A data descriptor without its data sector.
    let mut x = data(5).encode();
    x.truncate(SECTOR);
    put32(&mut x, 8, SECTOR as u32);
    reseal(&mut x, 0, SECTOR);
    let b = both(&s, "nodata", &with_log(&base, &l, &[(0, x)]));
    assert_refused_alike(&b, "before a data sector", "missing data sector");
}

#[test]
fn hostile_logs_are_refused_with_the_file_unchanged() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-replay-hostile");
    let (p, l) = base(&s);
    let base = std::fs::read(&p).unwrap();
    let b0 = block_at(&base, &l, 0);
    let img = |e: Entry| with_log(&base, &l, &[(0, e.encode())]);

    // LastFileOffset 2^64 - 1: qemu's rounding up to 1 MiB wraps to 0 and it truncates the file
    // to nothing before failing; vdisk refuses.
    let mut e = Entry::new(5, l.len, vec![Desc::Zero { at: b0, len: 4096 }]);
    e.last = u64::MAX;
    let b = both(&s, "lfo-max", &img(e));
    assert_refused_alike(&b, "wraps to 0", "LastFileOffset 2^64 - 1");
    assert!((b.qemu_file().len() as u64) < l.len, "qemu cut the file");
    assert!(qemu_opens(&b.qemu_path).is_err());

    // A write past the largest offset qemu writes: qemu fails the open (EIO).
    let e = Entry::new(
        5,
        l.len,
        vec![Desc::Data {
            at: 1 << 63,
            sector: sector(1),
        }],
    );
    let b = both(&s, "far", &img(e));
    assert_eq!(b.qemu_rc, 1, "{}", b.qemu_err);
    refused_unchanged(&b, "largest offset", "write at 2^63");

    // Writes into the log or a header: qemu makes them; vdisk refuses (a crash there would leave
    // no valid log or header to start again from).
    for (name, at, words) in [
        ("into-log", l.log as u64 + 65536, "into the log"),
        ("into-header", 128 << 10, "into header 2"),
    ] {
        let e = Entry::new(
            5,
            l.len,
            vec![Desc::Data {
                at,
                sector: sector(2),
            }],
        );
        let b = both(&s, name, &img(e));
        assert_eq!(b.qemu_rc, 0, "{name}: qemu replays it: {}", b.qemu_err);
        refused_unchanged(&b, words, name);
    }

    // An entry writing past the length its LastFileOffset then sets: qemu's "growth" truncates
    // the file under that write and loses it; vdisk refuses.
    let mut e = Entry::new(
        5,
        l.len,
        vec![Desc::Data {
            at: l.len + 2 * MIB,
            sector: sector(4),
        }],
    );
    e.last = l.len + 5000;
    let b = both(&s, "shrink", &img(e));
    assert_eq!(
        (b.qemu_rc, b.qemu_file().len() as u64),
        (0, l.len + MIB),
        "{}",
        b.qemu_err
    );
    refused_unchanged(&b, "cut those bytes off", "write past LastFileOffset");

    // A current header whose sequence number cannot grow by 4: qemu wraps it; vdisk refuses.
    let mut image = img(Entry::new(5, l.len, vec![Desc::Zero { at: b0, len: 4096 }]));
    let cur = header_offsets(&image).0;
    put64(&mut image, cur + 8, u64::MAX - 1);
    reseal(&mut image, cur, 4096);
    let b = both(&s, "seq", &image);
    assert_eq!(b.qemu_rc, 0, "{}", b.qemu_err);
    refused_unchanged(&b, "cannot grow", "sequence number 2^64 - 2");

    // Beyond vdisk's limits (qemu would write a TiB of zeros, or a file a TiB long): vdisk alone.
    for (name, d, words) in [
        (
            "zeros",
            Desc::Zero {
                at: b0,
                len: 1 << 40,
            },
            "zeros",
        ),
        (
            "growth",
            Desc::Data {
                at: 1 << 40,
                sector: sector(3),
            },
            "grow the file",
        ),
    ] {
        let image = img(Entry::new(5, l.len, vec![d]));
        let p = s.join(&format!("{name}.vhdx"));
        std::fs::write(&p, &image).unwrap();
        let e = vdisk_vhdx::replay_log_at(&p).unwrap_err().to_string();
        assert!(e.contains(words), "{name}: {e}");
        assert!(std::fs::read(&p).unwrap() == image, "{name}: changed");
    }
}
