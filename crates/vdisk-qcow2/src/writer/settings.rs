//! `qemu-img create -f qcow2 -o ...` options: the list qemu prints for `-o help`, and their parsing
//! and validation into [`Settings`] with qemu's defaults and error messages (QEMU's
//! `qcow2_co_create_opts` / `qcow2_co_create`; field meanings from docs/interop/qcow2.txt "Header").

use crate::limits;
use vdisk_core::options::OptionSpec;
use vdisk_core::size::MAX_IMAGE_SIZE;
use vdisk_core::{CreateOptions, Error, Result};

/// The options `qemu-img create -f qcow2 -o help` lists, in qemu's order.
pub const CREATE_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "backing_file",
        kind: "str",
        help: "File name of a base image",
    },
    OptionSpec {
        name: "backing_fmt",
        kind: "str",
        help: "Image format of the base image",
    },
    OptionSpec {
        name: "cluster_size",
        kind: "size",
        help: "qcow2 cluster size",
    },
    OptionSpec {
        name: "compat",
        kind: "str",
        help: "Compatibility level (v2 [0.10] or v3 [1.1])",
    },
    OptionSpec {
        name: "compression_type",
        kind: "str",
        help: "Compression method used for image cluster compression",
    },
    OptionSpec {
        name: "data_file",
        kind: "str",
        help: "File name of an external data file",
    },
    OptionSpec {
        name: "data_file_raw",
        kind: "bool (on/off)",
        help: "The external data file must stay valid as a raw image",
    },
    OptionSpec {
        name: "encrypt.cipher-alg",
        kind: "str",
        help: "Name of encryption cipher algorithm",
    },
    OptionSpec {
        name: "encrypt.cipher-mode",
        kind: "str",
        help: "Name of encryption cipher mode",
    },
    OptionSpec {
        name: "encrypt.format",
        kind: "str",
        help: "Encrypt the image, format choices: 'aes', 'luks'",
    },
    OptionSpec {
        name: "encrypt.hash-alg",
        kind: "str",
        help: "Name of encryption hash algorithm",
    },
    OptionSpec {
        name: "encrypt.iter-time",
        kind: "num",
        help: "Time to spend in PBKDF in milliseconds",
    },
    OptionSpec {
        name: "encrypt.ivgen-alg",
        kind: "str",
        help: "Name of IV generator algorithm",
    },
    OptionSpec {
        name: "encrypt.ivgen-hash-alg",
        kind: "str",
        help: "Name of IV generator hash algorithm",
    },
    OptionSpec {
        name: "encrypt.key-secret",
        kind: "str",
        help: "ID of secret providing qcow AES key or LUKS passphrase",
    },
    OptionSpec {
        name: "encryption",
        kind: "bool (on/off)",
        help: "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)",
    },
    OptionSpec {
        name: "extended_l2",
        kind: "bool (on/off)",
        help: "Extended L2 tables",
    },
    OptionSpec {
        name: "lazy_refcounts",
        kind: "bool (on/off)",
        help: "Postpone refcount updates",
    },
    OptionSpec {
        name: "preallocation",
        kind: "str",
        help: "Preallocation mode (allowed values: off, metadata, falloc, full)",
    },
    OptionSpec {
        name: "refcount_bits",
        kind: "num",
        help: "Width of a reference count entry in bits",
    },
    OptionSpec {
        name: "size",
        kind: "size",
        help: "Virtual disk size",
    },
];

/// qemu's default cluster size (64 KiB).
pub const DEFAULT_CLUSTER_SIZE: u64 = 65536;

/// How much of the image is allocated at creation (`preallocation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prealloc {
    /// Nothing beyond the written data.
    #[default]
    Off,
    /// Every L2 table and data cluster is allocated; data clusters stay holes in the file.
    Metadata,
    /// As metadata, and the file's blocks are reserved with `posix_fallocate`.
    Falloc,
    /// As metadata, and zeros are written to every data cluster.
    Full,
}

/// The compression method for compressed clusters (header byte 104).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionType {
    #[default]
    Zlib,
    Zstd,
}

