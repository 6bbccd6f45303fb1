//! Read-only consistency check, the equivalent of `qemu-img check` without `-r`: recompute every
//! host cluster's reference count from the metadata (header, active and snapshot L1/L2 tables, the
//! snapshot table, refcount table and blocks, encryption header, bitmaps) and compare it with the
//! stored refcounts (qcow2.txt "Host cluster management"), then check the COPIED flags. Findings are
//! printed in QEMU's words (`qcow2_check_refcounts` in block/qcow2-refcount.c).

use crate::bitmap_dir::ENTRY_OFFSET as BME_OFFSET_MASK;
use crate::header::Extension;
use crate::limits;
use crate::reader::{read_u64_table_padded, Qcow2Reader};
use crate::refcount::Refcounts;
use crate::tables::{L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO};
use vdisk_core::{CheckReport, Result};

/// Bits of an L1 entry that must be zero (qcow2.txt "Cluster mapping": 1-8 and 56-62), which
/// QEMU 10's check reports.
const L1E_RESERVED_MASK: u64 = 0x7f00_0000_0000_01ff;

/// Bits of a standard (not compressed) L2 entry that must be zero (qcow2.txt "Standard Cluster
/// Descriptor": 1-8 and 56-61), which QEMU 10's check reports.
const L2E_STD_RESERVED_MASK: u64 = 0x3f00_0000_0000_01fe;

struct Ctx<'a> {
    r: &'a Qcow2Reader,
    /// Computed reference counts, saturating at u32::MAX (more references than that cannot come
    /// from tables within the L1 limit without also overflowing the stored width).
    refs: Vec<u32>,
    /// Host clusters (first, last) referenced a cluster or more past the end of the file, which
    /// `refs` does not count (QEMU's check does not either: it reports them).
    past_end: Vec<(u64, u64)>,
    max: u64,
    rep: CheckReport,
}

