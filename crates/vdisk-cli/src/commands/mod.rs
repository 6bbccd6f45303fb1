//! What each `vdisk` command does: open images through the `vdisk` facade, run the operation, and
//! print results with qemu-img's wording and exit codes. Small commands are here; larger ones have a
//! file each.

mod bench;
mod bitmap;
mod compare;
mod convert;
mod create;
mod dd;
mod guest;
mod measure;
mod mutate;
mod resize;

use crate::cli::{Cli, Command, OutputFormat};
use crate::progress::QemuProgress;
use crate::{check, info, map};
use bench::bench;
use bitmap::bitmap;
use compare::compare;
use convert::convert;
use create::create;
use dd::dd;
use measure::measure;
use resize::resize;
use std::io::Write;
use std::path::Path;
use vdisk::chain::{open_image, OpenRequest};
use vdisk::core::size::parse_size;
use vdisk::core::{CreateOptions, Error, Format, Result};
use vdisk::qcow2::SnapshotSel;

/// Runs one command; the value is the process exit code.
pub fn run(cli: Cli) -> Result<u8> {
    let mut command = cli.command;
    vdisk::core::locks::set_force_share(command.force_share());
    if let Err(e) = crate::image_opts::apply(&mut command) {
        // compare's exit code for an image it cannot open is 2.
        if matches!(command, Command::Compare { .. }) {
            eprintln!("vdisk: {e}");
            return Ok(2);
        }
        return Err(e);
    }
    match command {
        Command::Info {
            format,
            output,
            backing_chain,
            filename,
            ..
        } => {
            let req = OpenRequest {
                format: parse_format(format)?,
                snapshot: None,
                follow_backing: backing_chain,
                for_check: false,
            };
            let mut img = open_image(&filename, &req)?;
            // An image opened with a key is named by its options, as qemu-img names it.
            let driver = img.layers[0].format.name();
            if let Some(name) = crate::image_opts::display_name(&filename, driver) {
                img.layers[0].path = name.into();
            }
            let text = match output {
                OutputFormat::Human => info::info_human(&img.layers, backing_chain),
                OutputFormat::Json => info::info_json(&img.layers, backing_chain) + "\n",
            };
            print_out(&text)?;
            Ok(0)
        }
        Command::Map {
            format,
            output,
            start_offset,
            max_length,
            filename,
            ..
        } => {
            // Read as qemu-img reads them, before the image is opened.
            let start_offset = cvtnum("start offset", &start_offset, 0, i64::MAX as u64)?;
            let max_length = max_length
                .map(|l| cvtnum("max length", &l, 0, i64::MAX as u64))
                .transpose()?;
            let req = OpenRequest {
                format: parse_format(format)?,
                snapshot: None,
                follow_backing: true,
                for_check: false,
            };
            let img = open_image(&filename, &req)?;
            // An image qemu-img cannot open for I/O (encrypted, a missing data file) fails before
            // the map's first line.
            img.image.ready_for_io()?;
            let size = img.image.virtual_size();
            let start = start_offset.min(size);
            let len = max_length.map_or(size - start, |l| l.min(size - start));
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            map::write_map(
                img.image.as_ref(),
                start,
                len,
                output == OutputFormat::Json,
                &mut out,
            )?;
            out.flush()
                .map_err(|e| Error::Other(format!("cannot write output: {e}")))?;
            Ok(0)
        }
        Command::Filesystems {
            guest,
            long,
            human,
            list_filesystems,
            list_lvs,
            list_pvs,
        } => {
            let lists = guest::Lists {
                filesystems: list_filesystems || !(list_lvs || list_pvs),
                lvs: list_lvs,
                pvs: list_pvs,
            };
            guest::filesystems(guest, long, human, lists)
        }
        Command::Df {
            guest,
            human,
            inodes,
        } => guest::df(guest, human, inodes),
        Command::Ls {
            guest,
            long,
            recursive,
            path,
        } => guest::ls(guest, long, recursive, &path),
        Command::Cat { guest, paths } => guest::cat(guest, &paths),
        Command::Partitions {
            format,
            output,
            filename,
            ..
        } => {
            let req = OpenRequest {
                format: parse_format(format)?,
                snapshot: None,
                follow_backing: true,
                for_check: false,
            };
            let img = open_image(&filename, &req)?;
            img.image.ready_for_io()?;
            let Some(table) = vdisk::part::read(img.image.as_ref())? else {
                // sfdisk's words for a disk without a table, and its exit code.
                return Err(Error::Other(format!(
                    "{}: does not contain a recognized partition table",
                    filename.display()
                )));
            };
            let text = match output {
                OutputFormat::Human => {
                    vdisk::part::report::human_text(&table, img.image.virtual_size())
                }
                OutputFormat::Json => {
                    let device = filename.to_string_lossy();
                    let v =
                        vdisk::part::report::sfdisk_json(&table, &device, img.image.virtual_size());
                    serde_json::to_string_pretty(&v)
                        .map_err(|e| Error::Other(format!("cannot write JSON: {e}")))?
                        + "\n"
                }
            };
            print_out(&text)?;
            Ok(0)
        }
        Command::Create {
            format,
            options,
            backing,
            backing_format,
            unsafe_backing,
            quiet,
            filename,
            size,
        } => create(
            &format,
            &options,
            backing,
            backing_format,
            unsafe_backing,
            quiet,
            filename.as_deref(),
            size,
        ),
        Command::Convert(args) => convert(args),
        Command::Dd(args) => dd(args),
        Command::Bitmap { args } => bitmap(&args),
        Command::Bench(args) => bench(args),
        Command::Compare {
            format_a,
            format_b,
            strict,
            quiet,
            progress,
            first,
            second,
            cache,
            ..
        } => compare(
            format_a, format_b, strict, quiet, progress, &cache, &first, &second,
        ),
        Command::Check {
            format,
            output,
            repair,
            quiet,
            filename,
            cache,
            ..
        } => {
            check_cache(&cache, "source cache option")?;
            if repair.is_some() {
                refuse_force_share(&filename)?;
            }
            let format = parse_format(format)?;
            // A VHDX whose log needs replaying opens only read-write (qemu-img check -r opens it
            // so): repair it before opening it as the check does.
            if let Some(mode) = &repair {
                vdisk::core::locks::check_writable(&filename)?;
                let fmt = match format {
                    Some(f) => f,
                    None => vdisk::core::probe_format(&vdisk::core::FileStorage::open(&filename)?)?,
                };
                if fmt == Format::Vhdx {
                    return mutate::repair(fmt, mode, output, quiet, &filename);
                }
            }
            // qemu-img check opens the backing chain too: a missing backing file is an error
            // (exit 1), though only the top image is checked.
            let req = OpenRequest {
                format,
                snapshot: None,
                follow_backing: true,
                for_check: true,
            };
            let img = open_image(&filename, &req)?;
            if let Some(mode) = repair {
                let fmt = img.top().format;
                drop(img);
                if format.is_none() && fmt == Format::Raw {
                    warn_probed_raw(&filename);
                }
                return mutate::repair(fmt, &mode, output, quiet, &filename);
            }
            let report = match img.top().reader.check() {
                Ok(r) => r,
                Err(Error::Unsupported { .. }) => {
                    eprintln!("vdisk: This image format does not support checks");
                    return Ok(63);
                }
                Err(e) => return Err(e),
            };
            for m in &report.messages {
                eprintln!("{m}");
            }
            if !quiet {
                let text = match output {
                    OutputFormat::Human => check::human(&report),
                    OutputFormat::Json => {
                        check::json(
                            &report,
                            &filename.to_string_lossy(),
                            img.top().format.name(),
                        ) + "\n"
                    }
                };
                print_out(&text)?;
            }
            if report.check_errors > 0 {
                eprintln!("vdisk: Check failed");
            }
            Ok(report.exit_code() as u8)
        }
        Command::Snapshot {
            list,
            create,
            apply,
            delete,
            format,
            filename,
            ..
        } => {
            let format = parse_format(format)?;
            if create.is_some() || apply.is_some() || delete.is_some() {
                if list {
                    return Err(Error::invalid("Cannot mix '-l', '-a', '-c', '-d'"));
                }
                refuse_force_share(&filename)?;
                vdisk::core::locks::check_writable(&filename)?;
                let fmt = match format {
                    Some(f) => f,
                    None => probe_path(&filename)?,
                };
                return mutate::snapshot(fmt, create, apply, delete, &filename);
            }
            if !list {
                return Err(Error::invalid(
                    "snapshot: give one of -l, -c NAME, -a NAME, -d NAME",
                ));
            }
            let req = OpenRequest {
                format,
                snapshot: None,
                follow_backing: false,
                for_check: false,
            };
            let img = open_image(&filename, &req)?;
            if !img.top().info.snapshots.is_empty() {
                print_out(&info::snapshot_table(&img.top().info.snapshots))?;
            }
            Ok(0)
        }
        Command::Amend {
            format,
            options,
            filename,
            cache,
            quiet,
            progress,
            ..
        } => {
            // Before anything else, as in qemu-img: whatever happens, the output's line ends.
            let bar = QemuProgress::new(progress && !quiet, 1.0);
            check_cache(&cache, "cache option")?;
            let format = parse_format(format)?;
            // `-o help` lists what the format can amend, before (and without) any file.
            if vdisk::core::CreateOptions::parse(&options)?.wants_help() {
                let fmt = match (format, &filename) {
                    (Some(f), _) => f,
                    (None, Some(f)) => probe_path(f)?,
                    (None, None) => return Err(Error::invalid("Expecting one image file name")),
                };
                if fmt != Format::Qcow2 {
                    return Err(Error::invalid(format!(
                        "Format driver '{fmt}' does not support option amendment"
                    )));
                }
                print_out(&vdisk::core::options::amend_help(
                    fmt.name(),
                    &vdisk::qcow2::mutate::amend_options(),
                ))?;
                return Ok(0);
            }
            let filename =
                filename.ok_or_else(|| Error::invalid("Expecting one image file name"))?;
            vdisk::core::locks::check_writable(&filename)?;
            let fmt = match format {
                Some(f) => f,
                None => probe_path(&filename)?,
            };
            mutate::amend(fmt, &options, &filename, &bar)
        }
        Command::Rebase {
            format,
            unsafe_mode,
            backing,
            backing_format,
            compress,
            filename,
            cache,
            backing_cache,
            quiet,
            progress,
            ..
        } => {
            let bar = QemuProgress::new(progress && !quiet, 2.0);
            check_cache(&cache, "cache option")?;
            check_cache(&backing_cache, "source cache option")?;
            // qemu-img: -u without -b drops the backing reference.
            let backing = match (backing, unsafe_mode) {
                (Some(b), _) => b,
                (None, true) => String::new(),
                (None, false) => {
                    return Err(Error::invalid(
                        "Must specify backing file (-b) or use unsafe mode (-u)",
                    ))
                }
            };
            vdisk::core::locks::check_writable(&filename)?;
            let fmt = match parse_format(format)? {
                Some(f) => f,
                None => probe_path(&filename)?,
            };
            mutate::rebase(
                fmt,
                unsafe_mode,
                &backing,
                backing_format.as_deref(),
                compress,
                &filename,
                &bar,
            )
        }
        Command::Commit {
            format,
            base,
            keep,
            quiet,
            progress,
            filename,
            cache,
            rate,
            ..
        } => {
            let rate = rate.as_deref().map(parse_rate).transpose()?.unwrap_or(0);
            check_cache(&cache, "cache option")?;
            vdisk::core::locks::check_writable(&filename)?;
            let fmt = match parse_format(format)? {
                Some(f) => f,
                None => probe_path(&filename)?,
            };
            let bar = QemuProgress::new(progress && !quiet, 1.0);
            mutate::commit(fmt, base.as_deref(), keep, quiet, rate, &filename, bar)
        }
        Command::Measure {
            output_format,
            options,
            size,
            format,
            snapshot,
            output,
            filename,
            ..
        } => measure(
            &output_format,
            &options,
            size,
            format,
            snapshot,
            output,
            filename.as_deref(),
        ),
        Command::Resize {
            format,
            shrink,
            preallocation,
            quiet,
            filename,
            size,
            ..
        } => resize(format, shrink, preallocation, quiet, &filename, &size),
    }
}

