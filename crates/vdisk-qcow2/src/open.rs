//! Opening a qcow2 image as QEMU's qcow2_do_open does (qcow2.txt "Header", "Header extensions",
//! "Snapshots"): the header cluster, the external data file, the snapshot table, the active (or a
//! snapshot's) L1 table and the persistent bitmaps, reading zeros past the end of the file as
//! QEMU's block layer does; `OpenOptions::for_check` opens as `qemu-img check` does.

use super::{read_u64_table_padded, Qcow2Reader};
use crate::bitmap_dir::{check_tables, load_directory};
use crate::header::extensions::be32;
use crate::header::Extension;
use crate::header::{Header, V2_HEADER_LEN, V3_MIN_HEADER_LEN};
use crate::limits;
use crate::luks::{self, LuksHeader};
use crate::snapshot::{read_table, Snapshot};
use crate::tables::{Geometry, L2Cache};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use vdisk_core::storage::FileOpener;
use vdisk_core::{Error, Result, Storage};

/// Which internal snapshot to read instead of the active image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotSel {
    /// By name (`snapshot.name=`).
    Name(String),
    /// By id (`snapshot.id=`).
    Id(String),
    /// By id first, else by name (`-l NAME_OR_ID`).
    NameOrId(String),
}

/// How to open an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Read this internal snapshot (read-only view) instead of the active image.
    pub snapshot: Option<SnapshotSel>,
    /// Open as `qemu-img check` opens (BDRV_O_CHECK): the refcount table reads as zeros where it
    /// reaches past the end of the file, and guest reads through an L1 table there read zeros
    /// (the check reports what points past the end); an image without a refcount table opens (the
    /// check reports every cluster); an encrypted image does not (the check reads guest data, so
    /// QEMU needs the key). Any open reads the L1 and snapshot tables as QEMU does, zeros past the
    /// end of the file; without `for_check` reading guest data through such an L1 entry fails.
    pub for_check: bool,
}

/// An external data file that could not be opened: every access fails with why.
struct Unopened {
    path: PathBuf,
    why: String,
}

