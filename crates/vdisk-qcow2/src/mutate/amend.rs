//! `qemu-img amend -o compat=...,lazy_refcounts=...,refcount_bits=...,size=...` (QEMU's
//! qcow2_amend_options): upgrading a version 2 image to version 3, downgrading a version 3 image
//! to version 2 when nothing in it needs version 3 (qcow2.txt "Header": incompatible features,
//! refcount_order) after expanding its zero clusters ([`super::expand`]), turning lazy refcounts
//! on or off, a new refcount width ([`super::refwidth`]) and a new size (as `resize --shrink`
//! makes it). Without zero clusters a version change is one write of cluster 0's header bytes;
//! with them, that write is the switch of a transaction.

use super::bitmaps::Bitmaps;
use super::expand::expand_zero_clusters;
use super::image::{Purpose, RwImage};
use super::snapshot::complete_snapshot_table;
use super::txn::Txn;
use crate::header::{autoclear, compat, incompat, Extension, Header, V2_HEADER_LEN};
use std::sync::Arc;
use vdisk_core::{CreateOptions, Error, ImageReader, Result, Storage};

/// The options vdisk can amend.
const AMENDABLE: [&str; 6] = [
    "compat",
    "lazy_refcounts",
    "data_file",
    "data_file_raw",
    "refcount_bits",
    "size",
];

/// qcow2 creation options that qemu-img refuses to amend ("This option is only supported for
/// image creation").
const CREATE_ONLY: [&str; 5] = [
    "cluster_size",
    "preallocation",
    "extended_l2",
    "compression_type",
    "encryption",
];

/// The options `qemu-img amend -o help` lists for qcow2 (`qcow2_amend_opts` and the creation
/// options it shares), whether vdisk amends them yet or not.
pub fn amend_options() -> Vec<vdisk_core::options::OptionSpec> {
    use vdisk_core::options::OptionSpec;
    let shared = [
        "backing_file",
        "backing_fmt",
        "compat",
        "data_file",
        "data_file_raw",
        "encrypt.iter-time",
        "lazy_refcounts",
        "refcount_bits",
        "size",
    ];
    let mut v: Vec<OptionSpec> = crate::writer::CREATE_OPTIONS
        .iter()
        .filter(|o| shared.contains(&o.name))
        .cloned()
        .collect();
    v.extend([
        OptionSpec {
            name: "encrypt.keyslot",
            kind: "num",
            help: "Select a single keyslot to modify explicitly",
        },
        OptionSpec {
            name: "encrypt.new-secret",
            kind: "str",
            help: "New secret to set in the matching keyslots. Empty string to erase",
        },
        OptionSpec {
            name: "encrypt.old-secret",
            kind: "str",
            help: "Select all keyslots that match this password",
        },
        OptionSpec {
            name: "encrypt.state",
            kind: "str",
            help: "Select new state of affected keyslots (active/inactive)",
        },
    ]);
    v
}

/// Amends the image in `storage` (without a backing chain: see [`amend_over_in`]).
pub fn amend_in(storage: Arc<dyn Storage>, opts: &CreateOptions) -> Result<()> {
    amend_over_in(storage, opts, None)
}

/// The error qemu-img reports, before it changes anything, for an option qcow2 cannot amend.
pub fn check_amend_keys(opts: &CreateOptions) -> Result<()> {
    for (k, _) in opts.pairs() {
        if AMENDABLE.contains(&k.as_str()) {
            continue;
        }
        // qemu-img's words for what qcow2 takes only at creation, and for what it does not know.
        if CREATE_ONLY.contains(&k.as_str()) || k.starts_with("encrypt.") {
            return Err(Error::invalid(format!(
                "Invalid parameter '{k}'\nThis option is only supported for image creation"
            )));
        }
        if k == "backing_file" || k == "backing_fmt" {
            return Err(Error::invalid(
                "Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.",
            ));
        }
        return Err(Error::invalid(format!("Invalid parameter '{k}'")));
    }
    Ok(())
}

