//! Completing an image: the last L2 table, the L1 table, the refcount blocks and table, and the
//! header with its extensions written last (qcow2.txt "Header", "Header extensions").

use super::file::io;
use super::layout::COPIED;
use super::{CompressionType, Placement, Qcow2Writer};
use crate::header::{self, Extension, Header};
use std::os::unix::fs::FileExt;
use vdisk_core::StoredName;
use vdisk_core::{Error, Result};

impl Qcow2Writer {
    pub(super) fn header(&self) -> Header {
        let s = &self.s;
        let v3 = s.version >= 3;
        let mut extensions = Vec::new();
        if let Some(f) = &s.backing_fmt {
            extensions.push(Extension::BackingFormat(f.clone()));
        }
        if let Some(d) = &s.data_file {
            extensions.push(Extension::DataFile(d.clone()));
        }
        // qemu writes the feature name table only with clusters above 4 KiB, leaving small
        // clusters room for the backing file name.
        if v3 && s.cluster_size() > 4096 {
            extensions.push(crate::header::extensions::qemu_feature_table());
        }
        let mut incompat = 0;
        if s.data_file.is_some() {
            incompat |= header::incompat::DATA_FILE;
        }
        if s.compression == CompressionType::Zstd {
            incompat |= header::incompat::COMPRESSION;
        }
        if s.extended_l2 {
            incompat |= header::incompat::EXTL2;
        }
        Header {
            version: s.version,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits: s.cluster_bits,
            size: s.size,
            crypt_method: 0,
            l1_size: s.l1_entries() as u32,
            l1_table_offset: self.l1_at,
            refcount_table_offset: self.reftable.0,
            refcount_table_clusters: self.reftable.1 as u32,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible_features: incompat,
            compatible_features: if s.lazy_refcounts {
                header::compat::LAZY_REFCOUNTS
            } else {
                0
            },
            autoclear_features: if s.data_file_raw {
                header::autoclear::DATA_FILE_RAW
            } else {
                0
            },
            refcount_order: s.refcount_order,
            header_length: if v3 { 112 } else { header::V2_HEADER_LEN },
            compression_type: match s.compression {
                CompressionType::Zlib => header::COMPRESSION_ZLIB,
                CompressionType::Zstd => header::COMPRESSION_ZSTD,
            },
            extensions,
            backing_file: s.backing_file.as_deref().map(StoredName::from),
        }
    }

    /// Writes the L1 table: all its entries, unused ones zero.
    pub(super) fn write_l1(&mut self) -> Result<()> {
        // All l1_size entries, as qemu writes them, 64 KiB at a time.
        const PIECE: u64 = 8192;
        let entries = self.s.l1_entries();
        let mut first = 0u64;
        while first < entries {
            let end = (first + PIECE).min(entries);
            let mut buf = vec![0u8; ((end - first) * 8) as usize];
            for (&region, &l2) in self.l1.range(first..end) {
                let i = ((region - first) * 8) as usize;
                buf[i..i + 8].copy_from_slice(&(l2 | COPIED).to_be_bytes());
            }
            self.write_image(self.l1_at + first * 8, &buf)?;
            first = end;
        }
        Ok(())
    }

    pub(super) fn finish_image(mut self) -> Result<()> {
        self.flush_partial()?;
        // Every data cluster is written before any table that points at it.
        if let Some(p) = self.pool.take() {
            p.drain()?;
        }
        let regions = self.s.l1_entries();
        self.enter_region(regions)?;
        if let Some(t) = self.l2.take() {
            self.flush_table(t)?;
        }
        for t in std::mem::take(&mut self.others) {
            self.flush_table(t)?;
        }
        self.place_refblocks()?;
        self.write_l1()?;
        let out = &self.out;
        let (table_at, t) = self.reftable;
        self.refs.finish(
            &mut |off, b| out.file().write_all_at(b, off).map_err(io(out.dest(), off)),
            table_at,
            t,
        )?;
        let h = self.header().serialize();
        if h.len() as u64 > self.cs() {
            return Err(Error::invalid(
                "qcow2 header and backing file name do not fit in the first cluster",
            ));
        }
        // The header goes last: until now cluster 0 was zeros, not an image.
        self.write_image(0, &h)?;
        let Qcow2Writer { out, placement, .. } = self;
        if let Placement::DataFile(d) = placement {
            d.commit()?;
        }
        out.commit()
    }
}
