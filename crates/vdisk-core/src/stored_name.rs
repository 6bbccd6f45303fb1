//! Names stored in an image file as QEMU reads them: C strings, the bytes up to the first NUL,
//! not necessarily UTF-8. qcow2 (qcow2.txt "Header": the backing file name; "Snapshots": the
//! snapshot id and name) and VMDK ("The Descriptor File": extent file names, `parentFileNameHint`).

use std::path::PathBuf;

/// A name stored in an image as QEMU keeps it: a C string, the stored bytes up to the first NUL,
/// not necessarily UTF-8. It is compared byte for byte (QEMU's `strcmp`), shown lossily, written
/// back as it was read (a table rewrite must not change another snapshot's name) and, as a file
/// name, opened byte for byte.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredName(Vec<u8>);

impl StoredName {
    /// The stored field: the bytes before its first NUL, as QEMU reads it.
    pub fn from_stored(b: &[u8]) -> StoredName {
        StoredName(b[..b.iter().position(|&x| x == 0).unwrap_or(b.len())].to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name as a path, byte for byte (a file name need not be UTF-8).
    pub fn to_path(&self) -> PathBuf {
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            PathBuf::from(std::ffi::OsStr::from_bytes(&self.0))
        }
        #[cfg(not(unix))]
        {
            PathBuf::from(self.to_lossy())
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text, with U+FFFD for bytes that are not UTF-8.
    pub fn to_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl std::fmt::Display for StoredName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl From<&str> for StoredName {
    fn from(s: &str) -> StoredName {
        StoredName::from_stored(s.as_bytes())
    }
}

impl From<String> for StoredName {
    fn from(s: String) -> StoredName {
        StoredName::from(s.as_str())
    }
}

impl PartialEq<str> for StoredName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for StoredName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<String> for StoredName {
    fn eq(&self, other: &String) -> bool {
        self.0 == other.as_bytes()
    }
}
