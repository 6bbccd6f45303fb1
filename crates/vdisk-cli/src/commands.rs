//! What each `vdisk` command does: open images through the `vdisk` facade, run the operation, and
//! print results with qemu-img's wording and exit codes.

use crate::cli::{Cli, Command, ConvertArgs, OutputFormat};
use crate::{check, info, map};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use vdisk::chain::{open_image, OpenRequest};
use vdisk::convert::ConvertOptions;
use vdisk::core::options::format_help;
use vdisk::core::size::{parse_size, parse_size_change};
use vdisk::core::{Concat, CreateOptions, Error, Format, ImageReader, Result};
use vdisk::qcow2::SnapshotSel;

/// Runs one command; the value is the process exit code.
pub fn run(cli: Cli) -> Result<u8> {
    match cli.command {
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
            };
            let img = open_image(&filename, &req)?;
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
            let req = OpenRequest {
                format: parse_format(format)?,
                snapshot: None,
                follow_backing: true,
            };
            let img = open_image(&filename, &req)?;
            let size = img.image.virtual_size();
            let start = parse_size(&start_offset)?.min(size);
            let len = match max_length {
                Some(l) => parse_size(&l)?.min(size - start),
                None => size - start,
            };
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
        Command::Compare {
            format_a,
            format_b,
            strict,
            quiet,
            first,
            second,
            ..
        } => compare(format_a, format_b, strict, quiet, &first, &second),
        Command::Check {
            format,
            output,
            repair,
            quiet,
            filename,
            ..
        } => {
            if let Some(r) = repair {
                return Err(Error::invalid(format!(
                    "check -r {r}: repair is not implemented yet; vdisk check only reports"
                )));
            }
            let req = OpenRequest {
                format: parse_format(format)?,
                snapshot: None,
                follow_backing: false,
            };
            let img = open_image(&filename, &req)?;
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
            if create.is_some() || apply.is_some() || delete.is_some() {
                return Err(Error::invalid(
                    "snapshot -c/-a/-d: changing snapshots is not implemented yet; only -l works",
                ));
            }
            if !list {
                return Err(Error::invalid("snapshot: give -l (list)"));
            }
            let req = OpenRequest {
                format: parse_format(format)?,
                snapshot: None,
                follow_backing: false,
            };
            let img = open_image(&filename, &req)?;
            if !img.top().info.snapshots.is_empty() {
                print_out(&info::snapshot_table(&img.top().info.snapshots))?;
            }
            Ok(0)
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
        } => resize(format, shrink, preallocation, quiet, &filename, &size),
    }
}

fn print_out(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Error::Other(format!("cannot write output: {e}")))
}

fn parse_format(f: Option<String>) -> Result<Option<Format>> {
    f.map(|s| s.parse::<Format>()).transpose()
}

fn probe_path(path: &Path) -> Result<Format> {
    let s = vdisk::core::FileStorage::open(path)?;
    vdisk::core::probe_format(&s)
}

#[allow(clippy::too_many_arguments)]
fn create(
    format: &str,
    options: &[String],
    backing: Option<String>,
    backing_format: Option<String>,
    unsafe_backing: bool,
    quiet: bool,
    filename: Option<&Path>,
    size: Option<String>,
) -> Result<u8> {
    let fmt: Format = format.parse()?;
    let mut opts = CreateOptions::parse(options)?;
    if opts.wants_help() {
        print_out(&format_help(fmt.name(), vdisk::create_options(fmt)?))?;
        return Ok(0);
    }
    let filename = filename.ok_or_else(|| Error::invalid("Expecting image file name"))?;
    if let Some(b) = &backing {
        opts.set("backing_file", b);
    }
    if let Some(bf) = &backing_format {
        opts.set("backing_fmt", bf);
    }
    let size = match size {
        Some(s) => parse_size(&s)?,
        None => match opts.get("backing_file") {
            Some(b) if !unsafe_backing => {
                let full = vdisk::core::storage::resolve_relative(filename, b);
                let bfmt = parse_format(opts.get("backing_fmt").map(str::to_string))?;
                let req = OpenRequest {
                    format: bfmt,
                    snapshot: None,
                    follow_backing: true,
                };
                let img = open_image(&full, &req)
                    .map_err(|e| Error::Other(format!("Could not open backing image: {e}")))?;
                img.image.virtual_size()
            }
            _ => return Err(Error::invalid("Image creation needs a size parameter")),
        },
    };
    if !quiet {
        let mut line = format!("Formatting '{}', fmt={}", filename.display(), fmt.name());
        for (k, v) in opts.pairs() {
            line.push_str(&format!(" {k}={v}"));
        }
        line.push_str(&format!(" size={size}"));
        println!("{line}");
    }
    let writer = vdisk::create_image(fmt, filename, size, &opts, false)?;
    writer.finish()?;
    Ok(0)
}

