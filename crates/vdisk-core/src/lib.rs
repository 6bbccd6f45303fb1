//! vdisk-core: the vocabulary shared by every vdisk format crate.
//!
//! A disk image is read through [`ImageReader`] (virtual size, positional reads that many threads may
//! issue at once, and a block-status query returning [`Extent`]s), and written through [`ImageWriter`]
//! (data and zero runs, then `finish`). The bytes of an image file come from a [`Storage`], so that
//! parsers run the same on a real file and on an in-memory buffer (fuzzing). [`Chain`] stacks an
//! overlay on its backing image the way qemu's block layer does.

pub mod allocahead;
pub mod chain;
pub mod concat;
pub mod copyrange;
pub mod crc32c;
pub mod databuf;
pub mod error;
pub mod extent;
pub mod filemap;
pub mod humansize;
pub mod info;
pub mod locks;
pub mod options;
pub mod pending;
pub mod probe;
pub mod reader;
pub mod secrets;
pub mod size;
pub mod storage;
pub mod stored_name;
pub mod window;
pub mod writeback;
pub mod writepool;
pub mod writer;
pub mod zero;

pub use chain::Chain;
pub use concat::Concat;
pub use copyrange::HostRange;
pub use databuf::{BufPool, DataBuf};
pub use error::{Error, Result};
pub use extent::{Extent, ExtentKind, HostLocation};
pub use filemap::FileMap;
pub use info::{BackingRef, CheckReport, ChildFile, ImageInfo, SnapshotInfo};
pub use options::CreateOptions;
pub use probe::{probe_format, Format};
pub use reader::ImageReader;
pub use storage::{FileStorage, MemStorage, Storage};
pub use stored_name::StoredName;
pub use window::Window;
pub use writepool::WritePool;
pub use writer::{ChunkEncoder, Encoded, ImageWriter, OutputFile, Payload, WriterCaps};
