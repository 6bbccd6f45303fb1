//! Commands that change an existing image: `snapshot -c/-a/-d`, `check -r`, `amend`, and qcow2
//! `resize`. The qcow2 crate orders every change so that an interrupted run leaves the old or the
//! new image; this module only picks the operation and prints qemu-img's messages.

use super::print_out;
use crate::check;
use crate::cli::OutputFormat;
use crate::progress::QemuProgress;
use std::path::Path;
use vdisk::core::{CreateOptions, Error, Format, Result};
use vdisk::qcow2::mutate;

/// `snapshot -c NAME`, `-a NAME` or `-d NAME` on a qcow2 image.
pub(super) fn snapshot(
    fmt: Format,
    create: Option<String>,
    apply: Option<String>,
    delete: Option<String>,
    filename: &Path,
) -> Result<u8> {
    // The library's snapshot errors carry qemu-img's prefix already.
    let wrap = |what: &str, name: &str, e: Error| {
        let prefix = format!("Could not {what} snapshot '{name}': ");
        match e.to_string() {
            m if m.starts_with(&prefix) => e,
            m => Error::Other(format!("{prefix}{m}")),
        }
    };
    if fmt != Format::Qcow2 {
        // What qemu-img says of a format without internal snapshots.
        return Err(Error::Other(match (create, apply, delete) {
            (Some(n), None, None) => {
                format!("Could not create snapshot '{n}': Operation not supported")
            }
            (None, Some(n), None) => {
                format!("Could not apply snapshot '{n}': Block driver does not support snapshots")
            }
            (None, None, Some(n)) => format!("Could not delete snapshot '{n}': snapshot not found"),
            _ => "Cannot mix '-l', '-a', '-c', '-d'".to_string(),
        }));
    }
    match (create, apply, delete) {
        (Some(n), None, None) => {
            mutate::snapshot_create(filename, &n).map_err(|e| wrap("create", &n, e))?
        }
        (None, Some(n), None) => {
            mutate::snapshot_apply(filename, &n).map_err(|e| wrap("apply", &n, e))?
        }
        (None, None, Some(n)) => {
            mutate::snapshot_delete(filename, &n).map_err(|e| wrap("delete", &n, e))?
        }
        _ => return Err(Error::invalid("Cannot mix '-l', '-a', '-c', '-d'")),
    }
    Ok(0)
}

/// `check -r leaks|all`: repair, then report the image as it is afterwards (qemu-img's layout).
pub(super) fn repair(
    fmt: Format,
    mode: &str,
    output: OutputFormat,
    quiet: bool,
    filename: &Path,
) -> Result<u8> {
    let fix_errors = match mode {
        "leaks" => false,
        "all" => true,
        other => {
            return Err(Error::invalid(format!(
                "--repair (-r) expects 'leaks' or 'all' not '{other}'"
            )))
        }
    };
    if fmt == Format::Vhdx {
        return repair_vhdx(output, quiet, filename);
    }
    if fmt != Format::Qcow2 {
        // Only qcow2 and VHDX have a check that runs with -r, as in qemu-img.
        eprintln!("vdisk: This image format does not support checks");
        return Ok(63);
    }
    let out = mutate::repair(filename, true, fix_errors)?;
    for m in &out.log {
        eprintln!("{m}");
    }
    // The findings of qemu-img's "Double checking" run, when something was fixed.
    if out.leaks_fixed > 0 || out.corruptions_fixed > 0 {
        for m in &out.after.messages {
            eprintln!("{m}");
        }
    }
    let mut report = out.after.clone();
    report.leaks_fixed = out.leaks_fixed;
    report.corruptions_fixed = out.corruptions_fixed;
    if !quiet {
        let text = match output {
            OutputFormat::Human => {
                let mut t = String::new();
                if out.leaks_fixed > 0 || out.corruptions_fixed > 0 {
                    t.push_str(&format!(
                        "The following inconsistencies were found and repaired:\n\n    {} leaked clusters\n    {} corruptions\n\nDouble checking the fixed image now...\n",
                        out.leaks_fixed, out.corruptions_fixed
                    ));
                }
                t + &check::human(&report)
            }
            OutputFormat::Json => {
                check::json(&report, &filename.to_string_lossy(), fmt.name()) + "\n"
            }
        };
        print_out(&text)?;
    }
    Ok(report.exit_code() as u8)
}

