//! What `info`, `snapshot -l` and `check` report about an image, with qemu-img's field names
//! (`ImageInfo` and `ImageCheck` in QEMU's qapi/block-core.json).

use std::path::PathBuf;

/// A backing file as named inside an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingRef {
    /// The name as stored (`backing-filename`), shown with U+FFFD for bytes that are not UTF-8.
    pub filename: String,
    /// The same name as a file name, byte for byte: what is opened (see
    /// [`crate::storage::resolve_relative`]).
    pub path: PathBuf,
    /// The format stored with it, if any (`backing-filename-format`).
    pub format: Option<String>,
}

/// One internal snapshot (qcow2), as `qemu-img snapshot -l` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub id: String,
    pub name: String,
    pub vm_state_size: u64,
    pub date_sec: u64,
    pub date_nsec: u32,
    pub vm_clock_nsec: u64,
    pub icount: Option<u64>,
}

/// A host file an image is made of: `Child node '/file'`, VMDK extents, external data files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildFile {
    /// qemu's child name: `file`, `extents.0`, `data-file`, ...
    pub name: String,
    /// The file's path.
    pub path: PathBuf,
}

/// Everything `info` shows about one image layer.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    /// qemu's format name (`format`).
    pub format: String,
    /// Virtual size in bytes (`virtual-size`).
    pub virtual_size: u64,
    /// Cluster, grain or block size (`cluster-size`), where the format has one.
    pub cluster_size: Option<u64>,
    /// Whether the image was left dirty (`dirty-flag`).
    pub dirty: bool,
    /// Whether the image is encrypted (`encrypted`, shown only when true).
    pub encrypted: bool,
    /// The backing file the image names, if any.
    pub backing: Option<BackingRef>,
    /// Internal snapshots.
    pub snapshots: Vec<SnapshotInfo>,
    /// `format-specific`: its `type` and ordered `data` object, printed by the human output as
    /// "Format specific information:" with `-` in keys shown as spaces, as qemu does.
    pub format_specific: Option<(String, serde_json::Value)>,
    /// The host files, in the order qemu lists the children. The first is usually `file`.
    pub children: Vec<ChildFile>,
    /// Facts that qemu-img does not show but that explain the format to a learner; printed by the
    /// human output after qemu's fields under "vdisk details:" and in JSON under `vdisk-details`.
    pub details: Vec<(String, serde_json::Value)>,
}

impl ImageInfo {
    /// A minimal description: format and size, everything else empty.
    pub fn new(format: &str, virtual_size: u64) -> Self {
        ImageInfo {
            format: format.to_string(),
            virtual_size,
            cluster_size: None,
            dirty: false,
            encrypted: false,
            backing: None,
            snapshots: Vec::new(),
            format_specific: None,
            children: Vec::new(),
            details: Vec::new(),
        }
    }
}

/// The result of checking an image (qemu's `ImageCheck`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Metadata corruptions (`corruptions`).
    pub corruptions: u64,
    /// Leaked clusters (`leaks`).
    pub leaks: u64,
    /// Errors that stopped the check from completing (`check-errors`).
    pub check_errors: u64,
    /// Corruptions repaired (`corruptions-fixed`).
    pub corruptions_fixed: u64,
    /// Leaks repaired (`leaks-fixed`).
    pub leaks_fixed: u64,
    /// Offset of the first byte after the last used cluster (`image-end-offset`).
    pub image_end_offset: Option<u64>,
    /// Clusters in the virtual disk (`total-clusters`).
    pub total_clusters: Option<u64>,
    /// Allocated clusters (`allocated-clusters`).
    pub allocated_clusters: Option<u64>,
    /// Fragmented clusters (`fragmented-clusters`).
    pub fragmented_clusters: Option<u64>,
    /// Compressed clusters (`compressed-clusters`).
    pub compressed_clusters: Option<u64>,
    /// One line per finding, as qemu prints them to stderr (`ERROR cluster 5 refcount=1 reference=0`,
    /// `Leaked cluster 9 refcount=1 reference=0`).
    pub messages: Vec<String>,
}

impl CheckReport {
    /// qemu-img check's exit code: 0 clean, 1 check failed, 2 corruptions, 3 leaks only.
    pub fn exit_code(&self) -> i32 {
        if self.check_errors > 0 {
            1
        } else if self.corruptions > 0 {
            2
        } else if self.leaks > 0 {
            3
        } else {
            0
        }
    }
}
