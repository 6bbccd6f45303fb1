//! `info` of LUKS-encrypted qcow2 images against qemu-img's: images qemu-img made with several
//! ciphers, modes, IV generators and hashes show the same LUKS header (human output and JSON),
//! and images whose LUKS header was then damaged fail as qemu-img fails, with the same exit code
//! and message (QEMU checks the header whenever it opens the image, even for `info`).

mod common;
use common::*;
use std::path::Path;
use vdisk_testutil::{qemu_available, Scratch};

/// Makes `name` with qemu-img: a 4 MiB qcow2 encrypted with LUKS and the given extra options.
fn make(dir: &Path, name: &str, extra: &str) {
    let mut o = "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10".to_string();
    if !extra.is_empty() {
        o = format!("{o},{extra}");
    }
    qemu_ok(
        dir,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "--object",
            "secret,id=sec0,data=password",
            "-o",
            &o,
            name,
            "4M",
        ],
    );
}

/// Where the image's LUKS header starts (its CRYPTO header extension's offset), as qemu-img's
/// `dump-header`-free way: the extension is found by its magic in the first cluster.
fn luks_offset(path: &Path) -> (u64, usize) {
    let b = std::fs::read(path).unwrap();
    let at = b[..65536]
        .windows(4)
        .position(|w| w == [0x05, 0x37, 0xbe, 0x77])
        .expect("no CRYPTO header extension");
    let off = u64::from_be_bytes(b[at + 8..at + 16].try_into().unwrap());
    (off, at)
}

/// Copies `orig.qcow2` to `name` with `bytes` written at `at`.
fn patched_copy(dir: &Path, name: &str, bytes: &[u8], at: u64) {
    std::fs::copy(dir.join("orig.qcow2"), dir.join(name)).unwrap();
    patch_file(&dir.join(name), at, bytes);
}

fn same_info(dir: &Path, name: &str) -> Vec<String> {
    let mut differ = Vec::new();
    for args in [&["info", name][..], &["info", "--output=json", name]] {
        let (v, q) = (vdisk(dir, args), qemu(dir, args));
        let (vo, qo) = (qemu_view(&out(&v)), qemu_view(&out(&q)));
        if v.status.code() != q.status.code() || vo != qo {
            differ.push(format!(
                "{args:?}: exit {:?} / {:?}\n--- vdisk\n{vo}\n--- qemu-img\n{qo}\n{}",
                v.status.code(),
                q.status.code(),
                err(&v)
            ));
        }
    }
    differ
}

#[test]
fn info_shows_the_luks_header_as_qemu_img() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("luks-info");
    let d = s.path();
    let cases = [
        ("default.qcow2", ""),
        (
            "twofish.qcow2",
            "encrypt.cipher-alg=twofish-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,\
             encrypt.ivgen-hash-alg=sha256",
        ),
        (
            "serpent.qcow2",
            "encrypt.cipher-alg=serpent-192,encrypt.ivgen-alg=plain,encrypt.hash-alg=sha512",
        ),
        (
            "cast5.qcow2",
            "encrypt.cipher-alg=cast5-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,\
             encrypt.ivgen-hash-alg=md5,encrypt.hash-alg=sm3",
        ),
        (
            "aes128.qcow2",
            "encrypt.cipher-alg=aes-128,encrypt.hash-alg=sha1",
        ),
    ];
    let mut differ = Vec::new();
    for (name, extra) in cases {
        make(d, name, extra);
        differ.extend(same_info(d, name));
    }
    // A slot added by qemu-img amend: two active slots.
    qemu_ok(
        d,
        &[
            "amend",
            "--object",
            "secret,id=sec0,data=password",
            "--object",
            "secret,id=sec1,data=other",
            "-o",
            "encrypt.keyslot=3,encrypt.state=active,encrypt.new-secret=sec1,encrypt.iter-time=10",
            "--image-opts",
            "driver=qcow2,file.filename=default.qcow2,encrypt.key-secret=sec0",
        ],
    );
    differ.extend(same_info(d, "default.qcow2"));
    let text = vdisk_ok(d, &["info", "default.qcow2"]);
    assert!(
        text.contains("cipher alg: aes-256") && text.contains("stripes: 4000"),
        "{text}"
    );
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