impl CompressionType {
    /// qemu's name.
    pub fn name(self) -> &'static str {
        match self {
            CompressionType::Zlib => "zlib",
            CompressionType::Zstd => "zstd",
        }
    }
}

/// Validated creation settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Virtual size in bytes, rounded up to 512 as qemu does.
    pub size: u64,
    /// 2 (`compat=0.10`) or 3 (`compat=1.1`).
    pub version: u32,
    pub cluster_bits: u32,
    /// log2 of the refcount width.
    pub refcount_order: u32,
    pub lazy_refcounts: bool,
    pub extended_l2: bool,
    pub compression: CompressionType,
    pub prealloc: Prealloc,
    pub backing_file: Option<String>,
    pub backing_fmt: Option<String>,
    pub data_file: Option<String>,
    pub data_file_raw: bool,
}

fn v3_only(what: &str) -> Error {
    Error::invalid(format!(
        "{what} only supported with compatibility level 1.1 and above (use version=v3 or greater)"
    ))
}

impl Settings {
    /// Parses and validates `opts` for an image of `size` bytes, with qemu's checks and messages.
    /// `size` from the command line wins over a `size=` option, as in qemu-img.
    pub fn parse(size: u64, opts: &CreateOptions) -> Result<Settings> {
        let s = Settings::parse_unsized(size, opts)?;
        if !s.l1_fits() {
            return Err(Error::invalid(
                "The image size is too large for file format 'qcow2' (try using a larger cluster size)",
            ));
        }
        Ok(s)
    }

    /// Whether the L1 table for this size stays within QEMU's limit (`QCOW_MAX_L1_SIZE`).
    pub fn l1_fits(&self) -> bool {
        self.l1_entries().saturating_mul(8) <= limits::MAX_L1_BYTES
    }

