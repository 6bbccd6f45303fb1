//! Writing raw images: a new file (`qemu-img create -f raw` / `convert -O raw`, with qemu's
//! `preallocation` modes of block/file-posix.c) or an existing file or device written in place
//! (`convert -n`). Zero runs become holes; copies of host file ranges (`convert -C`) are made with
//! `copy_file_range` (file-posix.c `raw_co_copy_range_to`).

use crate::{round_up_sector, sys};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use vdisk_core::options::{protocol_prealloc, OptionSpec};
use vdisk_core::size::MAX_IMAGE_SIZE;
use vdisk_core::writer::check_write_range;
use vdisk_core::{
    CreateOptions, Error, ImageWriter, OutputFile, Payload, Result, WritePool, WriterCaps,
};

/// The raw format's own options (`qemu-img create -f raw -o help`): its size. The file
/// protocol's (`preallocation`, `nocow`, `extent_size_hint`) are
/// [`vdisk_core::options::PROTOCOL_OPTIONS`].
pub const CREATE_OPTIONS: &[OptionSpec] = &[OptionSpec {
    name: "size",
    kind: "size",
    help: "Virtual disk size",
}];

/// How much of a new or grown raw image is allocated up front (qemu's `PreallocMode` for files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prealloc {
    /// Sparse: nothing is allocated.
    #[default]
    Off,
    /// Blocks are reserved with `posix_fallocate` (they read as zeros, stay unwritten).
    Falloc,
    /// Zeros are written everywhere.
    Full,
}

impl Prealloc {
    /// qemu's name for the mode.
    pub fn name(self) -> &'static str {
        match self {
            Prealloc::Off => "off",
            Prealloc::Falloc => "falloc",
            Prealloc::Full => "full",
        }
    }
}

impl FromStr for Prealloc {
    type Err = Error;

    /// Parses `off`, `falloc` or `full`. `metadata` (a qcow2 mode) is refused with qemu's raw message;
    /// anything else with `qemu-img resize`'s message.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "off" => Ok(Prealloc::Off),
            "falloc" => Ok(Prealloc::Falloc),
            "full" => Ok(Prealloc::Full),
            "metadata" => Err(Error::invalid("Unsupported preallocation mode: metadata")),
            other => Err(Error::invalid(format!(
                "Invalid preallocation mode '{other}'"
            ))),
        }
    }
}

/// Where a [`RawWriter`] writes.
#[derive(Debug)]
enum Target {
    /// A new image under a temporary name, renamed into place by `finish`.
    New(OutputFile),
    /// An existing file or block device, written in place.
    Existing { file: File, path: PathBuf },
}

/// Writes a raw image.
#[derive(Debug)]
pub struct RawWriter {
    /// I/O threads writing data into a new image (declared first: joined before the target's
    /// temporary file is removed on drop).
    pool: Option<WritePool>,
    target: Target,
    size: u64,
    prealloc: Prealloc,
    /// Whether copies into an existing target are still tried with `copy_file_range` (cleared
    /// when the kernel refuses; copies into a new image are made by its write pool).
    offload: bool,
}

/// The size of the first block qemu allocates in every new raw file (`allocate_first_block` in
/// file-posix.c), so that `qemu-img map` of a fresh image shows its first 4 KiB as data.
const FIRST_BLOCK: u64 = 4096;

/// Creates a new raw image of `size` bytes (rounded up to 512 as qemu does) at `path`.
///
/// Accepts [`CREATE_OPTIONS`] and the file protocol's: `preallocation` is honoured;
/// `extent_size_hint` and `nocow` are validated and otherwise have no effect (they only matter
/// on XFS and btrfs). The file
/// appears under `path` only when the writer's `finish` succeeds.
pub fn create(path: &Path, size: u64, opts: &CreateOptions) -> Result<Box<dyn ImageWriter>> {
    Ok(Box::new(RawWriter::create(path, size, opts)?))
}

/// Opens an existing raw file or block device for writing in place (`convert -n`). Nothing is
/// truncated; zero payloads punch holes, or write zeros where that is not supported.
pub fn open_writer(path: &Path) -> Result<Box<dyn ImageWriter>> {
    Ok(Box::new(RawWriter::open_existing(path)?))
}

/// The `preallocation` option; the command names the file in front of an error, as qemu-img
/// does for whatever goes wrong while it creates the image.
fn parse_prealloc_option(opts: &CreateOptions) -> Result<Prealloc> {
    match opts
        .get("preallocation")
        .map(protocol_prealloc)
        .transpose()?
    {
        None | Some("off") => Ok(Prealloc::Off),
        Some("falloc") => Ok(Prealloc::Falloc),
        _ => Ok(Prealloc::Full),
    }
}

