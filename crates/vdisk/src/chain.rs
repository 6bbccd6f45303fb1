//! Opening an image with its backing chain, as qemu does: relative backing names resolve from the
//! overlay's directory, the backing format comes from the image (probed only when absent), and the
//! chain has a depth limit and loop detection.

use crate::registry::open_layer;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vdisk_core::probe::probe_format;
use vdisk_core::storage::resolve_relative;
use vdisk_core::{Chain, Error, FileStorage, Format, ImageInfo, ImageReader, Result, Storage};

/// The deepest backing chain vdisk follows. qemu has no fixed number but stops on loops; a named
/// limit keeps a hostile chain of distinct files from exhausting file descriptors and stack.
pub const MAX_BACKING_DEPTH: usize = 64;

/// How to open an image.
#[derive(Debug, Clone, Default)]
pub struct OpenRequest {
    /// The format given with `-f`; `None` probes the file.
    pub format: Option<Format>,
    /// An internal snapshot to read instead of the active state (`convert -l`).
    pub snapshot: Option<vdisk_qcow2::SnapshotSel>,
    /// Whether to open the backing chain (`info` does not, `convert` and `map` do).
    pub follow_backing: bool,
    /// Open the top image as `qemu-img check` does (see `vdisk_qcow2::OpenOptions::for_check`:
    /// a qcow2 refcount table past the end of the file reads as zeros, an image without one
    /// opens, an encrypted one does not, and the external data file must open).
    pub for_check: bool,
}

/// One layer of an opened chain.
pub struct Layer {
    /// The file as named (for the top: as given; below: as resolved from the overlay).
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// The layer on its own.
    pub reader: Arc<dyn ImageReader>,
    /// What `info` shows about it.
    pub info: ImageInfo,
    /// The backing path resolved against this layer's directory (`full-backing-filename`).
    pub full_backing: Option<PathBuf>,
}

/// An image opened for reading, with the layers it is made of (top first).
pub struct OpenedImage {
    /// The whole chain as one disk.
    pub image: Arc<dyn ImageReader>,
    /// The layers, top first. Only the top one when the backing chain was not followed.
    pub layers: Vec<Layer>,
}

impl OpenedImage {
    /// The top layer.
    pub fn top(&self) -> &Layer {
        &self.layers[0]
    }
}

fn open_one(
    path: &Path,
    format: Option<Format>,
    snapshot: Option<&vdisk_qcow2::SnapshotSel>,
    for_check: bool,
) -> Result<Layer> {
    let storage: Arc<dyn Storage> = Arc::new(FileStorage::open(path)?);
    let format = match format {
        Some(f) => f,
        None => probe_format(storage.as_ref())?,
    };
    let reader = open_layer(format, storage, snapshot, for_check)?;
    let info = reader.info()?;
    // An empty backing file name means none to QEMU (bdrv_open_backing_file), though
    // `qemu-img info` still shows it.
    let full_backing = info
        .backing
        .as_ref()
        .filter(|b| !b.filename.is_empty())
        .map(|b| resolve_relative(path, &b.path));
    Ok(Layer {
        path: path.to_path_buf(),
        format,
        reader,
        info,
        full_backing,
    })
}

/// Opens `path` as `req` asks, following the backing chain when requested.
pub fn open_image(path: &Path, req: &OpenRequest) -> Result<OpenedImage> {
    let top = open_one(path, req.format, req.snapshot.as_ref(), req.for_check)?;
    let mut layers = vec![top];
    if req.follow_backing {
        let mut seen = vec![canonical(path)];
        loop {
            let last = layers
                .last()
                .ok_or_else(|| Error::Other("empty chain".into()))?;
            let (Some(backing), Some(full)) =
                (last.info.backing.clone(), last.full_backing.clone())
            else {
                break;
            };
            if layers.len() > MAX_BACKING_DEPTH {
                return Err(Error::limit(
                    path,
                    "backing chain depth",
                    layers.len() as u64,
                    MAX_BACKING_DEPTH as u64,
                ));
            }
            let key = canonical(&full);
            if seen.contains(&key) {
                return Err(Error::invalid(format!(
                    "Could not open '{}': Backing file '{}' forms a loop in the backing chain",
                    path.display(),
                    full.display()
                )));
            }
            seen.push(key);
            let fmt = match &backing.format {
                Some(f) => Some(f.parse::<Format>()?),
                None => None,
            };
            let layer = open_one(&full, fmt, None, false).map_err(|e| {
                Error::Other(format!(
                    "Could not open '{}': Could not open backing file: {e}",
                    path.display()
                ))
            })?;
            check_vmdk_parent(last, &layer)?;
            layers.push(layer);
        }
    }
    let mut image: Arc<dyn ImageReader> = match layers.last() {
        Some(l) => Arc::clone(&l.reader),
        None => return Err(Error::Other("empty chain".into())),
    };
    for layer in layers.iter().rev().skip(1) {
        image = Arc::new(Chain::new(Arc::clone(&layer.reader), image));
    }
    Ok(OpenedImage { image, layers })
}

/// A VMDK delta disk names its parent's CID; a mismatch means the parent changed after the delta was
/// made, and qemu refuses the chain.
fn check_vmdk_parent(child: &Layer, parent: &Layer) -> Result<()> {
    if child.format != Format::Vmdk || parent.format != Format::Vmdk {
        return Ok(());
    }
    let cids = child_parent_cids(child, parent);
    match cids {
        Some((want, have)) if want != have => Err(Error::corrupt(
            &child.path,
            None,
            format!(
                "parent CID {want:#010x} does not match the CID {have:#010x} of '{}'",
                parent.path.display()
            ),
        )),
        _ => Ok(()),
    }
}

fn child_parent_cids(child: &Layer, parent: &Layer) -> Option<(u64, u64)> {
    let get = |l: &Layer, key: &str| -> Option<u64> {
        let (_, data) = l.info.format_specific.as_ref()?;
        data.get(key)?.as_u64()
    };
    Some((get(child, "parent-cid")?, get(parent, "cid")?))
}

/// `p` with links and `..` resolved, or as given when it does not exist; for comparing paths.
pub(crate) fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Opens, with its own backing chain, the image that `image` names (or would name) as its backing
/// file `name`: resolved from `image`'s directory, as qemu resolves backing file names.
pub fn open_backing_for(
    image: &Path,
    name: impl AsRef<Path>,
    format: Option<Format>,
) -> Result<OpenedImage> {
    let req = OpenRequest {
        format,
        snapshot: None,
        follow_backing: true,
        for_check: false,
    };
    open_image(&resolve_relative(image, name), &req)
}
