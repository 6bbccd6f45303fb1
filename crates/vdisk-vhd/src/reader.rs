//! Opening and reading VHD images as QEMU 10's block/vpc.c does: `vpc_open` (which footer, checksum,
//! size rules, dynamic header, BAT), `vpc_co_preadv` (fixed disks read straight from the file,
//! dynamic ones block by block through the BAT, unallocated blocks as zeros, the sector bitmap
//! ignored), `vpc_co_block_status` and `vpc_co_get_info`. Opening never writes.

use crate::bat::Bat;
use crate::dynheader::DynHeader;
use crate::footer::{self, DiskType, Footer};
use crate::limits::{qemu_file_length, DYN_HEADER_SIZE, FOOTER_SIZE, SECTOR_SIZE};
use std::path::Path;
use std::sync::Arc;
use vdisk_core::reader::check_range;
use vdisk_core::{ChildFile, Error, Extent, ExtentKind, ImageInfo, ImageReader, Result, Storage};

/// Where the footer that qemu used was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FooterAt {
    /// The copy at offset 0 (dynamic and differencing disks): qemu then ignores the one at the end.
    Start,
    /// The last sector of the file, when offset 0 holds no footer: only fixed disks are read so.
    End(u64),
}

/// The dynamic-disk structures, present when the footer was found at offset 0.
#[derive(Debug, Clone)]
pub struct Dynamic {
    pub header: DynHeader,
    pub header_at: u64,
    pub bat: Bat,
}

/// An opened VHD image.
pub struct VhdReader {
    storage: Arc<dyn Storage>,
    file: Arc<Path>,
    footer: Footer,
    footer_at: FooterAt,
    size: u64,
    /// The dynamic structures of an image whose footer is at offset 0.
    dynamic: Option<Dynamic>,
}

/// Opens a VHD image (qemu's "vpc"): finds and checks the footer, derives the virtual size, and for
/// an image with a footer at offset 0 reads the dynamic disk header and the BAT. Never writes.
pub fn open(storage: Arc<dyn Storage>) -> Result<VhdReader> {
    let path = storage.path().to_path_buf();
    let mut buf = [0u8; FOOTER_SIZE];
    storage.read_zero_padded(&mut buf, 0)?;
    let mut footer = Footer::parse(&buf);
    let mut footer_at = FooterAt::Start;
    if !footer.has_cookie() {
        // "If a fixed disk, the footer is found only at the end of the file", whose length qemu
        // counts in whole sectors.
        let len = qemu_file_length(storage.len()?);
        if len < FOOTER_SIZE as u64 {
            return Err(Error::corrupt(
                &path,
                None,
                format!("File too small for a VHD header ({len} bytes)"),
            ));
        }
        let at = len - FOOTER_SIZE as u64;
        storage.read_zero_padded(&mut buf, at)?;
        footer = Footer::parse(&buf);
        if !footer.has_cookie() || footer.disk_type != DiskType::Fixed {
            return Err(Error::corrupt(
                &path,
                None,
                "invalid VPC image: no \"conectix\" footer at offset 0, nor a fixed-disk footer \
                 in the last sector",
            ));
        }
        footer_at = FooterAt::End(at);
    }
    let footer_offset = match footer_at {
        FooterAt::Start => 0,
        FooterAt::End(at) => at,
    };
    let want = footer::checksum(&buf);
    if want != footer.checksum {
        return Err(Error::corrupt(
            &path,
            Some(footer_offset + 64),
            format!(
                "Incorrect header checksum: the footer says {:#010x}, its bytes sum to {want:#010x}",
                footer.checksum
            ),
        ));
    }
    let total_sectors = footer.total_sectors(&path)?;
    let dynamic = match footer_at {
        FooterAt::End(_) => None,
        // qemu reads the dynamic header whenever the footer is at offset 0, whatever its type says.
        FooterAt::Start => Some(read_dynamic(storage.as_ref(), &footer, total_sectors)?),
    };
    let file: Arc<Path> = Arc::from(path.as_path());
    Ok(VhdReader {
        storage,
        file,
        footer,
        footer_at,
        size: total_sectors * SECTOR_SIZE,
        dynamic,
    })
}

fn read_dynamic(storage: &dyn Storage, footer: &Footer, total_sectors: u64) -> Result<Dynamic> {
    let at = footer.data_offset;
    let mut buf = [0u8; DYN_HEADER_SIZE];
    // Past the end of the file qemu reads zeros, which then fail the cookie check; where no request
    // can reach (a fixed disk's all-ones offset) its read fails.
    if at
        .checked_add(DYN_HEADER_SIZE as u64)
        .is_none_or(|e| e > i64::MAX as u64)
    {
        return Err(Error::corrupt(
            storage.path(),
            None,
            format!("Error reading dynamic VHD header: offset {at:#x} is out of range"),
        ));
    }
    if at < storage.len()? {
        storage.read_zero_padded(&mut buf, at)?;
    }
    let header = DynHeader::parse(&buf, storage.path(), at)?;
    let bat = Bat::read(storage, &header, at, total_sectors)?;
    Ok(Dynamic {
        header,
        header_at: at,
        bat,
    })
}

impl VhdReader {
    /// The footer qemu uses.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// Where that footer was found.
    pub fn footer_at(&self) -> FooterAt {
        self.footer_at
    }

    /// The dynamic header and BAT, for images whose footer is at offset 0.
    pub fn dynamic(&self) -> Option<&Dynamic> {
        self.dynamic.as_ref()
    }

    /// The BAT through which guest data is read, or `None` when the image reads straight from the
    /// file (qemu tests the footer's type: a fixed type reads raw even with a footer at offset 0).
    fn mapped(&self) -> Option<&Bat> {
        if self.footer.disk_type == DiskType::Fixed {
            None
        } else {
            self.dynamic.as_ref().map(|d| &d.bat)
        }
    }

