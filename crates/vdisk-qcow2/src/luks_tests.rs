//! Unit tests of the LUKS1 header parser: a header as qemu-img writes it, then one field at a time
//! broken, each giving QEMU's message (crypto/block-luks.c). The CLI tests compare whole images
//! with qemu-img itself.

use super::*;

/// A header as `qemu-img create -o encrypt.format=luks` writes it: aes-256 xts-plain64 sha256,
/// a 64-byte key, slot 0 active, slots 256 KiB apart.
fn good() -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    b[..6].copy_from_slice(MAGIC);
    b[6..8].copy_from_slice(&1u16.to_be_bytes());
    b[8..11].copy_from_slice(b"aes");
    b[40..51].copy_from_slice(b"xts-plain64");
    b[72..78].copy_from_slice(b"sha256");
    put(&mut b, 104, 4040);
    put(&mut b, 108, 64);
    put(&mut b, 164, 1000);
    b[168..204].copy_from_slice(b"93977aa8-454d-4ef6-b822-cef0af02a4ef");
    for i in 0..SLOTS {
        let at = SLOTS_AT + i * SLOT_LEN;
        put(
            &mut b,
            at,
            if i == 0 { SLOT_ENABLED } else { SLOT_DISABLED },
        );
        put(&mut b, at + 4, if i == 0 { 2000 } else { 0 });
        put(&mut b, at + 40, 8 + 504 * i as u32);
        put(&mut b, at + 44, STRIPES);
    }
    b
}

