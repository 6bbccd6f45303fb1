//! `convert -n`: the random source disk written into an image that already exists, made by
//! qemu-img (qcow2 with random options, sometimes over a raw backing file; raw; VDI, dynamic or
//! static; VMDK of each subformat the in-place writer takes, with or without zeroed grains; VHD
//! and VHDX, dynamic or fixed), as
//! large as the source or larger, and already holding data, zeros, compressed clusters and
//! discarded ranges written by qemu-io. The result must read as the source over its length and as
//! before beyond it, to vdisk and to qemu.

use crate::disk::{disk, Disk, K};
use crate::run::{check_output, fail, qemu_img, qemu_raw, s, Outcome};
use crate::target::{qcow2, Engine};
use proptest::prelude::*;
use proptest::sample::select;
use std::fmt;
use std::process::Command;
use vdisk::convert::ConvertOptions;
use vdisk::{open_existing_writer, open_image, Format, OpenRequest};
use vdisk_testutil::Scratch;

/// The image `convert -n` writes into.
#[derive(Clone)]
pub struct Existing {
    pub format: Format,
    /// `qemu-img create -o` options.
    pub opts: Vec<(&'static str, String)>,
    /// Its virtual size: the source's (rounded up to 512) or more.
    pub size: u64,
    /// A raw backing file under the qcow2 image.
    pub backing: Option<Disk>,
    /// qemu-io commands run on it before the conversion.
    pub commands: Vec<String>,
}

impl fmt::Debug for Existing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "qemu-img create -f {}", self.format.name())?;
        if !self.opts.is_empty() {
            let o: Vec<String> = self.opts.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, " -o {}", o.join(","))?;
        }
        if self.backing.is_some() {
            write!(f, " -b backing.raw -F raw")?;
        }
        writeln!(f, " out {}", self.size)?;
        for c in &self.commands {
            writeln!(f, "  qemu-io -c '{c}'")?;
        }
        if let Some(b) = &self.backing {
            write!(f, "  backing content: {b:?}")?;
        }
        Ok(())
    }
}

/// One qemu-io command before it is fitted to the image: kind, place (1/65536ths of the disk)
/// and length in sectors.
type Cmd = (u8, u64, u64, u8);

/// What qemu-io can do to the image besides writing data and zeros.
#[derive(Clone, Copy, PartialEq)]
enum Extra {
    /// Write compressed clusters (qcow2 without preallocation).
    Compress,
    /// Discard ranges (raw, preallocated qcow2).
    Discard,
    /// Neither (VDI and VMDK: qemu has no discard for them, and compresses only into
    /// streamOptimized VMDKs, which the in-place writer refuses): a zero write of whole clusters
    /// (grains) instead.
    ZeroWrite,
}

fn commands(size: u64, cluster: u64, extra: Extra, raw: Vec<Cmd>) -> Vec<String> {
    let sectors = size / 512;
    let mut compressed = Vec::new();
    let mut others = Vec::new();
    for (kind, place, len, byte) in raw {
        let off = sectors * place / 65536 * 512;
        let len = (len * 512).min(size - off).max(512);
        match kind % 4 {
            0 | 1 => others.push(format!("write -P {byte:#04x} {off} {len}")),
            2 => others.push(format!("write -z {off} {len}")),
            _ if extra == Extra::Compress => {
                // A whole cluster (or the disk's tail); qemu can only compress into an unallocated
                // cluster, so these go first and each into its own cluster.
                let c = off / cluster * cluster;
                let n = cluster.min(size - c);
                let cmd = format!("write -c -P {byte:#04x} {c} {n}");
                if !compressed
                    .iter()
                    .any(|x: &String| x.ends_with(&format!(" {c} {n}")))
                {
                    compressed.push(cmd);
                }
            }
            _ if extra == Extra::Discard => others.push(format!("discard {off} {len}")),
            _ => {
                // Whole 64 KiB grains, so that a VMDK with zeroed_grain=on gets zeroed grains.
                let c = off / cluster * cluster;
                let n = (off + len).next_multiple_of(cluster).min(size) - c;
                others.push(format!("write -z {c} {n}"));
            }
        }
    }
    compressed.extend(others);
    compressed
}

