//! The text format lvm2 writes its volume group metadata in (lvm2's lib/config: `key = value`
//! lines and `name { ... }` sections, values being integers, double-quoted strings or
//! `[ ... ]` arrays of those, `#` comments to the end of the line), parsed into a tree. Pure
//! parsing with bounded depth and size: no I/O.

use crate::limits::{MAX_CONFIG_DEPTH, MAX_CONFIG_VALUES};

/// A value of the metadata text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    /// A string, or a number that is not an integer (kept as written).
    Str(String),
    Array(Vec<Value>),
    Section(Section),
}

/// A section: its entries in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    pub entries: Vec<(String, Value)>,
}

impl Section {
    /// The first entry named `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn array(&self, key: &str) -> Option<&[Value]> {
        match self.get(key)? {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn section(&self, key: &str) -> Option<&Section> {
        match self.get(key)? {
            Value::Section(s) => Some(s),
            _ => None,
        }
    }

    /// The entries that are sections, with their names.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.entries.iter().filter_map(|(k, v)| match v {
            Value::Section(s) => Some((k.as_str(), s)),
            _ => None,
        })
    }
}

struct Parser<'a> {
    b: &'a [u8],
    p: usize,
    values: usize,
}

/// Characters of a key or section name (lvm2 names: letters, digits, `+_.-`).
fn is_name(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'+' | b'.' | b'-')
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        let line = 1 + self.b[..self.p.min(self.b.len())]
            .iter()
            .filter(|&&c| c == b'\n')
            .count();
        format!("metadata text line {line}: {what}")
    }

    fn skip_space(&mut self) {
        while let Some(&c) = self.b.get(self.p) {
            if c == b'#' {
                while self.b.get(self.p).is_some_and(|&c| c != b'\n') {
                    self.p += 1;
                }
            } else if c.is_ascii_whitespace() {
                self.p += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.b.get(self.p).copied()
    }

    fn count(&mut self) -> Result<(), String> {
        self.values += 1;
        if self.values > MAX_CONFIG_VALUES {
            return Err(self.err(&format!("more than {MAX_CONFIG_VALUES} values")));
        }
        Ok(())
    }

    fn name(&mut self) -> Result<String, String> {
        let start = self.p;
        while self.b.get(self.p).copied().is_some_and(is_name) {
            self.p += 1;
        }
        if start == self.p {
            return Err(self.err("expected a name"));
        }
        Ok(String::from_utf8_lossy(&self.b[start..self.p]).into_owned())
    }

    /// Entries up to the closing `}` (or the end of the text at depth 0).
    fn body(&mut self, depth: usize) -> Result<Section, String> {
        if depth > MAX_CONFIG_DEPTH {
            return Err(self.err(&format!("sections nested deeper than {MAX_CONFIG_DEPTH}")));
        }
        let mut s = Section::default();
        loop {
            match self.peek() {
                None if depth == 0 => return Ok(s),
                None => return Err(self.err("section not closed")),
                Some(b'}') if depth > 0 => {
                    self.p += 1;
                    return Ok(s);
                }
                Some(_) => {}
            }
            let key = self.name()?;
            self.count()?;
            match self.peek() {
                Some(b'{') => {
                    self.p += 1;
                    let sub = self.body(depth + 1)?;
                    s.entries.push((key, Value::Section(sub)));
                }
                Some(b'=') => {
                    self.p += 1;
                    let v = self.value(true)?;
                    s.entries.push((key, v));
                }
                _ => return Err(self.err(&format!("expected = or {{ after {key}"))),
            }
        }
    }

    fn value(&mut self, array_ok: bool) -> Result<Value, String> {
        match self.peek() {
            Some(b'"') => {
                self.p += 1;
                let mut out = Vec::new();
                loop {
                    match self.b.get(self.p) {
                        None => return Err(self.err("string not closed")),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            let c = self.b.get(self.p + 1).copied();
                            out.push(c.ok_or_else(|| self.err("string not closed"))?);
                            self.p += 2;
                        }
                        Some(&c) => {
                            out.push(c);
                            self.p += 1;
                        }
                    }
                }
                self.p += 1;
                Ok(Value::Str(String::from_utf8_lossy(&out).into_owned()))
            }
            Some(b'[') if array_ok => {
                self.p += 1;
                let mut items = Vec::new();
                if self.peek() == Some(b']') {
                    self.p += 1;
                    return Ok(Value::Array(items));
                }
                loop {
                    items.push(self.value(false)?);
                    self.count()?;
                    match self.peek() {
                        Some(b',') => self.p += 1,
                        Some(b']') => {
                            self.p += 1;
                            return Ok(Value::Array(items));
                        }
                        _ => return Err(self.err("expected , or ] in an array")),
                    }
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let start = self.p;
                self.p += 1;
                while self
                    .b
                    .get(self.p)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'.')
                {
                    self.p += 1;
                }
                let text = String::from_utf8_lossy(&self.b[start..self.p]).into_owned();
                Ok(match text.parse::<i64>() {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::Str(text),
                })
            }
            _ => Err(self.err("expected a value")),
        }
    }
}

/// Parses a whole metadata text into its top-level section.
pub fn parse(text: &[u8]) -> Result<Section, String> {
    Parser {
        b: text,
        p: 0,
        values: 0,
    }
    .body(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_lvm2_writes() {
        let text = br#"vg0 {
id = "abc-def"
seqno = 3
status = ["RESIZEABLE", "READ", "WRITE"]
flags = []
extent_size = 8192		# 4 Megabytes
physical_volumes {

pv0 {
device = "/dev/loop0"	# Hint only
pe_start = 2048
}
}
}
# Generated by LVM2
contents = "Text Format Volume Group"
description = "a \"quoted\" word"
creation_time = 1700000000	# Tue Nov 14
"#;
        let top = parse(text).unwrap();
        let vg = top.section("vg0").unwrap();
        assert_eq!(vg.str("id"), Some("abc-def"));
        assert_eq!(vg.int("extent_size"), Some(8192));
        assert_eq!(vg.array("status").unwrap().len(), 3);
        assert_eq!(vg.array("flags"), Some(&[][..]));
        let pv0 = vg
            .section("physical_volumes")
            .unwrap()
            .section("pv0")
            .unwrap();
        assert_eq!(pv0.int("pe_start"), Some(2048));
        assert_eq!(top.str("description"), Some("a \"quoted\" word"));
        assert_eq!(top.int("creation_time"), Some(1_700_000_000));
    }

    #[test]
    fn refuses_broken_text_without_panicking() {
        for bad in [
            &b"a {"[..],
            b"a = ",
            b"a = \"open",
            b"a = [1, 2",
            b"a = [[1]]",
            b"= 3",
            b"a b",
            b"a = \"x\\",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let deep = "a {".repeat(MAX_CONFIG_DEPTH + 2);
        assert!(parse(deep.as_bytes()).unwrap_err().contains("deeper"));
    }
}