impl RawWriter {
    /// See [`create`].
    pub fn create(path: &Path, size: u64, opts: &CreateOptions) -> Result<Self> {
        opts.ensure_known("raw", CREATE_OPTIONS)?;
        let prealloc = parse_prealloc_option(opts)?;
        opts.get_size("extent_size_hint")?;
        opts.get_bool("nocow", false)?;
        if size > MAX_IMAGE_SIZE {
            return Err(Error::invalid("Image size must be less than 8 EiB!"));
        }
        let size = round_up_sector(size);
        let out = OutputFile::create(path)?;
        let file = out.file();
        let dest = out.dest().to_path_buf();
        file.set_len(size).map_err(|e| Error::io(&dest, size, e))?;
        match prealloc {
            Prealloc::Off => {}
            Prealloc::Falloc => sys::allocate(file, &dest, 0, size)?,
            Prealloc::Full => sys::write_zeros(file, &dest, 0, size)?,
        }
        if prealloc != Prealloc::Full {
            sys::write_zeros(file, &dest, 0, size.min(FIRST_BLOCK))?;
        }
        let pool = Some(WritePool::new(file, &dest)?);
        Ok(RawWriter {
            pool,
            target: Target::New(out),
            size,
            prealloc,
            offload: true,
        })
    }

    /// See [`open_writer`].
    pub fn open_existing(path: &Path) -> Result<Self> {
        let storage = vdisk_core::FileStorage::open_rw(path)?;
        let size = vdisk_core::Storage::len(&storage)?;
        let file = storage
            .file()
            .try_clone()
            .map_err(|e| Error::io(path, 0, e))?;
        Ok(RawWriter {
            pool: None,
            target: Target::Existing {
                file,
                path: path.to_path_buf(),
            },
            size,
            prealloc: Prealloc::Off,
            offload: true,
        })
    }

    /// The size of the image being written, in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn file_and_path(&self) -> (&File, &Path) {
        match &self.target {
            Target::New(out) => (out.file(), out.dest()),
            Target::Existing { file, path } => (file, path),
        }
    }
}

impl ImageWriter for RawWriter {
    fn caps(&self) -> WriterCaps {
        WriterCaps {
            granularity: crate::SECTOR_SIZE,
            out_of_order: true,
            zero_initialized: matches!(self.target, Target::New(_)),
            copy_range: true,
        }
    }

    fn write(&mut self, offset: u64, payload: Payload) -> Result<()> {
        let len = payload.len();
        let mut offload = self.offload;
        let (file, path) = self.file_and_path();
        check_write_range(path, offset, len, self.size)?;
        match payload {
            Payload::Data(d) => match &self.pool {
                Some(pool) => pool.submit(offset, d),
                None => file
                    .write_all_at(&d, offset)
                    .map_err(|e| Error::io(path, offset, e)),
            },
            Payload::Zero(n) => {
                if let Some(pool) = &self.pool {
                    pool.drain()?;
                }
                sys::zero_range(file, path, offset, n, self.prealloc != Prealloc::Off)
            }
            Payload::Encoded(_) => Err(Error::invalid("the raw format has no encoded chunks")),
            Payload::Copy(r) => match &self.pool {
                Some(pool) => pool.submit_copy(offset, r),
                None => {
                    let done = r.copy_to(file, path, offset, &mut offload);
                    self.offload = offload;
                    done
                }
            },
        }
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        if let Some(pool) = self.pool.take() {
            pool.drain()?;
        }
        match self.target {
            Target::New(out) => out.commit(),
            // `-t unsafe` (no durable commit) leaves the writes to the page cache, as qemu does.
            Target::Existing { .. } if !vdisk_core::writer::durable_commit() => Ok(()),
            Target::Existing { file, path } => file.sync_all().map_err(|e| Error::io(&path, 0, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prealloc_names_round_trip() {
        for p in [Prealloc::Off, Prealloc::Falloc, Prealloc::Full] {
            assert_eq!(p.name().parse::<Prealloc>().unwrap(), p);
        }
        assert_eq!(
            "bogus".parse::<Prealloc>().unwrap_err().to_string(),
            "Invalid preallocation mode 'bogus'"
        );
        assert_eq!(
            "metadata".parse::<Prealloc>().unwrap_err().to_string(),
            "Unsupported preallocation mode: metadata"
        );
    }

    #[test]
    fn option_errors_read_like_qemu() {
        let o = CreateOptions::parse(&["preallocation=bogus"]).unwrap();
        assert_eq!(
            parse_prealloc_option(&o).unwrap_err().to_string(),
            "invalid parameter value: bogus"
        );
        let o = CreateOptions::parse(&["preallocation=metadata"]).unwrap();
        assert_eq!(
            parse_prealloc_option(&o).unwrap_err().to_string(),
            "Unsupported preallocation mode: metadata"
        );
        let o = CreateOptions::parse(&["cluster_size=64k"]).unwrap();
        let e = RawWriter::create(Path::new("/nonexistent-dir/x.raw"), 1, &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Invalid parameter 'cluster_size'"), "{e}");
    }

    #[test]
    fn help_for_a_file_lists_file_protocol_options() {
        let h = vdisk_core::options::format_help_with_protocol(CREATE_OPTIONS);
        assert!(h.contains("  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)\n"), "{h}");
        assert!(
            h.contains("  size=<size>            - Virtual disk size\n"),
            "{h}"
        );
        assert!(
            h.contains("nocow=<bool (on/off)>  - Turn off copy-on-write (valid only on btrfs)\n"),
            "{h}"
        );
    }
}
