//! A striped LVM segment read as one disk (lvm2's `striped` segment type with several stripes,
//! as device-mapper's `dm-stripe` maps it): chunk `k` of `stripe_size` sectors lies in stripe
//! `k % n`, at chunk `k / n` of that stripe's area.

use std::sync::Arc;
use vdisk_core::reader::{check_range, status_len};
use vdisk_core::{Extent, ExtentKind, ImageInfo, ImageReader, Result};

pub struct Striped {
    stripes: Vec<Arc<dyn ImageReader>>,
    chunk: u64,
    size: u64,
}

impl Striped {
    /// `stripes` are the stripes' areas, equally long; `chunk` bytes go to each in turn.
    pub fn new(stripes: Vec<Arc<dyn ImageReader>>, chunk: u64) -> Option<Striped> {
        let each = stripes.first()?.virtual_size();
        if chunk == 0 || stripes.iter().any(|s| s.virtual_size() != each) {
            return None;
        }
        let size = each.checked_mul(stripes.len() as u64)?;
        Some(Striped {
            stripes,
            chunk,
            size,
        })
    }

    /// The stripe, the offset in it, and the bytes left in the chunk, of byte `pos`.
    fn locate(&self, pos: u64) -> (&Arc<dyn ImageReader>, u64, u64) {
        let n = self.stripes.len() as u64;
        let k = pos / self.chunk;
        let within = pos % self.chunk;
        let stripe = &self.stripes[(k % n) as usize];
        (stripe, (k / n) * self.chunk + within, self.chunk - within)
    }
}

impl ImageReader for Striped {
    fn format_name(&self) -> &'static str {
        "raw"
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let (stripe, at, left) = self.locate(offset + done as u64);
            let n = (left as usize).min(buf.len() - done);
            stripe.read_at(&mut buf[done..done + n], at)?;
            done += n;
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let len = status_len(self.size, offset, max_len)?;
        let (_, _, left) = self.locate(offset);
        Ok(Extent::new(offset, len.min(left), ExtentKind::Data))
    }

    fn info(&self) -> Result<ImageInfo> {
        Ok(ImageInfo::new("raw", self.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdisk_core::MemStorage;

    fn disk(bytes: Vec<u8>) -> Arc<dyn ImageReader> {
        Arc::new(vdisk_raw::open(MemStorage::new("s", bytes).shared()).unwrap())
    }

    #[test]
    fn chunks_alternate_between_stripes() {
        // Two stripes of two 512-byte chunks each: a, c on the first; b, d on the second.
        let fill = |x: u8, y: u8| [vec![x; 512], vec![y; 512]].concat();
        let s = Striped::new(vec![disk(fill(b'a', b'c')), disk(fill(b'b', b'd'))], 512).unwrap();
        assert_eq!(s.virtual_size(), 2048);
        let mut buf = vec![0u8; 2048];
        s.read_at(&mut buf, 0).unwrap();
        assert_eq!(
            buf,
            [
                vec![b'a'; 512],
                vec![b'b'; 512],
                vec![b'c'; 512],
                vec![b'd'; 512]
            ]
            .concat()
        );
        let mut buf = vec![0u8; 4];
        s.read_at(&mut buf, 1022).unwrap();
        assert_eq!(&buf, b"bbcc");
        assert!(s.read_at(&mut [0u8; 2], 2047).is_err());
        let e = s.block_status(500, 4096).unwrap();
        assert_eq!((e.offset, e.length), (500, 12));
        // Stripes of different lengths are refused.
        assert!(Striped::new(vec![disk(vec![0; 512]), disk(vec![0; 1024])], 512).is_none());
    }
}
