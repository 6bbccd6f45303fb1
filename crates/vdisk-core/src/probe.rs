//! Format probing as qemu's `bdrv_probe_all` (QEMU 10 block.c) does it: every driver's probe
//! scores the first 512 bytes (zeros past the end of a shorter file), the highest score wins and
//! a tie goes to the driver qemu lists first. The probes: qcow2 (`QFI\xfb`, version 2 or more),
//! qcow (version 1), VMDK (sparse `KDMV`, `COWD`, or a text descriptor), VDI (signature at 0x40),
//! VHD (`conectix` at the start only: a fixed VHD, whose footer is at the end, is raw to qemu),
//! VHDX (`vhdxfile`), and the formats qemu reads that vdisk does not (QED, LUKS, Parallels,
//! Bochs, cloop, DMG by its `.dmg` name). An empty file, or one nothing claims, is raw. `-f`
//! skips probing.
//!
//! One probe is vdisk's own: an OVA package (DMTF DSP0243 section 4: a tar archive whose first
//! member is the `.ovf` descriptor), which qemu reads as raw, is format `ova` when nothing else
//! claims the file (`-f raw` still reads its bytes as qemu-img does).

use crate::error::Result;
use crate::storage::Storage;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// The image formats vdisk knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Vdi,
    Vpc,
    Vhdx,
    /// An OVA package: read as the disk it holds (vdisk's own; qemu-img reads the tar as raw).
    Ova,
    /// A format qemu-img reads (and probes) that vdisk does not: one of [`OTHER_FORMATS`].
    Other(&'static str),
}

/// qemu-img's names of the formats it probes that vdisk does not read.
pub const OTHER_FORMATS: &[&str] = &["qcow", "qed", "luks", "parallels", "bochs", "cloop", "dmg"];

impl Format {
    /// qemu-img's name for the format (`vpc` is VHD).
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Vpc => "vpc",
            Format::Vhdx => "vhdx",
            Format::Ova => "ova",
            Format::Other(name) => name,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "raw" | "file" => Format::Raw,
            "qcow2" => Format::Qcow2,
            "vmdk" => Format::Vmdk,
            "vdi" => Format::Vdi,
            "vpc" | "vhd" => Format::Vpc,
            "vhdx" => Format::Vhdx,
            "ova" => Format::Ova,
            other => match OTHER_FORMATS.iter().find(|n| **n == other) {
                Some(name) => Format::Other(name),
                None => {
                    return Err(crate::Error::invalid(format!(
                        "Unknown file format '{other}'"
                    )))
                }
            },
        })
    }
}

const QCOW_MAGIC: &[u8] = b"QFI\xfb";
const VMDK_SPARSE_MAGIC: &[u8] = b"KDMV";
const VMDK_COWD_MAGIC: &[u8] = b"COWD";
const VDI_SIGNATURE: u32 = 0xbeda_107f;
const VHD_COOKIE: &[u8] = b"conectix";
const VHDX_SIGNATURE: &[u8] = b"vhdxfile";
const QED_MAGIC: &[u8] = b"QED\0";
const LUKS_MAGIC: &[u8] = b"LUKS\xba\xbe\0\x01";
const PARALLELS_MAGICS: [&[u8]; 2] = [b"WithoutFreeSpace", b"WithouFreSpacExt"];
const CLOOP_MAGIC: &[u8] =
    b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";

/// Guesses the format of `storage` as qemu-img does: an empty file is raw; otherwise its first
/// 512 bytes, zeros after the end of a shorter file, and its name (for DMG) decide.
pub fn probe_format(storage: &dyn Storage) -> Result<Format> {
    if storage.len()? == 0 {
        return Ok(Format::Raw);
    }
    let mut head = [0u8; PROBE_BUF];
    storage.read_zero_padded(&mut head, 0)?;
    Ok(probe_bytes(&head, storage.path()))
}