    /// File offset of guest byte `pos` and how many bytes from there lie in the same block
    /// (at most `limit`); `None` for an unallocated block.
    fn locate(bat: &Bat, pos: u64, limit: u64) -> Result<(Option<u64>, u64)> {
        let bs = u64::from(bat.block_size());
        let (block, in_block) = (pos / bs, pos % bs);
        let n = (bs - in_block).min(limit);
        let host = match bat.data_offset(block) {
            None => None,
            Some(start) => Some(start.checked_add(in_block).ok_or_else(|| {
                Error::Other(format!("VHD block {block}: file offset overflows"))
            })?),
        };
        Ok((host, n))
    }

    fn fixed_status(&self, offset: u64, len: u64) -> Result<Extent> {
        // vpc: DATA | OFFSET_VALID | RECURSE at the same offset in the file; the block layer then
        // asks the file, whose holes (and whatever lies past its end) read as zeros.
        let file_len = self.storage.len()?;
        let (kind, n) = if offset >= file_len {
            (ExtentKind::ZeroData, len)
        } else {
            let end = offset.saturating_add(len).min(file_len);
            match self.storage.data_run(offset, end)? {
                Some((true, e)) => (ExtentKind::Data, e - offset),
                Some((false, e)) => (ExtentKind::ZeroData, e - offset),
                None => (ExtentKind::Data, end - offset),
            }
        };
        Ok(Extent::at_host(
            offset,
            n.clamp(1, len),
            kind,
            &self.file,
            offset,
        ))
    }
}

impl ImageReader for VhdReader {
    fn format_name(&self) -> &'static str {
        "vpc"
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn host_storage(&self, file: &Path) -> Option<Arc<dyn Storage>> {
        (file == &*self.file).then(|| Arc::clone(&self.storage))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let Some(bat) = self.mapped() else {
            // A fixed disk is the file; past its end qemu reads zeros.
            return self.storage.read_zero_padded(buf, offset);
        };
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (host, n) = Self::locate(bat, pos, (buf.len() - done) as u64)?;
            let chunk = &mut buf[done..done + n as usize];
            match host {
                None => chunk.fill(0),
                // Open checked that every allocated block lies within the file as qemu counts it
                // (whole sectors); the tail of a partial last sector reads as zeros, as in qemu.
                Some(h) => self.storage.read_zero_padded(chunk, h)?,
            }
            done += n as usize;
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let limit = vdisk_core::reader::status_len(self.size, offset, max_len)?;
        let Some(bat) = self.mapped() else {
            return self.fixed_status(offset, limit);
        };
        let (host, first) = Self::locate(bat, offset, limit)?;
        if let Some(h) = host {
            // An allocated block is data up to its end ("there is always a bitmap in between").
            return Ok(Extent::at_host(
                offset,
                first,
                ExtentKind::Data,
                &self.file,
                h,
            ));
        }
        // Unallocated blocks read as zeros (BDRV_BLOCK_ZERO); runs of them are one answer.
        let mut len = first;
        while len < limit {
            let (h, n) = Self::locate(bat, offset + len, limit - len)?;
            if h.is_some() {
                break;
            }
            len += n;
        }
        Ok(Extent::new(offset, len, ExtentKind::Zero))
    }

    fn info(&self) -> Result<ImageInfo> {
        let f = &self.footer;
        let mut info = ImageInfo::new("vpc", self.size);
        // vpc_co_get_info: a cluster size for every type but fixed.
        if f.disk_type != DiskType::Fixed {
            info.cluster_size = self.dynamic.as_ref().map(|d| u64::from(d.bat.block_size()));
        }
        info.children = vec![ChildFile {
            name: "file".into(),
            path: self.storage.path().to_path_buf(),
        }];
        let d = &mut info.details;
        d.push(("disk-type".into(), f.disk_type.name().into()));
        let at = match self.footer_at {
            FooterAt::Start => "start".to_string(),
            FooterAt::End(o) => format!("end ({o:#x})"),
        };
        d.push(("footer-at".into(), at.into()));
        d.push(("creator-app".into(), f.creator_app_text().into()));
        let v = f.creator_version;
        d.push((
            "creator-version".into(),
            format!("{}.{}", v >> 16, v & 0xffff).into(),
        ));
        d.push(("creator-os".into(), f.creator_os_text().into()));
        d.push(("geometry".into(), f.geometry.to_string().into()));
        let sized_by = if self.size == f.geometry.total_sectors() * SECTOR_SIZE {
            "chs"
        } else {
            "current-size"
        };
        d.push(("size-from".into(), sized_by.into()));
        d.push(("current-size".into(), f.current_size.into()));
        d.push(("original-size".into(), f.original_size.into()));
        d.push(("uuid".into(), uuid_text(&f.uuid).into()));
        if let Some(dy) = &self.dynamic {
            d.push(("block-size".into(), u64::from(dy.bat.block_size()).into()));
            d.push(("bat-offset".into(), dy.bat.table_offset().into()));
            d.push(("bat-entries".into(), (dy.bat.entries().len() as u64).into()));
            d.push((
                "allocated-blocks".into(),
                (dy.bat.allocated() as u64).into(),
            ));
            if f.disk_type == DiskType::Differencing {
                // qemu 10 reads a differencing disk alone: its parent is not opened.
                d.push(("parent-name".into(), dy.header.parent_name.clone().into()));
                d.push((
                    "parent-uuid".into(),
                    uuid_text(&dy.header.parent_uuid).into(),
                ));
            }
        }
        Ok(info)
    }
}

/// A UUID in the usual 8-4-4-4-12 form, bytes in stored order.
fn uuid_text(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..].concat()
    )
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
