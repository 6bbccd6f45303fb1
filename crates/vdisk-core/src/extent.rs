//! Block status: what a range of the virtual disk is made of, in the same terms as qemu's block layer
//! (`BDRV_BLOCK_DATA`, `_ZERO`, `_ALLOCATED`, `_COMPRESSED`, `_OFFSET_VALID`) and `qemu-img map`.

use std::path::Path;
use std::sync::Arc;

/// What one run of guest bytes is, in one layer of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtentKind {
    /// Stored data (qemu map: `data: true, zero: false`).
    Data,
    /// Known to read as zeros in this layer: a zero cluster, a hole in a raw file, a zeroed grain
    /// (`data: false, zero: true, present: true`).
    Zero,
    /// Allocated data whose host storage is known to read as zeros, e.g. a metadata-preallocated qcow2
    /// cluster over a hole of the file (`data: true, zero: true`).
    ZeroData,
    /// Data stored compressed in this layer (`data: true, compressed: true`).
    Compressed,
    /// Not allocated in this layer: reads from the backing image, or as zeros when there is none
    /// (`present: false`).
    Unallocated,
}

impl ExtentKind {
    /// Whether this layer defines the content (qemu's `present` / `BDRV_BLOCK_ALLOCATED`).
    pub fn is_present(self) -> bool {
        !matches!(self, ExtentKind::Unallocated)
    }

    /// Whether the range holds data (qemu's `data`).
    pub fn is_data(self) -> bool {
        matches!(
            self,
            ExtentKind::Data | ExtentKind::ZeroData | ExtentKind::Compressed
        )
    }

    /// Whether the range is known to read as zeros without reading it. For [`ExtentKind::Unallocated`]
    /// this holds only at the bottom of a chain, which is where a [`crate::Chain`] returns it.
    pub fn reads_as_zero(self) -> bool {
        matches!(
            self,
            ExtentKind::Zero | ExtentKind::ZeroData | ExtentKind::Unallocated
        )
    }
}

/// Where a run's bytes sit in a host file, when they are stored there uncompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLocation {
    /// The host file (the image itself, an external data file, a VMDK extent, ...).
    pub file: Arc<Path>,
    /// Byte offset in that file of the first guest byte of the extent.
    pub offset: u64,
}

/// One run of the virtual disk with a single status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    /// Guest offset of the first byte.
    pub offset: u64,
    /// Length in bytes, never 0.
    pub length: u64,
    /// What the run is.
    pub kind: ExtentKind,
    /// Host location of the data, when it is stored uncompressed at a known place.
    pub host: Option<HostLocation>,
    /// Which layer answered: 0 is the image itself, 1 its backing image, and so on.
    pub depth: u32,
}

impl Extent {
    /// A run with no host location in layer 0.
    pub fn new(offset: u64, length: u64, kind: ExtentKind) -> Self {
        Extent {
            offset,
            length,
            kind,
            host: None,
            depth: 0,
        }
    }

    /// A run stored at `host_offset` in `file`.
    pub fn at_host(
        offset: u64,
        length: u64,
        kind: ExtentKind,
        file: &Arc<Path>,
        host_offset: u64,
    ) -> Self {
        Extent {
            offset,
            length,
            kind,
            host: Some(HostLocation {
                file: Arc::clone(file),
                offset: host_offset,
            }),
            depth: 0,
        }
    }

    /// One past the last guest byte.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }

    /// Whether `next` continues this run with the same status, depth and (contiguous) host placement,
    /// so that the two may be reported as one, as `qemu-img map` does.
    pub fn can_merge(&self, next: &Extent) -> bool {
        if self.end() != next.offset || self.kind != next.kind || self.depth != next.depth {
            return false;
        }
        match (&self.host, &next.host) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                a.file == b.file && a.offset.checked_add(self.length) == Some(b.offset)
            }
            _ => false,
        }
    }

    /// Cuts the run to at most `max_len` bytes from its start.
    pub fn truncate(&mut self, max_len: u64) {
        self.length = self.length.min(max_len);
    }

    /// Drops the first `n` bytes of the run (advancing the host offset alike).
    pub fn advance(&mut self, n: u64) {
        let n = n.min(self.length);
        self.offset += n;
        self.length -= n;
        if let Some(h) = &mut self.host {
            h.offset += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_needs_contiguous_host_offsets() {
        let f: Arc<Path> = Arc::from(Path::new("img"));
        let a = Extent::at_host(0, 10, ExtentKind::Data, &f, 100);
        let b = Extent::at_host(10, 10, ExtentKind::Data, &f, 110);
        let c = Extent::at_host(10, 10, ExtentKind::Data, &f, 200);
        assert!(a.can_merge(&b));
        assert!(!a.can_merge(&c));
        assert!(!a.can_merge(&Extent::new(10, 5, ExtentKind::Data)));
        let mut d = b.clone();
        d.advance(4);
        assert_eq!((d.offset, d.length, d.host.unwrap().offset), (14, 6, 114));
    }
}