/// The format qemu's probes find in `head`, the first bytes of the file `name` (zeros stand for
/// bytes past `head`, up to 512): each probe's score, in qemu's driver order (QEMU 10 registers
/// the drivers in link order and lists the last first), the first highest score winning. Raw
/// scores 1, cloop and DMG 2, every other match 100.
pub fn probe_bytes(head: &[u8], name: &Path) -> Format {
    let mut buf = [0u8; PROBE_BUF];
    let n = head.len().min(PROBE_BUF);
    buf[..n].copy_from_slice(&head[..n]);
    let b = &buf[..];
    let be32 = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let le32 = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    // bochs_probe: three NUL-terminated strings and a version.
    let bochs = b.starts_with(b"Bochs Virtual HD Image\0")
        && b[32..].starts_with(b"Redolog\0")
        && b[48..].starts_with(b"Growing\0")
        && matches!(le32(64), 0x0002_0000 | 0x0001_0000);
    // dmg_probe looks at the name only, case-sensitively.
    let name = name.as_os_str().as_encoded_bytes();
    let dmg = name.len() > 4 && name.ends_with(b".dmg");
    let probes: [(Format, bool, u8); 12] = [
        (
            Format::Other("parallels"),
            PARALLELS_MAGICS.iter().any(|m| b.starts_with(m)) && le32(16) == 2,
            100,
        ),
        (Format::Other("qed"), b.starts_with(QED_MAGIC), 100),
        (Format::Other("dmg"), dmg, 2),
        (Format::Other("bochs"), bochs, 100),
        (Format::Other("cloop"), b.starts_with(CLOOP_MAGIC), 2),
        (Format::Vpc, b.starts_with(VHD_COOKIE), 100),
        (
            Format::Vmdk,
            b.starts_with(VMDK_SPARSE_MAGIC)
                || b.starts_with(VMDK_COWD_MAGIC)
                || looks_like_vmdk_descriptor(b),
            100,
        ),
        (Format::Vhdx, b.starts_with(VHDX_SIGNATURE), 100),
        (Format::Vdi, le32(0x40) == VDI_SIGNATURE, 100),
        (
            Format::Other("qcow"),
            b.starts_with(QCOW_MAGIC) && be32(4) == 1,
            100,
        ),
        (
            Format::Qcow2,
            b.starts_with(QCOW_MAGIC) && be32(4) >= 2,
            100,
        ),
        (Format::Other("luks"), b.starts_with(LUKS_MAGIC), 100),
    ];
    let mut best = (Format::Raw, 1);
    for (format, hit, score) in probes {
        if hit && score > best.1 {
            best = (format, score);
        }
    }
    if best.0 == Format::Raw && looks_like_ova(b) {
        return Format::Ova;
    }
    best.0
}

/// Whether `head` (512 bytes) is the first header of a tar archive (POSIX `ustar\000` or GNU
/// `ustar  \0` magic, a valid header checksum) whose member name ends in `.ovf`, as in an OVA
/// package, whose descriptor comes first (DSP0243 4.1). A pax extended header before it is named
/// after the member (`PaxHeaders/x.ovf`), so it counts too; a GNU long name (`././@LongLink`)
/// does not: such a package needs `-f ova`.
fn looks_like_ova(head: &[u8]) -> bool {
    if head.len() < PROBE_BUF {
        return false;
    }
    let magic_ok = &head[257..265] == b"ustar\x0000" || &head[257..265] == b"ustar  \0";
    if !magic_ok {
        return false;
    }
    // The checksum field (148..156) counts as spaces; octal, ended by NUL or space.
    // Unsigned bytes as POSIX says, or signed ones as some old tars summed them (GNU tar takes
    // either).
    let byte = |i: usize, c: u8| if (148..156).contains(&i) { 32 } else { c };
    let sum: u64 = head[..PROBE_BUF]
        .iter()
        .enumerate()
        .map(|(i, &c)| u64::from(byte(i, c)))
        .sum();
    let signed: i64 = head[..PROBE_BUF]
        .iter()
        .enumerate()
        .map(|(i, &c)| i64::from(byte(i, c) as i8))
        .sum();
    let field = &head[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|c| *c == b' ')
        .take_while(|c| (b'0'..=b'7').contains(c))
        .collect();
    let stored = digits.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(8)?.checked_add(u64::from(d - b'0'))
    });
    let matches = stored.is_some_and(|v| v == sum || i64::try_from(v).ok() == Some(signed));
    if digits.is_empty() || !matches {
        return false;
    }
    let name = &head[..100];
    let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(100)];
    name.len() > 4 && name[name.len() - 4..].eq_ignore_ascii_case(b".ovf")
}

/// How many leading bytes QEMU's probes see (`BLOCK_PROBE_BUF_SIZE`).
const PROBE_BUF: usize = 512;

