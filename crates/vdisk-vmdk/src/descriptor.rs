//! The text descriptor ("The Descriptor File" in VMware's Virtual Disk Format 1.1): header keys
//! (version, CID, parentCID, createType, parentFileNameHint), extent lines
//! (`RW <sectors> <TYPE> "file" [offset]`) and the disk database (`ddb.key = "value"`). Parsing is pure
//! and bounded (see `limits`); rendering writes the layout qemu-img and VMware write.

use crate::limits::{MAX_DESCRIPTOR_LINE, MAX_EXTENTS, MAX_VIRTUAL_BYTES, SECTOR};
use vdisk_core::StoredName;

/// CID value meaning "no parent".
pub const NO_PARENT_CID: u32 = 0xffff_ffff;

/// Access mode of an extent line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
    NoAccess,
}

impl Access {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "RW" => Some(Access::ReadWrite),
            "RDONLY" => Some(Access::ReadOnly),
            "NOACCESS" => Some(Access::NoAccess),
            _ => None,
        }
    }
}

/// Extent types ("Extent Descriptions": FLAT, SPARSE, ZERO, VMFS, VMFSSPARSE, VMFSRDM, VMFSRAW, and
/// SESPARSE from Virtual Disk Format 5.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentType {
    Flat,
    Sparse,
    Zero,
    Vmfs,
    VmfsSparse,
    SeSparse,
    VmfsRdm,
    VmfsRaw,
}

impl ExtentType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "FLAT" => ExtentType::Flat,
            "SPARSE" => ExtentType::Sparse,
            "ZERO" => ExtentType::Zero,
            "VMFS" => ExtentType::Vmfs,
            "VMFSSPARSE" => ExtentType::VmfsSparse,
            "SESPARSE" => ExtentType::SeSparse,
            "VMFSRDM" => ExtentType::VmfsRdm,
            "VMFSRAW" => ExtentType::VmfsRaw,
            _ => return None,
        })
    }

    /// The name as written in the descriptor.
    pub fn name(self) -> &'static str {
        match self {
            ExtentType::Flat => "FLAT",
            ExtentType::Sparse => "SPARSE",
            ExtentType::Zero => "ZERO",
            ExtentType::Vmfs => "VMFS",
            ExtentType::VmfsSparse => "VMFSSPARSE",
            ExtentType::SeSparse => "SESPARSE",
            ExtentType::VmfsRdm => "VMFSRDM",
            ExtentType::VmfsRaw => "VMFSRAW",
        }
    }
}

/// One extent line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    pub access: Access,
    /// Size in sectors.
    pub sectors: u64,
    pub kind: ExtentType,
    /// The file name as written, byte for byte (absent for ZERO extents): qemu opens the bytes
    /// between the quotes, UTF-8 or not.
    pub file: Option<StoredName>,
    /// Offset in sectors into the file (FLAT/VMFS only).
    pub offset: u64,
}

/// A parsed descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub version: u32,
    pub cid: u32,
    pub parent_cid: u32,
    pub create_type: Option<String>,
    pub parent_hint: Option<String>,
    pub extents: Vec<ExtentLine>,
    /// `ddb.*` entries in order, keys without the `ddb.` prefix, values unquoted.
    pub ddb: Vec<(String, String)>,
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(v)
}

fn parse_cid(key: &str, v: &str) -> Result<u32, String> {
    u32::from_str_radix(unquote(v), 16)
        .map_err(|_| format!("{key} '{v}' is not a 32-bit hexadecimal number"))
}