#[test]
fn a_damaged_luks_header_fails_info_as_qemu_img() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("luks-damaged");
    let d = s.path();
    make(d, "orig.qcow2", "");
    let (off, ext_at) = luks_offset(&d.join("orig.qcow2"));
    // (what, bytes written, where in the LUKS header).
    let slot = |i: u64, field: u64| 208 + 48 * i + field;
    let cases: Vec<(&str, Vec<u8>, u64)> = vec![
        ("magic", b"LUKX".to_vec(), 0),
        ("version", vec![0, 2], 6),
        ("cipher name", vec![b'a'; 32], 8),
        ("cipher mode", b"gcm-plain64\0".to_vec(), 40),
        ("mode without an iv", b"xts\0".to_vec(), 40),
        ("essiv without hash", b"cbc-essiv\0".to_vec(), 40),
        ("hash spec", b"whirlpool\0".to_vec(), 72),
        ("key length", 40u32.to_be_bytes().to_vec(), 108),
        ("payload offset", 7u32.to_be_bytes().to_vec(), 104),
        (
            "payload before the last slot",
            1000u32.to_be_bytes().to_vec(),
            104,
        ),
        ("master key iterations", vec![0; 4], 164),
        ("slot stripes", u32::MAX.to_be_bytes().to_vec(), slot(2, 44)),
        ("slot state", 1u32.to_be_bytes().to_vec(), slot(4, 0)),
        ("active slot iterations", vec![0; 4], slot(0, 4)),
        (
            "slot in the header",
            7u32.to_be_bytes().to_vec(),
            slot(6, 40),
        ),
        (
            "slots overlapping",
            520u32.to_be_bytes().to_vec(),
            slot(1, 40),
        ),
    ];
    let mut differ = Vec::new();
    let mut run = |what: &str, name: &str| {
        for args in [&["info", name][..], &["info", "--output=json", name]] {
            let (v, q) = (vdisk(d, args), qemu(d, args));
            let (ve, qe) = (first_message(&err(&v)), first_message(&err(&q)));
            if v.status.code() != q.status.code() || ve != qe || out(&v) != out(&q) {
                differ.push(format!(
                    "{what}: exit {:?} / {:?}\n  vdisk: {ve}\n  qemu-img: {qe}",
                    v.status.code(),
                    q.status.code()
                ));
            }
        }
    };
    for (i, (what, bytes, at)) in cases.iter().enumerate() {
        let name = format!("d{i}.qcow2");
        patched_copy(d, &name, bytes, off + at);
        run(what, &name);
    }
    // The extension's length too short for the header, and its offset past the end of the file.
    for (what, field, value) in [
        ("extension length", 16u64, 512u64),
        ("offset past the end", 8, 1 << 30),
    ] {
        let name = format!("{}.qcow2", what.replace(' ', "-"));
        patched_copy(d, &name, &value.to_be_bytes(), ext_at as u64 + field);
        run(what, &name);
    }
    // Every damage above fails (the comparison alone would pass if both tools accepted them).
    let v = vdisk(d, &["info", "d0.qcow2"]);
    assert_eq!(v.status.code(), Some(1), "{}", err(&v));
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

#[test]
fn reading_an_encrypted_image_fails_as_qemu_img_without_a_key() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("luks-read");
    let d = s.path();
    make(d, "e.qcow2", "");
    let mut differ = Vec::new();
    for args in [
        &["map", "e.qcow2"][..],
        &["map", "--output=json", "e.qcow2"],
        &["convert", "-O", "raw", "e.qcow2", "o.raw"],
        &["compare", "e.qcow2", "e.qcow2"],
        &["check", "e.qcow2"],
    ] {
        let (v, q) = (vdisk(d, args), qemu(d, args));
        let (ve, qe) = (first_message(&err(&v)), first_message(&err(&q)));
        // vdisk says why it takes no key after qemu-img's words.
        if v.status.code() != q.status.code() || !ve.starts_with(&qe) || out(&v) != out(&q) {
            differ.push(format!(
                "{args:?}: exit {:?} / {:?}\n  vdisk: {ve}\n  qemu-img: {qe}\n  stdout: {:?} / {:?}",
                v.status.code(),
                q.status.code(),
                out(&v),
                out(&q)
            ));
        }
        assert!(!d.join("o.raw").exists(), "{args:?} left an output");
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

#[test]
fn a_luks_volume_shows_its_header_and_is_not_read() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("luks-volume");
    let d = s.path();
    for (name, extra) in [
        ("a.luks", ""),
        (
            "b.luks",
            ",cipher-alg=serpent-256,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256",
        ),
    ] {
        qemu_ok(
            d,
            &[
                "create",
                "-q",
                "-f",
                "luks",
                "--object",
                "secret,id=s0,data=password",
                "-o",
                &format!("key-secret=s0,iter-time=10{extra}"),
                name,
                "8M",
            ],
        );
    }
    // A slot's stripes damaged (byte 208 + 48 + 44 of the header): qemu's open fails on it.
    std::fs::copy(d.join("a.luks"), d.join("c.luks")).unwrap();
    patch_file(&d.join("c.luks"), 208 + 48 + 44, &7u32.to_be_bytes());
    let mut differ = same_info(d, "a.luks");
    differ.extend(same_info(d, "b.luks"));
    for args in [
        &["info", "c.luks"][..],
        &["map", "a.luks"],
        &["convert", "-O", "raw", "a.luks", "o.raw"],
        &["check", "a.luks"],
        &["compare", "a.luks", "b.luks"],
    ] {
        let (v, q) = (vdisk(d, args), qemu(d, args));
        let (ve, qe) = (first_message(&err(&v)), first_message(&err(&q)));
        if v.status.code() != q.status.code() || !ve.starts_with(&qe) || out(&v) != out(&q) {
            differ.push(format!(
                "{args:?}: exit {:?} / {:?}\n  vdisk: {ve}\n  qemu-img: {qe}",
                v.status.code(),
                q.status.code()
            ));
        }
    }
    let text = vdisk_ok(d, &["info", "b.luks"]);
    assert!(text.contains("file format: luks") && text.contains("cipher alg: serpent-256"));
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
