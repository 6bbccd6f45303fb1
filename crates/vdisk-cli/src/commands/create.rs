//! `vdisk create`: a new empty image of any writable format, sized or sized from its backing file.

use super::{parse_format, print_out};
use std::path::Path;
use vdisk::core::options::{
    format_help, format_help_with_protocol, protocol_formatting, PROTOCOL_OPTIONS,
};
use vdisk::core::{CreateOptions, Error, Format, Result};

#[allow(clippy::too_many_arguments)]
pub(super) fn create(
    format: &str,
    options: &[String],
    backing: Option<String>,
    backing_format: Option<String>,
    unsafe_backing: bool,
    quiet: bool,
    filename: Option<&Path>,
    size: Option<String>,
) -> Result<u8> {
    let fmt = format.parse::<Format>();
    let mut opts = CreateOptions::parse(options)?;
    if opts.wants_help() {
        let fmt = fmt?;
        // With a file named, the file protocol's options too, as qemu-img.
        let specs = vdisk::create_options(fmt)?;
        print_out(&match filename {
            Some(_) => format_help_with_protocol(specs),
            None => format_help(fmt.name(), specs),
        })?;
        return Ok(0);
    }
    let filename = filename.ok_or_else(|| Error::invalid("Expecting image file name"))?;
    // The size is read before the image is created; what goes wrong after is reported, as
    // qemu-img's bdrv_img_create reports it, after the file's name.
    let size = size
        .map(|s| super::cvtnum("image size", &s, 0, i64::MAX as u64))
        .transpose()?;
    let made = (|| -> Result<()> {
        let fmt = fmt?;
        if fmt == Format::Ova {
            // vdisk's own read-only format: refused before anything is printed.
            vdisk::create_options(fmt)?;
        }
        super::add_backing_options(
            &mut opts,
            fmt,
            backing.as_deref(),
            backing_format.as_deref(),
        )?;
        // qemu-img's bdrv_img_create from here: the backing file's name, the size, then the
        // backing file opened (unless -u) with the format given, which must be given.
        let backing = opts.get("backing_file").map(str::to_string);
        if let Some(b) = &backing {
            if Path::new(b) == filename {
                return Err(Error::invalid(
                    "Error: Trying to create an image with the same filename as the backing file",
                ));
            }
            if b.is_empty() {
                return Err(Error::invalid(
                    "Expected backing file name, got empty string",
                ));
            }
        }
        // The size may come as `-o size=` instead, as qemu-img allows (not both).
        let mut size = match (size, opts.get("size")) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid("The image size must be specified only once"))
            }
            (None, Some(_)) => opts.get_size("size")?,
            (s, None) => s,
        };
        let bfmt = parse_format(opts.get("backing_fmt").map(str::to_string))?;
        let no_format = || Error::invalid("Backing file specified without backing format");
        match &backing {
            Some(b) if !unsafe_backing => {
                // Sharing everything, as qemu-img opens it (a VM may be using it).
                let img = vdisk::core::locks::with_force_share(|| {
                    vdisk::open_backing_for(filename, b, bfmt)
                })
                .map_err(|e| Error::Other(format!("{e}\nCould not open backing image.")))?;
                if bfmt.is_none() {
                    // qemu-img 10 no longer probes a backing file's format for a new image; it
                    // says what it found.
                    return Err(Error::invalid(format!(
                        "{}\nDetected format of {}.",
                        no_format(),
                        img.top().format
                    )));
                }
                size.get_or_insert(img.image.virtual_size());
            }
            Some(_) if bfmt.is_none() => return Err(no_format()),
            _ => {}
        }
        let size = size.ok_or_else(|| Error::invalid("Image creation needs a size parameter"))?;
        if !quiet {
            println!(
                "Formatting '{}', fmt={} {}",
                filename.display(),
                fmt.name(),
                formatting_options(fmt, size, &opts)
            );
        }
        let writer = vdisk::create_image(fmt, filename, size, &opts, false)?;
        writer.finish()
    })();
    made.map_err(|e| Error::Other(format!("{}: {e}", filename.display())))?;
    Ok(0)
}

/// The options after `size` in qemu's `Formatting` line for `fmt`, in the order of the format's
/// create options in QEMU (vdi_create_opts, vmdk_create_opts, vpc_create_opts), each with the
/// default shown when it is not given; the other options given follow in their own order.
fn shown_in_order(fmt: Format) -> &'static [(&'static str, Option<&'static str>)] {
    match fmt {
        Format::Vdi => &[("static", Some("off"))],
        Format::Vmdk => &[
            ("adapter_type", None),
            ("backing_file", None),
            ("backing_fmt", None),
            ("compat6", Some("off")),
            ("hwversion", Some("undefined")),
            ("toolsversion", None),
            ("subformat", None),
            ("zeroed_grain", None),
        ],
        Format::Vpc => &[("subformat", None), ("force_size", None)],
        _ => &[],
    }
}

/// The options of qemu-img's `Formatting 'FILE', fmt=FMT ...` line, in qemu's order with the
/// defaults it shows filled in.
fn formatting_options(fmt: Format, size: u64, opts: &CreateOptions) -> String {
    let mut parts = vec![format!("size={size}")];
    let own = vdisk::create_options(fmt).unwrap_or(&[]);
    match fmt {
        Format::Qcow2 => {
            let line = vdisk::qcow2::writer::formatting_options(size, opts);
            let mut parts = vec![line.strip_prefix("fmt=qcow2 ").unwrap_or(&line).to_string()];
            parts.extend(protocol_formatting(opts, own));
            return parts.join(" ");
        }
        Format::Vhdx => {
            // qemu's order (vhdx_create_opts), sizes in bytes, the defaults of the two sizes.
            for (k, default) in [("log_size", "1048576"), ("block_size", "0")] {
                let v = opts.get_size(k).ok().flatten();
                parts.push(format!(
                    "{k}={}",
                    v.map_or(default.to_string(), |v| v.to_string())
                ));
            }
            if let Some(v) = opts.get("subformat") {
                parts.push(format!("subformat={v}"));
            }
            if let Some(v) = opts.get("block_state_zero") {
                parts.push(format!("block_state_zero={v}"));
            }
            parts.extend(protocol_formatting(opts, own));
            return parts.join(" ");
        }
        _ => {}
    }
    let ordered = shown_in_order(fmt);
    for (k, default) in ordered {
        if let Some(v) = opts.get(k).or(*default) {
            parts.push(format!("{k}={v}"));
        }
    }
    for (k, v) in opts.pairs() {
        let protocol = PROTOCOL_OPTIONS.iter().any(|p| p.name == k);
        if k != "size" && !protocol && !ordered.iter().any(|(name, _)| name == k) {
            parts.push(format!("{k}={v}"));
        }
    }
    parts.extend(protocol_formatting(opts, own));
    parts.join(" ")
}