pub(crate) fn print_out(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Error::Other(format!("cannot write output: {e}")))
}

/// The cache modes qemu's `bdrv_parse_cache_mode` accepts (`off` is `none`). vdisk reads and
/// writes through the page cache whatever the mode and flushes what it changes before it returns;
/// only `convert -t unsafe` changes what it does (no final flush).
pub(crate) const CACHE_MODES: [&str; 6] = [
    "writeback",
    "none",
    "off",
    "writethrough",
    "directsync",
    "unsafe",
];

/// `mode` checked as qemu-img checks a cache option; `what` names it in the error, as qemu-img
/// does ("cache option", "source cache option").
pub(crate) fn check_cache(mode: &str, what: &str) -> Result<()> {
    if CACHE_MODES.contains(&mode) {
        Ok(())
    } else {
        Err(Error::invalid(format!("Invalid {what}: {mode}")))
    }
}

/// A number as qemu-img's `cvtnum_full` reads it (a size: `1M`, `512`, `0x200`), between `min`
/// and `max`; `name` names it in qemu-img's errors ("Invalid bs specified: 'x'.", "Invalid bs
/// specified. Must be between 1 and 2147483647.").
pub(crate) fn cvtnum(name: &str, v: &str, min: u64, max: u64) -> Result<u64> {
    let out_of_range = || {
        Error::invalid(format!(
            "Invalid {name} specified. Must be between {min} and {max}."
        ))
    };
    let t = v.trim();
    // qemu_strtosz: a negative number, or one too large for 64 bits, is out of range (ERANGE);
    // anything else it cannot read is invalid (EINVAL), "1.5" without a suffix included.
    if t.strip_prefix('-')
        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    {
        return Err(out_of_range());
    }
    match parse_size(t) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => Err(out_of_range()),
        Err(_) => {
            let digits = t.trim_end_matches(|c: char| "bBkKmMgGtTpPeE".contains(c));
            if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
                Err(out_of_range())
            } else {
                Err(Error::invalid(format!("Invalid {name} specified: '{v}'.")))
            }
        }
    }
}