    /// As [`Settings::parse`], without checking that the size fits the L1 limit.
    pub fn parse_unsized(size: u64, opts: &CreateOptions) -> Result<Settings> {
        opts.ensure_known("qcow2", CREATE_OPTIONS)?;
        if opts.get("encryption").is_some_and(|v| v != "off")
            || opts.pairs().iter().any(|(k, _)| k.starts_with("encrypt."))
        {
            return Err(Error::invalid(
                "vdisk reads encrypted qcow2 images (with --object secret and encrypt.key-secret) but does not create them: create it unencrypted, or with qemu-img",
            ));
        }
        let size = match opts.get_size("size")? {
            Some(s) if size == 0 => s,
            _ => size,
        };
        if size > MAX_IMAGE_SIZE {
            return Err(Error::invalid("Image size must be less than 8 EiB!"));
        }
        let size = size.next_multiple_of(512);
        let version = match opts.get("compat") {
            None | Some("1.1" | "v3") => 3,
            Some("0.10" | "v2") => 2,
            Some(v) => {
                return Err(Error::invalid(format!(
                    "Parameter 'version' does not accept value '{v}'"
                )))
            }
        };
        let extended_l2 = opts.get_bool("extended_l2", false)?;
        let cluster_size = opts
            .get_size("cluster_size")?
            .unwrap_or(DEFAULT_CLUSTER_SIZE);
        let cluster_bits = cluster_size.trailing_zeros();
        if !cluster_size.is_power_of_two()
            || !(limits::MIN_CLUSTER_BITS..=limits::MAX_CLUSTER_BITS).contains(&cluster_bits)
        {
            return Err(Error::invalid(
                "Cluster size must be a power of two between 512 and 2048k",
            ));
        }
        let refcount_bits = opts.get_number("refcount_bits")?.unwrap_or(16);
        if !refcount_bits.is_power_of_two() || refcount_bits > 64 {
            return Err(Error::invalid(
                "Refcount width must be a power of two and may not exceed 64 bits",
            ));
        }
        if version < 3 && refcount_bits != 16 {
            return Err(Error::invalid(
                "Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)",
            ));
        }
        let lazy_refcounts = opts.get_bool("lazy_refcounts", false)?;
        if version < 3 && lazy_refcounts {
            return Err(v3_only("Lazy refcounts"));
        }
        let compression = match opts.get("compression_type") {
            None | Some("zlib") => CompressionType::Zlib,
            Some("zstd") => CompressionType::Zstd,
            Some(v) => {
                return Err(Error::invalid(format!(
                    "Parameter 'compression-type' does not accept value '{v}'"
                )))
            }
        };
        if version < 3 && compression != CompressionType::Zlib {
            return Err(v3_only("Non-zlib compression type is"));
        }
        if version < 3 && extended_l2 {
            return Err(v3_only("Extended L2 entries are"));
        }
        if extended_l2 && cluster_bits < limits::MIN_CLUSTER_BITS_EXTENDED_L2 {
            return Err(Error::invalid(format!(
                "Extended L2 entries are only supported with cluster sizes of at least {} bytes",
                1u64 << limits::MIN_CLUSTER_BITS_EXTENDED_L2
            )));
        }
        let mut prealloc = match opts.get("preallocation") {
            None | Some("off") => Prealloc::Off,
            Some("metadata") => Prealloc::Metadata,
            Some("falloc") => Prealloc::Falloc,
            Some("full") => Prealloc::Full,
            Some(v) => {
                return Err(Error::invalid(format!(
                    "Parameter 'preallocation' does not accept value '{v}'"
                )))
            }
        };
        let backing_file = opts.get("backing_file").map(str::to_string);
        let backing_fmt = opts.get("backing_fmt").map(str::to_string);
        if backing_fmt.is_some() && backing_file.is_none() {
            return Err(Error::invalid(
                "Backing format cannot be used without backing file",
            ));
        }
        if backing_file
            .as_ref()
            .is_some_and(|b| b.len() as u64 > limits::MAX_BACKING_NAME)
        {
            return Err(Error::invalid("Backing file name too long"));
        }
        if backing_fmt
            .as_ref()
            .is_some_and(|f| f.len() as u64 > limits::MAX_BACKING_FORMAT)
        {
            return Err(Error::invalid("Backing format name too long"));
        }
        if backing_file.is_some() && prealloc != Prealloc::Off && !extended_l2 {
            return Err(Error::invalid(
                "Backing file and preallocation can only be used at the same time if extended_l2 is on",
            ));
        }
        let data_file = opts.get("data_file").map(str::to_string);
        let data_file_raw = opts.get_bool("data_file_raw", false)?;
        if version < 3 && data_file.is_some() {
            return Err(v3_only("External data files are"));
        }
        if data_file_raw && data_file.is_none() {
            return Err(Error::invalid("data-file-raw requires data-file"));
        }
        if data_file_raw && backing_file.is_some() {
            return Err(Error::invalid(
                "Backing file and data-file-raw cannot be used at the same time",
            ));
        }
        if data_file_raw && prealloc == Prealloc::Off {
            // qemu: metadata preallocation keeps the data file a valid raw image.
            prealloc = Prealloc::Metadata;
        }
        Ok(Settings {
            size,
            version,
            cluster_bits,
            refcount_order: refcount_bits.trailing_zeros(),
            lazy_refcounts,
            extended_l2,
            compression,
            prealloc,
            backing_file,
            backing_fmt,
            data_file,
            data_file_raw,
        })
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Bytes per L2 entry: 8, or 16 with extended L2 (qcow2.txt "Extended L2 Entries").
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2 {
            16
        } else {
            8
        }
    }

    /// Entries per L2 table (one cluster).
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_size()
    }

    /// Guest clusters (the last one may be partial).
    pub fn guest_clusters(&self) -> u64 {
        self.size.div_ceil(self.cluster_size())
    }

    /// L1 entries needed to map the whole disk.
    pub fn l1_entries(&self) -> u64 {
        self.guest_clusters().div_ceil(self.l2_entries())
    }

    /// The largest reference count an entry can hold.
    pub fn refcount_max(&self) -> u64 {
        if self.refcount_order >= 6 {
            u64::MAX
        } else {
            (1u64 << (1u32 << self.refcount_order)) - 1
        }
    }
}

