//! Reading reference counts (qcow2.txt "Host cluster management"): the refcount table points to
//! refcount blocks holding one entry of refcount_bits (1..64) per host cluster; sub-byte widths are
//! packed least significant bits first, wider ones are big-endian.

use crate::reader::Qcow2Reader;
use vdisk_core::{Error, Result, Storage};

/// Offset bits of a refcount table entry.
pub const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;

/// Entry `index` of a refcount block of `order` (width 2^order bits).
pub fn block_entry(block: &[u8], order: u32, index: u64) -> u64 {
    let bits = 1u64 << order;
    if bits < 8 {
        let per_byte = 8 / bits;
        let byte = block.get((index / per_byte) as usize).copied().unwrap_or(0);
        let shift = (index % per_byte) * bits;
        return (u64::from(byte) >> shift) & ((1 << bits) - 1);
    }
    let w = (bits / 8) as usize;
    let at = index as usize * w;
    block
        .get(at..at + w)
        .map(|s| s.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)))
        .unwrap_or(0)
}

/// The end of the largest request QEMU's block layer serves (block_int-common.h).
pub(crate) const BDRV_MAX_LENGTH: u64 = (i64::MAX as u64) & !((1u64 << 30) - 1);

/// EIO (Linux errno 5), the error QEMU reports for a request it refuses.
const EIO: i32 = 5;

/// Reads the refcount block (or any table) at `off` into `b`: what lies past the end of the file
/// (`file_len`) reads as zeros, as QEMU's block layer reads it (so a block past the end holds
/// refcounts of 0, which `check` then reports cluster by cluster, as qemu-img does).
pub(crate) fn read_block(s: &dyn Storage, b: &mut [u8], off: u64, file_len: u64) -> Result<()> {
    let inside = padded_request(s, off, b.len() as u64, file_len)?;
    b[inside..].fill(0);
    if inside > 0 {
        s.read_exact_at(&mut b[..inside], off)?;
    }
    Ok(())
}

/// How many of the `len` bytes at `off` lie in the file (`file_len`), for a read that takes the
/// rest as zeros; an error where QEMU's block layer refuses the request: one reaching past
/// BDRV_MAX_LENGTH (INT64_MAX aligned down to 1 GiB) fails with EIO before the file's end is
/// looked at. An empty request is never an error (QEMU reads no empty table).
pub(crate) fn padded_request(s: &dyn Storage, off: u64, len: u64, file_len: u64) -> Result<usize> {
    if len == 0 {
        return Ok(0);
    }
    if off.checked_add(len).is_none_or(|end| end > BDRV_MAX_LENGTH) {
        return Err(Error::Io {
            path: s.path().to_path_buf(),
            offset: off,
            source: std::io::Error::from_raw_os_error(EIO),
        });
    }
    // At most `len`, which is a buffer's length, so it fits a usize.
    Ok(file_len.saturating_sub(off).min(len) as usize)
}

/// The refcount table with a one-block memo, for sequential lookups.
pub struct Refcounts<'a> {
    storage: &'a dyn Storage,
    pub(crate) table: Vec<u64>,
    order: u32,
    cluster_bits: u32,
    file_len: u64,
    memo: Option<(u64, Vec<u8>)>,
}

impl<'a> Refcounts<'a> {
    /// Reads the refcount table of `r` (its size was bounded when parsing the header).
    pub fn load(r: &'a Qcow2Reader) -> Result<Self> {
        let h = &r.header;
        let count = (u64::from(h.refcount_table_clusters) * h.cluster_size() / 8) as usize;
        let table = r.read_table_words(h.refcount_table_offset, count, "refcount table")?;
        Ok(Refcounts {
            storage: r.storage.as_ref(),
            table,
            order: h.refcount_order,
            cluster_bits: h.cluster_bits,
            file_len: r.file_len,
            memo: None,
        })
    }

    /// Host clusters described by one refcount block.
    pub fn per_block(&self) -> u64 {
        ((1u64 << self.cluster_bits) * 8) >> self.order
    }

    /// The offset of the refcount block for table index `i` (0 when none), checked for alignment
    /// (QEMU refuses an unaligned one; one past the end of the file reads as zeros).
    pub fn block_offset(&self, i: usize) -> Result<u64> {
        let off = self.table.get(i).copied().unwrap_or(0) & REFT_OFFSET_MASK;
        if off != 0 && off % (1u64 << self.cluster_bits) != 0 {
            return Err(Error::corrupt(
                self.storage.path(),
                Some(off),
                format!("Refblock offset {off:#x} unaligned (reftable index: {i:#x})"),
            ));
        }
        Ok(off)
    }

    /// The reference count of host cluster `cluster`.
    pub fn get(&mut self, cluster: u64) -> Result<u64> {
        let per = self.per_block();
        let Ok(ti) = usize::try_from(cluster / per) else {
            return Ok(0);
        };
        if ti >= self.table.len() {
            return Ok(0);
        }
        let off = self.block_offset(ti)?;
        if off == 0 {
            return Ok(0);
        }
        if self.memo.as_ref().map(|m| m.0) != Some(off) {
            let mut b = vec![0u8; 1usize << self.cluster_bits];
            read_block(self.storage, &mut b, off, self.file_len)?;
            self.memo = Some((off, b));
        }
        Ok(self
            .memo
            .as_ref()
            .map(|m| block_entry(&m.1, self.order, cluster % per))
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_every_width() {
        let b = [
            0b1110_0100u8,
            0x12,
            0x34,
            0x56,
            0x78,
            0x9a,
            0xbc,
            0xde,
            0xf0,
        ];
        assert_eq!(
            (0..4).map(|i| block_entry(&b, 1, i)).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            (0..3).map(|i| block_entry(&b, 0, i)).collect::<Vec<_>>(),
            vec![0, 0, 1]
        );
        assert_eq!(block_entry(&b, 2, 1), 0xe);
        assert_eq!(block_entry(&b, 3, 1), 0x12);
        assert_eq!(block_entry(&b, 4, 1), 0x3456);
        assert_eq!(block_entry(&b, 5, 1), 0x789a_bcde);
        assert_eq!(block_entry(&b, 6, 0), 0xe412_3456_789a_bcde);
        assert_eq!(block_entry(&b, 6, 1), 0, "past the block reads 0");
    }
}
