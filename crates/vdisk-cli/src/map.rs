//! `vdisk map`: the guest-to-host mapping of an image and its backing chain, in qemu-img's human and
//! JSON layouts (`qemu-img map`), driven by block status.

use std::io::Write;
use vdisk::core::reader::for_each_extent;
use vdisk::core::{Error, Extent, ExtentKind, ImageReader, Result};

/// One entry of `map --output=json`, in qemu's exact one-line form.
pub fn json_entry(e: &Extent) -> String {
    let mut s = format!(
        "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, \"zero\": {}, \"data\": {}, \"compressed\": {}",
        e.offset,
        e.length,
        e.depth,
        e.kind.is_present(),
        e.kind.reads_as_zero(),
        e.kind.is_data(),
        e.kind == ExtentKind::Compressed
    );
    if let Some(h) = &e.host {
        s.push_str(&format!(", \"offset\": {}", h.offset));
    }
    s.push('}');
    s
}

/// Writes the map of `image` over `start..start+len` to `out`.
pub fn write_map(
    image: &dyn ImageReader,
    start: u64,
    len: u64,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let io = |e: std::io::Error| Error::Other(format!("cannot write output: {e}"));
    if json {
        out.write_all(b"[").map_err(io)?;
    } else {
        writeln!(
            out,
            "{:<16}{:<16}{:<16}File",
            "Offset", "Length", "Mapped to"
        )
        .map_err(io)?;
    }
    let mut first = true;
    for_each_extent(image, start, len, |e| {
        if json {
            if !first {
                out.write_all(b",\n").map_err(io)?;
            }
            out.write_all(json_entry(&e).as_bytes()).map_err(io)?;
        } else if e.kind.is_data() {
            let Some(h) = &e.host else {
                return Err(Error::Other(
                    "File contains external, encrypted or compressed clusters.".into(),
                ));
            };
            if e.kind == ExtentKind::Data {
                writeln!(
                    out,
                    "{:<16}{:<16}{:<16}{}",
                    hex(e.offset),
                    hex(e.length),
                    hex(h.offset),
                    h.file.display()
                )
                .map_err(io)?;
            }
        }
        first = false;
        Ok(())
    })?;
    if json {
        out.write_all(b"]\n").map_err(io)?;
    }
    Ok(())
}

/// C's `%#x`: `0` for zero, `0x...` otherwise.
fn hex(v: u64) -> String {
    if v == 0 {
        "0".into()
    } else {
        format!("{v:#x}")
    }
}