/// The options part of qemu-img's `Formatting 'FILE', fmt=qcow2 ...` line: qemu's option order,
/// its defaults filled in, sizes in bytes, other values as given.
pub fn formatting_options(size: u64, opts: &CreateOptions) -> String {
    let cluster_size = opts
        .get_size("cluster_size")
        .ok()
        .flatten()
        .unwrap_or(DEFAULT_CLUSTER_SIZE);
    let mut parts = vec![
        format!("cluster_size={cluster_size}"),
        format!("extended_l2={}", opts.get("extended_l2").unwrap_or("off")),
    ];
    if let Some(p) = opts.get("preallocation") {
        parts.push(format!("preallocation={p}"));
    }
    parts.push(format!(
        "compression_type={}",
        opts.get("compression_type").unwrap_or("zlib")
    ));
    parts.push(format!("size={size}"));
    for key in [
        "compat",
        "backing_file",
        "backing_fmt",
        "data_file",
        "data_file_raw",
    ] {
        if let Some(v) = opts.get(key) {
            parts.push(format!("{key}={v}"));
        }
    }
    parts.push(format!(
        "lazy_refcounts={}",
        opts.get("lazy_refcounts").unwrap_or("off")
    ));
    parts.push(format!(
        "refcount_bits={}",
        opts.get("refcount_bits").unwrap_or("16")
    ));
    format!("fmt=qcow2 {}", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(o: &str) -> Result<Settings> {
        Settings::parse(1 << 20, &CreateOptions::parse(&[o]).unwrap())
    }

    #[test]
    fn defaults_are_qemus() {
        let s = parse("").unwrap();
        assert_eq!((s.version, s.cluster_bits, s.refcount_order), (3, 16, 4));
        assert_eq!(
            (s.compression, s.prealloc, s.extended_l2),
            (CompressionType::Zlib, Prealloc::Off, false)
        );
        assert_eq!(
            Settings::parse(1000, &CreateOptions::new()).unwrap().size,
            1024
        );
    }

    #[test]
    fn refuses_what_qemu_refuses() {
        for (o, msg) in [
            ("cluster_size=1000", "power of two between 512 and 2048k"),
            ("cluster_size=4M", "power of two between 512 and 2048k"),
            ("refcount_bits=3", "may not exceed 64 bits"),
            ("refcount_bits=128", "may not exceed 64 bits"),
            ("compat=0.10,refcount_bits=1", "Different refcount widths"),
            (
                "compat=0.10,lazy_refcounts=on",
                "Lazy refcounts only supported",
            ),
            ("compat=0.10,compression_type=zstd", "Non-zlib compression"),
            (
                "compat=0.10,extended_l2=on",
                "Extended L2 entries are only supported with compatibility",
            ),
            ("extended_l2=on,cluster_size=4k", "at least 16384 bytes"),
            ("compat=0.10,data_file=x", "External data files"),
            ("data_file_raw=on", "data-file-raw requires data-file"),
            ("encrypt.format=luks", "does not create them"),
            ("encryption=on", "does not create them"),
            ("preallocation=bogus", "does not accept value 'bogus'"),
            ("compat=9", "'version' does not accept value '9'"),
            ("compression_type=lz4", "'compression-type' does not accept"),
            ("backing_fmt=raw", "without backing file"),
            ("backing_file=b,preallocation=metadata", "extended_l2 is on"),
            ("bogus=1", "Invalid parameter 'bogus'"),
        ] {
            let e = parse(o).unwrap_err().to_string();
            assert!(e.contains(msg), "{o}: {e}");
        }
        let e = Settings::parse(
            100 << 40,
            &CreateOptions::parse(&["cluster_size=512"]).unwrap(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }

    #[test]
    fn data_file_raw_implies_metadata_preallocation() {
        let s = parse("data_file=d.raw,data_file_raw=on").unwrap();
        assert_eq!(s.prealloc, Prealloc::Metadata);
        assert_eq!(parse("compat=v2").unwrap().version, 2);
        assert_eq!(parse("refcount_bits=1").unwrap().refcount_max(), 1);
        assert_eq!(parse("refcount_bits=64").unwrap().refcount_max(), u64::MAX);
    }
}
