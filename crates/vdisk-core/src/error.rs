//! Typed errors for every vdisk crate. Messages read like qemu-img's, and carry the path and, where it
//! matters, the offset in the file at which something went wrong.

use std::io;
use std::path::{Path, PathBuf};

/// The result type used throughout vdisk.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while opening, reading, writing or checking an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened at all (`Could not open 'x.qcow2': No such file or directory`).
    #[error("Could not open '{}': {}", path.display(), io_message(source))]
    Open { path: PathBuf, source: io::Error },

    /// A new image's file could not be created (`Could not create 'x.qcow2': Permission denied`).
    #[error("Could not create '{}': {}", path.display(), io_message(source))]
    Create { path: PathBuf, source: io::Error },

    /// An I/O call on an open file failed.
    #[error("{}: I/O error at offset {offset}: {}", path.display(), io_message(source))]
    Io {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },

    /// The file is not a valid image of its format: a field out of range, a table pointing outside the
    /// file, a truncated structure.
    #[error("{}: corrupt image{}: {what}", path.display(), at_offset(*offset))]
    Corrupt {
        path: PathBuf,
        offset: Option<u64>,
        what: String,
    },

    /// A named limit (see each format's `limits` module) was exceeded by a value read from the file.
    #[error("{}: {what} is {value}, more than the limit of {limit}", path.display())]
    Limit {
        path: PathBuf,
        what: &'static str,
        value: u64,
        limit: u64,
    },

    /// The image uses a feature vdisk does not handle; `what` names the feature.
    #[error("{}: unsupported {what}", path.display())]
    Unsupported { path: PathBuf, what: String },

    /// A user-supplied argument is invalid (bad size, unknown option, out-of-range request).
    #[error("{0}")]
    InvalidArgument(String),

    /// Any other failure, described in full by the message.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An I/O error at `offset` of `path`.
    pub fn io(path: &Path, offset: u64, source: io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            offset,
            source,
        }
    }

    /// A corruption found in `path`, optionally at a file offset.
    pub fn corrupt(path: &Path, offset: Option<u64>, what: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.to_path_buf(),
            offset,
            what: what.into(),
        }
    }

    /// An unsupported feature of the image at `path`.
    pub fn unsupported(path: &Path, what: impl Into<String>) -> Self {
        Error::Unsupported {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }

    /// A named limit exceeded in `path`.
    pub fn limit(path: &Path, what: &'static str, value: u64, limit: u64) -> Self {
        Error::Limit {
            path: path.to_path_buf(),
            what,
            value,
            limit,
        }
    }

    /// A bad argument given by the user.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}

/// An `io::Error` as qemu prints it: the OS text without Rust's ` (os error N)` suffix.
pub fn io_message(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn at_offset(offset: Option<u64>) -> String {
    match offset {
        Some(o) => format!(" at offset {o:#x}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_error_reads_like_qemu() {
        let e = Error::Open {
            path: "x.qcow2".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(
            e.to_string(),
            "Could not open 'x.qcow2': No such file or directory"
        );
    }

    #[test]
    fn corrupt_error_names_offset() {
        let e = Error::corrupt(Path::new("a"), Some(0x200), "L2 entry past end of file");
        assert_eq!(
            e.to_string(),
            "a: corrupt image at offset 0x200: L2 entry past end of file"
        );
    }
}
