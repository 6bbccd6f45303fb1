//! Reading stream-optimized sparse extents ("Stream-Optimized Compressed Sparse Extents", Virtual Disk
//! Format 1.1): the footer found through gdOffset = GD_AT_END (footer marker, header copy,
//! end-of-stream marker) and deflate-compressed grains behind grain markers.

use crate::header::{
    Marker, SparseHeader, GD_AT_END, GRAIN_MARKER_SIZE, HEADER_SIZE, MARKER_EOS, MARKER_FOOTER,
};
use crate::limits::{COMPRESSED_SLACK_BYTES, SECTOR};
use crate::sparse::{read_header, SparseExtent};
use std::sync::Arc;
use vdisk_core::{Error, Result, Storage};

impl SparseExtent {
    /// Decompresses the grain stored at byte `h` (always a full grain of zero-padded data).
    pub(crate) fn compressed_grain(&self, h: u64, guest: u64) -> Result<Arc<Vec<u8>>> {
        if let Ok(c) = self.last_grain.lock() {
            if let Some((at, d)) = &*c {
                if *at == h {
                    return Ok(Arc::clone(d));
                }
            }
        }
        let path = self.path();
        let g = self.grain_bytes();
        let (data_at, len) = if self.header.has_markers() {
            let mut m = [0u8; 16];
            self.storage.read_zero_padded(&mut m, h)?;
            let m = Marker::parse(&m);
            if m.size == 0 {
                return Err(Error::corrupt(
                    path,
                    Some(h),
                    format!("grain at guest offset {guest} points to a metadata marker"),
                ));
            }
            if u64::from(m.size) > g + COMPRESSED_SLACK_BYTES {
                return Err(Error::corrupt(
                    path,
                    Some(h),
                    format!(
                        "compressed grain of {} bytes is larger than the grain",
                        m.size
                    ),
                ));
            }
            (h + GRAIN_MARKER_SIZE as u64, u64::from(m.size))
        } else {
            (
                h,
                (g + COMPRESSED_SLACK_BYTES).min(self.file_len.saturating_sub(h)),
            )
        };
        let mut input = vec![0u8; len as usize];
        self.storage.read_exact_at(&mut input, data_at)?;
        let mut out = vec![0u8; g as usize];
        let mut z = flate2::Decompress::new(true);
        let st = z.decompress(&input, &mut out, flate2::FlushDecompress::Finish);
        match st {
            Ok(flate2::Status::StreamEnd) => {}
            Ok(_) => {
                return Err(Error::corrupt(
                    path,
                    Some(h),
                    format!(
                    "compressed grain for guest offset {guest} is truncated or larger than a grain"
                ),
                ))
            }
            Err(e) => {
                return Err(Error::corrupt(
                    path,
                    Some(h),
                    format!("cannot inflate grain for guest offset {guest}: {e}"),
                ))
            }
        }
        let out = Arc::new(out);
        if self.keep_last_grain {
            if let Ok(mut c) = self.last_grain.lock() {
                *c = Some((h, Arc::clone(&out)));
            }
        }
        Ok(out)
    }
}

/// Reads the stream-optimized footer: a footer marker, a copy of the header (with the real gdOffset)
/// and an end-of-stream marker, the last three sectors of the file.
pub(crate) fn read_footer(storage: &dyn Storage, file_len: u64) -> Result<SparseHeader> {
    let path = storage.path();
    if file_len < 3 * SECTOR + HEADER_SIZE as u64 {
        return Err(Error::corrupt(
            path,
            None,
            "grain directory is at the end but the file is too short for a footer",
        ));
    }
    let mut m = [0u8; 16];
    storage.read_exact_at(&mut m, file_len - 3 * SECTOR)?;
    let m = Marker::parse(&m);
    if m.size != 0 || m.kind != MARKER_FOOTER {
        return Err(Error::corrupt(
            path,
            Some(file_len - 3 * SECTOR),
            "stream-optimized footer marker not found",
        ));
    }
    let mut eos = [0u8; 16];
    storage.read_exact_at(&mut eos, file_len - SECTOR)?;
    let eos = Marker::parse(&eos);
    if eos.val != 0 || eos.size != 0 || eos.kind != MARKER_EOS {
        return Err(Error::corrupt(
            path,
            Some(file_len - SECTOR),
            "stream-optimized end-of-stream marker not found",
        ));
    }
    let footer = read_header(storage, file_len - 2 * SECTOR)?;
    if footer.gd_offset == GD_AT_END {
        return Err(Error::corrupt(
            path,
            Some(file_len - 2 * SECTOR),
            "footer does not give the grain directory offset",
        ));
    }
    Ok(footer)
}
