//! Planning a conversion: walks the source's block status (never reading data) and turns it into
//! granule-aligned segments: data to read, known zeros, and (with a backing image for the target)
//! zeros that must be checked against the backing image.

use std::collections::VecDeque;
use std::sync::Arc;
use vdisk_core::reader::checked_copy_status;
use vdisk_core::{ExtentKind, ImageReader, Result};

/// What a segment of the disk needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegKind {
    /// Read from the source and store (zero runs inside found by scanning).
    Data,
    /// Known zeros in the source.
    Zero,
    /// Known zeros in the source over a backing image that may hold data there: read the backing.
    ZeroOverBacking,
    /// Known zeros in both the source and the target's backing image: nothing to do.
    Same,
}

/// The longest range qemu-img asks one block-status query about (qemu-img.c
/// `convert_iteration_sectors`: `BDRV_REQUEST_MAX_SECTORS`, i.e. `INT_MAX >> 9` sectors). A data
/// extent longer than that ends one run of buffers there and starts the next.
pub const QEMU_MAX_REQUEST: u64 = (i32::MAX as u64 >> 9) * 512;

/// A run of the disk with one plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: u64,
    pub end: u64,
    pub kind: SegKind,
}

/// Produces segments in offset order, lazily, so that memory does not grow with the image.
pub struct Planner<'a> {
    src: &'a dyn ImageReader,
    backing: Option<Arc<dyn ImageReader>>,
    size: u64,
    granule: u64,
    /// Where the next block-status query starts.
    cursor: u64,
    /// Start of the open (not yet emitted) segment and whether it is data.
    open: Option<(u64, bool)>,
    /// Longest block-status query; a data extent cut by it closes its data segment there (qemu's
    /// buffers restart at the next query). `u64::MAX` when segments are merged freely.
    max_query: u64,
    out: VecDeque<Segment>,
    /// Whether any block-status answer so far was compressed data.
    seen_compressed: bool,
}

impl<'a> Planner<'a> {
    pub fn new(
        src: &'a dyn ImageReader,
        backing: Option<Arc<dyn ImageReader>>,
        granule: u64,
    ) -> Self {
        Planner {
            src,
            backing,
            size: src.virtual_size(),
            granule,
            cursor: 0,
            open: None,
            max_query: u64::MAX,
            out: VecDeque::new(),
            seen_compressed: false,
        }
    }

    /// Queries block status at most [`QEMU_MAX_REQUEST`] bytes at a time and restarts data
    /// segments where a query ends inside data, as qemu-img does.
    pub fn with_qemu_queries(mut self) -> Self {
        self.max_query = QEMU_MAX_REQUEST;
        self
    }

    fn up(&self, x: u64) -> u64 {
        x.div_ceil(self.granule)
            .saturating_mul(self.granule)
            .min(self.size)
    }

    fn down(&self, x: u64) -> u64 {
        if x >= self.size {
            self.size
        } else {
            x / self.granule * self.granule
        }
    }

    /// Whether the source has reported compressed data so far (in or ahead of the segments handed
    /// out): reading it costs CPU rather than waiting on I/O.
    pub fn seen_compressed(&self) -> bool {
        self.seen_compressed
    }

    /// The next segment, or `None` at the end of the disk. Data segments are at most `chunk` long
    /// when handed out before their end is known; others may be long and are cut by the caller.
    pub fn next_segment(&mut self, chunk: u64) -> Result<Option<Segment>> {
        loop {
            if let Some(s) = self.out.pop_front() {
                return Ok(Some(s));
            }
            if let Some((start, true)) = self.open {
                // Enough data known: hand out a chunk before the rest of the run is known.
                if self.cursor >= start.saturating_add(chunk) {
                    self.open = Some((start + chunk, true));
                    return Ok(Some(Segment {
                        start,
                        end: start + chunk,
                        kind: SegKind::Data,
                    }));
                }
            }
            if self.cursor >= self.size {
                self.close(self.size)?;
                if self.out.is_empty() {
                    return Ok(None);
                }
                continue;
            }
            self.step()?;
        }
    }