/// Amends the image in `storage`, in QEMU's order: an upgrade of `compat` first, then the
/// refcount width, the other header options, the size (`backing` is the image's backing chain,
/// which a growing resize copies from as `resize` does), and a downgrade last. Each step is a
/// change of its own (crash-safe as every change here), so a failing step leaves the earlier
/// ones done, as in QEMU.
pub fn amend_over_in(
    storage: Arc<dyn Storage>,
    opts: &CreateOptions,
    backing: Option<Arc<dyn ImageReader>>,
) -> Result<()> {
    check_amend_keys(opts)?;
    let size = amend_size(opts)?;
    let refcount_bits = amend_refcount_bits(opts)?;
    if size.is_none() && refcount_bits.is_none() {
        return amend_header(storage, opts);
    }
    let mut rest = CreateOptions::default();
    let mut compat_only = CreateOptions::default();
    for (k, v) in opts.pairs() {
        match k.as_str() {
            "size" | "refcount_bits" => {}
            "compat" => {
                rest.set(k, v);
                compat_only.set(k, v);
            }
            _ => rest.set(k, v),
        }
    }
    let current = crate::reader::read_header(storage.as_ref())?.version;
    let target = target_version(opts, current)?;
    if let Some(bits) = refcount_bits {
        if target < 3 && bits != 16 {
            return Err(Error::invalid(
                "Refcount widths other than 16 bits require compatibility level 1.1 or above \
                 (use compat=1.1 or greater)",
            ));
        }
    }
    if target < 3 && opts.get_bool("lazy_refcounts", false)? {
        return Err(Error::invalid(LAZY_NEEDS_V3));
    }
    let others = rest.pairs().iter().any(|(k, _)| k != "compat");
    if target > current {
        amend_header(Arc::clone(&storage), &rest)?;
    }
    if let Some(bits) = refcount_bits {
        change_refcount_width(&storage, bits)?;
    }
    if target <= current && others {
        let mut o = rest.clone();
        o.set("compat", if current >= 3 { "1.1" } else { "0.10" });
        amend_header(Arc::clone(&storage), &o)?;
    }
    if let Some(n) = size {
        super::resize::resize_over_in(
            Arc::clone(&storage),
            n,
            true,
            super::Prealloc::Off,
            None,
            backing,
        )?;
    }
    if target < current {
        amend_header(storage, &compat_only)?;
    }
    Ok(())
}

/// `size`: qemu-img amend reads it as a size option (`parse_option_size`, with its words for a
/// value it cannot read or that does not fit 64 bits), changes nothing for 0
/// (qcow2_amend_options), and then truncates, which refuses what does not fit `int64_t`
/// (`bdrv_co_truncate`) or the block layer's largest length (`bdrv_check_request`).
fn amend_size(opts: &CreateOptions) -> Result<Option<u64>> {
    let Some(v) = opts.get("size") else {
        return Ok(None);
    };
    let out_of_range =
        || Error::invalid(format!("Value '{v}' is out of range for parameter 'size'"));
    let n =
        match vdisk_core::size::parse_size(v) {
            Ok(n) => n,
            Err(_) if v.trim_start().starts_with('-') => return Err(out_of_range()),
            Err(_) => match vdisk_core::size::whole_size_u128(v) {
                Some(n) if n > u128::from(u64::MAX) => return Err(out_of_range()),
                Some(_) => return Err(Error::invalid("Image size cannot be negative")),
                None => return Err(Error::invalid(
                    "Parameter 'size' expects a non-negative number below 2^64\nOptional suffix \
                     k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, \
                     respectively.",
                )),
            },
        };
    if n > crate::refcount::BDRV_MAX_LENGTH {
        return Err(Error::invalid(format!(
            "offset({n}) exceeds maximum({})",
            crate::refcount::BDRV_MAX_LENGTH
        )));
    }
    Ok(Some(n).filter(|n| *n != 0))
}

/// `refcount_bits`, read as QEMU reads a number option (`qemu_strtou64`, base 0: decimal, `0x`
/// hex, leading-0 octal, a minus sign wrapping) and checked as qcow2_amend_options checks it.
fn amend_refcount_bits(opts: &CreateOptions) -> Result<Option<u64>> {
    let Some(v) = opts.get("refcount_bits") else {
        return Ok(None);
    };
    let n = vdisk_core::options::parse_c_number(v)
        .ok_or_else(|| Error::invalid("Parameter 'refcount_bits' expects a number"))?;
    if n == 0 || n > 64 || !n.is_power_of_two() {
        return Err(Error::invalid(
            "Refcount width must be a power of two and may not exceed 64 bits",
        ));
    }
    Ok(Some(n))
}