/// A number that is not a size, as qemu-img's `cvtnum_full(name, v, false, min, max)` reads it
/// (`-m`: no suffix; a negative number is out of range), between `min` and `max`.
pub(crate) fn cvtnum_plain(name: &str, v: &str, min: u64, max: u64) -> Result<u64> {
    let out_of_range = || {
        Error::invalid(format!(
            "Invalid {name} specified. Must be between {min} and {max}."
        ))
    };
    let t = v.trim_start();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    match vdisk::core::options::parse_c_number(digits) {
        None => Err(Error::invalid(format!("Invalid {name} specified: '{v}'."))),
        Some(n) if negative && n != 0 => Err(out_of_range()),
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(_) => Err(out_of_range()),
    }
}

/// `-r`: a rate in bytes a second, from 0 up to `INT64_MAX`.
pub(crate) fn parse_rate(v: &str) -> Result<u64> {
    cvtnum("rate limit", v, 0, i64::MAX as u64)
}

/// The creation options of a new `fmt` image from `-o` and the backing flags, as qemu-img builds
/// them (`bdrv_img_create`, `img_convert`): the `-o` names are checked first, then the backing
/// file (`-b`, `-B`) and its format (`-F`) are set after them, so they win over
/// `-o backing_file=` and `-o backing_fmt=`, and are refused for a format that has no backing
/// file (`add_old_style_options`).
pub(crate) fn add_backing_options(
    opts: &mut CreateOptions,
    fmt: Format,
    backing: Option<&str>,
    backing_fmt: Option<&str>,
) -> Result<()> {
    let known = vdisk::create_options(fmt)?;
    opts.ensure_known(fmt.name(), known)?;
    let takes = |key: &str| known.iter().any(|s| s.name == key);
    for (key, value, what) in [
        ("backing_file", backing, "Backing file"),
        ("backing_fmt", backing_fmt, "Backing file format"),
    ] {
        if let Some(v) = value {
            if !takes(key) {
                return Err(Error::invalid(format!(
                    "{what} not supported for file format '{}'",
                    fmt.name()
                )));
            }
            opts.set(key, v);
        }
    }
    Ok(())
}

