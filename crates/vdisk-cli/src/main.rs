//! The `vdisk` command: qemu-img's commands, flags, size syntax, output and exit codes, for raw, qcow2,
//! VMDK and VDI images.

mod check;
mod cli;
mod commands;
mod info;
mod json;
mod map;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    report_sigbus();
    let args = cli::Cli::parse();
    match commands::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vdisk: {e}");
            ExitCode::from(1)
        }
    }
}

/// `convert` reads source data through memory maps (`vdisk_core::FileMap`); a source file that
/// another process truncates meanwhile makes those reads raise SIGBUS. Say so and exit with 1
/// instead of dying with "Bus error". The output stays under its hidden temporary name, never
/// under the name asked for.
fn report_sigbus() {
    extern "C" fn on_sigbus(_: libc::c_int) {
        const MSG: &[u8] = b"vdisk: a source file shrank while it was being read (SIGBUS); \
the output was not completed\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe; MSG is a static buffer.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::_exit(1);
        }
    }
    // SAFETY: installs a handler that only calls async-signal-safe functions.
    unsafe {
        libc::signal(
            libc::SIGBUS,
            on_sigbus as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}