/// A source disk and the existing image it is converted into.
pub fn into_existing() -> impl Strategy<Value = (Disk, Existing)> {
    (
        disk(),
        select(vec![
            Format::Qcow2,
            Format::Qcow2,
            Format::Raw,
            Format::Vdi,
            Format::Vmdk,
            Format::Vpc,
            Format::Vhdx,
        ]),
        qcow2(),
        vmdk_or_vdi_opts(),
        prop_oneof![3 => Just(0u64), 1 => 1u64..2048],
        prop::option::weighted(0.3, disk()),
        prop::collection::vec((any::<u8>(), 0u64..65536, 1u64..512, any::<u8>()), 0..10),
    )
        .prop_map(|(disk, format, q, other, extra, backing, raw)| {
            let backing = backing.filter(|_| format == Format::Qcow2);
            // vdisk's in-place qcow2 writer refuses to write part of a cluster that is unallocated
            // over a backing file (qemu copies the rest from the backing file): with a backing
            // file the image is no larger than the source, so that no write ends inside a cluster.
            let extra = if backing.is_some() { 0 } else { extra };
            let size = disk.len.div_ceil(512) * 512 + extra * 512;
            let opts: Vec<(&'static str, String)> = match format {
                Format::Qcow2 => q
                    .opts
                    .into_iter()
                    .filter(|(k, _)| !k.starts_with("data_file"))
                    // qemu refuses a backing file with preallocation (without extended L2).
                    .filter(|(k, _)| !(backing.is_some() && *k == "preallocation"))
                    .collect(),
                Format::Vdi => other.vdi,
                Format::Vmdk => other.vmdk,
                Format::Vpc => other.vhd,
                Format::Vhdx => other.vhdx,
                _ => Vec::new(),
            };
            let cluster = opts
                .iter()
                .find(|(k, _)| *k == "cluster_size")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(64 * K);
            let extra = match format {
                Format::Qcow2 if !opts.iter().any(|(k, _)| *k == "preallocation") => {
                    Extra::Compress
                }
                Format::Qcow2 | Format::Raw => Extra::Discard,
                _ => Extra::ZeroWrite,
            };
            let commands = commands(size, cluster, extra, raw);
            let existing = Existing {
                format,
                opts,
                size,
                backing,
                commands,
            };
            (disk, existing)
        })
}