/// The version `compat` asks for (`current` without it).
fn target_version(opts: &CreateOptions, current: u32) -> Result<u32> {
    match opts.get("compat") {
        None => Ok(current),
        Some("0.10" | "v2") => Ok(2),
        Some("1.1" | "v3") => Ok(3),
        Some(v) => Err(Error::invalid(format!("Unknown compatibility level {v}"))),
    }
}

const LAZY_NEEDS_V3: &str = "Lazy refcounts only supported with compatibility level 1.1 and above \
     (use compat=1.1 or greater)";

/// Writes refcount structures `bits` wide and switches the header to them
/// ([`super::refwidth`]).
fn change_refcount_width(storage: &Arc<dyn Storage>, bits: u64) -> Result<()> {
    let img = RwImage::open(Arc::clone(storage), Purpose::Modify)?;
    let order = bits.trailing_zeros();
    if img.r.header.refcount_order == order {
        return Ok(());
    }
    let new = super::refwidth::write_with_order(&img, order)?;
    let mut nh = img.r.header.clone();
    nh.refcount_order = order;
    nh.refcount_table_offset = new.table_offset;
    nh.refcount_table_clusters = new.table_clusters;
    drop(img);
    super::txn::write_fixed_header(storage.as_ref(), &nh)?;
    storage.sync()
}

/// The header options (compat, lazy_refcounts, data_file, data_file_raw) in one change.
fn amend_header(storage: Arc<dyn Storage>, opts: &CreateOptions) -> Result<()> {
    let mut img = RwImage::open(Arc::clone(&storage), Purpose::Modify)?;
    let h = img.r.header.clone();
    let version = target_version(opts, h.version)?;
    if h.has_data_file() && version < 3 {
        return Err(Error::Other(
            "Cannot downgrade an image with a data file".into(),
        ));
    }
    let lazy = opts.get_bool(
        "lazy_refcounts",
        h.compatible_features & compat::LAZY_REFCOUNTS != 0,
    )?;
    if version < 3 && lazy {
        return Err(Error::invalid(LAZY_NEEDS_V3));
    }
    let mut nh = h.clone();
    if version == 3 {
        nh.compatible_features = if lazy {
            h.compatible_features | compat::LAZY_REFCOUNTS
        } else {
            h.compatible_features & !compat::LAZY_REFCOUNTS
        };
    }
    data_file_options(&h, &mut nh, opts)?;
    if version == h.version {
        if nh.extensions != h.extensions {
            rewrite_header(storage.as_ref(), &h, &nh)?;
        } else if nh != h {
            super::txn::write_fixed_header(storage.as_ref(), &nh)?;
            storage.sync()?;
        }
        return Ok(());
    }
    if version == 2 {
        downgrade(&img, &mut nh)?;
        let bitmaps = Bitmaps::load(&img)?;
        let mut t = Txn::new(&mut img);
        let mut tables = expand_zero_clusters(&mut t, &mut nh)?;
        // Version 2 has no bitmaps: QEMU keeps the extension in the header, where nothing reads
        // it, and leaks the bitmaps' clusters; vdisk frees them.
        if let Some(b) = bitmaps {
            b.drop_all(&mut t, &mut nh)?;
            tables = true;
        }
        if tables {
            t.rewrite_whole_header();
            return t.commit(&nh, false);
        }
    } else {
        upgrade(&mut nh);
        // Version 3 needs every snapshot table entry to hold the VM state size and disk size as
        // extra data (version 2 entries may have none): QEMU's qcow2_upgrade writes the table
        // again.
        if img.r.snapshots.iter().any(|sn| sn.disk_size.is_none()) {
            let mut t = Txn::new(&mut img);
            if let Some((offset, count, _)) = complete_snapshot_table(&mut t)? {
                (nh.snapshots_offset, nh.nb_snapshots) = (offset, count);
            }
            t.rewrite_whole_header();
            return t.commit(&nh, false);
        }
    }
    rewrite_header(storage.as_ref(), &h, &nh)
}