fn parse_snapshot(s: &str) -> SnapshotSel {
    if let Some(n) = s.strip_prefix("snapshot.name=") {
        SnapshotSel::Name(n.to_string())
    } else if let Some(id) = s.strip_prefix("snapshot.id=") {
        SnapshotSel::Id(id.to_string())
    } else {
        SnapshotSel::NameOrId(s.to_string())
    }
}

fn convert(a: ConvertArgs) -> Result<u8> {
    let out_fmt: Format = a.output_format.parse()?;
    let mut opts = CreateOptions::parse(&a.options)?;
    if opts.wants_help() {
        print_out(&format_help(
            out_fmt.name(),
            vdisk::create_options(out_fmt)?,
        ))?;
        return Ok(0);
    }
    if !(1..=16).contains(&a.parallel) {
        return Err(Error::invalid(
            "Invalid number of coroutines. Allowed number of coroutines is between 1 and 16",
        ));
    }
    let min_sparse = parse_size(&a.sparse_size)?;
    if min_sparse % 512 != 0 || min_sparse > (16 << 20) {
        return Err(Error::invalid(
            "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16MB",
        ));
    }
    if a.compress {
        match vdisk::compression(out_fmt, &opts) {
            vdisk::Compression::Supported => {}
            vdisk::Compression::Ignored => eprintln!(
                "vdisk: warning: {} subformat '{}' has no compressed grains; writing it uncompressed as qemu-img does \
                 (use -o subformat=streamOptimized for a compressed VMDK)",
                out_fmt.name(),
                opts.get("subformat").unwrap_or("monolithicSparse")
            ),
            vdisk::Compression::Unsupported => {
                return Err(Error::invalid("Compression not supported for this file format"));
            }
        }
    }
    let (dst, srcs) = a
        .files
        .split_last()
        .ok_or_else(|| Error::invalid("Expecting image file name"))?;
    if srcs.is_empty() {
        return Err(Error::invalid("Expecting image file name"));
    }
    let src_fmt = parse_format(a.format)?;
    let snapshot = a.snapshot.as_deref().map(parse_snapshot);
    let mut readers: Vec<Arc<dyn ImageReader>> = Vec::new();
    for s in srcs {
        let req = OpenRequest {
            format: src_fmt,
            snapshot: snapshot.clone(),
            follow_backing: true,
        };
        readers.push(open_image(s, &req)?.image);
    }
    let source: Arc<dyn ImageReader> = if readers.len() == 1 {
        Arc::clone(&readers[0])
    } else {
        Arc::new(Concat::new(readers)?)
    };
    match a.cache.as_str() {
        "unsafe" => vdisk::core::writer::set_durable_commit(false),
        "writeback" | "none" | "writethrough" | "directsync" => {}
        other => return Err(Error::invalid(format!("Invalid cache option: {other}"))),
    }
    let size = source.virtual_size();
    let mut backing_image: Option<Arc<dyn ImageReader>> = None;
    if let Some(b) = &a.backing {
        if a.no_create {
            return Err(Error::invalid("-B and -n cannot be used together"));
        }
        let bfmt = a.backing_format.as_deref().ok_or_else(|| {
            Error::invalid("Use of backing file requires explicit backing format")
        })?;
        opts.set("backing_file", b);
        opts.set("backing_fmt", bfmt);
        let full = vdisk::core::storage::resolve_relative(dst, b);
        let req = OpenRequest {
            format: Some(bfmt.parse()?),
            snapshot: None,
            follow_backing: true,
        };
        backing_image = Some(open_image(&full, &req)?.image);
    }
    let writer = if a.no_create {
        let req = OpenRequest {
            format: Some(out_fmt),
            snapshot: None,
            follow_backing: false,
        };
        let existing = open_image(dst, &req)?.image.virtual_size();
        if existing < size {
            return Err(Error::invalid("output file is smaller than input file"));
        }
        vdisk::open_existing_writer(out_fmt, dst)?
    } else {
        vdisk::create_image(out_fmt, dst, size, &opts, a.compress)?
    };
    let copts = ConvertOptions {
        workers: a.parallel,
        out_of_order: a.out_of_order,
        min_sparse,
        target_is_zero: a.target_is_zero,
        backing: backing_image,
        ..ConvertOptions::default()
    };
    let bar = (a.progress && !a.quiet && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(size.max(1));
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "    {percent:>3}% [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    });
    let progress = |done: u64, _total: u64| {
        if let Some(b) = &bar {
            b.set_position(done);
        }
    };
    vdisk::convert::convert(source.as_ref(), writer, &copts, &progress)?;
    if let Some(b) = bar {
        b.finish();
    }
    Ok(0)
}

fn compare(
    format_a: Option<String>,
    format_b: Option<String>,
    strict: bool,
    quiet: bool,
    first: &Path,
    second: &Path,
) -> Result<u8> {
    let open = |p: &Path, f: Option<String>| -> std::result::Result<Arc<dyn ImageReader>, u8> {
        let req = OpenRequest {
            format: parse_format(f).map_err(|e| {
                eprintln!("vdisk: {e}");
                2u8
            })?,
            snapshot: None,
            follow_backing: true,
        };
        open_image(p, &req).map(|i| i.image).map_err(|e| {
            eprintln!("vdisk: {e}");
            2u8
        })
    };
    let a = match open(first, format_a) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    let b = match open(second, format_b) {
        Ok(b) => b,
        Err(code) => return Ok(code),
    };
    let outcome = vdisk::convert::compare::compare(a.as_ref(), b.as_ref(), strict)?;
    if !quiet {
        for line in outcome.stdout_lines() {
            println!("{line}");
        }
    }
    if let Some(msg) = outcome.error_message(&first.to_string_lossy(), &second.to_string_lossy()) {
        eprintln!("vdisk: {msg}");
    }
    Ok(outcome.exit_code() as u8)
}

fn resize(
    format: Option<String>,
    shrink: bool,
    preallocation: Option<String>,
    quiet: bool,
    filename: &Path,
    size: &str,
) -> Result<u8> {
    let change = parse_size_change(size)?;
    let fmt = match parse_format(format)? {
        Some(f) => f,
        None => probe_path(filename)?,
    };
    let current = {
        let req = OpenRequest {
            format: Some(fmt),
            snapshot: None,
            follow_backing: false,
        };
        open_image(filename, &req)?.image.virtual_size()
    };
    let new_size = change.apply(current)?;
    match fmt {
        Format::Raw => {
            let prealloc = preallocation
                .as_deref()
                .unwrap_or("off")
                .parse::<vdisk::raw::Prealloc>()?;
            vdisk::raw::resize(filename, new_size, shrink, prealloc)?;
        }
        Format::Vdi => {
            if preallocation.is_some() {
                return Err(Error::invalid("--preallocation is not supported for vdi"));
            }
            if new_size < current {
                return Err(Error::invalid("Shrinking VDI images is not supported"));
            }
            vdisk::vdi::resize(filename, new_size)?;
        }
        other => {
            return Err(Error::invalid(format!(
                "resize of {other} images is not implemented yet"
            )));
        }
    }
    if !quiet {
        println!("Image resized.");
    }
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
fn measure(
    output_format: &str,
    options: &[String],
    size: Option<String>,
    format: Option<String>,
    snapshot: Option<String>,
    output: OutputFormat,
    filename: Option<&Path>,
) -> Result<u8> {
    let out_fmt: Format = output_format.parse()?;
    let opts = CreateOptions::parse(options)?;
    let source = match (filename, size.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "--size N cannot be used together with a filename.",
            ))
        }
        (None, None) => {
            return Err(Error::invalid(
                "Either --size N or one filename must be specified.",
            ))
        }
        (Some(f), None) => {
            let req = OpenRequest {
                format: parse_format(format)?,
                snapshot: snapshot.as_deref().map(parse_snapshot),
                follow_backing: true,
            };
            Some(open_image(f, &req)?.image)
        }
        (None, Some(_)) => None,
    };
    let virtual_size = match (&source, size.as_deref()) {
        (Some(s), _) => s.virtual_size(),
        (None, Some(s)) => parse_size(s)?,
        (None, None) => 0,
    };
    let (required, fully, bitmaps) = match out_fmt {
        Format::Raw => {
            opts.ensure_known("raw", vdisk::create_options(Format::Raw)?)?;
            (virtual_size, virtual_size, None)
        }
        Format::Qcow2 => {
            let m = vdisk::qcow2::measure::measure(virtual_size, &opts, source.as_deref())?;
            (m.required, m.fully_allocated, m.bitmaps)
        }
        other => {
            return Err(Error::invalid(format!(
                "Block driver '{other}' does not support size measurement"
            )));
        }
    };
    let text = match output {
        OutputFormat::Human => {
            let mut t = format!("required size: {required}\nfully allocated size: {fully}\n");
            if let Some(b) = bitmaps {
                t.push_str(&format!("bitmaps size: {b}\n"));
            }
            t
        }
        OutputFormat::Json => {
            let mut m = serde_json::Map::new();
            if let Some(b) = bitmaps {
                m.insert("bitmaps".into(), b.into());
            }
            m.insert("required".into(), required.into());
            m.insert("fully-allocated".into(), fully.into());
            crate::json::to_qemu_pretty(&serde_json::Value::Object(m)) + "\n"
        }
    };
    print_out(&text)?;
    Ok(0)
}