/// qemu's `vmdk_probe` for text descriptors, byte for byte (the text need not be UTF-8): in the
/// first 512 bytes, after comment lines (`#...`) and lines of spaces only, the first line must be
/// `version=1`, `version=2` or `version=3` (ending in `\n` or `\r\n`). Anything else, an empty
/// line or a `createType=` first included, is not a descriptor to QEMU, which then reads the
/// file as raw.
fn looks_like_vmdk_descriptor(head: &[u8]) -> bool {
    let buf = &head[..head.len().min(PROBE_BUF)];
    let mut p = 0;
    while p < buf.len() {
        match buf[p] {
            b'#' => {
                while p < buf.len() && buf[p] != b'\n' {
                    p += 1;
                }
                p += 1;
            }
            b' ' => {
                while p < buf.len() && buf[p] == b' ' {
                    p += 1;
                }
                if buf.get(p) == Some(&b'\r') {
                    p += 1;
                }
                if buf.get(p) != Some(&b'\n') {
                    return false;
                }
                p += 1;
            }
            _ => {
                let rest = &buf[p..];
                return [b"version=1", b"version=2", b"version=3"].iter().any(|v| {
                    rest.strip_prefix(&v[..])
                        .is_some_and(|r| r.starts_with(b"\n") || r.starts_with(b"\r\n"))
                });
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn probe(head: &[u8]) -> Format {
        probe_bytes(head, Path::new("disk.img"))
    }

    #[test]
    fn probes_each_magic() {
        assert_eq!(probe(b"QFI\xfb\0\0\0\x03"), Format::Qcow2);
        assert_eq!(probe(b"QFI\xfb\0\0\0\x02"), Format::Qcow2);
        assert_eq!(probe(b"QFI\xfb\xff\xff\xff\xff"), Format::Qcow2);
        assert_eq!(probe(b"QFI\xfb\0\0\0\x01"), Format::Other("qcow"));
        // Version 0 is neither qcow nor qcow2.
        assert_eq!(probe(b"QFI\xfb\0\0\0\0"), Format::Raw);
        assert_eq!(probe(b"KDMV\x01\0\0\0"), Format::Vmdk);
        assert_eq!(probe(b"COWD"), Format::Vmdk);
        assert_eq!(probe(b"# Disk DescriptorFile\nversion=1\n"), Format::Vmdk);
        let mut vdi = vec![0u8; 0x44];
        vdi[0x40..0x44].copy_from_slice(&VDI_SIGNATURE.to_le_bytes());
        assert_eq!(probe(&vdi), Format::Vdi);
        assert_eq!(probe(b"vhdxfile"), Format::Vhdx);
        assert_eq!(probe(b"conectix"), Format::Vpc);
        assert_eq!(probe(b"QED\0"), Format::Other("qed"));
        assert_eq!(probe(b"LUKS\xba\xbe\0\x01"), Format::Other("luks"));
        // LUKS2 is not probed by QEMU 10.
        assert_eq!(probe(b"LUKS\xba\xbe\0\x02"), Format::Raw);
        assert_eq!(
            probe(b"WithouFreSpacExt\x02\0\0\0"),
            Format::Other("parallels")
        );
        assert_eq!(probe(b"WithoutFreeSpace\x03\0\0\0"), Format::Raw);
        let mut bochs = vec![0u8; 68];
        bochs[..22].copy_from_slice(b"Bochs Virtual HD Image");
        bochs[32..39].copy_from_slice(b"Redolog");
        bochs[48..55].copy_from_slice(b"Growing");
        bochs[64..68].copy_from_slice(&0x0002_0000u32.to_le_bytes());
        assert_eq!(probe(&bochs), Format::Other("bochs"));
        assert_eq!(probe(CLOOP_MAGIC), Format::Other("cloop"));
        assert_eq!(probe(&[0u8; 512]), Format::Raw);
        assert_eq!(probe(b""), Format::Raw);
    }

    /// A ustar header for a member `name`, its checksum written as GNU tar writes it.
    fn tar_header(name: &[u8], gnu: bool) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name);
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(b"00000000012");
        h[156] = b'0';
        let magic: &[u8] = if gnu { b"ustar  \0" } else { b"ustar\x0000" };
        h[257..265].copy_from_slice(magic);
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&c| u32::from(c)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    #[test]
    fn an_ova_is_a_tar_whose_first_member_is_the_ovf() {
        for gnu in [false, true] {
            assert_eq!(probe(&tar_header(b"appliance.ovf", gnu)), Format::Ova);
            assert_eq!(probe(&tar_header(b"A.OVF", gnu)), Format::Ova);
            assert_eq!(
                probe(&tar_header(b"./PaxHeaders/appliance.ovf", gnu)),
                Format::Ova
            );
            // Another first member, or a bad checksum, is a tar file: raw, as to qemu.
            assert_eq!(probe(&tar_header(b"disk1.vmdk", gnu)), Format::Raw);
            assert_eq!(probe(&tar_header(b".ovf", gnu)), Format::Raw);
            let mut bad = tar_header(b"appliance.ovf", gnu);
            bad[0] = b'b';
            assert_eq!(probe(&bad), Format::Raw);
        }
        // A real format's magic wins, whatever follows at 257.
        let mut q = tar_header(b"appliance.ovf", false);
        q[..8].copy_from_slice(b"QFI\xfb\0\0\0\x03");
        assert_eq!(probe(&q), Format::Qcow2);
        assert_eq!("ova".parse::<Format>().ok(), Some(Format::Ova));
        assert_eq!(Format::Ova.name(), "ova");
    }

    #[test]
    fn ties_and_names_go_as_in_qemu() {
        // Every pair checked against qemu-img 10: the VDI signature at 0x40 of another header
        // loses to VMDK, VHD, VHDX, QED and Parallels and wins over qcow, qcow2 and LUKS.
        let with_vdi = |h: &[u8]| {
            let mut b = vec![0u8; 512];
            b[..h.len()].copy_from_slice(h);
            b[0x40..0x44].copy_from_slice(&VDI_SIGNATURE.to_le_bytes());
            probe(&b)
        };
        assert_eq!(with_vdi(b"QFI\xfb\0\0\0\x03"), Format::Vdi);
        assert_eq!(with_vdi(b"QFI\xfb\0\0\0\x01"), Format::Vdi);
        assert_eq!(with_vdi(b"LUKS\xba\xbe\0\x01"), Format::Vdi);
        assert_eq!(with_vdi(b"KDMV"), Format::Vmdk);
        assert_eq!(with_vdi(b"conectix"), Format::Vpc);
        assert_eq!(with_vdi(b"vhdxfile"), Format::Vhdx);
        assert_eq!(with_vdi(b"QED\0"), Format::Other("qed"));
        assert_eq!(
            with_vdi(b"WithoutFreeSpace\x02\0\0\0"),
            Format::Other("parallels")
        );
        // DMG by name alone (score 2), and over cloop's 2 by order.
        assert_eq!(
            probe_bytes(b"hello", Path::new("x.dmg")),
            Format::Other("dmg")
        );
        assert_eq!(probe_bytes(b"hello", Path::new("x.DMG")), Format::Raw);
        assert_eq!(
            probe_bytes(CLOOP_MAGIC, Path::new("c.dmg")),
            Format::Other("dmg")
        );
        assert_eq!(
            probe_bytes(b"QFI\xfb\0\0\0\x03", Path::new("q.dmg")),
            Format::Qcow2
        );
    }

    #[test]
    fn text_descriptors_probe_as_qemu_probes_them() {
        let yes: [&[u8]; 5] = [
            b"# Disk DescriptorFile\nversion=1\nCID=1\n",
            b"version=2\r\n",
            b"#\n   \n  \r\n# x\nversion=3\n",
            // Not UTF-8 (a Latin-1 file name): QEMU looks at bytes.
            b"# Disk DescriptorFile\nversion=1\nRW 8 FLAT \"caf\xe9-flat.vmdk\" 0\n",
            b"version=1\n\xff\xfe",
        ];
        for t in yes {
            assert_eq!(probe(t), Format::Vmdk, "{t:?}");
        }
        let no: [&[u8]; 7] = [
            b"createType=\"monolithicFlat\"\nversion=1\n",
            b"# Disk DescriptorFile\n\nversion=1\n",
            b"\tversion=1\n",
            b"version=4\n",
            b"version=1",
            b"version=1 \n",
            b"# only a comment\n",
        ];
        for t in no {
            assert_eq!(probe(t), Format::Raw, "{t:?}");
        }
        // Only the first 512 bytes count.
        let mut long = vec![b'#'; 600];
        long.extend_from_slice(b"\nversion=1\n");
        assert_eq!(probe(&long), Format::Raw);
    }

    #[test]
    fn short_and_empty_files() {
        // A VHD footer at the end is not looked for: qemu-img reads a fixed VHD as raw.
        let mut img = vec![0u8; 4096];
        img[4096 - 512..4096 - 504].copy_from_slice(VHD_COOKIE);
        let s = MemStorage::new("x.vhd", img);
        assert_eq!(probe_format(&s).unwrap(), Format::Raw);
        // Empty: raw, whatever the name.
        assert_eq!(
            probe_format(&MemStorage::new("e.dmg", vec![])).unwrap(),
            Format::Raw
        );
        // Eight bytes of a qcow2 header: the rest reads as zeros, and qcow2 it is.
        let s = MemStorage::new("q", b"QFI\xfb\0\0\0\x03".to_vec());
        assert_eq!(probe_format(&s).unwrap(), Format::Qcow2);
    }

    #[test]
    fn other_formats_are_named() {
        for name in OTHER_FORMATS {
            let f: Format = name.parse().unwrap();
            assert_eq!((f, f.name()), (Format::Other(name), *name));
        }
        assert!("qcow3".parse::<Format>().is_err());
    }
}