impl Storage for Unopened {
    fn path(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> Result<u64> {
        Err(Error::Other(self.why.clone()))
    }

    fn read_at(&self, _buf: &mut [u8], _offset: u64) -> Result<usize> {
        Err(Error::Other(self.why.clone()))
    }
}

/// The header of the qcow2 image in `storage` (with its extensions and backing file name), read
/// as [`open`] reads it and nothing else: what the in-place changes need to find the backing file
/// before they open the image.
pub fn read_header(storage: &dyn Storage) -> Result<Header> {
    let path = storage.path();
    let file_len = storage.len()?;
    let mut first = vec![0u8; file_len.min(4096) as usize];
    storage.read_exact_at(&mut first, 0)?;
    let cluster_bits = Header::peek_cluster_bits(&first, path)?;
    // The first cluster, zero-padded as QEMU's block layer reads past the end of the file: a file
    // that ends after the header, among its extensions or in the backing file name, reads as if
    // zeros followed. A file shorter than the header itself stays truncated.
    let mut cluster = vec![0u8; 1 << cluster_bits];
    let inside = file_len.min(1 << cluster_bits) as usize;
    storage.read_exact_at(&mut cluster[..inside], 0)?;
    let header_len = match be32(&cluster, 4) {
        3 => (be32(&cluster, 100) as usize).max(V3_MIN_HEADER_LEN as usize),
        _ => V2_HEADER_LEN as usize,
    };
    let seen = if inside >= header_len {
        cluster.len()
    } else {
        inside
    };
    Header::parse(&cluster[..seen], path)
}

/// Opens the qcow2 image in `storage`; other files it names are opened through `files`.
pub fn open(
    storage: Arc<dyn Storage>,
    files: Arc<dyn FileOpener>,
    opts: &OpenOptions,
) -> Result<Qcow2Reader> {
    let path: Arc<Path> = Arc::from(storage.path());
    let file_len = storage.len()?;
    let header = read_header(storage.as_ref())?;
    let cluster_bits = header.cluster_bits;
    if header.refcount_table_clusters == 0 && !opts.for_check {
        return Err(Error::corrupt(
            &path,
            Some(56),
            "Image does not contain a reference count table",
        ));
    }
    let geo = Geometry {
        cluster_bits,
        extended: header.extended_l2(),
        data_file: header.has_data_file(),
    };

    let mut data_error = None;
    let (data, data_path, data_file) = if header.has_data_file() {
        // As qemu does (and as the writer creates it): the stored name is opened as given, so a
        // relative name is taken from the working directory, not from the image's directory.
        let p = std::path::PathBuf::from(header.data_file().unwrap_or_default());
        let opened = match header.data_file() {
            None => Err(Error::Other(format!(
                "{}: Could not open data file: 'data-file' is required for this image",
                path.display()
            ))),
            Some(_) => files.open(&p),
        };
        let s: Arc<dyn Storage> = match opened {
            Ok(s) => s,
            Err(e) if !opts.for_check => {
                // `qemu-img info` opens images without I/O (BDRV_O_NO_IO) and so never opens the
                // data file: the image opens, and reading or mapping guest data fails with why.
                data_error = Some(e.to_string());
                Arc::new(Unopened {
                    path: p.clone(),
                    why: e.to_string(),
                })
            }
            Err(e) => return Err(e),
        };
        (s, Arc::from(p.as_path()), Some(p))
    } else {
        (Arc::clone(&storage), Arc::clone(&path), None)
    };

    if opts.for_check {
        header.check_data_file_raw(&path)?;
    } else if data_error.is_none() && header.check_data_file_raw(&path).is_err() {
        // QEMU refuses such an image when it opens it for I/O (convert, map, compare), not for
        // `info`: reads and block status fail with its message, as for a missing data file.
        data_error = Some(format!(
            "Could not open '{}': data-file-raw requires a data file",
            path.display()
        ));
    }
    // With the password given for the image (`--object secret` + `encrypt.key-secret`), its
    // guest data is decrypted once it is first read.
    let key = vdisk_core::secrets::key_for(&path);
    if opts.for_check && header.crypt_method != 0 && key.is_none() {
        return Err(luks::no_key(&path, "encrypt.key-secret"));
    }
    let luks_at = load_luks(storage.as_ref(), &path, &header)?;
    let luks_offset = luks_at.as_ref().map_or(0, |(_, at)| *at);
    let luks = luks_at.map(|(h, _)| h);
    let (snapshots, snapshot_table_bytes) = read_table(
        storage.as_ref(),
        header.snapshots_offset,
        header.nb_snapshots,
        true,
    )?;
    let (l1_offset, l1_size, size) = match &opts.snapshot {
        None => (header.l1_table_offset, header.l1_size, header.size),
        Some(sel) => {
            let sn = find_snapshot(&snapshots, sel).ok_or_else(|| {
                // qemu-img's words, without the file's name.
                Error::Other("Failed to load snapshot: Can't find snapshot".into())
            })?;
            let bytes = u64::from(sn.l1_size) * 8;
            if bytes > limits::MAX_L1_BYTES {
                return Err(Error::limit(
                    &path,
                    "snapshot L1 table size",
                    bytes,
                    limits::MAX_L1_BYTES,
                ));
            }
            if sn.l1_table_offset % header.cluster_size() != 0 {
                return Err(Error::corrupt(
                    &path,
                    Some(sn.l1_table_offset),
                    "Snapshot L1 table offset invalid",
                ));
            }
            // QEMU reads a snapshot with the image's current size (qcow2_snapshot_load_tmp).
            (sn.l1_table_offset, sn.l1_size, header.size)
        }
    };
    if size > limits::MAX_VIRTUAL_SIZE {
        return Err(Error::limit(
            &path,
            "virtual size",
            size,
            limits::MAX_VIRTUAL_SIZE,
        ));
    }
    // The size is bounded (header validation, MAX_L1_BYTES); what lies past the end of the file
    // reads as zeros, as QEMU reads it.
    let l1 = read_u64_table_padded(storage.as_ref(), l1_offset, l1_size as usize, file_len)?;
    // QEMU loads the persistent bitmaps when it opens an image, and fails on invalid ones.
    let sectors = header.size & !511;
    let bitmaps = load_directory(storage.as_ref(), &path, &header, file_len, sectors)?;
    let cs = header.cluster_size();
    check_tables(storage.as_ref(), &path, cs, file_len, sectors, &bitmaps)?;
    Ok(Qcow2Reader {
        cache: L2Cache::new(header.cluster_size()),
        storage,
        path,
        geo,
        data,
        data_path,
        data_file,
        l1,
        // QEMU counts the disk in 512-byte sectors, dropping a partial last sector.
        size: size & !511,
        snapshots,
        snapshot_table_bytes,
        file_len,
        for_check: opts.for_check,
        data_error,
        l1_offset,
        bitmaps,
        luks,
        luks_offset,
        key,
        crypto: OnceLock::new(),
        prealloc: OnceLock::new(),
        header,
    })
}

/// The LUKS header of a LUKS-encrypted image (crypt method 2), read where its CRYPTO header
/// extension points (zeros past the end of the file, as QEMU reads) and checked as QEMU checks it
/// when it opens the image, even for `info`: a damaged header fails the open with QEMU's message.
/// Returns the header with where it starts in the file.
fn load_luks(
    storage: &dyn Storage,
    path: &Path,
    header: &Header,
) -> Result<Option<(LuksHeader, u64)>> {
    let Some((offset, length)) = header.extensions.iter().find_map(|e| match e {
        Extension::Crypto { offset, length } if header.crypt_method == 2 => {
            Some((*offset, *length))
        }
        _ => None,
    }) else {
        return Ok(None);
    };
    let fail = |why: String| Error::Other(format!("Could not open '{}': {why}", path.display()));
    if (luks::HEADER_LEN as u64) > length {
        return Err(fail("Request for data outside of extension header".into()));
    }
    let mut bytes = [0u8; luks::HEADER_LEN];
    storage.read_zero_padded(&mut bytes, offset)?;
    luks::parse(&bytes).map(|h| Some((h, offset))).map_err(fail)
}

fn find_snapshot<'a>(list: &'a [Snapshot], sel: &SnapshotSel) -> Option<&'a Snapshot> {
    match sel {
        SnapshotSel::Id(id) => list.iter().find(|s| &s.id == id),
        SnapshotSel::Name(n) => list.iter().find(|s| &s.name == n),
        SnapshotSel::NameOrId(x) => list
            .iter()
            .find(|s| &s.id == x)
            .or_else(|| list.iter().find(|s| &s.name == x)),
    }
}
