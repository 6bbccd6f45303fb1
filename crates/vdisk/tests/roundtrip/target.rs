//! Random output settings for the round-trip properties: a format with `-o` options drawn from what
//! its writer supports (kept within qemu's rules, e.g. no refcount width other than 16 for compat
//! 0.10), `-c`, an optional backing image for `-B`, and the engine's `-S`, `-W`, worker count and
//! chunk size.

use crate::disk::{disk, Disk, K, M};
use proptest::prelude::*;
use proptest::sample::select;
use std::fmt;
use vdisk::Format;

/// The image given to `-B`: a random disk stored as raw, or converted by qemu-img into qcow2, VMDK
/// (monolithicSparse) or VDI.
#[derive(Clone, Debug)]
pub struct Backing {
    pub format: Format,
    /// The qcow2 backing image's cluster size.
    pub cluster_size: u64,
    pub disk: Disk,
}

/// The external data file's name, in the scratch directory next to the qcow2 image.
pub const DATA_FILE: &str = "out.data";

/// What to convert into.
#[derive(Clone)]
pub struct Target {
    pub format: Format,
    pub opts: Vec<(&'static str, String)>,
    pub compress: bool,
    pub backing: Option<Backing>,
}

impl Target {
    /// The output file name (flat VMDK extents are named after it).
    pub fn file_name(&self) -> String {
        format!("out.{}", self.format.name())
    }

    /// The backing image's file name, relative to the output's directory.
    pub fn backing_name(&self) -> Option<String> {
        self.backing
            .as_ref()
            .map(|b| format!("backing.{}", b.format.name()))
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "convert -O {}", self.format.name())?;
        if !self.opts.is_empty() {
            let o: Vec<String> = self.opts.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, " -o {}", o.join(","))?;
        }
        if self.compress {
            write!(f, " -c")?;
        }
        if let (Some(b), Some(name)) = (&self.backing, self.backing_name()) {
            write!(f, " -B {name} -F {}", b.format.name())?;
            if b.format == Format::Qcow2 {
                write!(f, " (backing cluster_size={})", b.cluster_size)?;
            }
            write!(f, "\n  backing content: {:?}", b.disk)?;
        }
        Ok(())
    }
}

/// The conversion engine's options and how the result is read back.
#[derive(Clone, Debug)]
pub struct Engine {
    pub workers: usize,
    pub out_of_order: bool,
    pub min_sparse: u64,
    pub chunk_size: u64,
    pub target_is_zero: bool,
    /// Bytes per `read_at` when the result is read back (odd sizes give unaligned reads).
    pub read_chunk: usize,
    /// Threads reading it back at the same time.
    pub read_threads: usize,
}

pub fn engine() -> impl Strategy<Value = Engine> {
    (
        1usize..=8,
        any::<bool>(),
        // -S: off, the smallest, qemu's default, around and above cluster sizes (192 KiB is not a
        // power of two: qemu's alignment is then 128 KiB), and the largest qemu accepts.
        select(vec![0, 512, 4 * K, 8 * K, 64 * K, 192 * K, M, 16 * M]),
        select(vec![64 * K, 256 * K, 2 * M]),
        prop::bool::weighted(0.2),
        (
            select(vec![512usize, 4097, 65536, M as usize + 3]),
            1usize..=4,
        ),
    )
        .prop_map(
            |(
                workers,
                out_of_order,
                min_sparse,
                chunk_size,
                target_is_zero,
                (read_chunk, read_threads),
            )| Engine {
                workers,
                out_of_order,
                min_sparse,
                chunk_size,
                target_is_zero,
                read_chunk,
                read_threads,
            },
        )
}

/// A backing image of one of `formats`.
fn backing(formats: Vec<Format>) -> impl Strategy<Value = Backing> {
    (
        select(formats),
        select(vec![512u64, 4 * K, 64 * K, 2 * M]),
        disk(),
    )
        .prop_map(|(format, cluster_size, disk)| Backing {
            format,
            cluster_size,
            disk,
        })
}

/// Raw: `preallocation` off, falloc or full.
pub fn raw() -> impl Strategy<Value = Target> {
    select(vec![None, Some("off"), Some("falloc"), Some("full")]).prop_map(|p| Target {
        format: Format::Raw,
        opts: p
            .map(|p| vec![("preallocation", p.to_string())])
            .unwrap_or_default(),
        compress: false,
        backing: None,
    })
}

