//! The writer trait that builds an image from extents, and [`OutputFile`], which makes a new image
//! appear under its name only once it is complete (write to a temporary name, rename on success).

use crate::copyrange::HostRange;
use crate::databuf::DataBuf;
use crate::error::{Error, Result};
use crate::writeback::Writeback;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Whether [`OutputFile::commit`] flushes the file to stable storage before renaming it into place.
/// On by default, so that a crash right after a convert never leaves a complete-looking image whose
/// blocks never reached the disk. `vdisk convert -t unsafe` (qemu-img's default cache mode for
/// convert targets) turns it off for speed. While it is on, each new file also gets early
/// writeback ([`crate::writeback`]), so that most of its blocks are on their way to the disk
/// before the flush.
static DURABLE_COMMIT: AtomicBool = AtomicBool::new(true);

/// Sets whether new images are flushed before they appear under their name (see [`DURABLE_COMMIT`]).
pub fn set_durable_commit(on: bool) {
    DURABLE_COMMIT.store(on, Ordering::Relaxed);
}

/// Whether writes must reach stable storage (see [`DURABLE_COMMIT`]): in-place writers that order
/// their writes with flushes for crash safety skip those flushes when it is off (`-t unsafe`).
pub fn durable_commit() -> bool {
    DURABLE_COMMIT.load(Ordering::Relaxed)
}

/// Checks that a write of `len` bytes at `offset` ends inside the `size`-byte disk of the image
/// at `path`: writers' own guard against callers other than the engine.
pub fn check_write_range(path: &Path, offset: u64, len: u64, size: u64) -> Result<()> {
    if offset.checked_add(len).is_none_or(|e| e > size) {
        return Err(Error::invalid(format!(
            "{}: write of {len} bytes at offset {offset} is past the end of the image ({size} bytes)",
            path.display()
        )));
    }
    Ok(())
}

/// The pieces of a write of `len` bytes at guest `offset` that each lie in one block of
/// `block_size` bytes, in guest order: (block, offset in the block, range of the write's bytes).
/// None for a block size of 0.
pub fn block_pieces(
    offset: u64,
    len: u64,
    block_size: u64,
) -> impl Iterator<Item = (u64, u64, std::ops::Range<usize>)> {
    let mut done = 0u64;
    std::iter::from_fn(move || {
        if done >= len || block_size == 0 {
            return None;
        }
        let pos = offset.saturating_add(done);
        let (block, in_block) = (pos / block_size, pos % block_size);
        let n = (block_size - in_block).min(len - done);
        let range = done as usize..(done + n) as usize;
        done += n;
        Some((block, in_block, range))
    })
}

/// Splits a write of `len` bytes at guest `offset` (its bytes `data`, or `None` for zeros) into
/// the pieces that each lie in one block of `block_size` bytes ([`block_pieces`]), and calls
/// `f(block, offset_in_block, piece_len, piece)` for each, in guest order: the loop of every
/// writer that maps a disk block by block in place (VDI, VHD, VHDX). `data`, when given, holds
/// `len` bytes.
pub fn for_each_block_piece(
    offset: u64,
    len: u64,
    data: Option<&[u8]>,
    block_size: u64,
    mut f: impl FnMut(u64, u64, u64, Option<&[u8]>) -> Result<()>,
) -> Result<()> {
    if block_size == 0 {
        return Err(Error::invalid("block size 0"));
    }
    for (block, in_block, range) in block_pieces(offset, len, block_size) {
        let n = (range.end - range.start) as u64;
        let piece = match data {
            Some(d) => Some(
                d.get(range)
                    .ok_or_else(|| Error::invalid("write data shorter than its length"))?,
            ),
            None => None,
        };
        f(block, in_block, n, piece)?;
    }
    Ok(())
}

/// The runs of consecutive values in `indices` (sorted here), as `(first, last)` pairs: where an
/// in-place writer's new table entries can go to the file in one write each.
pub fn neighbour_runs(indices: &[usize]) -> Vec<(usize, usize)> {
    let mut sorted = indices.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for i in sorted {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == i => *last = i,
            _ => runs.push((i, i)),
        }
    }
    runs
}

