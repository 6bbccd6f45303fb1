//! The `vdisk` command: qemu-img's commands, flags, size syntax, output and exit codes, for raw, qcow2,
//! VMDK, VDI and VHD images.

mod check;
mod cli;
mod commands;
mod image_opts;
mod info;
mod json;
mod map;
mod signals;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    signals::install();
    raise_open_file_limit();
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => return usage_error(&e),
    };
    match commands::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vdisk: {e}");
            ExitCode::from(1)
        }
    }
}

/// Prints clap's help, version or usage error. qemu-img exits 0 for `--help` and 1 for every
/// usage error (an unknown option, a missing file name), where clap would exit 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            ExitCode::SUCCESS
        }
        _ => ExitCode::from(1),
    }
}

/// Raises the soft limit on open files to the hard one, as programs that need many are expected
/// to: a split VMDK holds one descriptor per 2 GiB extent file (1024 for 2 TiB), above the usual
/// soft limit of 1024. Where the hard limit is lower, opening fails with "Too many open files".
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct passed, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
