//! Format probing by magic numbers, as qemu's `bdrv_probe` does: qcow2 (`QFI\xfb`), VMDK (sparse
//! `KDMV`, stream `COWD`, or a text descriptor), VDI (signature at 0x40), VHD (`conectix` footer),
//! VHDX (`vhdxfile`). Anything else is raw. `-f` skips probing.

use crate::error::Result;
use crate::storage::Storage;
use std::fmt;
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
}

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
            other => {
                return Err(crate::Error::invalid(format!(
                    "Unknown file format '{other}'"
                )))
            }
        })
    }
}

const QCOW2_MAGIC: &[u8] = b"QFI\xfb";
const VMDK_SPARSE_MAGIC: &[u8] = b"KDMV";
const VMDK_COWD_MAGIC: &[u8] = b"COWD";
const VDI_SIGNATURE: u32 = 0xbeda_107f;
const VHD_COOKIE: &[u8] = b"conectix";
const VHDX_SIGNATURE: &[u8] = b"vhdxfile";

/// Guesses the format of `storage` from its first bytes (and, for VHD, its last 512).
pub fn probe_format(storage: &dyn Storage) -> Result<Format> {
    let mut head = vec![0u8; 2048];
    let n = storage.read_at(&mut head, 0)?;
    head.truncate(n);
    if let Some(f) = probe_bytes(&head) {
        return Ok(f);
    }
    let len = storage.len()?;
    if len >= 512 {
        let mut foot = [0u8; 8];
        if storage.read_at(&mut foot, len - 512)? == 8 && foot == VHD_COOKIE {
            return Ok(Format::Vpc);
        }
    }
    Ok(Format::Raw)
}

/// Guesses the format from the first bytes of a file; `None` means raw or unknown.
pub fn probe_bytes(head: &[u8]) -> Option<Format> {
    if head.starts_with(QCOW2_MAGIC) {
        return Some(Format::Qcow2);
    }
    if head.starts_with(VMDK_SPARSE_MAGIC) || head.starts_with(VMDK_COWD_MAGIC) {
        return Some(Format::Vmdk);
    }
    if head.len() >= 0x44
        && u32::from_le_bytes([head[0x40], head[0x41], head[0x42], head[0x43]]) == VDI_SIGNATURE
    {
        return Some(Format::Vdi);
    }
    if head.starts_with(VHD_COOKIE) {
        return Some(Format::Vpc);
    }
    if head.starts_with(VHDX_SIGNATURE) {
        return Some(Format::Vhdx);
    }
    if looks_like_vmdk_descriptor(head) {
        return Some(Format::Vmdk);
    }
    None
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

    #[test]
    fn probes_each_magic() {
        assert_eq!(probe_bytes(b"QFI\xfb\0\0\0\x03"), Some(Format::Qcow2));
        assert_eq!(probe_bytes(b"KDMV\x01\0\0\0"), Some(Format::Vmdk));
        assert_eq!(
            probe_bytes(b"# Disk DescriptorFile\nversion=1\n"),
            Some(Format::Vmdk)
        );
        let mut vdi = vec![0u8; 0x200];
        vdi[0x40..0x44].copy_from_slice(&VDI_SIGNATURE.to_le_bytes());
        assert_eq!(probe_bytes(&vdi), Some(Format::Vdi));
        assert_eq!(probe_bytes(b"vhdxfile"), Some(Format::Vhdx));
        assert_eq!(probe_bytes(&[0u8; 512]), None);
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
            assert_eq!(probe_bytes(t), Some(Format::Vmdk), "{t:?}");
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
            assert_eq!(probe_bytes(t), None, "{t:?}");
        }
        // Only the first 512 bytes count.
        let mut long = vec![b'#'; 600];
        long.extend_from_slice(b"\nversion=1\n");
        assert_eq!(probe_bytes(&long), None);
    }

    #[test]
    fn vhd_footer_at_end() {
        let mut img = vec![0u8; 4096];
        img[4096 - 512..4096 - 504].copy_from_slice(VHD_COOKIE);
        let s = MemStorage::new("x.vhd", img);
        assert_eq!(probe_format(&s).unwrap(), Format::Vpc);
        assert_eq!(
            probe_format(&MemStorage::new("e", vec![])).unwrap(),
            Format::Raw
        );
    }
}