/// What the conversion engine must know about a writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterCaps {
    /// Chunks handed to `write` start and end on multiples of this (except at the disk's end), e.g. the
    /// cluster size for compressed qcow2. Must be a power of two, at least 512.
    pub granularity: u64,
    /// Whether `write` accepts offsets out of order (`convert -W`).
    pub out_of_order: bool,
    /// Whether the new image already reads as zeros everywhere, so zero runs need no write at all.
    pub zero_initialized: bool,
    /// Whether `write` takes [`Payload::Copy`] and copies host file ranges itself, offloaded to
    /// the kernel where it can (`convert -C`).
    pub copy_range: bool,
}

/// A chunk after the (parallel) encoding step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The encoded bytes, e.g. a compressed cluster.
    pub bytes: Vec<u8>,
    /// How many guest bytes they stand for.
    pub raw_len: u64,
}

/// What to store at one guest offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Plain data (dropping it returns a pooled buffer to its pool).
    Data(DataBuf),
    /// This many bytes that must read as zeros.
    Zero(u64),
    /// Data already encoded by the writer's [`ChunkEncoder`].
    Encoded(Encoded),
    /// Data to copy from a host file (`convert -C`); only for writers whose
    /// [`WriterCaps::copy_range`] is set.
    Copy(HostRange),
}

impl Payload {
    /// Plain data from anything that converts into a [`DataBuf`] (a `Vec<u8>`, a slice).
    pub fn data(bytes: impl Into<DataBuf>) -> Self {
        Payload::Data(bytes.into())
    }

    /// Guest bytes covered.
    pub fn len(&self) -> u64 {
        match self {
            Payload::Data(d) => d.len() as u64,
            Payload::Zero(n) => *n,
            Payload::Encoded(e) => e.raw_len,
            Payload::Copy(r) => r.len,
        }
    }

    /// The bytes of a plain payload: `Some` for data, `None` for zeros. Encoded and copied
    /// payloads are an error naming `writer`, which announced neither an encoder nor `copy_range`
    /// (the engine never sends them to such a writer).
    pub fn plain(&self, writer: &str) -> Result<Option<&[u8]>> {
        match self {
            Payload::Data(d) => Ok(Some(&d[..])),
            Payload::Zero(_) => Ok(None),
            Payload::Encoded(_) | Payload::Copy(_) => Err(Error::invalid(format!(
                "{writer}: encoded and copied payloads are not supported"
            ))),
        }
    }

    /// Whether the payload covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// CPU-heavy per-chunk work (compression) that the engine runs on all cores before handing the
/// result to the single writer thread.
pub trait ChunkEncoder: Send + Sync {
    /// Encodes `data` (one granule at `offset`). `Ok(None)` means store it as plain data instead, e.g.
    /// when compression does not make it smaller.
    fn encode(&self, offset: u64, data: &[u8]) -> Result<Option<Encoded>>;
}

/// Builds one image. Created by a format's `create`; `finish` makes the result a valid image, and a
/// writer dropped without `finish` leaves nothing that looks like a valid image.
pub trait ImageWriter: Send {
    /// How the engine must feed this writer.
    fn caps(&self) -> WriterCaps;

    /// The encoder whose output `write` accepts as [`Payload::Encoded`], if the writer has one.
    fn encoder(&self) -> Option<Arc<dyn ChunkEncoder>> {
        None
    }

    /// Stores `payload` at guest `offset`. In-order unless `caps().out_of_order`.
    fn write(&mut self, offset: u64, payload: Payload) -> Result<()>;

    /// Completes the image (tables, headers, flush, rename into place).
    fn finish(self: Box<Self>) -> Result<()>;
}

/// A new output file that appears under its final name only when [`OutputFile::commit`] is called.
///
/// It is written under a hidden temporary name in the same directory; dropping it uncommitted removes
/// the temporary file, so a failed or interrupted convert never leaves a half-written image behind.
/// Until then the name is also listed for [`crate::pending::remove_all`], for a process that dies
/// on a signal without running destructors.
#[derive(Debug)]
pub struct OutputFile {
    file: Option<Arc<File>>,
    temp: PathBuf,
    dest: PathBuf,
    committed: bool,
    /// Early writeback while the image is written, when commits are durable.
    writeback: Option<Writeback>,
}

impl OutputFile {
    /// Creates the temporary file for `dest`.
    pub fn create(dest: &Path) -> Result<Self> {
        let name = dest
            .file_name()
            .ok_or_else(|| Error::invalid(format!("'{}' is not a file name", dest.display())))?;
        let temp = dest.with_file_name(format!(
            ".{}.vdisk-{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        crate::locks::check_replaceable(dest)?;
        // Listed from its creation until commit or drop, so that a process dying on a signal
        // removes it too.
        let file = crate::pending::create(&temp, || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&temp)
                .map_err(|source| Error::Create {
                    path: dest.to_path_buf(),
                    source,
                })
        })?;
        let file = Arc::new(file);
        // Only a durable commit flushes, so only then is there a flush to get ahead of.
        let writeback = if DURABLE_COMMIT.load(Ordering::Relaxed) {
            Writeback::start(Arc::clone(&file))
        } else {
            None
        };
        Ok(OutputFile {
            file: Some(file),
            temp,
            dest: dest.to_path_buf(),
            committed: false,
            writeback,
        })
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        self.shared_file()
    }

