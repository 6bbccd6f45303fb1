//! Tar archives built byte by byte for tests, to the layout of IEEE 1003.1 `pax` ("ustar
//! Interchange Format") and GNU tar: headers with any field, checksum and magic, so that tests can
//! make what GNU tar would never write.
#![allow(dead_code)]

/// The magic and version fields (offset 257).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Magic {
    /// `ustar\0` `00`.
    Ustar,
    /// `ustar ` ` \0`.
    Gnu,
    /// Zeros (a v7 header).
    V7,
}

/// A header block for `name` (at most 100 bytes; longer goes to the ustar prefix at a `/`).
pub fn header(name: &[u8], size: u64, typeflag: u8, magic: Magic) -> [u8; 512] {
    let mut b = [0u8; 512];
    if name.len() > 100 {
        let cut = (name.len().saturating_sub(101)..name.len())
            .find(|&i| name[i] == b'/')
            .expect("a long name needs a '/' to split at");
        assert!(cut <= 155, "name too long for a ustar prefix");
        b[345..345 + cut].copy_from_slice(&name[..cut]);
        let rest = &name[cut + 1..];
        b[..rest.len()].copy_from_slice(rest);
    } else {
        b[..name.len()].copy_from_slice(name);
    }
    b[100..107].copy_from_slice(b"0000644");
    b[108..115].copy_from_slice(b"0000000");
    b[116..123].copy_from_slice(b"0000000");
    set_size(&mut b, size);
    b[136..147].copy_from_slice(b"14700000000");
    b[156] = typeflag;
    match magic {
        Magic::Ustar => b[257..265].copy_from_slice(b"ustar\x0000"),
        Magic::Gnu => b[257..265].copy_from_slice(b"ustar  \0"),
        Magic::V7 => {}
    }
    set_checksum(&mut b);
    b
}

/// Writes `size` into the size field: octal when it fits 11 digits, else GNU base-256.
pub fn set_size(b: &mut [u8; 512], size: u64) {
    if size < 1 << 33 {
        b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        b[124..136].fill(0);
        b[124] = 0x80;
        b[128..136].copy_from_slice(&size.to_be_bytes());
    }
}

/// The unsigned checksum, written as GNU tar writes it (six octal digits, NUL, space).
pub fn set_checksum(b: &mut [u8; 512]) {
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&c| u32::from(c)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// The signed checksum (bytes summed as `i8`), as some old tars wrote it.
pub fn set_signed_checksum(b: &mut [u8; 512]) {
    b[148..156].fill(b' ');
    let sum: i32 = b.iter().map(|&c| i32::from(c as i8)).sum();
    b[148..156].copy_from_slice(format!("{:06o}\0 ", sum as u32 & 0o777777).as_bytes());
}

/// Appends `data` padded to a block.
pub fn push_data(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

/// Appends a member: header and padded data.
pub fn push_member(out: &mut Vec<u8>, name: &str, data: &[u8], typeflag: u8, magic: Magic) {
    out.extend_from_slice(&header(name.as_bytes(), data.len() as u64, typeflag, magic));
    push_data(out, data);
}

/// Appends a regular file in ustar format.
pub fn push_file(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    push_member(out, name, data, b'0', Magic::Ustar);
}

/// The data of a pax header holding `records`, each `LEN KEY=VALUE\n` with LEN counting itself.
pub fn pax_data(records: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = format!(" {k}={v}\n");
        let mut len = body.len() + 1;
        while len.to_string().len() + body.len() != len {
            len += 1;
        }
        out.extend_from_slice(format!("{len}{body}").as_bytes());
    }
    out
}

/// Appends a pax `x` header with `records` for the next entry.
pub fn push_pax(out: &mut Vec<u8>, records: &[(&str, &str)]) {
    push_member(
        out,
        "./PaxHeaders/x",
        &pax_data(records),
        b'x',
        Magic::Ustar,
    );
}

/// Appends the two zero blocks that end an archive.
pub fn push_end(out: &mut Vec<u8>) {
    out.extend(std::iter::repeat_n(0u8, 1024));
}
