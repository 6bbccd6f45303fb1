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

    /// Fails on a key the format does not know, with qemu's message.
    pub fn ensure_known(&self, format: &str, known: &[OptionSpec]) -> Result<()> {
        for (k, _) in &self.pairs {
            if !known.iter().any(|s| s.name == k) {
                return Err(Error::invalid(format!(
                    "Invalid parameter '{k}'\nThis option is not supported by the '{format}' format (try -o help)"
                )));
            }
        }
        Ok(())
    }

    /// A boolean option (`on/off`, `true/false`, `yes/no`), or `default` when absent.
    pub fn get_bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some("on" | "true" | "yes" | "1") => Ok(true),
            Some("off" | "false" | "no" | "0") => Ok(false),
            // qemu-img's words (qapi_bool_parse), which do not repeat the value.
            Some(_) => Err(Error::invalid(format!(
                "Parameter '{key}' expects 'on' or 'off'"
            ))),
        }
    }

    /// A size option (`cluster_size=64k`), or `None` when absent.
    pub fn get_size(&self, key: &str) -> Result<Option<u64>> {
        self.get(key)
            .map(|v| {
                crate::size::parse_size(v).map_err(|_| {
                    Error::invalid(format!(
                        "Parameter '{key}' expects a non-negative number below 2^64"
                    ))
                })
            })
            .transpose()
    }
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
