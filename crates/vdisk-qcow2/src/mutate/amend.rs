//! `qemu-img amend -o compat=...,lazy_refcounts=...` (QEMU's qcow2_amend_options): upgrading a
//! version 2 image to version 3, downgrading a version 3 image to version 2 when nothing in it needs
//! version 3 (qcow2.txt "Header": incompatible features, refcount_order) after expanding its zero
//! clusters ([`super::expand`]), and turning lazy refcounts on or off. Without zero clusters only
//! the header changes, in one write of cluster 0's header bytes; with them, that write is the
//! switch of a transaction.

use super::bitmaps::Bitmaps;
use super::expand::expand_zero_clusters;
use super::image::{Purpose, RwImage};
use super::snapshot::complete_snapshot_table;
use super::txn::Txn;
use crate::header::{autoclear, compat, incompat, Extension, Header, V2_HEADER_LEN};
use std::sync::Arc;
use vdisk_core::{CreateOptions, Error, Result, Storage};

/// The options vdisk can amend.
const AMENDABLE: [&str; 4] = ["compat", "lazy_refcounts", "data_file", "data_file_raw"];

/// The other qcow2 options qemu-img amends (`qcow2_amend_opts`), which vdisk does not yet.
const AMENDABLE_BY_QEMU: [&str; 2] = ["size", "refcount_bits"];

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

/// Amends the image in `storage`.
pub fn amend_in(storage: Arc<dyn Storage>, opts: &CreateOptions) -> Result<()> {
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
        if !AMENDABLE_BY_QEMU.contains(&k.as_str()) {
            return Err(Error::invalid(format!("Invalid parameter '{k}'")));
        }
        return Err(Error::invalid(format!(
            "Changing the option '{k}' is not supported by vdisk amend"
        )));
    }
    let mut img = RwImage::open(Arc::clone(&storage), Purpose::Modify)?;
    let h = img.r.header.clone();
    let version = match opts.get("compat") {
        None => h.version,
        Some("0.10" | "v2") => 2,
        Some("1.1" | "v3") => 3,
        Some(v) => return Err(Error::invalid(format!("Unknown compatibility level {v}"))),
    };
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
        return Err(Error::invalid(
            "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)",
        ));
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
