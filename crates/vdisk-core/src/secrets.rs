//! The passwords of encrypted images, by the path of the image they open: what qemu-img's
//! `--object secret,id=ID,data=...` together with `encrypt.key-secret=ID` (qcow2) or
//! `key-secret=ID` (a LUKS volume) in `--image-opts` give it. The command line registers them
//! before it opens anything; a reader looks its own path up when it opens, and unlocks the image
//! when it is first read (as qemu-img, which needs no key for `info`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What was given for an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// The password.
    Password(Vec<u8>),
    /// A secret id that no `--object secret` defined: reading fails with QEMU's "No secret with
    /// id 'ID'".
    Undefined(String),
}

static KEYS: Mutex<Vec<(PathBuf, Key)>> = Mutex::new(Vec::new());

/// Makes the image at `image` (the path as it will be opened) open with `key`.
pub fn set_key(image: &Path, key: Key) {
    let mut k = KEYS.lock().unwrap_or_else(|p| p.into_inner());
    k.retain(|(p, _)| p != image);
    k.push((image.to_path_buf(), key));
}

/// What was given for the image at `image`, if anything.
pub fn key_for(image: &Path) -> Option<Key> {
    let k = KEYS.lock().unwrap_or_else(|p| p.into_inner());
    k.iter()
        .find(|(p, _)| p == image)
        .map(|(_, key)| key.clone())
}

impl Key {
    /// The password, or the error of a secret that was not defined.
    pub fn password(&self) -> std::result::Result<&[u8], String> {
        match self {
            Key::Password(p) => Ok(p),
            Key::Undefined(id) => Err(format!("No secret with id '{id}'")),
        }
    }
}
