//! `-o key=value,...` creation options, parsed with qemu's QemuOpts rules: pairs split on `,`, a doubled
//! `,,` is a literal comma, a bare `key` means `key=on`, and `help` asks for the option list.

use crate::error::{Error, Result};

/// Parsed `-o` options, in the order given. Later repeats of a key override earlier ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    pairs: Vec<(String, String)>,
}

/// One option a format accepts, for `-o help`.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
}

impl CreateOptions {
    /// No options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses one or more `-o` arguments (each may hold several pairs).
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self> {
        let mut o = CreateOptions::new();
        for a in args {
            for item in split_unescaped(a.as_ref()) {
                if item.is_empty() {
                    continue;
                }
                match item.split_once('=') {
                    Some((k, v)) => o.set(k, v),
                    None => o.set(&item, "on"),
                }
            }
        }
        Ok(o)
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn set(&mut self, key: &str, value: &str) {
        self.pairs.retain(|(k, _)| k != key);
        self.pairs.push((key.to_string(), value.to_string()));
    }

    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `help` (or `?`) was asked for.
    pub fn wants_help(&self) -> bool {
        self.get("help").is_some() || self.get("?").is_some()
    }

    /// All pairs in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Fails on a key that neither the format (`known`) nor the file protocol under it
    /// ([`PROTOCOL_OPTIONS`]) takes, or a value its kind does not take (`bool`, `size`, `num`),
    /// pair by pair in the order given, with qemu's messages (QemuOpts checks each value as it
    /// is set, before the format sees any). The protocol's `preallocation` is a string there;
    /// [`protocol_prealloc`] checks it when the file is created.
    pub fn ensure_known(&self, format: &str, known: &[OptionSpec]) -> Result<()> {
        for (k, v) in &self.pairs {
            let Some(spec) = known.iter().chain(PROTOCOL_OPTIONS).find(|s| s.name == k) else {
                return Err(Error::invalid(format!(
                    "Invalid parameter '{k}'\nThis option is not supported by the '{format}' format (try -o help)"
                )));
            };
            match spec.kind {
                "bool (on/off)" => {
                    parse_bool(k, v)?;
                }
                "size" => {
                    parse_size_value(k, v)?;
                }
                "num" => {
                    parse_number(k, v)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A boolean option, or `default` when absent: `on`, `yes`, `true` or `y`, and `off`, `no`,
    /// `false` or `n`, as QEMU's qapi_bool_parse reads them.
    pub fn get_bool(&self, key: &str, default: bool) -> Result<bool> {
        self.get(key).map_or(Ok(default), |v| parse_bool(key, v))
    }

    /// A size option (`cluster_size=64k`), or `None` when absent.
    pub fn get_size(&self, key: &str) -> Result<Option<u64>> {
        self.get(key).map(|v| parse_size_value(key, v)).transpose()
    }

    /// A number option (`refcount_bits=16`), or `None` when absent.
    pub fn get_number(&self, key: &str) -> Result<Option<u64>> {
        self.get(key).map(|v| parse_number(key, v)).transpose()
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        // qemu-img's words, which do not repeat the value.
        _ => Err(Error::invalid(format!(
            "Parameter '{key}' expects 'on' or 'off'"
        ))),
    }
}

/// A size value as QEMU's parse_option_size reads it: up to 2^64 - 1 (the format then checks
/// its own range), a negative or larger number out of range (ERANGE), anything else invalid.
fn parse_size_value(key: &str, v: &str) -> Result<u64> {
    let out_of_range =
        || Error::invalid(format!("Value '{v}' is out of range for parameter '{key}'"));
    if let Ok(n) = crate::size::parse_size(v) {
        return Ok(n);
    }
    let t = v.trim();
    if t.strip_prefix('-')
        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    {
        return Err(out_of_range());
    }
    match crate::size::whole_size_u128(t) {
        Some(n) => u64::try_from(n).map_err(|_| out_of_range()),
        None => Err(Error::invalid(format!(
            "Parameter '{key}' expects a non-negative number below 2^64\n\
             Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n\
             and exabytes, respectively."
        ))),
    }
}

fn parse_number(key: &str, v: &str) -> Result<u64> {
    parse_c_number(v).ok_or_else(|| Error::invalid(format!("Parameter '{key}' expects a number")))
}

/// A whole number as QEMU reads one with `qemu_strtou64` in base 0 (`parse_option_number`, and
/// the numbers of qemu-img's flags that are not sizes): leading white space, an optional sign (a
/// minus wraps around, as `strtoull` does), then decimal, `0x` hexadecimal or `0` octal digits,
/// and nothing after them.
pub fn parse_c_number(v: &str) -> Option<u64> {
    let t = v.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (digits, radix) = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None if t.len() > 1 && t.starts_with('0') => (&t[1..], 8),
        None => (t, 10),
    };
    let all_digits = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
    let n = all_digits
        .then(|| u64::from_str_radix(digits, radix).ok())
        .flatten()?;
    Some(if negative { n.wrapping_neg() } else { n })
}

/// The options of QEMU's file protocol (block/file-posix.c `raw_create_opts`), which
/// `qemu-img create` and `convert` take for an image of any format, in qemu's order after
/// `size`. vdisk honours `preallocation` for raw images; elsewhere, and for `nocow` (btrfs) and
/// `extent_size_hint` (XFS), the values are checked and change nothing, as in qemu on ext4 (a
/// format creates its file empty, so qemu preallocates nothing under it either).
pub const PROTOCOL_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "size",
        kind: "size",
        help: "Virtual disk size",
    },
    OptionSpec {
        name: "nocow",
        kind: "bool (on/off)",
        help: "Turn off copy-on-write (valid only on btrfs)",
    },
    OptionSpec {
        name: "preallocation",
        kind: "str",
        help: "Preallocation mode (allowed values: off, falloc, full)",
    },
    OptionSpec {
        name: "extent_size_hint",
        kind: "size",
        help: "Extent size hint for the image file, 0 to disable",
    },
];

/// The file protocol's preallocation modes, with file-posix.c's words for the others.
pub fn protocol_prealloc(v: &str) -> Result<&str> {
    match v {
        "off" | "falloc" | "full" => Ok(v),
        "metadata" => Err(Error::invalid("Unsupported preallocation mode: metadata")),
        _ => Err(Error::invalid(format!("invalid parameter value: {v}"))),
    }
}

/// The protocol options of `opts` as qemu's `Formatting` line shows them after the format's
/// own (sizes in bytes), leaving out those the format defines itself (`known`).
pub fn protocol_formatting(opts: &CreateOptions, known: &[OptionSpec]) -> Vec<String> {
    PROTOCOL_OPTIONS
        .iter()
        .filter(|p| p.name != "size" && !known.iter().any(|s| s.name == p.name))
        .filter_map(|p| {
            let v = opts.get(p.name)?;
            let shown = match p.kind {
                "size" => parse_size_value(p.name, v).map_or(v.to_string(), |n| n.to_string()),
                _ => v.to_string(),
            };
            Some(format!("{}={shown}", p.name))
        })
        .collect()
}

/// What `-o help` prints when the command names a file: the format's options and the file
/// protocol's together, sorted, under qemu's plain heading.
pub fn format_help_with_protocol(specs: &[OptionSpec]) -> String {
    let mut all: Vec<&OptionSpec> = specs.iter().collect();
    for p in PROTOCOL_OPTIONS {
        if !all.iter().any(|s| s.name == p.name) {
            all.push(p);
        }
    }
    listing("Supported options:", all)
}

/// Formats the `-o help` listing for a format in qemu-img's layout (`  %-22s - %s` per option,
/// options sorted by name, then qemu's note about protocol options).
pub fn format_help(format: &str, specs: &[OptionSpec]) -> String {
    let mut s = listing(
        &format!("Supported {format} options:"),
        specs.iter().collect(),
    );
    s.push_str("\nThe protocol level may support further options.\nSpecify the target filename to include those options.\n");
    s
}

/// What `qemu-img amend -o help` prints: the options the format can amend, by name.
pub fn amend_help(format: &str, specs: &[OptionSpec]) -> String {
    listing(
        &format!("Amend options for '{format}':"),
        specs.iter().collect(),
    )
}

/// `heading`, then one line per option sorted by name, in qemu-img's layout (`  %-22s - %s`).
fn listing(heading: &str, mut specs: Vec<&OptionSpec>) -> String {
    specs.sort_by_key(|s| s.name);
    let mut s = format!("{heading}\n");
    for spec in specs {
        let head = format!("{}=<{}>", spec.name, spec.kind);
        s.push_str(&format!("  {head:<22} - {}\n", spec.help));
    }
    s
}

fn split_unescaped(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                cur.push(',');
            } else {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_syntax() {
        let o = CreateOptions::parse(&["cluster_size=64k,lazy_refcounts", "backing_file=a,,b.img"])
            .unwrap();
        assert_eq!(o.get("cluster_size"), Some("64k"));
        assert_eq!(o.get("backing_file"), Some("a,b.img"));
        assert!(o.get_bool("lazy_refcounts", false).unwrap());
        assert_eq!(o.get_size("cluster_size").unwrap(), Some(65536));
        assert!(CreateOptions::parse(&["help"]).unwrap().wants_help());
    }

    #[test]
    fn values_are_read_as_qemu_reads_them() {
        let spec = |name, kind| OptionSpec {
            name,
            kind,
            help: "",
        };
        let known = [
            spec("b", "bool (on/off)"),
            spec("s", "size"),
            spec("n", "num"),
        ];
        let check = |o: &str| {
            CreateOptions::parse(&[o])
                .unwrap()
                .ensure_known("f", &known)
        };
        for good in [
            "b=y", "b=n", "b=yes", "b=false", "b", "s=64k", "n=16", "n=0x10", "n= 16",
        ] {
            assert!(check(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("b=1", "Parameter 'b' expects 'on' or 'off'"),
            ("b=ON", "Parameter 'b' expects 'on' or 'off'"),
            (
                "s=abc",
                "Parameter 's' expects a non-negative number below 2^64\nOptional",
            ),
            ("n=16k", "Parameter 'n' expects a number"),
            ("n=", "Parameter 'n' expects a number"),
            ("n=08", "Parameter 'n' expects a number"),
            ("n=+-1", "Parameter 'n' expects a number"),
            ("s=-1", "Value '-1' is out of range for parameter 's'"),
            ("x=1", "Invalid parameter 'x'"),
        ] {
            let e = check(bad).unwrap_err().to_string();
            assert!(e.starts_with(says), "{bad}: {e}");
        }
        // Octal, as strtoull in base 0 reads a leading 0; a minus wraps; sizes up to 2^64 - 1.
        let o = CreateOptions::parse(&["n=016,m=-1,s=8E,t=16E"]).unwrap();
        assert_eq!(o.get_number("n").unwrap(), Some(14));
        assert_eq!(o.get_number("m").unwrap(), Some(u64::MAX));
        assert_eq!(o.get_size("s").unwrap(), Some(1 << 63));
        let e = o.get_size("t").unwrap_err().to_string();
        assert_eq!(e, "Value '16E' is out of range for parameter 't'");
    }

    #[test]
    fn help_layout_matches_qemu() {
        let specs = [
            OptionSpec {
                name: "static",
                kind: "bool (on/off)",
                help: "VDI static (pre-allocated) image",
            },
            OptionSpec {
                name: "size",
                kind: "size",
                help: "Virtual disk size",
            },
        ];
        assert_eq!(
            format_help("vdi", &specs),
            "Supported vdi options:\n  size=<size>            - Virtual disk size\n  static=<bool (on/off)> - VDI static (pre-allocated) image\n\nThe protocol level may support further options.\nSpecify the target filename to include those options.\n"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let o = CreateOptions::parse(&["bogus=1"]).unwrap();
        let spec = [OptionSpec {
            name: "size",
            kind: "size",
            help: "Virtual disk size",
        }];
        let e = o.ensure_known("raw", &spec).unwrap_err().to_string();
        assert!(e.contains("Invalid parameter 'bogus'"), "{e}");
    }
}
