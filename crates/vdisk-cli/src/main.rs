//! The `vdisk` command: qemu-img's commands, flags, size syntax, output and exit codes, for raw, qcow2,
//! VMDK and VDI images.

mod check;
mod cli;
mod commands;
mod info;
mod json;
mod map;
mod signals;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    signals::install();
    let args = cli::Cli::parse();
    match commands::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vdisk: {e}");
            ExitCode::from(1)
        }
    }
}