impl Ctx<'_> {
    fn cs(&self) -> u64 {
        self.r.header.cluster_size()
    }

    /// Adds one reference to every cluster overlapping `offset..offset+size`.
    fn inc(&mut self, offset: u64, size: u64) {
        if size == 0 {
            return;
        }
        let bits = self.r.header.cluster_bits;
        let first = offset >> bits;
        // The last cluster may be partly past the end of the file, but no more than that.
        let end = offset.checked_add(size);
        if end.is_none_or(|e| e >= self.r.file_len.saturating_add(self.cs())) {
            let last = end.map_or(u64::MAX, |e| (e - 1) >> bits);
            self.past_end.push((first, last));
            self.err(format!(
                "ERROR: counting reference for region exceeding the end of the file by one cluster or more: \
                 offset 0x{offset:x} size 0x{size:x}"
            ));
            return;
        }
        let last = (offset + size - 1) >> bits;
        for k in first..=last {
            if k >= limits::MAX_CHECK_CLUSTERS {
                self.rep.check_errors += 1;
                self.rep.messages.push(format!(
                    "ERROR: cluster offset=0x{:x} is beyond the {} clusters vdisk checks",
                    k << bits,
                    limits::MAX_CHECK_CLUSTERS
                ));
                return;
            }
            let k = k as usize;
            if k >= self.refs.len() {
                self.refs.resize(k + 1, 0);
            }
            if u64::from(self.refs[k]) >= self.max {
                self.err(format!(
                    "ERROR: overflow cluster offset=0x{:x}",
                    (k as u64) << bits
                ));
                // QEMU's advice follows every such line.
                self.rep.messages.push(
                    "Use qemu-img amend to increase the refcount entry width or qemu-img convert \
                     to create a clean copy if the image cannot be opened for writing"
                        .into(),
                );
                continue;
            }
            self.refs[k] = self.refs[k].saturating_add(1);
        }
    }

    fn err(&mut self, msg: String) {
        self.rep.corruptions += 1;
        self.rep.messages.push(msg);
    }

    fn l1(&mut self, offset: u64, size: u32, active: bool) {
        self.inc(offset, u64::from(size) * 8);
        let table = match read_words_in_file(self.r, offset, size as usize) {
            Ok(t) => t,
            Err(_) => {
                self.rep.check_errors += 1;
                self.rep
                    .messages
                    .push("ERROR: I/O error in check_refcounts_l1".into());
                return;
            }
        };
        for e in table {
            if e == 0 {
                continue;
            }
            if e & L1E_RESERVED_MASK != 0 {
                self.err(format!(
                    "ERROR found L1 entry with reserved bits set: {e:x}"
                ));
            }
            let l2 = e & L1E_OFFSET_MASK;
            self.inc(l2, self.cs());
            if l2 % self.cs() != 0 {
                self.err(format!(
                    "ERROR l2_offset={l2:x}: Table is not cluster aligned; L1 entry corrupted"
                ));
            }
            self.l2(l2, active);
        }
    }

    fn l2(&mut self, offset: u64, active: bool) {
        let g = self.r.geo;
        let words = (self.cs() / 8) as usize;
        let table = match read_words_in_file(self.r, offset, words) {
            Ok(t) => t,
            Err(_) => {
                self.rep.check_errors += 1;
                self.rep
                    .messages
                    .push("ERROR: I/O error in check_refcounts_l2".into());
                return;
            }
        };
        let data_file = self.r.header.has_data_file();
        let mut next_contiguous = 0u64;
        for (i, e) in table.chunks_exact(g.words_per_entry()).enumerate() {
            let entry = e[0];
            let bitmap = e.get(1).copied().unwrap_or(0);
            if entry & OFLAG_COMPRESSED == 0 && entry & L2E_STD_RESERVED_MASK != 0 {
                self.err(format!(
                    "ERROR found l2 entry with reserved bits set: {entry:x}"
                ));
            }
            if entry & OFLAG_COMPRESSED != 0 {
                if entry & OFLAG_COPIED != 0 {
                    let (c, _) = g.compressed(entry & !OFLAG_COPIED);
                    self.err(format!("ERROR: coffset=0x{c:x}: copied flag must never be set for compressed clusters"));
                }
                if data_file {
                    self.err(format!(
                        "ERROR compressed cluster {i} with data file, entry=0x{:x}",
                        entry & !OFLAG_COPIED
                    ));
                    continue;
                }
                // Extended L2: a compressed cluster has no subclusters, so no bitmap (QEMU's
                // check_refcounts_l2 then skips the entry: it is not counted).
                if bitmap != 0 {
                    self.err(format!(
                        "ERROR compressed cluster {i} with non-zero subcluster allocation bitmap, entry=0x{:x}",
                        entry & !OFLAG_COPIED
                    ));
                    continue;
                }
                let (c, size) = g.compressed(entry & !OFLAG_COPIED);
                self.inc(c, size);
                if active {
                    self.rep.allocated_clusters =
                        Some(self.rep.allocated_clusters.unwrap_or(0) + 1);
                    self.rep.compressed_clusters =
                        Some(self.rep.compressed_clusters.unwrap_or(0) + 1);
                    self.rep.fragmented_clusters =
                        Some(self.rep.fragmented_clusters.unwrap_or(0) + 1);
                }
                continue;
            }
            let host = entry & L2E_OFFSET_MASK;
            let zero = !g.extended && entry & OFLAG_ZERO != 0;
            let allocated = host != 0 || (data_file && entry & OFLAG_COPIED != 0 && !zero);
            if !allocated {
                if g.extended && bitmap & 0xffff_ffff != 0 {
                    self.err(
                        "ERROR: Unallocated cluster has non-zero subcluster allocation map".into(),
                    );
                }
                continue;
            }
            if (bitmap >> 32) & bitmap != 0 {
                self.err(format!("ERROR offset={host:x}: Allocated cluster has corrupted subcluster allocation bitmap"));
            }
            if host % self.cs() != 0 {
                let has_data = if g.extended {
                    bitmap & 0xffff_ffff != 0
                } else {
                    !zero
                };
                self.err(if has_data {
                    format!("ERROR offset={host:x}: Data cluster is not properly aligned; L2 entry corrupted.")
                } else {
                    format!("ERROR offset={host:x}: Preallocated cluster is not properly aligned; L2 entry corrupted.")
                });
            }
            if active {
                self.rep.allocated_clusters = Some(self.rep.allocated_clusters.unwrap_or(0) + 1);
                if next_contiguous != 0 && host != next_contiguous {
                    self.rep.fragmented_clusters =
                        Some(self.rep.fragmented_clusters.unwrap_or(0) + 1);
                }
                next_contiguous = host + self.cs();
            }
            if !data_file {
                self.inc(host, self.cs());
            }
        }
    }
}

/// The first words of the table of `count` big-endian words at `offset` that lie in the file, as
/// QEMU's check reads tables: past the end of the file its reads return zeros, and a zero entry
/// counts for nothing, so the words past the end are left out rather than allocated (a hostile
/// snapshot list can name many maximal L1 tables past the end). Whole 16-byte units are kept, so
/// that an extended L2 entry is never cut in two.
fn read_words_in_file(r: &Qcow2Reader, offset: u64, count: usize) -> Result<Vec<u64>> {
    let inside = r.file_len.saturating_sub(offset);
    let words = usize::try_from(inside.div_ceil(16).saturating_mul(2))
        .unwrap_or(usize::MAX)
        .min(count);
    read_u64_table_padded(r.storage.as_ref(), offset, words, r.file_len)
}