/// `data_file` (the external data file's name) and `data_file_raw`, as QEMU's
/// qcow2_amend_options allows them: only on an image that has a data file, and raw only turned
/// off (turning it on would need every cluster mapped). An empty name removes the name from the
/// header, as qemu-img does (the image then needs the data file named when opened).
fn data_file_options(h: &Header, nh: &mut Header, opts: &CreateOptions) -> Result<()> {
    let raw = h.autoclear_features & autoclear::DATA_FILE_RAW != 0;
    if let Some(name) = opts.get("data_file") {
        if !h.has_data_file() {
            return Err(Error::invalid(
                "data-file can only be set for images that use an external data file",
            ));
        }
        nh.extensions
            .retain(|e| !matches!(e, Extension::DataFile(_)));
        if !name.is_empty() {
            if name.len() as u64 > crate::limits::MAX_BACKING_NAME {
                return Err(Error::invalid("data-file name too long"));
            }
            nh.extensions.push(Extension::DataFile(name.to_string()));
        }
    }
    if opts.get("data_file_raw").is_some() {
        if opts.get_bool("data_file_raw", raw)? {
            if !raw {
                return Err(Error::invalid(
                    "data-file-raw cannot be set on existing images",
                ));
            }
        } else {
            nh.autoclear_features &= !autoclear::DATA_FILE_RAW;
        }
    }
    Ok(())
}

/// Writes `nh` (header, extensions, backing file name) over `old` in one write, cleared to the end
/// of what `old` used.
pub(crate) fn rewrite_header(storage: &dyn Storage, old: &Header, nh: &Header) -> Result<()> {
    let mut bytes = nh.serialize();
    if bytes.len() as u64 > old.cluster_size() {
        return Err(Error::Other(format!(
            "{}: the header does not fit in a cluster",
            storage.path().display()
        )));
    }
    let old_len = old.serialize().len();
    if bytes.len() < old_len {
        bytes.resize(old_len, 0);
    }
    storage.write_at(&bytes, 0)?;
    storage.sync()
}

/// QEMU's qcow2_downgrade checks, in its order, then the version 2 header fields.
fn downgrade(img: &RwImage, nh: &mut Header) -> Result<()> {
    let h = &img.r.header;
    if h.refcount_order != 4 {
        return Err(Error::invalid("compat=0.10 requires refcount_bits=16"));
    }
    // Version 2 snapshots have no disk size: one of another size would take the image's.
    if img.r.snapshots.iter().any(|sn| {
        sn.vm_state_size > u64::from(u32::MAX) || sn.disk_size.is_some_and(|s| s != h.size)
    }) {
        return Err(Error::Other(
            "Internal snapshots prevent downgrade of image".into(),
        ));
    }
    let other = h.incompatible_features & !incompat::COMPRESSION;
    if other != 0 {
        return Err(Error::Other(format!(
            "Cannot downgrade an image with incompatible features {other:#x} set"
        )));
    }
    if h.incompatible_features & incompat::COMPRESSION != 0 && has_compressed(img)? {
        return Err(Error::Other(
            "Cannot downgrade an image with zstd compression type and existing compressed \
             clusters"
                .into(),
        ));
    }
    nh.version = 2;
    nh.header_length = V2_HEADER_LEN;
    nh.compression_type = crate::header::COMPRESSION_ZLIB;
    nh.incompatible_features = 0;
    nh.compatible_features = 0;
    nh.autoclear_features = 0;
    nh.extensions
        .retain(|e| !matches!(e, Extension::FeatureTable(_) | Extension::Bitmaps(_)));
    Ok(())
}

/// Whether the active state maps a compressed cluster (QEMU's qcow2_has_compressed_clusters).
fn has_compressed(img: &RwImage) -> Result<bool> {
    for e in &img.r.l1 {
        let l2 = e & crate::tables::L1E_OFFSET_MASK;
        if l2 != 0 {
            let t = img.read_l2(l2)?;
            let words = img.r.geo.words_per_entry();
            if t.iter()
                .step_by(words)
                .any(|x| x & crate::tables::OFLAG_COMPRESSED != 0)
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn upgrade(nh: &mut Header) {
    nh.version = 3;
    nh.header_length = 112;
    nh.incompatible_features = 0;
    nh.autoclear_features = 0;
    nh.refcount_order = 4;
    if nh.cluster_size() > 4096
        && !nh
            .extensions
            .iter()
            .any(|e| matches!(e, Extension::FeatureTable(_)))
    {
        nh.extensions
            .push(crate::header::extensions::qemu_feature_table());
    }
}
