//! Reading compressed clusters (qcow2.txt "Compressed Clusters Descriptor"): the compressed
//! clusters that follow each other in one guest read, with streams next to each other in the file
//! (as `qemu-img convert -c` writes them), are fetched with one positional read into a reused
//! per-thread buffer and inflated one by one from their slices of it.

use crate::compress::decompress;
use crate::limits;
use crate::reader::Qcow2Reader;
use crate::tables::SubType;
use std::cell::Cell;
use vdisk_core::{Error, Result};

/// The most bytes of compressed input one positional read fetches for a run of clusters, and the
/// largest read buffer a thread keeps between reads (an implementation choice: qcow2.txt bounds
/// only one cluster's input, by `limits::max_compressed_input`). A single cluster whose input is
/// larger is read alone into a buffer that is freed afterwards. 256 KiB holds about ten clusters
/// of 64 KiB as the benchmark disk compresses them, while the conversion engine's eight workers
/// keep 2 MiB in all (1 MiB buffers cost 13 MiB of peak RSS there, past the 64 MiB budget).
pub const RUN_BUFFER_BYTES: u64 = 256 << 10;

/// The largest hole between the end of one compressed stream and the start of the next that a
/// run reads through (and ignores). QEMU writes streams back to back, each ending where its last
/// 512-byte sector ends, so its runs have no holes; a small bound lets slightly sparse layouts
/// (another writer's alignment) batch too without reading much that is not needed.
pub const RUN_GAP_BYTES: u64 = 4096;

thread_local! {
    /// This thread's read buffer for runs; never larger than `RUN_BUFFER_BYTES`.
    static RUN_BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// One compressed cluster of a run: where its guest bytes go in the caller's buffer and where its
/// stream lies in the file.
struct Piece {
    /// Offset in the caller's buffer.
    at: usize,
    /// Guest bytes wanted (the whole cluster, or part of it at either end of the read).
    len: usize,
    /// Guest offset of the first wanted byte.
    pos: u64,
    /// Host offset and byte count (capped) of the compressed stream.
    host: u64,
    size: u64,
}

impl Qcow2Reader {
    /// Where compressed streams may be: the data file's length when there is one (qemu does not
    /// allow compressed clusters there, but the reader reads what the entries say).
    fn compressed_data_len(&self) -> Result<u64> {
        if self.data_file.is_none() {
            Ok(self.file_len)
        } else {
            self.data.len()
        }
    }

    fn past_eof(&self, offset: u64) -> Error {
        Error::corrupt(
            &self.path,
            Some(offset),
            "compressed cluster is past the end of the file",
        )
    }

    /// Fills the start of `buf` (guest offset `pos`) from the compressed cluster whose stream is
    /// at `host` (`size` bytes as the L2 entry says; `first_len` bytes of `buf` belong to it), then
    /// from as many of the following compressed clusters as form a run: each one's stream starts
    /// inside or at most `RUN_GAP_BYTES` after the run read so far, and the whole run spans at
    /// most `run_bytes` of the file. Returns how many bytes of `buf` were filled. The result, and
    /// which error comes first, are those of reading each cluster on its own.
    pub(crate) fn read_compressed_run(
        &self,
        buf: &mut [u8],
        pos: u64,
        (host, size): (u64, u64),
        first_len: usize,
        run_bytes: u64,
    ) -> Result<usize> {
        let data_len = self.compressed_data_len()?;
        if host >= data_len {
            return Err(self.past_eof(host));
        }
        let cap = limits::max_compressed_input(self.geo.cluster_bits);
        let size = size.min(cap);
        let mut pieces = vec![Piece {
            at: 0,
            len: first_len,
            pos,
            host,
            size,
        }];
        let (start, mut end) = (host, host.saturating_add(size));
        let mut done = first_len;
        while done < buf.len() {
            let p = pos + done as u64;
            // A lookup error is left for the caller to meet again once this run is inflated, so
            // that errors come in guest order.
            let Ok((SubType::Compressed { offset, size }, len)) =
                self.lookup(p, (buf.len() - done) as u64)
            else {
                break;
            };
            let size = size.min(cap);
            let new_end = end.max(offset.saturating_add(size));
            if offset >= data_len
                || offset < start
                || offset > end.saturating_add(RUN_GAP_BYTES)
                || new_end - start > run_bytes
            {
                break;
            }
            let n = (len as usize).clamp(1, buf.len() - done);
            pieces.push(Piece {
                at: done,
                len: n,
                pos: p,
                host: offset,
                size,
            });
            end = new_end;
            done += n;
        }
        let span = usize::try_from(end - start)
            .map_err(|_| Error::Other("compressed run too large".into()))?;
        if span as u64 > RUN_BUFFER_BYTES {
            // One cluster with more input than the shared buffer holds (2 MiB clusters): read it
            // into a buffer of its own, freed at once.
            let mut input = vec![0u8; span];
            self.data.read_zero_padded(&mut input, start)?;
            self.inflate_pieces(buf, &pieces, &input, start)?;
            return Ok(done);
        }
        let mut input = RUN_BUF.with(Cell::take);
        if input.len() < span {
            // Made once per thread at its full size (zeroed: the allocator hands out fresh zero
            // pages, so only what runs touch counts); later runs overwrite what they use, so stale
            // bytes from earlier runs are never read as input.
            input = vec![0u8; RUN_BUFFER_BYTES as usize];
        }
        let r = self
            .data
            .read_zero_padded(&mut input[..span], start)
            .and_then(|()| self.inflate_pieces(buf, &pieces, &input[..span], start));
        RUN_BUF.with(|c| c.set(input));
        r.map(|()| done)
    }

    /// Inflates each piece from its slice of `input` (the file's bytes from host offset `start`).
    fn inflate_pieces(
        &self,
        buf: &mut [u8],
        pieces: &[Piece],
        input: &[u8],
        start: u64,
    ) -> Result<()> {
        for pc in pieces {
            let from = (pc.host - start) as usize;
            let stream = input
                .get(from..from + pc.size as usize)
                .ok_or_else(|| Error::Other("compressed run misread".into()))?;
            let out = buf
                .get_mut(pc.at..pc.at + pc.len)
                .ok_or_else(|| Error::Other("compressed run misplaced".into()))?;
            self.inflate_cluster(out, pc.pos, pc.host, stream)?;
        }
        Ok(())
    }

    /// Inflates the compressed cluster holding guest `pos` from `stream` (found at host offset
    /// `host`) and copies its bytes from `pos` into `chunk`, which stays within that cluster.
    fn inflate_cluster(&self, chunk: &mut [u8], pos: u64, host: u64, stream: &[u8]) -> Result<()> {
        let cluster = limits::max_decompressed(self.geo.cluster_bits) as usize;
        let start = (pos & ((1u64 << self.geo.cluster_bits) - 1)) as usize;
        let bad = |e: String| {
            let what = format!("cannot decompress cluster at guest offset {pos:#x}: {e}");
            Error::corrupt(&self.path, Some(host), what)
        };
        if start == 0 && chunk.len() == cluster {
            // The whole cluster is wanted: inflate straight into the caller's buffer.
            return decompress(self.header.compression_type, stream, chunk).map_err(bad);
        }
        let mut out = vec![0u8; cluster];
        decompress(self.header.compression_type, stream, &mut out).map_err(bad)?;
        let src = out
            .get(start..start + chunk.len())
            .ok_or_else(|| Error::Other("compressed read crosses a cluster".into()))?;
        chunk.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(test)]
#[path = "compressed_read_tests.rs"]
mod tests;
