//! From qemu's byte-exact `-S` decisions to whole writer granules (clusters, grains, blocks).
//!
//! qemu-img convert judges zeros one buffer at a time, and its buffers follow the source's block
//! status (qemu-img.c `convert_iteration_sectors`: one buffer never crosses an extent boundary, a
//! data extent is cut into `buf_sectors` buffers from its own start, holes are never read). The
//! data runs it then writes (`convert_co_write`, `is_allocated_sectors_min` with
//! `s->alignment = pow2floor(min_sparse)` as the target's request alignment is one byte for every
//! format written here) allocate each cluster they touch; zero runs on a zero-initialised target
//! are not written at all. So a granule is written as data exactly when one byte of it lies in a
//! data run, and is otherwise zeros.
//!
//! Tasks follow qemu's buffers, so their ends are rarely granule-aligned: a task turns the granules
//! wholly inside it into payloads itself, and hands the pieces of the (at most two) granules it
//! shares with its neighbours to the writer thread as [`Fragment`]s, which an [`Assembler`] joins
//! into whole granules.

use std::collections::BTreeMap;
use vdisk_core::DataBuf;

/// A piece of a granule that a task covers only in part.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Fragment {
    /// Guest offset of the piece.
    pub at: u64,
    pub len: u64,
    /// The piece's bytes when one of them is data (zeros elsewhere); `None` for zeros only.
    pub bytes: Option<Vec<u8>>,
}

/// What a granule-aligned range becomes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    Data(DataBuf),
    Zero(u64),
}

/// A task's range `start..end` in granules: the pieces of shared granules and the aligned body.
#[derive(Debug, Default)]
pub(crate) struct Granules {
    pub head: Option<Fragment>,
    pub body: Vec<(u64, Piece)>,
    pub tail: Option<Fragment>,
}

/// Where the granule holding `pos` starts and ends (the last one ends at the disk's end).
fn granule_of(pos: u64, granule: u64, size: u64) -> (u64, u64) {
    let start = pos / granule * granule;
    (start, start.saturating_add(granule).min(size))
}

/// Turns the runs `(len, is_data)` of `start..end` (a task; `buf` holds its bytes, `None` meaning
/// zeros, which needs every run to be zeros) into granules of `granule` bytes of a disk of `size`
/// bytes: granules wholly inside the range become payloads, whole data granules when one of their
/// bytes is data, and the pieces of granules shared with neighbouring tasks become fragments.
pub(crate) fn to_granules(
    start: u64,
    end: u64,
    granule: u64,
    size: u64,
    runs: &[(u64, bool)],
    buf: Option<DataBuf>,
) -> Granules {
    let mut out = Granules::default();
    if end <= start {
        return out;
    }
    let (first_start, first_end) = granule_of(start, granule, size);
    let (last_start, last_end) = granule_of(end - 1, granule, size);
    // The granules holding data bytes, as sorted and merged byte ranges of whole granules (one per
    // data run at most, so a huge zero task needs no memory per granule).
    let mut spans: Vec<(u64, u64)> = Vec::new();
    let mut pos = start;
    for &(len, data) in runs {
        if data && len > 0 {
            let a = granule_of(pos, granule, size).0;
            let b = granule_of(pos + len - 1, granule, size).1;
            match spans.last_mut() {
                Some(last) if last.1 >= a => last.1 = last.1.max(b),
                _ => spans.push((a, b)),
            }
        }
        pos += len;
    }
    let has_data = |g: u64| spans.iter().any(|&(a, b)| a <= g && g < b);
    let fragment = |from: u64, to: u64, data: bool| Fragment {
        at: from,
        len: to - from,
        bytes: data.then(|| match &buf {
            Some(b) => b[(from - start) as usize..(to - start) as usize].to_vec(),
            None => vec![0; (to - from) as usize],
        }),
    };
    let head_partial = start > first_start || end < first_end;
    let tail_partial = last_start > first_start && end < last_end;
    if head_partial {
        out.head = Some(fragment(start, first_end.min(end), has_data(first_start)));
    }
    if tail_partial {
        out.tail = Some(fragment(last_start, end, has_data(last_start)));
    }
    // The whole granules: from the first one not shared to the last one not shared.
    let body_start = if head_partial { first_end } else { first_start };
    let body_end = if tail_partial {
        last_start
    } else {
        last_end.min(end)
    };
    if body_start >= body_end {
        return out;
    }
    if body_start == start
        && body_end == end
        && spans.first().is_some_and(|&(a, b)| a <= start && b >= end)
    {
        if let Some(b) = buf {
            out.body.push((start, Piece::Data(b)));
            return out;
        }
    }
    let data_piece = |from: u64, to: u64| {
        Piece::Data(match &buf {
            Some(b) => b.slice((from - start) as usize..(to - start) as usize),
            None => DataBuf::from(vec![0; (to - from) as usize]),
        })
    };
    let mut cur = body_start;
    for &(a, b) in &spans {
        let (a, b) = (a.max(body_start), b.min(body_end));
        if a >= b {
            continue;
        }
        if a > cur {
            out.body.push((cur, Piece::Zero(a - cur)));
        }
        out.body.push((a, data_piece(a, b)));
        cur = b;
    }
    if cur < body_end {
        out.body.push((cur, Piece::Zero(body_end - cur)));
    }
    out
}

/// A granule being put together from fragments.
#[derive(Debug, Default)]
struct Partial {
    covered: u64,
    /// The granule's bytes, once a fragment with data arrived.
    bytes: Option<Vec<u8>>,
}