/// `qemu-img create -o` options for the other formats `convert -n` writes into.
#[derive(Clone, Debug)]
struct OtherOpts {
    vdi: Vec<(&'static str, String)>,
    vmdk: Vec<(&'static str, String)>,
    vhd: Vec<(&'static str, String)>,
    vhdx: Vec<(&'static str, String)>,
}

/// VDI: dynamic or static. VMDK: the subformats the in-place writer takes (monolithicSparse is
/// the default), with zeroed grains on, off or by default for the sparse ones. VHD: dynamic or
/// fixed, sized exactly (`force_size`: the image is as large as drawn). VHDX: dynamic or fixed,
/// 1 MiB or default blocks, created ZERO or not.
fn vmdk_or_vdi_opts() -> impl Strategy<Value = OtherOpts> {
    (
        select(vec![None, Some("on"), Some("off")]),
        select(vec![
            None,
            Some("monolithicSparse"),
            Some("monolithicFlat"),
            Some("twoGbMaxExtentSparse"),
            Some("twoGbMaxExtentFlat"),
        ]),
        select(vec![None, Some("on"), Some("off")]),
        select(vec!["dynamic", "fixed"]),
        (
            select(vec!["dynamic", "fixed"]),
            select(vec![None, Some("1M")]),
            select(vec![None, Some("on"), Some("off")]),
        ),
    )
        .prop_map(|(stat, sub, zeroed, vhd, (x_sub, x_bs, x_zero))| {
            let vdi = stat.map(|s| vec![("static", s.to_string())]);
            let mut vmdk = Vec::new();
            if let Some(s) = sub {
                vmdk.push(("subformat", s.to_string()));
            }
            // qemu-img refuses zeroed grains in a flat image.
            match zeroed {
                Some(z) if !sub.is_some_and(|s| s.ends_with("Flat")) => {
                    vmdk.push(("zeroed_grain", z.to_string()))
                }
                _ => {}
            }
            OtherOpts {
                vdi: vdi.unwrap_or_default(),
                vmdk,
                vhd: vec![
                    ("subformat", vhd.to_string()),
                    ("force_size", "on".to_string()),
                ],
                vhdx: [
                    Some(("subformat", x_sub.to_string())),
                    x_bs.map(|b| ("block_size", b.to_string())),
                    x_zero.map(|z| ("block_state_zero", z.to_string())),
                ]
                .into_iter()
                .flatten()
                .collect(),
            }
        })
}

/// Converts `disk` into the existing image and checks the result.
pub fn roundtrip_into_existing(disk: &Disk, ex: &Existing, engine: &Engine) -> Outcome {
    let dir = Scratch::new("roundtrip-n");
    let src = dir.join("src.raw");
    let src_bytes = disk
        .write_raw(&src, None)
        .map_err(|e| fail("write source", e))?;
    let fmt = ex.format.name();
    let dst = dir.join(&format!("out.{fmt}"));
    let mut args = vec!["create".to_string(), "-q".into(), "-f".into(), fmt.into()];
    if !ex.opts.is_empty() {
        let o: Vec<String> = ex.opts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        args.extend(["-o".into(), o.join(",")]);
    }
    if let Some(b) = &ex.backing {
        b.write_raw(&dir.join("backing.raw"), None)
            .map_err(|e| fail("write backing", e))?;
        args.extend(["-b".into(), "backing.raw".into(), "-F".into(), "raw".into()]);
    }
    args.extend([s(&dst), ex.size.to_string()]);
    qemu_img(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    if !ex.commands.is_empty() {
        let mut c = Command::new("qemu-io");
        c.args(["-f", fmt]);
        for cmd in &ex.commands {
            c.args(["-c", cmd]);
        }
        let out = c.arg(&dst).output().map_err(|e| fail("run qemu-io", e))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        prop_assert!(
            out.status.success() && !text.contains("error") && !text.contains("failed"),
            "qemu-io on the existing image: {}",
            text
        );
    }
    // What qemu reads there before the conversion; the source replaces its head.
    let mut want = qemu_raw(&dst, fmt, &dir.join("before.raw"))?;
    prop_assert_eq!(want.len() as u64, ex.size, "existing image size");
    want[..src_bytes.len()].copy_from_slice(&src_bytes);
    let head = disk.len.div_ceil(512) * 512;
    want[src_bytes.len()..head as usize].fill(0);

    let req = OpenRequest {
        format: Some(Format::Raw),
        snapshot: None,
        follow_backing: false,
        for_check: false,
    };
    let source = open_image(&src, &req)
        .map_err(|e| fail("open source", e))?
        .image;
    let writer = open_existing_writer(ex.format, &dst).map_err(|e| fail("open -n writer", e))?;
    let copts = ConvertOptions {
        workers: engine.workers,
        out_of_order: engine.out_of_order,
        min_sparse: engine.min_sparse,
        chunk_size: engine.chunk_size,
        ..ConvertOptions::default()
    };
    vdisk::convert::convert(source.as_ref(), writer, &copts, &|_, _| {})
        .map_err(|e| fail("convert -n", e))?;
    drop(source);

    let theirs = qemu_raw(&dst, fmt, &dir.join("after.raw"))?;
    crate::run::same_bytes(&theirs, &want, "qemu's read of the image after convert -n")?;
    check_output(&dst, ex.format, &want, engine)
}
