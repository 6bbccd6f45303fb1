//! Option parity with qemu-img: random `-o` sets for each writable format, valid or not (values out
//! of range, combinations qemu forbids), with or without `-c`, must be accepted by vdisk's
//! `create_image` + `convert` exactly when `qemu-img convert` accepts them.

use crate::run::{fail, s, Outcome};
use proptest::prelude::*;
use proptest::sample::select;
use std::fmt;
use std::process::Command;
use vdisk::convert::ConvertOptions;
use vdisk::core::CreateOptions;
use vdisk::{create_image, open_image, Format, OpenRequest};
use vdisk_testutil::Scratch;

/// A conversion whose options may be invalid.
#[derive(Clone)]
pub struct Attempt {
    pub format: Format,
    pub opts: Vec<(&'static str, &'static str)>,
    pub compress: bool,
    pub size: u64,
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o: Vec<String> = self.opts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(
            f,
            "convert -O {} -o '{}'{} (source of {} bytes)",
            self.format.name(),
            o.join(","),
            if self.compress { " -c" } else { "" },
            self.size
        )
    }
}

/// The keys of a format with the values drawn for each (valid ones and a few invalid ones).
type Keys = &'static [(&'static str, &'static [&'static str])];

const QCOW2: Keys = &[
    (
        "cluster_size",
        &["512", "4096", "65536", "2M", "1000", "4M", "256"],
    ),
    ("compat", &["0.10", "1.1", "v2", "v3", "9"]),
    ("refcount_bits", &["1", "16", "64", "3", "128"]),
    ("lazy_refcounts", &["on", "off"]),
    ("extended_l2", &["on", "off"]),
    ("compression_type", &["zlib", "zstd", "lz4"]),
    (
        "preallocation",
        &["off", "metadata", "falloc", "full", "bogus"],
    ),
    ("data_file", &[DATA]),
    ("data_file_raw", &["on", "off"]),
];

const VMDK: Keys = &[
    (
        "subformat",
        &[
            "monolithicSparse",
            "monolithicFlat",
            "twoGbMaxExtentSparse",
            "twoGbMaxExtentFlat",
            "streamOptimized",
            "vmfs",
        ],
    ),
    ("zeroed_grain", &["on", "off"]),
    (
        "adapter_type",
        &["ide", "lsilogic", "buslogic", "legacyESX", "scsi"],
    ),
    ("compat6", &["on", "off"]),
    ("hwversion", &["4", "6", "7", "21"]),
    ("toolsversion", &["1234"]),
];

const VDI: Keys = &[("static", &["on", "off", "maybe"])];

const VPC: Keys = &[
    ("subformat", &["dynamic", "fixed", "sparse"]),
    ("force_size", &["on", "off", "maybe"]),
];

const VHDX: Keys = &[
    ("subformat", &["dynamic", "fixed", "sparse"]),
    ("block_size", &["0", "1M", "3M", "512M"]),
    ("log_size", &["1M", "100k", "2M"]),
    ("block_state_zero", &["on", "off"]),
];

const RAW: Keys = &[("preallocation", &["off", "falloc", "full", "metadata"])];

/// Stands for the external data file's path in the scratch directory.
const DATA: &str = "<dir>/data";

fn keys_of(format: Format) -> Keys {
    match format {
        Format::Qcow2 => QCOW2,
        Format::Vmdk => VMDK,
        Format::Vdi => VDI,
        Format::Vpc => VPC,
        Format::Vhdx => VHDX,
        _ => RAW,
    }
}

pub fn attempt() -> impl Strategy<Value = Attempt> {
    (
        select(vec![
            Format::Qcow2,
            Format::Qcow2,
            Format::Vmdk,
            Format::Vmdk,
            Format::Vdi,
            Format::Vpc,
            Format::Vhdx,
            Format::Raw,
        ]),
        prop::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 9),
        prop::bool::weighted(0.3),
        select(vec![1000u64, 1 << 20, (3 << 20) + 512]),
    )
        .prop_map(|(format, picks, compress, size)| {
            let opts = keys_of(format)
                .iter()
                .zip(picks)
                .filter(|(_, (on, _))| *on)
                .map(|((k, values), (_, i))| (*k, *i.get(values)))
                .collect();
            Attempt {
                format,
                opts,
                compress,
                size,
            }
        })
}

/// Whether vdisk converts a sparse source of `a.size` bytes with these options.
fn vdisk_accepts(
    a: &Attempt,
    dir: &Scratch,
    src: &std::path::Path,
) -> Result<Result<(), String>, TestCaseError> {
    let mut opts = CreateOptions::new();
    for (k, v) in &a.opts {
        let v = if *v == DATA {
            s(&dir.join("v-data"))
        } else {
            v.to_string()
        };
        opts.set(k, &v);
    }
    let req = OpenRequest {
        format: Some(Format::Raw),
        snapshot: None,
        follow_backing: false,
        for_check: false,
    };
    let source = open_image(src, &req)
        .map_err(|e| fail("open source", e))?
        .image;
    let dst = dir.join(&format!("v.{}", a.format.name()));
    let done =
        create_image(a.format, &dst, source.virtual_size(), &opts, a.compress).and_then(|w| {
            vdisk::convert::convert(source.as_ref(), w, &ConvertOptions::default(), &|_, _| {})
        });
    Ok(done.map(|_| ()).map_err(|e| e.to_string()))
}

/// Whether `qemu-img convert` does.
fn qemu_accepts(
    a: &Attempt,
    dir: &Scratch,
    src: &std::path::Path,
) -> Result<Result<(), String>, TestCaseError> {
    let o: Vec<String> = a
        .opts
        .iter()
        .map(|(k, v)| {
            let v = if *v == DATA {
                s(&dir.join("q-data"))
            } else {
                v.to_string()
            };
            format!("{k}={v}")
        })
        .collect();
    let mut c = Command::new("qemu-img");
    c.args(["convert", "-f", "raw", "-O", a.format.name()]);
    if !o.is_empty() {
        c.args(["-o", &o.join(",")]);
    }
    if a.compress {
        c.arg("-c");
    }
    c.arg(src).arg(dir.join(&format!("q.{}", a.format.name())));
    let out = c.output().map_err(|e| fail("run qemu-img", e))?;
    Ok(if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    })
}

/// Runs both and compares acceptance.
pub fn same_acceptance(a: &Attempt) -> Outcome {
    let dir = Scratch::new("options");
    let src = dir.join("src.raw");
    let f = std::fs::File::create(&src).map_err(|e| fail("create source", e))?;
    f.set_len(a.size).map_err(|e| fail("size source", e))?;
    drop(f);
    let ours = vdisk_accepts(a, &dir, &src)?;
    let theirs = qemu_accepts(a, &dir, &src)?;
    prop_assert!(
        ours.is_ok() == theirs.is_ok(),
        "vdisk: {:?}\nqemu-img: {:?}",
        ours,
        theirs
    );
    Ok(())
}