/// The qcow2 options before they are made consistent.
#[derive(Clone, Debug)]
struct Qcow2Draw {
    cluster_size: Option<u64>,
    compat: Option<&'static str>,
    refcount_bits: Option<u64>,
    lazy_refcounts: bool,
    extended_l2: bool,
    compression_type: Option<&'static str>,
    prealloc: Option<&'static str>,
    /// `data_file=out.data`, and whether with `data_file_raw=on`.
    data_file: Option<bool>,
    compress: bool,
    backing: Option<Backing>,
}

/// qcow2: every cluster size (small ones mostly), compat 0.10/1.1, refcount widths, lazy
/// refcounts, extended L2, preallocation (mostly metadata), an external data file (raw or not),
/// `-c` with zlib or zstd, and `-B` with a backing image (mostly raw or qcow2).
pub fn qcow2() -> impl Strategy<Value = Target> {
    let cluster = prop_oneof![
        1 => Just(None),
        5 => select(vec![512u64, 1024, 2048, 4096, 8192, 16384, 32768, 65536]).prop_map(Some),
        2 => select(vec![128 * K, 256 * K, 512 * K, M, 2 * M]).prop_map(Some),
    ];
    let compat = select(vec![None, Some("0.10"), Some("1.1"), Some("1.1")]);
    let refcount = prop_oneof![
        Just(None),
        select(vec![1u64, 2, 4, 8, 16, 32, 64]).prop_map(Some)
    ];
    let ctype = select(vec![None, Some("zlib"), Some("zstd")]);
    (
        (cluster, compat, refcount, any::<bool>(), any::<bool>()),
        (
            ctype,
            prop_oneof![
                6 => Just(None),
                3 => Just(Some("metadata")),
                1 => select(vec![Some("off"), Some("falloc"), Some("full")]),
            ],
            prop::option::weighted(0.15, any::<bool>()),
            prop::bool::weighted(0.4),
            prop::option::weighted(
                0.3,
                // Mostly raw and qcow2 (the usual -B), sometimes the other readers under a chain.
                backing(vec![
                    Format::Raw,
                    Format::Qcow2,
                    Format::Raw,
                    Format::Qcow2,
                    Format::Vmdk,
                    Format::Vdi,
                ]),
            ),
        ),
    )
        .prop_map(
            |((cs, compat, rb, lazy, ext), (ct, prealloc, data_file, compress, backing))| {
                Qcow2Draw {
                    cluster_size: cs,
                    compat,
                    refcount_bits: rb,
                    lazy_refcounts: lazy,
                    extended_l2: ext,
                    compression_type: ct,
                    prealloc,
                    data_file,
                    compress,
                    backing,
                }
            },
        )
        .prop_map(qcow2_target)
}

/// Applies qemu's rules to a draw and lists the options.
fn qcow2_target(mut d: Qcow2Draw) -> Target {
    if d.compat == Some("0.10") {
        // Version 2 images have none of the version 3 features.
        d.refcount_bits = d.refcount_bits.filter(|b| *b == 16);
        d.lazy_refcounts = false;
        d.extended_l2 = false;
        d.compression_type = d.compression_type.filter(|t| *t == "zlib");
        d.data_file = None;
    }
    if d.cluster_size.unwrap_or(64 * K) < 16 * K {
        d.extended_l2 = false;
    }
    if d.compress {
        // qemu compresses neither into an external data file nor into preallocated clusters.
        d.data_file = None;
        d.prealloc = None;
    }
    if d.backing.is_some() {
        // data_file_raw keeps the data file a raw copy of the disk, which a backing file breaks.
        d.data_file = d.data_file.map(|_| false);
        if !d.extended_l2 {
            d.prealloc = d.prealloc.filter(|p| *p == "off");
        }
    }
    let mut opts = Vec::new();
    if let Some(cs) = d.cluster_size {
        opts.push(("cluster_size", cs.to_string()));
    }
    if let Some(c) = d.compat {
        opts.push(("compat", c.to_string()));
    }
    if let Some(rb) = d.refcount_bits {
        opts.push(("refcount_bits", rb.to_string()));
    }
    if d.lazy_refcounts {
        opts.push(("lazy_refcounts", "on".to_string()));
    }
    if d.extended_l2 {
        opts.push(("extended_l2", "on".to_string()));
    }
    if let Some(t) = d.compression_type {
        opts.push(("compression_type", t.to_string()));
    }
    if let Some(p) = d.prealloc {
        opts.push(("preallocation", p.to_string()));
    }
    if let Some(raw) = d.data_file {
        opts.push(("data_file", DATA_FILE.to_string()));
        if raw {
            opts.push(("data_file_raw", "on".to_string()));
        }
    }
    Target {
        format: Format::Qcow2,
        opts,
        compress: d.compress,
        backing: d.backing,
    }
}