/// Runs the check.
pub fn check(r: &Qcow2Reader) -> Result<CheckReport> {
    check_with_refs(r).map(|c| c.report)
}

/// A check's report with what it computed on the way, for the changes made in place.
pub(crate) struct Counted {
    pub report: CheckReport,
    /// The reference count of every host cluster up to the end of the file (and of the cluster
    /// the end falls in).
    pub refs: Vec<u32>,
    /// The host clusters referenced a cluster or more past the end of the file, as sorted,
    /// disjoint (first, last) ranges.
    pub past_end: Vec<(u64, u64)>,
}

/// Runs the check and also returns the reference count computed for every host cluster (for
/// `mutate`), and the clusters referenced past the end of the file.
pub(crate) fn check_with_refs(r: &Qcow2Reader) -> Result<Counted> {
    let h = &r.header;
    let cs = h.cluster_size();
    let file_clusters = r.file_len.div_ceil(cs);
    if file_clusters > limits::MAX_CHECK_CLUSTERS {
        return Err(vdisk_core::Error::limit(
            &r.path,
            "host clusters to check",
            file_clusters,
            limits::MAX_CHECK_CLUSTERS,
        ));
    }
    let max = if h.refcount_order == 6 {
        u64::MAX
    } else {
        (1u64 << h.refcount_bits()) - 1
    };
    let mut c = Ctx {
        r,
        refs: vec![0; file_clusters as usize],
        past_end: Vec::new(),
        max,
        rep: CheckReport::default(),
    };
    c.rep.allocated_clusters = Some(0);
    c.rep.fragmented_clusters = Some(0);
    c.rep.compressed_clusters = Some(0);

    // QEMU's qcow2_check_read_snapshot_table, which runs first: every snapshot table entry of a
    // version 3 image holds at least the 16 bytes of extra data with the large VM state size and
    // the disk size (qcow2.txt "Snapshots": "Version 3 images must include extra data at least
    // up to byte 55").
    if h.version >= 3 {
        for (i, sn) in r.snapshots.iter().enumerate() {
            if sn.disk_size.is_none() {
                c.err(format!("ERROR snapshot table entry {i} is incomplete"));
            }
        }
    }
    c.inc(0, cs);
    c.l1(h.l1_table_offset, h.l1_size, true);
    for sn in &r.snapshots {
        if sn.l1_table_offset % cs != 0 {
            c.err(format!(
                "ERROR snapshot {} ({}) l1_offset={:#x}: L1 table is not cluster aligned; snapshot table entry corrupted",
                sn.id, sn.name, sn.l1_table_offset
            ));
            continue;
        }
        if u64::from(sn.l1_size) * 8 > limits::MAX_L1_BYTES {
            c.err(format!(
                "ERROR snapshot {} ({}) l1_size={:#x}: L1 table is too large; snapshot table entry corrupted",
                sn.id, sn.name, sn.l1_size
            ));
            continue;
        }
        c.l1(sn.l1_table_offset, sn.l1_size, false);
    }
    c.inc(h.snapshots_offset, r.snapshot_table_bytes);
    c.inc(
        h.refcount_table_offset,
        u64::from(h.refcount_table_clusters) * cs,
    );
    for e in &h.extensions {
        if let Extension::Crypto { offset, length } = e {
            c.inc(*offset, *length);
        }
    }
    check_bitmaps(&mut c)?;

    let mut stored = Refcounts::load(r)?;
    for i in 0..stored.table.len() {
        // As QEMU 10's check_refblocks: the reserved low bits first, whatever the offset.
        let raw = stored.table[i];
        if raw & !crate::refcount::REFT_OFFSET_MASK != 0 {
            c.err(format!(
                "ERROR refcount table entry {i} has reserved bits set"
            ));
            continue;
        }
        if raw == 0 {
            continue;
        }
        if raw % cs != 0 {
            c.err(format!(
                "ERROR refcount block {i} is not cluster aligned; refcount table entry corrupted"
            ));
            continue;
        }
        if raw >> h.cluster_bits >= c.refs.len() as u64 {
            c.err(format!("ERROR refcount block {i} is outside image"));
            continue;
        }
        c.inc(raw, cs);
        let k = (raw >> h.cluster_bits) as usize;
        if c.refs.get(k).copied() != Some(1u32) {
            c.err(format!(
                "ERROR refcount block {i} refcount={}",
                c.refs.get(k).copied().unwrap_or(0)
            ));
        }
    }

    let mut highest = 0u64;
    for i in 0..c.refs.len() {
        let computed = u64::from(c.refs[i]);
        let on_disk = match stored.get(i as u64) {
            Ok(v) => v,
            Err(e) => {
                c.rep.check_errors += 1;
                // As QEMU words it: the reason alone ("Input/output error").
                let why = match &e {
                    vdisk_core::Error::Io { source, .. } => vdisk_core::error::io_message(source),
                    other => other.to_string(),
                };
                c.rep
                    .messages
                    .push(format!("Can't get refcount for cluster {i}: {why}"));
                continue;
            }
        };
        if on_disk > 0 || computed > 0 {
            highest = i as u64;
        }
        if on_disk != computed {
            let line = format!("cluster {i} refcount={on_disk} reference={computed}");
            if on_disk < computed {
                c.err(format!("ERROR {line}"));
            } else {
                c.rep.leaks += 1;
                c.rep.messages.push(format!("Leaked {line}"));
            }
        }
    }
    check_copied(&mut c, &mut stored);
    c.rep.image_end_offset = Some((highest + 1) * cs);
    c.rep.total_clusters = Some(r.size.div_ceil(cs));
    let mut past_end = c.past_end;
    past_end.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(past_end.len());
    for (a, b) in past_end {
        match merged.last_mut() {
            Some(m) if a <= m.1.saturating_add(1) => m.1 = m.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    Ok(Counted {
        report: c.rep,
        refs: c.refs,
        past_end: merged,
    })
}

fn check_bitmaps(c: &mut Ctx) -> Result<()> {
    let Some(ext) = c.r.header.bitmaps() else {
        return Ok(());
    };
    c.inc(ext.directory_offset, ext.directory_size);
    for b in c.r.bitmaps() {
        c.inc(b.table_offset, u64::from(b.table_size) * 8);
        let t =
            c.r.read_table_words(b.table_offset, b.table_size as usize, "bitmap table")?;
        // QEMU's qcow2_check_bitmaps_refcounts loads each table as `load_bitmap` does (also that
        // of a bitmap in use, which opening skipped): an invalid entry makes the check fail.
        if t.iter()
            .any(|e| !crate::bitmap_dir::table_entry_ok(*e, c.cs()))
        {
            return Err(vdisk_core::Error::Other(
                "Check failed: Invalid argument".into(),
            ));
        }
        for e in t {
            let off = e & BME_OFFSET_MASK;
            if off != 0 {
                c.inc(off, c.cs());
            }
        }
    }
    Ok(())
}

/// QEMU's check_oflag_copied: the COPIED flag must be set exactly when the refcount is 1.
fn check_copied(c: &mut Ctx, stored: &mut Refcounts) {
    let r = c.r;
    let g = r.geo;
    let bits = g.cluster_bits;
    let l1 = match read_words_in_file(r, r.header.l1_table_offset, r.header.l1_size as usize) {
        Ok(t) => t,
        Err(_) => return,
    };
    for (i, l1e) in l1.iter().enumerate() {
        let l2 = l1e & L1E_OFFSET_MASK;
        if l2 == 0 {
            continue;
        }
        let Ok(rc) = stored.get(l2 >> bits) else {
            continue;
        };
        if (rc == 1) != (l1e & OFLAG_COPIED != 0) {
            c.err(format!(
                "ERROR OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={l1e:x} refcount={rc}"
            ));
        }
        let Ok(t) = read_words_in_file(r, l2, (c.cs() / 8) as usize) else {
            c.rep.check_errors += 1;
            c.rep.messages.push("ERROR: Could not read L2 table".into());
            return;
        };
        for e in t.chunks_exact(g.words_per_entry()) {
            let entry = e[0];
            if entry & OFLAG_COMPRESSED != 0 {
                continue;
            }
            let host = entry & L2E_OFFSET_MASK;
            let data_file = r.header.has_data_file();
            let zero = !g.extended && entry & OFLAG_ZERO != 0;
            if host == 0 && !(data_file && entry & OFLAG_COPIED != 0 && !zero) {
                continue;
            }
            let rc = if data_file {
                1
            } else {
                match stored.get(host >> bits) {
                    Ok(v) => v,
                    Err(_) => continue,
                }
            };
            if (rc == 1) != (entry & OFLAG_COPIED != 0) {
                c.err(format!(
                    "ERROR OFLAG_COPIED data cluster: l2_entry={entry:x} refcount={rc}"
                ));
            }
        }
    }
}
