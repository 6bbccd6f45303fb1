//! A LUKS1 volume (QEMU's `luks` format driver, block/crypto.c; the LUKS On-Disk Format
//! Specification 1.2.3) opened as `qemu-img info` opens it without a key: its header parsed and
//! checked as QEMU checks it (`vdisk_qcow2::luks`, shared with LUKS-encrypted qcow2 images), its
//! virtual size the file's bytes after the payload offset. With the password given for it
//! (`--object secret` + `key-secret`), the payload is decrypted as block/crypto.c does (sectors
//! numbered by their offset in the disk); without it, reading the disk, mapping or checking it
//! fails as qemu-img fails without `key-secret`.

use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use vdisk_core::{ChildFile, Error, Extent, ImageInfo, ImageReader, Result, Storage};
use vdisk_qcow2::info::qdict_order;
use vdisk_qcow2::luks::{self, LuksHeader};

/// A LUKS volume.
pub struct LuksReader {
    storage: Arc<dyn Storage>,
    header: LuksHeader,
    size: u64,
    /// The password given for the volume.
    key: Option<vdisk_core::secrets::Key>,
    /// The payload cipher, once the password unlocked it (or why it did not).
    cipher: std::sync::OnceLock<std::result::Result<vdisk_crypto::SectorCipher, String>>,
}

/// Bytes of an encrypted sector.
const SECTOR: u64 = 512;

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
        key: vdisk_core::secrets::key_for(&path),
        cipher: std::sync::OnceLock::new(),
    })
}

impl LuksReader {
    fn no_key(&self) -> Error {
        luks::no_key(self.storage.path(), "key-secret")
    }

    /// The payload cipher, unlocked with the password on first use; QEMU's messages without a
    /// password or with a wrong one.
    fn cipher(&self) -> Result<&vdisk_crypto::SectorCipher> {
        let Some(key) = &self.key else {
            return Err(self.no_key());
        };
        let unlocked = self.cipher.get_or_init(|| {
            self.header
                .unlock(self.storage.as_ref(), 0, key.password()?)
        });
        unlocked.as_ref().map_err(|why| {
            Error::Other(format!(
                "Could not open '{}': {why}",
                self.storage.path().display()
            ))
        })
    }

    fn payload_offset(&self) -> u64 {
        u64::from(self.header.payload_offset_sector) * SECTOR
    }
}

impl ImageReader for LuksReader {
    fn format_name(&self) -> &'static str {
        "luks"
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let c = self.cipher()?;
        vdisk_core::reader::check_range(self.size, offset, buf.len() as u64)?;
        // The whole sectors around the range, as they were encrypted, a bounded piece at a time.
        const PIECE: u64 = 1 << 20;
        let mut done = 0u64;
        while done < buf.len() as u64 {
            let pos = offset + done;
            let front = pos % SECTOR;
            let n = (buf.len() as u64 - done).min(PIECE);
            let len = (front + n).div_ceil(SECTOR) * SECTOR;
            let mut whole = vec![0u8; len as usize];
            let at = self
                .payload_offset()
                .checked_add(pos - front)
                .ok_or_else(|| Error::invalid("read past the end of the LUKS payload"))?;
            self.storage.read_zero_padded(&mut whole, at)?;
            c.decrypt((pos - front) / SECTOR, &mut whole)
                .map_err(|e| Error::Other(e.to_string()))?;
            buf[done as usize..(done + n) as usize]
                .copy_from_slice(&whole[front as usize..(front + n) as usize]);
            done += n;
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        self.cipher()?;
        // QEMU's crypto driver has no block status: all of it is data, where in the file not
        // shown (the block layer's default).
        let len = vdisk_core::reader::status_len(self.size, offset, max_len)?;
        Ok(Extent::new(offset, len, vdisk_core::ExtentKind::Data))
    }

    fn host_storage(&self, _file: &Path) -> Option<Arc<dyn Storage>> {
        None
    }

    fn ready_for_io(&self) -> Result<()> {
        self.cipher().map(|_| ())
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
        // qemu-img opens the volume for the check, so it needs the key; with it, the format has
        // no check (exit 63), as raw's.
        self.cipher()?;
        Err(Error::Unsupported {
            path: self.storage.path().to_path_buf(),
            what: "checks".into(),
        })
    }
}
