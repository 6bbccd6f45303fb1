//! `vdisk convert`: open the sources (concatenated, with backing chains or a snapshot), create the
//! target, and stream through the conversion engine with qemu-img's flags.

use super::{check_cache, parse_format, parse_rate, parse_snapshot, print_out};
use crate::cli::ConvertArgs;
use crate::progress::QemuProgress;
use std::io::IsTerminal;
use std::sync::Arc;
use vdisk::chain::{open_image, OpenRequest};
use vdisk::convert::ConvertOptions;
use vdisk::core::options::{format_help, format_help_with_protocol};
use vdisk::core::{Concat, CreateOptions, Error, Format, ImageReader, Result};

pub(super) fn convert(mut a: ConvertArgs) -> Result<u8> {
    let rate = a.rate.as_deref().map(parse_rate).transpose()?.unwrap_or(0);
    // Before the sources are opened, as qemu-img checks it.
    check_cache(&a.source_cache, "source cache option")?;
    let mut out_fmt: Format = a.output_format.as_deref().unwrap_or("raw").parse()?;
    let workers = super::cvtnum_plain("number of coroutines", &a.parallel, 1, 16)? as usize;
    let min_sparse = super::cvtnum(
        "buffer size for sparse output",
        a.sparse_size.as_deref().unwrap_or("4k"),
        0,
        i64::MAX as u64,
    )?;
    if min_sparse % 512 != 0 || min_sparse > (16 << 20) {
        return Err(Error::invalid(
            "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. \
             Select 0 to disable sparse detection (fully allocates output).",
        ));
    }
    // qemu-img's checks after its options are read, in its order.
    if a.skip_broken_bitmaps && !a.bitmaps {
        return Err(Error::invalid(
            "Use of --skip-broken-bitmaps requires --bitmaps",
        ));
    }
    // Offloaded copies skip zero detection and compression.
    if a.copy_range && a.compress {
        return Err(Error::invalid(
            "Cannot enable copy offloading when -c is used",
        ));
    }
    if a.copy_range && a.sparse_size.is_some() {
        return Err(Error::invalid(
            "Cannot enable copy offloading when -S is used",
        ));
    }
    if a.copy_range && a.salvage {
        return Err(Error::invalid(
            "Cannot use copy offloading in salvaging mode",
        ));
    }
    if a.target_image_opts && !a.no_create {
        return Err(Error::invalid(
            "--target-image-opts requires use of -n flag",
        ));
    }
    if a.no_create && !a.options.is_empty() {
        return Err(Error::invalid(
            "-o has no effect when skipping image creation",
        ));
    }
    if a.target_is_zero && !a.no_create {
        return Err(Error::invalid("--target-is-zero requires use of -n flag"));
    }
    let mut opts = CreateOptions::parse(&a.options)?;
    if opts.wants_help() {
        // With a source and a target named, the file protocol's options too, as qemu-img.
        let specs = vdisk::create_options(out_fmt)?;
        print_out(&if a.files.len() >= 2 {
            format_help_with_protocol(specs)
        } else {
            format_help(out_fmt.name(), specs)
        })?;
        return Ok(0);
    }
    if a.target_image_opts {
        out_fmt = target_from_options(&mut a)?;
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
            vdisk::Compression::NoClusters => return Err(Error::invalid("invalid cluster size")),
        }
    }
    let (dst, srcs) = a
        .files
        .split_last()
        .ok_or_else(|| Error::invalid("Must specify image file name"))?;
    if srcs.is_empty() {
        return Err(Error::invalid("Must specify image file name"));
    }
    // -p on a terminal: a bar on standard error (below). Off a terminal, qemu-img's own progress
    // lines on standard output (scripts that log them see the same lines), from here on as in
    // qemu-img; without -p, SIGUSR1 prints the next one on standard error.
    let tty_bar = a.progress && !a.quiet && std::io::stderr().is_terminal();
    let plain = (!tty_bar).then(|| {
        let p = QemuProgress::new(a.progress && !a.quiet, 1.0);
        p.print(0.0, 100);
        p
    });
    let src_fmt = parse_format(a.format)?;
    let snapshot = a.snapshot.as_deref().map(parse_snapshot);
    let mut readers: Vec<Arc<dyn ImageReader>> = Vec::new();
    // Every image file the conversion reads: the target must be none of them.
    let mut read_files = Vec::new();
    for s in srcs {
        let req = OpenRequest {
            format: src_fmt,
            snapshot: snapshot.clone(),
            follow_backing: true,
            for_check: false,
        };
        let opened = open_image(s, &req)?;
        read_files.extend(opened.layers.iter().map(|l| l.path.clone()));
        let image = opened.image;
        // Fail here, as qemu-img fails to open it, not at the first read.
        image.ready_for_io()?;
        readers.push(image);
    }
    let bitmaps = if a.bitmaps {
        source_bitmaps(srcs, src_fmt, a.skip_broken_bitmaps)?
    } else {
        Vec::new()
    };
    let no_bitmaps = || {
        Error::invalid(format!(
            "Format driver '{}' does not support bitmaps",
            out_fmt.name()
        ))
    };
    if a.bitmaps && (out_fmt != Format::Qcow2 || opts.get("compat") == Some("0.10")) {
        return Err(no_bitmaps());
    }
    // With -n, the target's own bitmaps (a version 2 target has none, and can have none).
    let target_bitmaps = if a.bitmaps && a.no_create {
        Some(target_bitmap_names(dst)?.ok_or_else(no_bitmaps)?)
    } else {
        None
    };
    let mut source: Arc<dyn ImageReader> = if readers.len() == 1 {
        Arc::clone(&readers[0])
    } else {
        Arc::new(Concat::new(readers)?)
    };
    if a.salvage {
        // qemu-img -q drops the warnings too.
        let quiet = a.quiet;
        let warn = Box::new(move |m: &str| {
            if !quiet {
                eprintln!("vdisk: warning: {m}")
            }
        });
        source = Arc::new(vdisk::convert::Salvage::new(source, warn));
    }
    check_cache(&a.cache, "cache option")?;
    if a.cache == "unsafe" {
        vdisk::core::writer::set_durable_commit(false);
    }
    let size = source.virtual_size();
    // The target's backing file and its format, as qemu-img's img_convert finds them: for a new
    // image, -B or `-o backing_file=` (whose format must then be given, by -F or
    // `-o backing_fmt=`); with -n the existing target keeps its own backing file, and -B only
    // names the image whose content is left unwritten (its format by -F, or probed).
    let (backing_name, backing_fmt) = if a.no_create {
        (a.backing.clone(), a.backing_format.clone())
    } else {
        super::add_backing_options(
            &mut opts,
            out_fmt,
            a.backing.as_deref(),
            a.backing_format.as_deref(),
        )?;
        let get = |k: &str| opts.get(k).map(str::to_string);
        (get("backing_file"), get("backing_fmt"))
    };
    let mut backing_image: Option<Arc<dyn ImageReader>> = None;
    if let Some(b) = backing_name {
        if a.target_is_zero {
            return Err(Error::invalid(
                "Cannot use --target-is-zero when the destination image has a backing file",
            ));
        }
        if srcs.len() > 1 {
            return Err(Error::invalid(
                "Having a backing file for the target makes no sense when concatenating multiple input images",
            ));
        }
        if backing_fmt.is_none() && !a.no_create {
            return Err(Error::invalid(
                "Use of backing file requires explicit backing format",
            ));
        }
        let bfmt = parse_format(backing_fmt)?;
        // qemu-img meets a VM's locks on it when it opens the new image with its backing file.
        let opened = vdisk::open_backing_for(dst, &b, bfmt).map_err(|e| match e {
            Error::Open { source, .. } if source.kind() == std::io::ErrorKind::WouldBlock => {
                Error::Other(format!(
                    "Could not open '{}': Could not open backing file: {source}",
                    dst.display()
                ))
            }
            e => e,
        })?;
        read_files.extend(opened.layers.iter().map(|l| l.path.clone()));
        backing_image = Some(opened.image);
    }
    // qemu-img's checks of the options with -c, after those of the backing file.
    if a.compress && !a.no_create {
        if opts.get_bool("encryption", false)? || opts.get("encrypt.format").is_some() {
            return Err(Error::invalid(
                "Compression and encryption not supported at the same time",
            ));
        }
        if opts.get("preallocation").is_some_and(|p| p != "off") {
            return Err(Error::invalid(
                "Compression and preallocation not supported at the same time",
            ));
        }
    }
    if let Some(f) = read_files.iter().find(|f| same_file(f, dst)) {
        // qemu-img's image locks refuse it ("Failed to get "write" lock"); vdisk would replace
        // a file it reads (a source's backing file, or the new backing file: a loop).
        return Err(Error::invalid(format!(
            "{}: error while converting {}: the target is '{}', which this conversion reads",
            dst.display(),
            out_fmt.name(),
            f.display()
        )));
    }
    let mut target_size = size;
    let writer = if a.no_create {
        vdisk::core::locks::check_writable(dst)?;
        let req = OpenRequest {
            format: Some(out_fmt),
            snapshot: None,
            follow_backing: false,
            for_check: false,
        };
        let existing = open_image(dst, &req)?.image.virtual_size();
        target_size = existing;
        if existing < size {
            return Err(Error::invalid("output file is smaller than input file"));
        }
        vdisk::open_existing_writer(out_fmt, dst)?
    } else {
        // The option names were checked above (add_backing_options); what the format refuses
        // is reported after the output's name.
        vdisk::create_image(out_fmt, dst, size, &opts, a.compress).map_err(|e| {
            Error::Other(format!(
                "{}: error while converting {}: {e}",
                dst.display(),
                out_fmt.name()
            ))
        })?
    };
    let writer: Box<dyn vdisk::ImageWriter> = if rate > 0 {
        Box::new(vdisk::convert::RateLimited::new(writer, rate))
    } else {
        writer
    };
    let copts = ConvertOptions {
        workers,
        out_of_order: a.out_of_order,
        min_sparse,
        target_is_zero: a.target_is_zero,
        backing: backing_image,
        compress: a.compress,
        copy_range: a.copy_range,
        // A salvaged source hands out no host locations, so nothing could be mapped; asking
        // would repeat block-status queries (and their warnings).
        map_source: !a.no_source_map && !a.salvage,
        ..ConvertOptions::default()
    };
    let bar = tty_bar.then(|| {
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
    let progress = |done: u64, total: u64| {
        if let Some(b) = &bar {
            b.set_position(done);
        }
        if let Some(p) = &plain {
            // convert's `qemu_progress_print(100.0 * allocated_done / allocated_sectors, 0)`.
            let pct = if total == 0 {
                100.0
            } else {
                (100.0 * done as f64 / total as f64) as f32
            };
            p.print(pct, 0);
        }
    };
    // Reuse freed chunk buffers instead of faulting fresh pages in for every chunk (glibc tuning,
    // process-wide, so the program opts in rather than the library).
    vdisk::convert::keep_buffers_mapped();
    vdisk::convert::convert(source.as_ref(), writer, &copts, &progress)?;
    if let Some(b) = bar {
        b.finish();
    }
    if let Some(p) = plain {
        // qemu-img prints 100% once more as the conversion ends, then the line feed.
        p.print(100.0, 0);
    }
    if let Some(names) = &target_bitmaps {
        return copy_bitmaps_into_existing(dst, &bitmaps, names, target_size, size);
    }
    if !bitmaps.is_empty() {
        // After the data, as qemu-img copies them; a failure removes the new image, as a failed
        // conversion leaves no output.
        if let Err(e) = vdisk::qcow2::mutate::add_bitmaps(dst, &bitmaps) {
            let _ = std::fs::remove_file(dst);
            return Err(e);
        }
    }
    Ok(0)
}

/// The names of the persistent bitmaps of the qcow2 image at `dst`, or `None` when it is version
/// 2 and cannot hold any.
fn target_bitmap_names(dst: &std::path::Path) -> Result<Option<Vec<Vec<u8>>>> {
    let storage = Arc::new(vdisk::core::FileStorage::open(dst)?);
    let files = Arc::new(vdisk::core::storage::HostFiles);
    let image = vdisk::qcow2::open(storage, files, &Default::default())?;
    vdisk::qcow2::mutate::persistent_bitmap_names(&image)
}

/// `convert -n --bitmaps`: qemu-img's `convert_copy_bitmaps` into an existing image, which walks
/// the source's bitmaps last first and stops at the first that cannot be created (a name the
/// target has) or filled (a target of another size); those before it are added, the target is
/// kept, and the error is qemu-img's.
fn copy_bitmaps_into_existing(
    dst: &std::path::Path,
    bitmaps: &[vdisk::qcow2::mutate::PersistentBitmap],
    target_names: &[Vec<u8>],
    target_size: u64,
    source_size: u64,
) -> Result<u8> {
    let mut added = Vec::new();
    let mut failure = None;
    for b in bitmaps.iter().rev() {
        let n = b.name_text();
        if target_names.contains(&b.name) {
            failure = Some(format!(
                "Failed to create bitmap {n}: Bitmap already exists: {n}"
            ));
            break;
        }
        if target_size != source_size {
            failure = Some(format!(
                "Failed to populate bitmap {n}: Bitmaps are of different sizes (destination size \
                 is {target_size}, source size is {source_size}) and can't be merged"
            ));
            break;
        }
        added.insert(0, b.clone());
    }
    vdisk::qcow2::mutate::add_bitmaps(dst, &added)?;
    match failure {
        Some(m) => Err(Error::invalid(m)),
        None => Ok(0),
    }
}

/// The persistent bitmaps `convert --bitmaps` copies from its one qcow2 source, checked as
/// qemu-img's `convert_check_bitmaps` checks them: an inconsistent bitmap fails the conversion
/// unless `skip_broken`, which drops it with qemu-img's warning.
fn source_bitmaps(
    srcs: &[std::path::PathBuf],
    format: Option<Format>,
    skip_broken: bool,
) -> Result<Vec<vdisk::qcow2::mutate::PersistentBitmap>> {
    let [src] = srcs else {
        return Err(Error::invalid(
            "Copying bitmaps only possible with single source",
        ));
    };
    let storage = Arc::new(vdisk::core::FileStorage::open(src)?);
    let format = match format {
        Some(f) => f,
        None => vdisk::core::probe_format(storage.as_ref())?,
    };
    if format != Format::Qcow2 {
        return Err(Error::invalid("Source lacks bitmap support"));
    }
    let files = Arc::new(vdisk::core::storage::HostFiles);
    let image = vdisk::qcow2::open(storage, files, &Default::default())?;
    let mut kept = Vec::new();
    // qemu-img walks the bitmaps last first (QEMU lists them as loaded, each at the head): its
    // error names the last inconsistent one, and its warnings come last first.
    for b in vdisk::qcow2::mutate::read_persistent_bitmaps(&image)?
        .into_iter()
        .rev()
    {
        if !b.in_use {
            kept.insert(0, b);
        } else if skip_broken {
            eprintln!(
                "vdisk: warning: Skipping inconsistent bitmap '{}'",
                b.name_text()
            );
        } else {
            return Err(Error::invalid(format!(
                "Cannot copy inconsistent bitmap '{}'\nTry --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it",
                b.name_text()
            )));
        }
    }
    Ok(kept)
}

/// `--target-image-opts`: the last file is an option string naming the existing target (and its
/// format, else probed as qemu-img probes it; qemu-img creates no image from one, so -n comes first).
/// Replaces the option string by the file it names and returns the target's format.
fn target_from_options(a: &mut ConvertArgs) -> Result<Format> {
    if a.output_format.is_some() {
        return Err(Error::invalid(
            "--image-opts and --format are mutually exclusive",
        ));
    }
    let Some(dst) = a.files.last_mut() else {
        return Err(Error::invalid("Must specify image file name"));
    };
    let (path, driver) = crate::image_opts::resolve(&dst.to_string_lossy())?;
    *dst = path;
    match driver {
        Some(d) => d.parse(),
        // Probed as for any image opened to be written (a raw one with qemu's warning).
        None => super::probe_path(dst),
    }
}

/// Whether `a` and `b` name the same existing file (the same device and inode: links and
/// other spellings of one path included).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}