    fn shared_file(&self) -> &Arc<File> {
        // Invariant: `file` is Some until commit consumes self.
        self.file
            .as_ref()
            .unwrap_or_else(|| unreachable!("OutputFile used after commit"))
    }

    /// The final name.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The temporary name being written.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// A [`crate::FileStorage`] over the temporary file, for formats that write through `Storage`.
    /// It shares this file's descriptor (a split VMDK holds one per extent file, so each counts
    /// against the open-file limit). Messages name the final path.
    pub fn storage(&self) -> crate::FileStorage {
        crate::FileStorage::from_shared(Arc::clone(self.shared_file()), &self.dest, true)
    }

    /// Flushes the file (unless durable commits are off) and renames it to its final name.
    pub fn commit(mut self) -> Result<()> {
        if let Some(mut wb) = self.writeback.take() {
            wb.stop();
        }
        if let Some(f) = self.file.take() {
            if DURABLE_COMMIT.load(Ordering::Relaxed) {
                f.sync_all().map_err(|e| Error::io(&self.dest, 0, e))?;
            }
        }
        // Checked again: a VM may have opened the old file while this one was written.
        crate::locks::check_replaceable(&self.dest)?;
        std::fs::rename(&self.temp, &self.dest).map_err(|e| Error::io(&self.dest, 0, e))?;
        self.committed = true;
        crate::pending::forget(&self.temp);
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
            crate::pending::forget(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn output_appears_only_on_commit() {
        let dir = std::env::temp_dir().join(format!("vdisk-core-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("img.raw");
        {
            let o = OutputFile::create(&dest).unwrap();
            o.file().write_all_at(b"abc", 0).unwrap();
            assert!(!dest.exists());
        }
        assert!(!dest.exists(), "dropped output must vanish");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "temporary file removed"
        );
        let o = OutputFile::create(&dest).unwrap();
        o.file().write_all_at(b"abc", 0).unwrap();
        o.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn neighbour_runs_join_consecutive_indices() {
        assert_eq!(neighbour_runs(&[]), vec![]);
        assert_eq!(
            neighbour_runs(&[7, 3, 4, 5, 9, 8, 1, 4]),
            vec![(1, 1), (3, 5), (7, 9)]
        );
    }

    #[test]
    fn block_pieces_cover_a_write_in_order() {
        let data: Vec<u8> = (0..10u8).collect();
        let mut seen = Vec::new();
        for_each_block_piece(6, 10, Some(&data), 4, |b, at, n, piece| {
            seen.push((b, at, n, piece.map(<[u8]>::to_vec)));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (1, 2, 2, Some(vec![0, 1])),
                (2, 0, 4, Some(vec![2, 3, 4, 5])),
                (3, 0, 4, Some(vec![6, 7, 8, 9])),
            ]
        );
        let mut zeros = Vec::new();
        for_each_block_piece(3, 2, None, 4, |b, at, n, piece| {
            zeros.push((b, at, n, piece.is_none()));
            Ok(())
        })
        .unwrap();
        assert_eq!(zeros, vec![(0, 3, 1, true), (1, 0, 1, true)]);
        assert!(for_each_block_piece(0, 5, Some(&data[..4]), 4, |_, _, _, _| Ok(())).is_err());
        assert!(for_each_block_piece(0, 5, None, 0, |_, _, _, _| Ok(())).is_err());
        assert_eq!(block_pieces(0, 5, 0).count(), 0);
        assert_eq!(
            block_pieces(4, 5, 4).collect::<Vec<_>>(),
            vec![(1, 0, 0..4), (2, 0, 4..5)]
        );
    }
}
