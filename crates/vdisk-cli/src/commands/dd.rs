//! `vdisk dd`: qemu-img dd (qemu-img.c `img_dd`). The input (with its backing chain) is read from
//! `skip` blocks on, up to `count` blocks from its start (qemu-img counts `count` from the start of
//! the input, not from `skip`), into a new image of that size; every byte is written, zeros
//! included, so the output is fully allocated as qemu-img's is.

use super::{cvtnum, cvtnum_plain};
use crate::cli::DdArgs;
use std::sync::Arc;
use vdisk::chain::{open_image, OpenRequest};
use vdisk::convert::ConvertOptions;
use vdisk::core::{CreateOptions, Error, Format, ImageReader, Result, Window};

const INT64_MAX: u64 = i64::MAX as u64;

/// The operands, parsed in order as qemu-img parses them (a later one wins).
#[derive(Default)]
struct Operands {
    bs: Option<u64>,
    count: Option<u64>,
    skip: Option<u64>,
    input: Option<String>,
    output: Option<String>,
}

fn operands(args: &[String]) -> Result<Operands> {
    let mut o = Operands::default();
    for arg in args {
        // qemu-img names the key only ("unrecognized operand foo" for foo=1).
        let (key, value) = arg.split_once('=').unwrap_or((arg, ""));
        let unknown = || Error::invalid(format!("unrecognized operand {key}"));
        if !arg.contains('=') {
            return Err(unknown());
        }
        match key {
            "bs" => o.bs = Some(cvtnum("bs", value, 1, i32::MAX as u64)?),
            "count" => o.count = Some(cvtnum_plain("count", value, 0, INT64_MAX)?),
            "skip" => o.skip = Some(cvtnum_plain("skip", value, 0, INT64_MAX)?),
            "if" => o.input = Some(value.to_string()),
            "of" => o.output = Some(value.to_string()),
            _ => return Err(unknown()),
        }
    }
    Ok(o)
}

pub(super) fn dd(a: DdArgs) -> Result<u8> {
    let o = operands(&a.operands)?;
    let (Some(input), Some(output)) = (&o.input, &o.output) else {
        return Err(Error::invalid("Must specify both input and output files"));
    };
    let bs = o.bs.unwrap_or(512);
    let out_fmt: Format = a.output_format.parse()?;
    let req = OpenRequest {
        format: super::parse_format(a.format)?,
        snapshot: None,
        follow_backing: true,
        for_check: false,
    };
    let source = open_image(input.as_ref(), &req)?.image;
    // qemu-img's sizes: `count` blocks from the input's start, then less the skipped blocks; a
    // skip past that end gives an empty output (and a message, but success).
    let bytes = |blocks: u64| blocks.checked_mul(bs).filter(|n| *n <= INT64_MAX);
    let mut end = source.virtual_size();
    if let Some(n) = o.count.and_then(bytes) {
        end = end.min(n);
    }
    let start = match o.skip {
        None => 0,
        Some(s) => bytes(s).unwrap_or(u64::MAX),
    };
    let len = end.saturating_sub(start);
    if start > end {
        eprintln!("vdisk: {input}: cannot skip to specified offset");
    }
    let window: Arc<dyn ImageReader> = Arc::new(Window::new(source, start.min(end), len)?);
    let writer = vdisk::create_image(
        out_fmt,
        output.as_ref(),
        len,
        &CreateOptions::default(),
        false,
    )
    .map_err(|e| {
        Error::Other(format!(
            "{}: error while creating output image: {e}",
            output
        ))
    })?;
    let opts = ConvertOptions {
        // qemu-img dd writes every block it reads: no zero detection.
        min_sparse: 0,
        ..ConvertOptions::default()
    };
    vdisk::convert::keep_buffers_mapped();
    vdisk::convert::convert(window.as_ref(), writer, &opts, &|_, _| {})?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Operands> {
        operands(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn operands_parse_as_qemu_parses_them() {
        let o = parse(&["bs=1M", "count=4", "skip=0x2", "if=a", "of=b", "if=c"]).unwrap();
        assert_eq!(
            (
                o.bs,
                o.count,
                o.skip,
                o.input.as_deref(),
                o.output.as_deref()
            ),
            (Some(1 << 20), Some(4), Some(2), Some("c"), Some("b"))
        );
        let err = |args: &[&str]| parse(args).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(&["foo=1"]).ends_with("unrecognized operand foo"));
        assert!(err(&["bs"]).contains("unrecognized operand bs"));
        assert!(err(&["bs=0"]).contains("Invalid bs specified. Must be between 1 and 2147483647."));
        assert!(err(&["bs=1x"]).contains("Invalid bs specified: '1x'."));
        assert!(err(&["count=-1"]).contains("Invalid count specified. Must be between 0 and"));
    }
}