fn put(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn set_str(b: &mut [u8], at: usize, s: &str) {
    b[at..at + 32].fill(0);
    b[at..at + s.len()].copy_from_slice(s.as_bytes());
}

fn err(b: &[u8]) -> String {
    parse(b).expect_err("a damaged header was accepted")
}

#[test]
fn reads_a_header_as_qemu_writes_it() {
    let h = parse(&good()).unwrap();
    assert_eq!(h.cipher_alg, "aes-256");
    assert_eq!(h.cipher_mode, "xts");
    assert_eq!(h.ivgen_alg, "plain64");
    assert_eq!(h.ivgen_hash_alg, None);
    assert_eq!(h.hash_alg, "sha256");
    let i = h.info();
    assert_eq!(i["payload-offset"], 4040 * 512);
    assert_eq!(i["master-key-iters"], 1000);
    assert_eq!(i["uuid"], "93977aa8-454d-4ef6-b822-cef0af02a4ef");
    assert_eq!(i["detached-header"], false);
    assert_eq!(
        i["slots"][0],
        json!({"active": true, "iters": 2000, "key-offset": 4096, "stripes": 4000})
    );
    assert_eq!(
        i["slots"][7],
        json!({"active": false, "key-offset": (8 + 504 * 7) * 512})
    );
    assert!(i.get("ivgen-hash-alg").is_none());
}

#[test]
fn names_ciphers_modes_and_iv_generators_as_qemu() {
    let cases = [
        (
            "aes",
            "cbc-essiv:sha256",
            16,
            "aes-128",
            "cbc",
            "essiv",
            Some("sha256"),
        ),
        (
            "serpent",
            "xts-plain",
            48,
            "serpent-192",
            "xts",
            "plain",
            None,
        ),
        (
            "twofish",
            "cbc-plain64:sha1",
            32,
            "twofish-256",
            "cbc",
            "plain64",
            None,
        ),
        (
            "cast5",
            "cbc-essiv:md5",
            16,
            "cast5-128",
            "cbc",
            "essiv",
            Some("md5"),
        ),
        ("aes", "ecb-plain", 24, "aes-192", "ecb", "plain", None),
    ];
    for (name, mode, key, alg, m, ivgen, ivhash) in cases {
        let mut b = good();
        set_str(&mut b, 8, name);
        set_str(&mut b, 40, mode);
        put(&mut b, 108, key);
        let h = parse(&b).unwrap_or_else(|e| panic!("{name} {mode} {key}: {e}"));
        assert_eq!(
            (h.cipher_alg, h.cipher_mode, h.ivgen_alg, h.ivgen_hash_alg),
            (alg, m, ivgen, ivhash),
            "{name} {mode} {key}"
        );
    }
}

/// A change made to a good header.
type Damage = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn refuses_what_qemu_refuses_with_its_words() {
    let cases: Vec<(&str, Damage)> = vec![
        ("Volume is not in LUKS format", Box::new(|b| b[0] = b'X')),
        ("LUKS version 2 is not supported", Box::new(|b| b[7] = 2)),
        (
            "LUKS header cipher name is not NUL terminated",
            Box::new(|b| b[8..40].fill(b'a')),
        ),
        (
            "LUKS header cipher mode is not NUL terminated",
            Box::new(|b| b[40..72].fill(b'a')),
        ),
        (
            "LUKS header hash spec is not NUL terminated",
            Box::new(|b| b[72..104].fill(b'a')),
        ),
        (
            "LUKS payload is overlapping with the header",
            Box::new(|b| put(b, 104, 7)),
        ),
        (
            "LUKS key iteration count is zero",
            Box::new(|b| put(b, 164, 0)),
        ),
        (
            "Keyslot 3 is corrupted (stripes -1 != 4000)",
            Box::new(|b| put(b, SLOTS_AT + 3 * SLOT_LEN + 44, u32::MAX)),
        ),
        (
            "Keyslot 2 state (active/disable) is corrupted",
            Box::new(|b| put(b, SLOTS_AT + 2 * SLOT_LEN, 1)),
        ),
        (
            "Keyslot 0 iteration count is zero",
            Box::new(|b| put(b, SLOTS_AT + 4, 0)),
        ),
        (
            "Keyslot 0 is overlapping with the LUKS header",
            Box::new(|b| put(b, SLOTS_AT + 40, 7)),
        ),
        (
            // Slot 5 in the header overlaps slot 0 first, which slot 0's turn finds.
            "Keyslots 0 and 5 are overlapping in the header",
            Box::new(|b| put(b, SLOTS_AT + 5 * SLOT_LEN + 40, 7)),
        ),
        (
            "Keyslot 7 is overlapping with the encrypted payload",
            Box::new(|b| put(b, 104, 8 + 504 * 7 + 400)),
        ),
        (
            "Keyslots 1 and 2 are overlapping in the header",
            Box::new(|b| put(b, SLOTS_AT + 2 * SLOT_LEN + 40, 8 + 504 + 300)),
        ),
        (
            "Unexpected cipher mode string format 'xts'",
            Box::new(|b| set_str(b, 40, "xts")),
        ),
        (
            "Hash algorithm 'sha999' not supported",
            Box::new(|b| set_str(b, 40, "cbc-essiv:sha999")),
        ),
        (
            "Cipher mode 'gcm' not supported",
            Box::new(|b| set_str(b, 40, "gcm-plain64")),
        ),
        (
            "Algorithm 'aes' with key size 20 bytes not supported",
            Box::new(|b| put(b, 108, 40)),
        ),
        (
            "Algorithm 'sm4' with key size 16 bytes not supported",
            Box::new(|b| {
                set_str(b, 8, "sm4");
                put(b, 108, 32)
            }),
        ),
        (
            "Hash algorithm 'whirlpool' not supported",
            Box::new(|b| set_str(b, 72, "whirlpool")),
        ),
        (
            "IV generator 'benbi' not supported",
            Box::new(|b| set_str(b, 40, "xts-benbi")),
        ),
        (
            "Missing IV generator hash specification",
            Box::new(|b| set_str(b, 40, "xts-essiv")),
        ),
        (
            "Cipher cast5-128 not supported with essiv",
            Box::new(|b| {
                set_str(b, 8, "cast5");
                set_str(b, 40, "cbc-essiv:sha256");
                put(b, 108, 16)
            }),
        ),
        (
            "No AES cipher with key size 20 available",
            Box::new(|b| set_str(b, 40, "xts-essiv:sha1")),
        ),
    ];
    for (want, damage) in cases {
        let mut b = good();
        damage(&mut b);
        assert_eq!(err(&b), want);
    }
    assert_eq!(
        err(&good()[..HEADER_LEN - 1]),
        "Request for data outside of extension header"
    );
}

#[test]
fn key_material_arithmetic_wraps_as_qemus_unsigned_ints() {
    // 64-byte keys, 4000 stripes: 500 sectors, rounded up to 504.
    assert_eq!(key_material_sectors(64, 4000), 504);
    // A key length whose product with the stripes wraps in 32 bits.
    assert_eq!(key_material_sectors(1 << 30, 4000), 0);
    // A slot whose start plus length wraps past u32::MAX is not "past the payload".
    let mut b = good();
    put(&mut b, 108, 0x0800_0000); // 2^27 * 4000 wraps to 0 sectors
    let h = parse(&b);
    assert_eq!(
        h.map(|_| ()),
        Err("Algorithm 'aes' with key size 67108864 bytes not supported".into())
    );
}

#[test]
fn never_panics_on_any_single_byte() {
    let base = good();
    for at in 0..HEADER_LEN {
        for v in [0u8, 1, 0x2d, 0x3a, 0x7f, 0xff] {
            let mut b = base.clone();
            b[at] = v;
            let _ = parse(&b);
        }
    }
}