/// VMDK: every writable subformat, zeroed grains, adapter types, compat6 or a hardware version,
/// and `-c` (compressed grains for streamOptimized, ignored by the others as in qemu-img).
pub fn vmdk() -> impl Strategy<Value = Target> {
    (
        select(vec![
            None,
            Some("monolithicSparse"),
            Some("monolithicFlat"),
            Some("twoGbMaxExtentSparse"),
            Some("twoGbMaxExtentFlat"),
            Some("streamOptimized"),
            Some("streamOptimized"),
        ]),
        select(vec![None, Some("on"), Some("off")]),
        select(vec![
            None,
            Some("ide"),
            Some("lsilogic"),
            Some("buslogic"),
            Some("legacyESX"),
        ]),
        select(vec![
            None,
            Some(("compat6", "on")),
            Some(("hwversion", "7")),
            Some(("hwversion", "21")),
        ]),
        prop::bool::weighted(0.4),
        prop::option::weighted(0.25, backing(vec![Format::Vmdk])),
    )
        .prop_map(|(sub, zg, adapter, version, compress, backing)| {
            let mut opts = Vec::new();
            if let Some(s) = sub {
                opts.push(("subformat", s.to_string()));
            }
            if let Some(z) = zg {
                opts.push(("zeroed_grain", z.to_string()));
            }
            if let Some(a) = adapter {
                opts.push(("adapter_type", a.to_string()));
            }
            if let Some((k, v)) = version {
                opts.push((k, v.to_string()));
            }
            // A VMDK's backing file must be a VMDK, and flat images have none; flat images also
            // refuse zeroed_grain=on and -c (as qemu-img does: options.rs draws those), so
            // they are not drawn with them here.
            let flat = sub.is_some_and(|s| s.ends_with("Flat"));
            if flat {
                opts.retain(|(k, v)| !(*k == "zeroed_grain" && v == "on"));
            }
            Target {
                format: Format::Vmdk,
                opts,
                compress: compress && !flat,
                backing: backing.filter(|_| !flat),
            }
        })
}

/// VDI: dynamic or static.
pub fn vdi() -> impl Strategy<Value = Target> {
    select(vec![None, Some("on"), Some("off")]).prop_map(|s| Target {
        format: Format::Vdi,
        opts: s
            .map(|s| vec![("static", s.to_string())])
            .unwrap_or_default(),
        compress: false,
        backing: None,
    })
}

/// VHD (`vpc`): dynamic or fixed, sized by CHS geometry or exactly (`force_size`).
pub fn vhd() -> impl Strategy<Value = Target> {
    (
        select(vec![None, Some("dynamic"), Some("fixed")]),
        select(vec![None, Some("on"), Some("off")]),
    )
        .prop_map(|(sub, force)| {
            let mut opts = Vec::new();
            if let Some(s) = sub {
                opts.push(("subformat", s.to_string()));
            }
            if let Some(f) = force {
                opts.push(("force_size", f.to_string()));
            }
            Target {
                format: Format::Vpc,
                opts,
                compress: false,
                backing: None,
            }
        })
}

/// VHDX: dynamic or fixed, 1 or 2 MiB blocks or qemu's default, blocks created ZERO or not.
pub fn vhdx() -> impl Strategy<Value = Target> {
    (
        select(vec![None, Some("dynamic"), Some("fixed")]),
        select(vec![None, Some("1M"), Some("2M")]),
        select(vec![None, Some("on"), Some("off")]),
    )
        .prop_map(|(sub, bs, zero)| {
            let mut opts = Vec::new();
            if let Some(s) = sub {
                opts.push(("subformat", s.to_string()));
            }
            if let Some(b) = bs {
                opts.push(("block_size", b.to_string()));
            }
            if let Some(z) = zero {
                opts.push(("block_state_zero", z.to_string()));
            }
            Target {
                format: Format::Vhdx,
                opts,
                compress: false,
                backing: None,
            }
        })
}