/// Joins fragments into whole granules on the writer thread. Every byte of the disk belongs to one
/// task, so the fragments of a granule never overlap and a granule is complete when they cover it.
#[derive(Debug)]
pub(crate) struct Assembler {
    granule: u64,
    size: u64,
    partial: BTreeMap<u64, Partial>,
}

impl Assembler {
    pub(crate) fn new(granule: u64, size: u64) -> Self {
        Assembler {
            granule,
            size,
            partial: BTreeMap::new(),
        }
    }

    /// Adds a fragment; returns the granule it completes (its start and what it is), if any.
    pub(crate) fn add(&mut self, f: Fragment) -> Option<(u64, Piece)> {
        let (gs, ge) = granule_of(f.at, self.granule, self.size);
        let glen = ge - gs;
        let p = self.partial.entry(gs).or_default();
        p.covered += f.len;
        if let Some(bytes) = f.bytes {
            let g = p.bytes.get_or_insert_with(|| vec![0; glen as usize]);
            let from = (f.at - gs) as usize;
            g[from..from + bytes.len()].copy_from_slice(&bytes);
        }
        if p.covered < glen {
            return None;
        }
        let p = self.partial.remove(&gs)?;
        Some(match p.bytes {
            Some(b) => (gs, Piece::Data(DataBuf::from(b))),
            None => (gs, Piece::Zero(glen)),
        })
    }

    /// Granules still waiting for fragments (none once every task has been handed over).
    pub(crate) fn pending(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(body: &[(u64, Piece)]) -> Vec<(u64, u64, bool)> {
        body.iter()
            .map(|(at, p)| match p {
                Piece::Data(b) => (*at, b.len() as u64, true),
                Piece::Zero(n) => (*at, *n, false),
            })
            .collect()
    }

    #[test]
    fn one_data_byte_makes_its_granule_data() {
        // 0..12288 with granule 4096: data only in 5000..5512.
        let buf: Vec<u8> = (0..12288u32)
            .map(|i| (5000..5512).contains(&i) as u8)
            .collect();
        let g = to_granules(
            0,
            12288,
            4096,
            1 << 20,
            &[(5000, false), (512, true), (12288 - 5512, false)],
            Some(DataBuf::from(buf.clone())),
        );
        assert!(g.head.is_none() && g.tail.is_none());
        assert_eq!(
            kinds(&g.body),
            vec![(0, 4096, false), (4096, 4096, true), (8192, 4096, false)]
        );
        match &g.body[1].1 {
            Piece::Data(b) => assert_eq!(&b[..], &buf[4096..8192]),
            Piece::Zero(_) => panic!("expected data"),
        }
    }

    #[test]
    fn unaligned_ends_become_fragments_that_the_assembler_joins() {
        // Task A: 0..6000 (data at its end), task B: 6000..10000 (zeros), granule 4096.
        let a = to_granules(
            0,
            6000,
            4096,
            10000,
            &[(5000, false), (1000, true)],
            Some(DataBuf::from(vec![7u8; 6000])),
        );
        assert!(a.head.is_none());
        assert_eq!(kinds(&a.body), vec![(0, 4096, false)]);
        let tail = a.tail.expect("a shares granule 4096..8192");
        assert_eq!((tail.at, tail.len), (4096, 6000 - 4096));
        assert!(tail.bytes.is_some());
        let b = to_granules(6000, 10000, 4096, 10000, &[(4000, false)], None);
        let head = b.head.expect("b shares granule 4096..8192");
        assert_eq!(
            (head.at, head.len, head.bytes.is_none()),
            (6000, 2192, true)
        );
        // The last granule 8192..10000 ends the disk: whole.
        assert_eq!(kinds(&b.body), vec![(8192, 1808, false)]);
        assert!(b.tail.is_none());
        let mut asm = Assembler::new(4096, 10000);
        assert_eq!(asm.add(head), None);
        assert_eq!(asm.pending(), 1);
        let (at, piece) = asm.add(tail).expect("granule complete");
        assert_eq!(at, 4096);
        let mut want = vec![7u8; 6000 - 4096];
        want.resize(4096, 0);
        assert_eq!(piece, Piece::Data(DataBuf::from(want)));
        assert_eq!(asm.pending(), 0);
    }

    #[test]
    fn a_task_inside_one_granule_is_one_fragment() {
        let g = to_granules(100, 300, 4096, 1 << 20, &[(200, false)], None);
        assert_eq!(
            g.head,
            Some(Fragment {
                at: 100,
                len: 200,
                bytes: None
            })
        );
        assert!(g.body.is_empty() && g.tail.is_none());
        let mut asm = Assembler::new(4096, 1 << 20);
        assert_eq!(asm.add(g.head.unwrap()), None);
        assert_eq!(
            asm.add(Fragment {
                at: 0,
                len: 100,
                bytes: None
            }),
            None
        );
        assert_eq!(
            asm.add(Fragment {
                at: 300,
                len: 4096 - 300,
                bytes: None
            }),
            Some((0, Piece::Zero(4096)))
        );
    }

    #[test]
    fn a_whole_data_task_keeps_its_buffer() {
        let g = to_granules(
            8192,
            16384,
            4096,
            1 << 20,
            &[(8192, true)],
            Some(DataBuf::from(vec![1u8; 8192])),
        );
        assert_eq!(kinds(&g.body), vec![(8192, 8192, true)]);
    }

    #[test]
    fn huge_zero_tasks_need_no_per_granule_memory() {
        let end = 1u64 << 50;
        let g = to_granules(512, end - 512, 1 << 16, end, &[(end - 1024, false)], None);
        assert_eq!(kinds(&g.body), vec![(1 << 16, end - (2 << 16), false)]);
        assert!(g.head.is_some() && g.tail.is_some());
    }
}
