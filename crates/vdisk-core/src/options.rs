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

    /// Fails on a key the format does not know, or a value its kind does not take (`bool`,
    /// `size`, `num`), pair by pair in the order given, with qemu's messages (QemuOpts checks
    /// each value as it is set, before the format sees any).
    pub fn ensure_known(&self, format: &str, known: &[OptionSpec]) -> Result<()> {
        for (k, v) in &self.pairs {
            let Some(spec) = known.iter().find(|s| s.name == k) else {
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

fn parse_size_value(key: &str, v: &str) -> Result<u64> {
    crate::size::parse_size(v).map_err(|_| {
        Error::invalid(format!(
            "Parameter '{key}' expects a non-negative number below 2^64\n\
             Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n\
             and exabytes, respectively."
        ))
    })
}

fn parse_number(key: &str, v: &str) -> Result<u64> {
    parse_c_number(v).ok_or_else(|| Error::invalid(format!("Parameter '{key}' expects a number")))
}

/// A whole number as QEMU reads one with `qemu_strtou64` in base 0 (`parse_option_number`, and
/// the numbers of qemu-img's flags that are not sizes): leading white space, then decimal, `0x`
/// hexadecimal or `0` octal digits, and nothing after them; no sign.
pub fn parse_c_number(v: &str) -> Option<u64> {
    let t = v.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (digits, radix) = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None if t.len() > 1 && t.starts_with('0') => (&t[1..], 8),
        None => (t, 10),
    };
    let all_digits = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
    all_digits
        .then(|| u64::from_str_radix(digits, radix).ok())
        .flatten()
}

/// Formats the `-o help` listing for a format in qemu-img's layout (`  %-22s - %s` per option,
/// options sorted by name, then qemu's note about protocol options).
pub fn format_help(format: &str, specs: &[OptionSpec]) -> String {
    let mut sorted: Vec<&OptionSpec> = specs.iter().collect();
    sorted.sort_by_key(|s| s.name);
    let mut s = format!("Supported {format} options:\n");
    for spec in sorted {
        let head = format!("{}=<{}>", spec.name, spec.kind);
        s.push_str(&format!("  {head:<22} - {}\n", spec.help));
    }
    s.push_str("\nThe protocol level may support further options.\nSpecify the target filename to include those options.\n");
    s
}

/// What `qemu-img amend -o help` prints: the options the format can amend, by name.
pub fn amend_help(format: &str, specs: &[OptionSpec]) -> String {
    let mut sorted: Vec<&OptionSpec> = specs.iter().collect();
    sorted.sort_by_key(|s| s.name);
    let mut s = format!("Amend options for '{format}':\n");
    for spec in sorted {
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
            ("n=-1", "Parameter 'n' expects a number"),
            ("x=1", "Invalid parameter 'x'"),
        ] {
            let e = check(bad).unwrap_err().to_string();
            assert!(e.starts_with(says), "{bad}: {e}");
        }
        // Octal, as strtoull in base 0 reads a leading 0.
        let o = CreateOptions::parse(&["n=016"]).unwrap();
        assert_eq!(o.get_number("n").unwrap(), Some(14));
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
