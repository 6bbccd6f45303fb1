//! Planning a conversion: walks the source's block status (never reading data) and turns it into
//! granule-aligned segments: data to read, known zeros, and (with a backing image for the target)
//! zeros that must be checked against the backing image.

use std::collections::VecDeque;
use std::sync::Arc;
use vdisk_core::{Error, ImageReader, Result};

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
    out: VecDeque<Segment>,
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
            out: VecDeque::new(),
        }
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
        let e = self.src.block_status(pos, self.size - pos)?;
        if e.offset != pos || e.length == 0 {
            return Err(Error::Other(format!(
                "{} block status returned an empty or misplaced extent at {pos}",
                self.src.format_name()
            )));
        }
        let end = pos.saturating_add(e.length).min(self.size);
        self.cursor = end;
        if !e.kind.reads_as_zero() {
            if self.open.is_none() {
                self.open = Some((pos, true));
            } else if let Some((start, false)) = self.open {
                // A zero segment is only ever open up to an aligned end, which is `pos` here.
                self.emit_zero(start, pos)?;
                self.open = Some((pos, true));
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
            let e = backing.block_status(pos, bend - pos)?;
            if e.offset != pos || e.length == 0 {
                return Err(Error::Other(format!(
                    "{} block status returned an empty or misplaced extent at {pos}",
                    backing.format_name()
                )));
            }
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
