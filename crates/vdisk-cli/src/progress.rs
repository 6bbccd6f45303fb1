//! `-p`: qemu-img's progress lines (util/qemu-progress.c, `progress_simple_print`), the same state
//! machine in the same single-precision arithmetic, so a script that logs them sees qemu-img's
//! lines: `    (P/100%)` ended by a carriage return on standard output, printed when the
//! percentage has moved by more than the command's `min_skip` since the last line (or is 0 or
//! 100), then a line feed when the command ends. Without `-p`, SIGUSR1 makes the next due step
//! print `    (P/100%)` and a line feed on standard error (qemu's `progress_dummy_print`).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// qemu's `struct progress_state`: where the command is, and the last percentage printed.
#[derive(Debug)]
struct State {
    current: f32,
    last_print: f32,
}

/// One command's progress (`qemu_progress_init(enabled, min_skip)`); nothing is printed when it
/// was not enabled. [`QemuProgress::end`] ends the output; dropping it leaves that to [`finish`].
/// Shared across threads (convert reports from its workers).
#[derive(Debug)]
pub struct QemuProgress {
    enabled: bool,
    min_skip: f32,
    state: Mutex<State>,
}

impl QemuProgress {
    /// `qemu_progress_init`: `min_skip` is 1.0 for convert, commit and amend, 2.0 for compare and
    /// rebase, as in qemu-img.c.
    pub fn new(enabled: bool, min_skip: f32) -> Self {
        if !enabled {
            crate::signals::progress_on_usr1();
        }
        QemuProgress {
            enabled,
            min_skip,
            state: Mutex::new(State {
                current: 0.0,
                last_print: 0.0,
            }),
        }
    }

    /// `qemu_progress_print(delta, max)`: with `max` 0, `delta` is the new percentage; otherwise the
    /// percentage grows by `delta / 100 * max`. Capped at 100.
    pub fn print(&self, delta: f32, max: u32) {
        let Some(p) = self.step(delta, max) else {
            return;
        };
        if self.enabled {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "{}", line(p));
            let _ = out.flush();
        } else if crate::signals::PROGRESS_ASKED.swap(false, Ordering::Relaxed) {
            eprintln!("    ({:3.2}/100%)", p as f64);
        }
    }

    /// The state change of [`QemuProgress::print`]: the percentage to print, if any.
    fn step(&self, delta: f32, max: u32) -> Option<f32> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut current = if max == 0 {
            delta
        } else {
            s.current + delta / 100.0 * max as f32
        };
        if current > 100.0 {
            current = 100.0;
        }
        s.current = current;
        let due = current > s.last_print + self.min_skip
            || current < s.last_print - self.min_skip
            || current == 100.0
            || current == 0.0;
        if due {
            s.last_print = current;
        }
        due.then_some(current)
    }

    /// The share `part / whole` of the work done since the last call (compare's
    /// `qemu_progress_print((float) chunk / progress_base * 100, 100)`).
    pub fn advance(&self, part: u64, whole: u64) {
        if whole > 0 {
            self.print(part as f32 / whole as f32 * 100.0, 100);
        }
    }
}

impl QemuProgress {
    /// `qemu_progress_end` now: the line feed after the last line, before what the command prints
    /// next (commit's "Image committed.").
    pub fn end(mut self) {
        if self.enabled {
            println!();
        }
        self.enabled = false;
    }
}

/// Set when a command's progress was dropped without [`QemuProgress::end`]: a way out that may
/// still print an error, which qemu-img prints before its `qemu_progress_end`.
static END_PENDING: AtomicBool = AtomicBool::new(false);

/// A command ended without [`QemuProgress::end`] (an error, or a return on the way): the line
/// feed waits for [`finish`], which `main` calls after printing the error, if any.
impl Drop for QemuProgress {
    fn drop(&mut self) {
        if self.enabled {
            END_PENDING.store(true, Ordering::Relaxed);
        }
    }
}

/// The line feed of a progress output that was not ended yet (see the `Drop` of
/// [`QemuProgress`]); `main` calls it last.
pub fn finish() {
    if END_PENDING.swap(false, Ordering::Relaxed) {
        println!();
    }
}

/// One line, as C's `printf("    (%3.2f/100%%)\r", current)` writes it (the float promoted to
/// double, rounded half to even on its exact value, as glibc rounds).
fn line(p: f32) -> String {
    format!("    ({:3.2}/100%)\r", p as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(min_skip: f32, steps: &[(f32, u32)]) -> Vec<f32> {
        let p = QemuProgress::new(false, min_skip);
        steps.iter().filter_map(|&(d, m)| p.step(d, m)).collect()
    }

    #[test]
    fn lines_are_printed_past_min_skip_and_at_both_ends() {
        // 32 steps of 3.125% with compare's min_skip of 2: every step is printed.
        let steps: Vec<(f32, u32)> = std::iter::once((0.0, 100))
            .chain(std::iter::repeat_n((3.125, 100), 32))
            .collect();
        assert_eq!(printed(2.0, &steps).len(), 33);
        // Steps of 1.5% with a min_skip of 2: every other step.
        let small: Vec<(f32, u32)> = std::iter::repeat_n((1.5, 100), 4).collect();
        assert_eq!(printed(2.0, &small), vec![3.0, 6.0]);
        // Capped at 100, which is always printed.
        assert_eq!(
            printed(1.0, &[(99.5, 0), (50.0, 100), (100.0, 0)]),
            vec![99.5, 100.0, 100.0]
        );
    }

    #[test]
    fn the_line_has_qemus_format() {
        // "%3.2f" of a float promoted to double: 3.125 rounds to even as C's printf does.
        assert_eq!(line(3.125), "    (3.12/100%)\r");
        assert_eq!(line(9.375), "    (9.38/100%)\r");
        assert_eq!(line(15.625), "    (15.62/100%)\r");
        assert_eq!(line(0.0), "    (0.00/100%)\r");
        assert_eq!(line(100.0), "    (100.00/100%)\r");
    }
}
