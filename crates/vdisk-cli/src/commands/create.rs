//! `vdisk create`: a new empty image of any writable format, sized or sized from its backing file.

use super::{parse_format, print_out};
use std::path::Path;
use vdisk::core::options::format_help;
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
        print_out(&format_help(fmt.name(), vdisk::create_options(fmt)?))?;
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
        if let (Some(b), None) = (opts.get("backing_file"), opts.get("backing_fmt")) {
            // qemu-img 10 no longer probes a backing file's format for a new image; it says what
            // it would have found.
            let detected = vdisk::open_backing_for(filename, b, None)
                .map(|img| format!("\nDetected format of {}.", img.top().format))
                .unwrap_or_default();
            return Err(Error::invalid(format!(
                "Backing file specified without backing format{detected}"
            )));
        }
        // The size may come as `-o size=` instead, as qemu-img allows (not both).
        let size = match (size, opts.get("size")) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid("The image size must be specified only once"))
            }
            (None, Some(o)) => Some(vdisk::core::size::parse_size(o).map_err(|_| {
                Error::invalid(
                    "Parameter 'size' expects a non-negative number below 2^64\n\
                     Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n\
                     and exabytes, respectively.",
                )
            })?),
            (s, None) => s,
        };
        let size = match size {
            Some(s) => s,
            None => match opts.get("backing_file") {
                Some(b) if !unsafe_backing => {
                    let bfmt = parse_format(opts.get("backing_fmt").map(str::to_string))?;
                    let img = vdisk::open_backing_for(filename, b, bfmt)
                        .map_err(|e| Error::Other(format!("{e}\nCould not open backing image.")))?;
                    img.image.virtual_size()
                }
                _ => return Err(Error::invalid("Image creation needs a size parameter")),
            },
        };
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

/// The options of qemu-img's `Formatting 'FILE', fmt=FMT ...` line, in qemu's order with the
/// defaults it shows filled in.
fn formatting_options(fmt: Format, size: u64, opts: &CreateOptions) -> String {
    let mut parts = Vec::new();
    match fmt {
        Format::Qcow2 => {
            let line = vdisk::qcow2::writer::formatting_options(size, opts);
            return line.strip_prefix("fmt=qcow2 ").unwrap_or(&line).to_string();
        }
        Format::Vdi => {
            parts.push(format!("size={size}"));
            parts.push(format!("static={}", opts.get("static").unwrap_or("off")));
        }
        Format::Vmdk => {
            // qemu's order (vmdk_create_opts): size, adapter_type, backing_file, compat6, ...
            parts.push(format!("size={size}"));
            for k in ["adapter_type", "backing_file"] {
                if let Some(v) = opts.get(k) {
                    parts.push(format!("{k}={v}"));
                }
            }
            parts.push(format!("compat6={}", opts.get("compat6").unwrap_or("off")));
            parts.push(format!(
                "hwversion={}",
                opts.get("hwversion").unwrap_or("undefined")
            ));
        }
        Format::Vhdx => {
            // qemu's order (vhdx_create_opts), sizes in bytes, the defaults of the two sizes.
            parts.push(format!("size={size}"));
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
            return parts.join(" ");
        }
        _ => parts.push(format!("size={size}")),
    }
    for (k, v) in opts.pairs() {
        let shown = matches!(k.as_str(), "size" | "static" | "compat6" | "hwversion")
            || (fmt == Format::Vmdk && matches!(k.as_str(), "adapter_type" | "backing_file"));
        if !shown {
            parts.push(format!("{k}={v}"));
        }
    }
    parts.join(" ")
}