    fn step(&mut self) -> Result<()> {
        let pos = self.cursor;
        let want = (self.size - pos).min(self.max_query);
        let e = checked_copy_status(self.src, pos, want)?;
        let end = pos.saturating_add(e.length).min(pos + want);
        self.cursor = end;
        self.seen_compressed |= e.kind == ExtentKind::Compressed;
        if !e.kind.reads_as_zero() {
            if self.open.is_none() {
                self.open = Some((pos, true));
            } else if let Some((start, false)) = self.open {
                // A zero segment is only ever open up to an aligned end, which is `pos` here.
                self.emit_zero(start, pos)?;
                self.open = Some((pos, true));
            }
            if end == pos + want && end < self.size && want == self.max_query {
                // Cut by the query length: the next data starts a new run of buffers.
                if let Some((start, true)) = self.open.take() {
                    self.out.push_back(Segment {
                        start,
                        end,
                        kind: SegKind::Data,
                    });
                }
            }
            return Ok(());
        }
        let (a, b) = (self.up(pos), self.down(end));
        if a >= b {
            // Less than a granule of zeros: part of the surrounding data.
            match self.open {
                None => self.open = Some((pos, true)),
                Some((start, false)) => {
                    self.emit_zero(start, pos)?;
                    self.open = Some((pos, true));
                }
                Some((_, true)) => {}
            }
            return Ok(());
        }
        match self.open {
            Some((start, true)) => {
                if a > start {
                    self.out.push_back(Segment {
                        start,
                        end: a,
                        kind: SegKind::Data,
                    });
                }
                self.open = Some((a, false));
            }
            Some((_, false)) => {}
            None => {
                if a > pos {
                    self.out.push_back(Segment {
                        start: pos,
                        end: a,
                        kind: SegKind::Data,
                    });
                }
                self.open = Some((a, false));
            }
        }
        // An unaligned tail of zeros belongs to whatever follows; data is the safe choice.
        if b < end {
            if let Some((start, false)) = self.open {
                self.emit_zero(start, b)?;
            }
            self.open = Some((b, true));
        }
        Ok(())
    }

    fn close(&mut self, end: u64) -> Result<()> {
        match self.open.take() {
            Some((start, true)) if end > start => self.push_merged(Segment {
                start,
                end,
                kind: SegKind::Data,
            }),
            Some((start, false)) if end > start => self.emit_zero(start, end)?,
            _ => {}
        }
        Ok(())
    }

    /// Emits known zeros `start..end`; with a backing image, split by what the backing holds there:
    /// where it is known to read as zeros too nothing needs doing, elsewhere whole granules of it
    /// are read and checked.
    fn emit_zero(&mut self, start: u64, end: u64) -> Result<()> {
        let Some(backing) = self.backing.clone() else {
            self.push_merged(Segment {
                start,
                end,
                kind: SegKind::Zero,
            });
            return Ok(());
        };
        let bend = end.min(backing.virtual_size());
        let mut pos = start;
        let mut done = start;
        while pos < bend {
            let e = checked_copy_status(backing.as_ref(), pos, bend - pos)?;
            let q = pos.saturating_add(e.length).min(bend);
            let (kind, seg_end) = if e.kind.reads_as_zero() {
                (SegKind::Same, self.down(q))
            } else {
                (SegKind::ZeroOverBacking, self.up(q).min(end))
            };
            if seg_end > done {
                self.push_merged(Segment {
                    start: done,
                    end: seg_end,
                    kind,
                });
                done = seg_end;
            }
            pos = q;
        }
        if done < end {
            self.push_merged(Segment {
                start: done,
                end,
                kind: SegKind::Same,
            });
        }
        Ok(())
    }

    fn push_merged(&mut self, seg: Segment) {
        if seg.end <= seg.start {
            return;
        }
        match self.out.back_mut() {
            Some(last) if last.kind == seg.kind && last.end == seg.start => last.end = seg.end,
            _ => self.out.push_back(seg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdisk_core::{Extent, ExtentKind, ImageInfo};

    /// `size` bytes of data, reported as one extent as long as asked for.
    struct AllData(u64);

    impl ImageReader for AllData {
        fn format_name(&self) -> &'static str {
            "all-data"
        }
        fn virtual_size(&self) -> u64 {
            self.0
        }
        fn read_at(&self, buf: &mut [u8], _offset: u64) -> Result<()> {
            buf.fill(1);
            Ok(())
        }
        fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
            Ok(Extent::new(
                offset,
                (self.0 - offset).min(max_len),
                ExtentKind::Data,
            ))
        }
        fn info(&self) -> Result<ImageInfo> {
            Ok(ImageInfo::new("all-data", self.0))
        }
    }

    fn starts(p: &mut Planner<'_>, chunk: u64) -> Vec<u64> {
        let mut v = Vec::new();
        while let Some(s) = p.next_segment(chunk).unwrap() {
            assert_eq!(s.kind, SegKind::Data);
            let mut at = s.start;
            while at < s.end {
                v.push(at);
                at = (at + chunk).min(s.end);
            }
        }
        v
    }

    #[test]
    fn data_beyond_qemus_query_length_restarts_its_buffers_there() {
        let size = 2 * QEMU_MAX_REQUEST + (5 << 20);
        let src = AllData(size);
        let chunk = 2 << 20;
        let qemu = starts(
            &mut Planner::new(&src, None, 512).with_qemu_queries(),
            chunk,
        );
        // qemu: 2 MiB buffers from 0, a short one before each query boundary, then 2 MiB again.
        assert!(qemu.contains(&QEMU_MAX_REQUEST) && qemu.contains(&(2 * QEMU_MAX_REQUEST)));
        assert!(qemu.contains(&(QEMU_MAX_REQUEST + chunk)));
        let merged = starts(&mut Planner::new(&src, None, 512), chunk);
        assert!(merged.iter().all(|s| s % chunk == 0));
        assert!(!merged.contains(&QEMU_MAX_REQUEST));
    }
}