/// `check -r leaks|all` of a VHDX image: both replay a log that needs it (qemu-img's read-write
/// open does), which counts as one corruption fixed, then check the BAT (never repaired). When the
/// log was replayed, qemu-img checks again: the findings appear twice on standard error.
fn repair_vhdx(output: OutputFormat, quiet: bool, filename: &Path) -> Result<u8> {
    let out = vdisk::vhdx::repair(filename)?;
    let report = out.report;
    let passes = if out.replayed { 2 } else { 1 };
    for _ in 0..passes {
        for m in &report.messages {
            eprintln!("{m}");
        }
    }
    if !quiet {
        let text = match output {
            OutputFormat::Human => {
                let mut t = String::new();
                if out.replayed {
                    t.push_str(&format!(
                        "The following inconsistencies were found and repaired:\n\n    0 leaked clusters\n    {} corruptions\n\nDouble checking the fixed image now...\n",
                        report.corruptions_fixed
                    ));
                }
                t + &check::human(&report)
            }
            OutputFormat::Json => {
                check::json(&report, &filename.to_string_lossy(), Format::Vhdx.name()) + "\n"
            }
        };
        print_out(&text)?;
    }
    Ok(report.exit_code() as u8)
}

/// `amend -o OPTS FILE` on a qcow2 image (compat, lazy_refcounts, refcount_bits, size,
/// data_file, data_file_raw).
/// `-p` prints qemu-img's two lines (0% before the change, 100% after it, whether it worked or
/// not).
pub(super) fn amend(
    fmt: Format,
    options: &[String],
    filename: &Path,
    bar: &QemuProgress,
) -> Result<u8> {
    let opts = CreateOptions::parse(options)?;
    if fmt != Format::Qcow2 {
        return Err(Error::invalid(format!(
            "Format driver '{fmt}' does not support option amendment"
        )));
    }
    // Unknown options are refused before the progress starts, as qemu-img parses them first.
    mutate::check_amend_keys(&opts)?;
    bar.print(0.0, 0);
    let done = vdisk::registry::amend_qcow2(filename, &opts);
    bar.print(100.0, 0);
    done?;
    Ok(0)
}

/// `resize [--preallocation=MODE]` of a qcow2 image.
pub(crate) fn resize_qcow2(
    filename: &Path,
    new_size: u64,
    shrink: bool,
    prealloc: Option<&str>,
) -> Result<()> {
    let mode = mutate::parse_prealloc(prealloc.unwrap_or("off"))?;
    vdisk::registry::resize_qcow2(filename, new_size, shrink, mode)
}

/// `rebase [-u] [-c] -b BACKING [-F FMT] FILE` on a qcow2 image (`-c` does nothing with `-u`,
/// which writes no data). `-p`: qemu-img's lines, a step for each 2 MiB it had to look at.
pub(super) fn rebase(
    fmt: Format,
    unsafe_mode: bool,
    backing: &str,
    backing_fmt: Option<&str>,
    compress: bool,
    filename: &Path,
    bar: &QemuProgress,
) -> Result<u8> {
    bar.print(0.0, 100);
    if !backing.is_empty() && backing_fmt.is_none() {
        return Err(Error::invalid(format!(
            "Could not change the backing file to '{backing}': backing format must be specified"
        )));
    }
    if fmt != Format::Qcow2 {
        // qemu-img changes the backing file of qcow2 images only (among vdisk's formats).
        return Err(Error::invalid(format!(
            "Could not change the backing file to '{backing}': Operation not supported"
        )));
    }
    if unsafe_mode {
        mutate::rebase_unsafe(filename, backing, backing_fmt)?;
    } else {
        let new_fmt = backing_fmt.map(str::parse::<Format>).transpose()?;
        vdisk::ops::rebase_safe_watched(filename, backing, new_fmt, compress, &mut |share| {
            bar.print(share, 100)
        })?;
    }
    bar.print(100.0, 0);
    Ok(0)
}

/// `commit [-b BASE] [-d] OVERLAY`: the overlay's data goes into its backing image (or BASE).
/// `-p`: qemu-img's lines, from the share of the bytes to copy that were written (qemu-img's
/// lines between 0 and 100 come from its block job's progress whenever it polls, so they differ
/// from run to run; these follow the bytes).
#[allow(clippy::too_many_arguments)]
pub(super) fn commit(
    fmt: Format,
    base: Option<&Path>,
    keep: bool,
    quiet: bool,
    rate: u64,
    filename: &Path,
    bar: QemuProgress,
) -> Result<u8> {
    bar.print(0.0, 100);
    if fmt != Format::Qcow2 {
        let req = vdisk::chain::OpenRequest {
            format: Some(fmt),
            snapshot: None,
            follow_backing: false,
            for_check: false,
        };
        let opened = vdisk::chain::open_image(filename, &req)?;
        return Err(Error::invalid(if opened.top().info.backing.is_none() {
            // Raw, VDI and VHD images, and VMDK images without a parent, as qemu-img says.
            "Image does not have a backing file".to_string()
        } else {
            format!("Committing {fmt} images is not supported yet")
        }));
    }
    vdisk::ops::commit_watched(filename, base, !keep, rate, &mut |done, total| {
        if total > 0 {
            bar.print((done as f64 / total as f64 * 100.0) as f32, 0);
        }
    })?;
    bar.print(100.0, 0);
    // The progress output's line ends before the message, as in qemu-img.
    bar.end();
    if !quiet {
        println!("Image committed.");
    }
    Ok(0)
}