pub(crate) fn parse_format(f: Option<String>) -> Result<Option<Format>> {
    f.map(|s| s.parse::<Format>()).transpose()
}

/// The format of the image at `path`, probed for a command that opens it to write (every caller
/// does). As qemu-img's `img_open`, a probe that finds raw warns that it is dangerous.
pub(crate) fn probe_path(path: &Path) -> Result<Format> {
    let s = vdisk::core::FileStorage::open(path)?;
    let f = vdisk::core::probe_format(&s)?;
    if f == Format::Raw {
        warn_probed_raw(path);
    }
    Ok(f)
}

/// qemu's warning (block.c `find_image_format`'s caller, `bdrv_open_inherit`) when an image opened
/// for writing was probed as raw: a guest could write another format's header into block 0.
pub(crate) fn warn_probed_raw(path: &Path) {
    eprintln!(
        "WARNING: Image format was not specified for '{}' and probing guessed raw.\n         \
         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n         \
         Specify the 'raw' format explicitly to remove the restrictions.",
        path.display()
    );
}

pub(crate) fn parse_snapshot(s: &str) -> SnapshotSel {
    if let Some(n) = s.strip_prefix("snapshot.name=") {
        SnapshotSel::Name(n.to_string())
    } else if let Some(id) = s.strip_prefix("snapshot.id=") {
        SnapshotSel::Id(id.to_string())
    } else {
        SnapshotSel::NameOrId(s.to_string())
    }
}

/// qemu-img's refusal of `-U` for an image it opens read-write (`check -r`, `snapshot -c`).
fn refuse_force_share(filename: &std::path::Path) -> Result<()> {
    if !vdisk::core::locks::force_share() {
        return Ok(());
    }
    Err(Error::Open {
        path: filename.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "force-share=on can only be used with read-only images",
        ),
    })
}
