//! A LUKS1 volume (QEMU's `luks` format driver, block/crypto.c; the LUKS On-Disk Format
//! Specification 1.2.3) opened as `qemu-img info` opens it without a key: its header parsed and
//! checked as QEMU checks it (`vdisk_qcow2::luks`, shared with LUKS-encrypted qcow2 images), its
//! virtual size the file's bytes after the payload offset. vdisk does not decrypt: reading the
//! disk, mapping or checking it fails as qemu-img fails without `key-secret`.

use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use vdisk_core::{ChildFile, Error, Extent, ImageInfo, ImageReader, Result, Storage};
use vdisk_qcow2::info::qdict_order;
use vdisk_qcow2::luks::{self, LuksHeader};

/// A LUKS volume, header only.
pub struct LuksReader {
    storage: Arc<dyn Storage>,
    header: LuksHeader,
    size: u64,
}

/// Opens the LUKS volume in `storage` (no key: its data cannot be read).
pub fn open(storage: Arc<dyn Storage>) -> Result<LuksReader> {
    let path = storage.path().to_path_buf();
    let fail = |why: String| Error::Other(format!("Could not open '{}': {why}", path.display()));
    let mut bytes = [0u8; luks::HEADER_LEN];
    storage.read_zero_padded(&mut bytes, 0)?;
    let header = luks::parse(&bytes).map_err(fail)?;
    let payload = u64::from(header.payload_offset_sector) * 512;
    // block_crypto_co_getlength: the file's length less the payload offset, in whole sectors.
    let size = storage.len()?.saturating_sub(payload) & !511;
    Ok(LuksReader {
        storage,
        header,
        size,
    })
}

impl LuksReader {
    fn no_key(&self) -> Error {
        luks::no_key(self.storage.path(), "key-secret")
    }
}

impl ImageReader for LuksReader {
    fn format_name(&self) -> &'static str {
        "luks"
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, _buf: &mut [u8], _offset: u64) -> Result<()> {
        Err(self.no_key())
    }

    fn block_status(&self, _offset: u64, _max_len: u64) -> Result<Extent> {
        Err(self.no_key())
    }

    fn host_storage(&self, _file: &Path) -> Option<Arc<dyn Storage>> {
        None
    }

    fn ready_for_io(&self) -> Result<()> {
        Err(self.no_key())
    }

    fn info(&self) -> Result<ImageInfo> {
        let mut info = ImageInfo::new("luks", self.size);
        info.encrypted = true;
        info.children = vec![ChildFile {
            name: "file".into(),
            path: self.storage.path().to_path_buf(),
        }];
        // QCryptoBlockInfoLUKS, without the `format` key that the qcow2 `encrypt` object has.
        let data = match self.header.info() {
            Value::Object(mut m) => {
                m.remove("format");
                Value::Object(qdict_order(m))
            }
            other => other,
        };
        info.format_specific = Some(("luks".into(), data));
        Ok(info)
    }

    fn check(&self) -> Result<vdisk_core::CheckReport> {
        Err(self.no_key())
    }
}