impl Descriptor {
    /// Parses descriptor text (anything after a NUL byte is ignored, as for an embedded descriptor).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        Self::parse_with(bytes, true)
    }

    /// Parses the descriptor embedded in a sparse file, whose extent lines are not used (the sparse
    /// file is the only extent): malformed extent lines and values are skipped rather than refused,
    /// as qemu does. The size limits still apply.
    pub fn parse_embedded(bytes: &[u8]) -> Result<Self, String> {
        Self::parse_with(bytes, false)
    }

    fn parse_with(bytes: &[u8], strict: bool) -> Result<Self, String> {
        // In lenient mode a bad value or extent line is skipped instead of failing the parse.
        macro_rules! or_skip {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(m) if strict => return Err(m),
                    Err(_) => continue,
                }
            };
        }
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        let text = String::from_utf8_lossy(&bytes[..end]);
        // The lossy text has the same line breaks and quotes as the bytes (U+FFFD replaces only
        // bytes that are not ASCII), so each text line has its bytes, for the file names.
        let mut raw_lines = bytes[..end].split(|b| *b == b'\n');
        let mut d = Descriptor {
            version: 1,
            cid: NO_PARENT_CID,
            parent_cid: NO_PARENT_CID,
            create_type: None,
            parent_hint: None,
            extents: Vec::new(),
            ddb: Vec::new(),
        };
        let mut total: u64 = 0;
        for (no, raw) in text.lines().enumerate() {
            let raw_line = raw_lines.next().unwrap_or_default();
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.len() > MAX_DESCRIPTOR_LINE {
                return Err(format!(
                    "descriptor line {} is longer than {MAX_DESCRIPTOR_LINE} bytes",
                    no + 1
                ));
            }
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some(access) = Access::parse(first) {
                if d.extents.len() >= MAX_EXTENTS {
                    return Err(format!("more than {MAX_EXTENTS} extents in the descriptor"));
                }
                let e = or_skip!(parse_extent(access, &line[first.len()..], raw_line)
                    .map_err(|m| format!("line {}: {m}", no + 1)));
                total = total
                    .checked_add(e.sectors)
                    .filter(|t| {
                        t.checked_mul(SECTOR)
                            .is_some_and(|b| b <= MAX_VIRTUAL_BYTES)
                    })
                    .ok_or_else(|| {
                        format!(
                            "line {}: the extents add up to more than 2^63 bytes",
                            no + 1
                        )
                    })?;
                fits_when_rendered(no, extent_line(&e))?;
                d.extents.push(e);
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            match k {
                "version" => {
                    d.version = or_skip!(unquote(v)
                        .parse()
                        .map_err(|_| format!("version '{v}' is not a number")))
                }
                "CID" => d.cid = or_skip!(parse_cid(k, v)),
                "parentCID" => d.parent_cid = or_skip!(parse_cid(k, v)),
                "createType" => d.create_type = Some(quoted_value(no, k, v)?),
                "parentFileNameHint" => d.parent_hint = Some(quoted_value(no, k, v)?),
                _ => {
                    if let Some(name) = k.strip_prefix("ddb.") {
                        let v = unquote(v);
                        fits_when_rendered(no, ddb_line(name, v))?;
                        d.ddb.push((name.to_string(), v.to_string()));
                    }
                }
            }
        }
        // One extent line costs its 48 bytes in the reader's copy, not twice that after doubling.
        d.extents.shrink_to_fit();
        Ok(d)
    }

    /// The ddb value for `key` (without `ddb.`).
    pub fn ddb_value(&self, key: &str) -> Option<&str> {
        self.ddb
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The descriptor text in the layout qemu-img and VMware write. [`Descriptor::parse`]
    /// checks each line as written here against [`MAX_DESCRIPTOR_LINE`], so the text of a
    /// parsed descriptor parses back.
    pub fn render(&self) -> String {
        let mut s = String::from("# Disk DescriptorFile\n");
        s += &format!(
            "version={}\nCID={:08x}\nparentCID={:08x}\n",
            self.version, self.cid, self.parent_cid
        );
        s += &quoted_line(
            "createType",
            self.create_type.as_deref().unwrap_or("monolithicSparse"),
        );
        s.push('\n');
        if let Some(h) = &self.parent_hint {
            s += &quoted_line("parentFileNameHint", h);
            s.push('\n');
        }
        s += "\n# Extent description\n";
        for e in &self.extents {
            s += &extent_line(e);
            s.push('\n');
        }
        s += "\n# The Disk Data Base\n#DDB\n\n";
        for (k, v) in &self.ddb {
            s += &ddb_line(k, v);
            s.push('\n');
        }
        s
    }
}

/// `key="value"`, as [`Descriptor::render`] writes `createType` and `parentFileNameHint`.
fn quoted_line(key: &str, value: &str) -> String {
    format!("{key}=\"{value}\"")
}

/// The value of `key=value` on line `no`, unquoted, once its line as written back fits.
fn quoted_value(no: usize, key: &str, value: &str) -> Result<String, String> {
    let value = unquote(value);
    fits_when_rendered(no, quoted_line(key, value))?;
    Ok(value.to_string())
}

/// `ddb.key = "value"`, as [`Descriptor::render`] writes the disk database.
fn ddb_line(key: &str, value: &str) -> String {
    format!("ddb.{key} = \"{value}\"")
}

/// An extent line as [`Descriptor::render`] writes it.
fn extent_line(e: &ExtentLine) -> String {
    let access = match e.access {
        Access::ReadWrite => "RW",
        Access::ReadOnly => "RDONLY",
        Access::NoAccess => "NOACCESS",
    };
    let mut s = format!("{access} {} {}", e.sectors, e.kind.name());
    if let Some(f) = &e.file {
        // Lossy: a name that is not UTF-8 renders with U+FFFD (qemu-img and vdisk write
        // the names they are given, which are text).
        s += &format!(" \"{f}\"");
    }
    if matches!(e.kind, ExtentType::Flat | ExtentType::Vmfs) {
        s += &format!(" {}", e.offset);
    }
    s
}

