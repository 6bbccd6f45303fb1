//! What the `vdisk` command does when a signal ends it: the new images it was writing are removed
//! (their hidden temporary files, see `vdisk::core::pending`) before the process goes.
//!
//! - SIGINT, SIGTERM, SIGHUP: the temporary files are removed, then the process dies of the same
//!   signal, as it would have without a handler (a shell sees "killed by SIGINT").
//! - SIGBUS: `convert` reads sources through memory maps (`vdisk::core::FileMap`), and a source that
//!   another process truncates meanwhile raises SIGBUS on the next read of the lost part. The
//!   temporary files are removed, a message says what happened, and the exit code is 1.
//!
//! - SIGUSR1, once a command with progress output (`convert`, `compare`, `rebase`, `amend`,
//!   `commit`) has started without `-p`: the next progress step is printed on standard error, as
//!   qemu-img prints it ([`progress_on_usr1`]). Other commands die of it, as qemu-img's do.
//!
//! A handler may only call async-signal-safe functions, so it does not clean up itself: it writes
//! the signal's number into a pipe and a watcher thread, which may take locks, does the rest. The
//! thread that raised SIGBUS cannot go on (returning would repeat the faulting read), so it waits in
//! the handler until the watcher ends the process.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The pipe's write end, for the handlers; -1 until `install` made it.
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// The signals handled, each ending the process after cleanup.
const SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGBUS];

const SIGBUS_MESSAGE: &[u8] = b"vdisk: a source file shrank while it was being read (SIGBUS); \
the output was not completed\n";

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    let byte = sig as u8;
    // SAFETY: write(2) and pause(2) are async-signal-safe; `byte` lives across the call.
    unsafe {
        libc::write(fd, (&byte as *const u8).cast(), 1);
        if sig == libc::SIGBUS {
            loop {
                libc::pause();
            }
        }
    }
}

/// Starts the watcher and installs the handlers. Without a pipe or a thread (resources exhausted)
/// it installs nothing: signals then act as they do by default, leaving temporary files behind.
pub fn install() {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    let read_end = fds[0];
    let watcher = std::thread::Builder::new()
        .name("vdisk-signals".into())
        // Small: the thread only waits, unlinks and exits.
        .stack_size(64 << 10)
        .spawn(move || watch(read_end));
    if watcher.is_err() {
        return;
    }
    PIPE_WRITE.store(fds[1], Ordering::Relaxed);
    for sig in SIGNALS {
        // SAFETY: a zeroed sigaction is a valid start; the handler only calls async-signal-safe
        // functions and reads an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Set by SIGUSR1: the next progress step is to be printed (see `crate::progress`).
pub static PROGRESS_ASKED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_sig: libc::c_int) {
    PROGRESS_ASKED.store(true, Ordering::Relaxed);
}

/// qemu's `progress_dummy_init`: SIGUSR1 asks for the next progress step instead of ending the
/// process.
pub fn progress_on_usr1() {
    // SAFETY: a zeroed sigaction is a valid start; the handler only stores into an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigfillset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

/// Waits for a handler's byte, removes the uncommitted outputs and ends the process.
fn watch(read_end: libc::c_int) {
    let mut byte = 0u8;
    loop {
        // SAFETY: reads one byte into `byte`, which lives across the call.
        let n = unsafe { libc::read(read_end, (&mut byte as *mut u8).cast(), 1) };
        if n == 1 {
            break;
        }
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        // The write end is never closed, so this does not happen. If it does, give the signals
        // back their default actions: with no watcher, a handled SIGINT would do nothing and a
        // SIGBUS would wait forever.
        for sig in SIGNALS {
            // SAFETY: resets a disposition; no handler runs afterwards.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        return;
    }
    vdisk::core::pending::remove_all();
    let sig = libc::c_int::from(byte);
    // SAFETY: write(2), signal(2), raise(2) and _exit(2) end the process; nothing here returns
    // into Rust code that could observe a half-finished state.
    unsafe {
        if sig == libc::SIGBUS {
            libc::write(2, SIGBUS_MESSAGE.as_ptr().cast(), SIGBUS_MESSAGE.len());
            libc::_exit(1);
        }
        // Die of the signal itself, as without a handler; _exit covers a signal that is blocked.
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
        libc::_exit(128 + sig);
    }
}
