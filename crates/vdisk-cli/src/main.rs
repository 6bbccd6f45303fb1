//! The `vdisk` command: qemu-img's commands, flags, size syntax, output and exit codes, for raw, qcow2,
//! VMDK, VDI and VHD images.

mod check;
mod cli;
mod commands;
mod image_opts;
mod info;
mod json;
mod map;
mod objects;
mod progress;
mod signals;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    signals::install();
    raise_open_file_limit();
    // `--object secret,...` first, as qemu-img defines its objects before anything else.
    let argv = match objects::take(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vdisk: {e}");
            return ExitCode::from(1);
        }
    };
    let args = match cli::Cli::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => return usage_error(&e),
    };
    let code = match commands::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vdisk: {e}");
            ExitCode::from(1)
        }
    };
    // `-p`: the progress output's last line feed comes after the error, as in qemu-img.
    progress::finish();
    code
}

/// Prints clap's help, version or usage error. qemu-img exits 0 for `--help` and 1 for every
/// usage error (an unknown option, a missing file name), where clap would exit 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::MissingRequiredArgument | ErrorKind::UnknownArgument => {}
        ErrorKind::InvalidValue if is_output_arg(e) => {
            // qemu-img's words for `--output=xml` and the like.
            let command = std::env::args().nth(1).unwrap_or_default();
            let value = match e.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(v)) => v.clone(),
                _ => String::new(),
            };
            eprintln!(
                "vdisk: --output expects 'human' or 'json' not '{value}'\nTry 'vdisk {command} \
                 --help' for more info"
            );
            return ExitCode::from(1);
        }
        _ => {
            let _ = e.print();
            return ExitCode::from(1);
        }
    }
    // A missing or extra file name: qemu-img's words for the command, and its hint.
    let command = std::env::args().nth(1).unwrap_or_default();
    let extra = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(a)) if e.kind() == ErrorKind::UnknownArgument => Some(a.clone()),
        _ => None,
    };
    let message = match (command.as_str(), &extra) {
        // An unknown option stays clap's message (qemu-img: "unrecognized option").
        (_, Some(a)) if a.starts_with('-') => None,
        ("create", Some(a)) => Some(format!("Unexpected argument: {a}")),
        ("create", None) => Some("Expecting image file name".to_string()),
        ("compare", _) => Some("Expecting two image file names".to_string()),
        ("resize", _) => Some("Expecting image file name and size".to_string()),
        ("amend", None) => Some("Must specify options (-o)".to_string()),
        ("info" | "check" | "map" | "snapshot" | "commit" | "rebase" | "amend" | "bench", _) => {
            Some("Expecting one image file name".to_string())
        }
        _ => None,
    };
    match message {
        Some(m) => eprintln!("vdisk: {m}\nTry 'vdisk {command} --help' for more info"),
        None => {
            let _ = e.print();
        }
    }
    ExitCode::from(1)
}

/// Whether clap's error is about the value of `--output`.
fn is_output_arg(e: &clap::Error) -> bool {
    use clap::error::{ContextKind, ContextValue};
    matches!(
        e.get(ContextKind::InvalidArg),
        Some(ContextValue::String(a)) if a.starts_with("--output")
    )
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