/// Refuses line `no` (0-based) when `rendered`, the line as [`Descriptor::render`] writes it
/// back, is longer than [`MAX_DESCRIPTOR_LINE`]: rendering adds quotes and the spaces around a
/// ddb `=`, so a line within the limit as read can be past it as written, and the written text
/// must parse again (found by the `vmdk_descriptor` fuzz target, session 23).
fn fits_when_rendered(no: usize, rendered: String) -> Result<(), String> {
    if rendered.len() > MAX_DESCRIPTOR_LINE {
        return Err(format!(
            "descriptor line {} is longer than {MAX_DESCRIPTOR_LINE} bytes as written back",
            no + 1
        ));
    }
    Ok(())
}

/// The extent line after its access word; `raw_line` is the whole line's bytes, where the file
/// name is taken from (its first quote opens the name: the words before it have none).
fn parse_extent(access: Access, rest: &str, raw_line: &[u8]) -> Result<ExtentLine, String> {
    let rest = rest.trim_start();
    let (sectors, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let sectors: u64 = sectors
        .parse()
        .map_err(|_| format!("extent size '{sectors}' is not a number"))?;
    let rest = rest.trim_start();
    let (kind_s, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let kind =
        ExtentType::parse(kind_s).ok_or_else(|| format!("unknown extent type '{kind_s}'"))?;
    let rest = rest.trim_start();
    let (file, rest) = if let Some(q) = rest.strip_prefix('"') {
        let close = q.find('"').ok_or("unterminated file name")?;
        let mut quoted = raw_line.split(|b| *b == b'"');
        let name = quoted.nth(1).ok_or("unterminated file name")?;
        (Some(StoredName::from_stored(name)), q[close + 1..].trim())
    } else if rest.is_empty() {
        (None, "")
    } else {
        return Err(format!("file name '{rest}' is not quoted"));
    };
    let offset: u64 = match rest.split_whitespace().next() {
        None => 0,
        Some(o) => o
            .parse()
            .map_err(|_| format!("extent offset '{o}' is not a number"))?,
    };
    if file.is_none() && kind != ExtentType::Zero {
        return Err(format!("{} extent without a file name", kind.name()));
    }
    if offset
        .checked_add(sectors)
        .and_then(|s| s.checked_mul(SECTOR))
        .is_none_or(|b| b > MAX_VIRTUAL_BYTES)
    {
        return Err(format!(
            "extent offset {offset} plus size {sectors} is too large"
        ));
    }
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file,
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_2GB: &str = "# Disk DescriptorFile\nversion=1\nCID=1479de7f\nparentCID=ffffffff\n\
        createType=\"twoGbMaxExtentSparse\"\n\n# Extent description\nRW 4194304 SPARSE \"big-s001.vmdk\"\n\
        RW 2097152 SPARSE \"big s002.vmdk\"\nRW 100 FLAT \"f.bin\" 2048\r\nRDONLY 8 ZERO\n\n# The Disk Data Base\n#DDB\n\n\
        ddb.virtualHWVersion = \"4\"\nddb.adapterType = \"ide\"\n\0garbage RW 1 FLAT \"x\"";

    #[test]
    fn parses_qemu_descriptor() {
        let d = Descriptor::parse(QEMU_2GB.as_bytes()).unwrap();
        assert_eq!(d.cid, 0x1479de7f);
        assert_eq!(d.parent_cid, NO_PARENT_CID);
        assert_eq!(d.create_type.as_deref(), Some("twoGbMaxExtentSparse"));
        assert_eq!(d.extents.len(), 4);
        assert_eq!(
            d.extents[1].file.as_ref().map(StoredName::as_bytes),
            Some(&b"big s002.vmdk"[..])
        );
        assert_eq!(
            (d.extents[2].kind, d.extents[2].offset, d.extents[2].sectors),
            (ExtentType::Flat, 2048, 100)
        );
        assert_eq!(
            (
                d.extents[3].kind,
                d.extents[3].access,
                d.extents[3].file.as_ref()
            ),
            (ExtentType::Zero, Access::ReadOnly, None)
        );
        assert_eq!(d.ddb_value("adapterType"), Some("ide"));
        let again = Descriptor::parse(d.render().as_bytes()).unwrap();
        assert_eq!(again, d);
    }

    #[test]
    fn file_names_keep_their_bytes() {
        let text =
            b"version=1\nRW 8 FLAT \"caf\xe9 \xff.bin\" 0\r\n\xe9=\xe9\nRW 8 SPARSE \"\xc3\xa9\"\n";
        let d = Descriptor::parse(text).unwrap();
        let names: Vec<&[u8]> = d
            .extents
            .iter()
            .filter_map(|e| e.file.as_ref().map(StoredName::as_bytes))
            .collect();
        assert_eq!(names, [&b"caf\xe9 \xff.bin"[..], "\u{e9}".as_bytes()]);
        // Rendered lossily, which parses back to the same text.
        let again = Descriptor::parse(d.render().as_bytes()).unwrap();
        assert_eq!(again.render(), d.render());
        assert!(d.render().contains("\"caf\u{fffd} \u{fffd}.bin\" 0"));
    }

    /// Found by the `vmdk_descriptor` fuzz target (session 23): a line within the limit as read
    /// that render makes longer (quotes, spaces around a ddb `=`) is refused when parsed, so
    /// that every parsed descriptor renders to text that parses back.
    #[test]
    fn lines_are_limited_as_written_back() {
        // A line of `len` bytes: `head`, then `v`s, then `tail`.
        let line = |head: &str, tail: &str, len: usize| {
            format!(
                "version=1\n{head}{}{tail}\n",
                "v".repeat(len - head.len() - tail.len())
            )
        };
        // Unquoted values gain their two quotes, a ddb line its two spaces.
        for (head, tail) in [
            ("createType=", ""),
            ("parentFileNameHint=", ""),
            ("ddb.k=\"", "\""),
        ] {
            let at_limit = line(head, tail, MAX_DESCRIPTOR_LINE - 2);
            let d = Descriptor::parse(at_limit.as_bytes()).unwrap();
            let text = d.render();
            assert!(
                text.lines().any(|l| l.len() == MAX_DESCRIPTOR_LINE),
                "{head}"
            );
            assert!(
                Descriptor::parse(text.as_bytes()).unwrap().render() == text,
                "{head}"
            );

            let over = line(head, tail, MAX_DESCRIPTOR_LINE - 1);
            let e = Descriptor::parse(over.as_bytes()).unwrap_err();
            assert!(
                e.contains(&format!(
                    "line 2 is longer than {MAX_DESCRIPTOR_LINE} bytes as written back"
                )),
                "{head}: {e}"
            );
        }
        // An extent line only loses spaces when written back; the limit as read stays.
        let spaced = line("RW    8    FLAT \"", "\" 0", MAX_DESCRIPTOR_LINE);
        let d = Descriptor::parse(spaced.as_bytes()).unwrap();
        assert!(Descriptor::parse(d.render().as_bytes()).unwrap().render() == d.render());
        let e = Descriptor::parse(line("RW 8 FLAT \"", "\" 0", MAX_DESCRIPTOR_LINE + 1).as_bytes());
        assert!(e.unwrap_err().ends_with(&format!(
            "line 2 is longer than {MAX_DESCRIPTOR_LINE} bytes"
        )));
    }

    #[test]
    fn an_extent_after_a_blank_line_is_read_once() {
        // qemu-img reads it twice (README: "Where vdisk deliberately differs"); VMware's format
        // allows blank lines.
        let d = Descriptor::parse(b"version=1\n\n  \nRW 8 FLAT \"x\" 0\n").unwrap();
        assert_eq!(d.extents.len(), 1);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "RW x SPARSE \"a\"",
            "RW 10 BOGUS \"a\"",
            "RW 10 SPARSE a",
            "RW 10 SPARSE \"a",
            "RW 10 SPARSE",
            "RW 10 FLAT \"a\" zz",
            "RW 18446744073709551615 FLAT \"a\"",
            "CID=xyz",
            "parentCID=123456789",
        ] {
            assert!(Descriptor::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        let many = "RW 9223372036854775 FLAT \"a\"\n".repeat(2000);
        assert!(
            Descriptor::parse(many.as_bytes()).is_err(),
            "sum of extents overflows"
        );
        let lenient =
            Descriptor::parse_embedded(b"CID=zz\nRW x SPARSE \"a\"\nparentCID=0000abcd\n").unwrap();
        assert_eq!(
            (lenient.cid, lenient.parent_cid, lenient.extents.len()),
            (NO_PARENT_CID, 0xabcd, 0)
        );
        let lots = "RW 1 ZERO\n".repeat(MAX_EXTENTS + 1);
        assert!(Descriptor::parse(lots.as_bytes())
            .unwrap_err()
            .contains("more than"));
    }
}
