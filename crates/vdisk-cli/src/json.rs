//! JSON printed the way qemu-img prints it (qobject's pretty printer): four-space indents, `"key": value`,
//! empty containers opened and closed on separate lines, and strings escaped as qobject/qjson.c
//! escapes them: ASCII as is (but `"`, `\\` and control characters), everything else as `\uXXXX`
//! (UTF-16, upper-case hex), so a file name that is not ASCII prints byte for byte as qemu-img's.

use serde_json::{Map, Value};

/// The bucket of `key` in a QEMU `QDict` (qobject/qdict.c: `tdb_hash(key) % QDICT_BUCKET_MAX`).
fn qdict_bucket(key: &str) -> u32 {
    let mut value = 0x238F_13AFu32.wrapping_mul(key.len() as u32);
    for (i, b) in key.bytes().enumerate() {
        value = value.wrapping_add(u32::from(b) << ((i * 5) % 24));
    }
    1_103_515_243u32.wrapping_mul(value).wrapping_add(12345) % 512
}

/// The members of `fields`, given in the order QEMU's QAPI visitor inserts them (the schema's
/// field order), in the order qemu prints the `QDict` they land in: by hash bucket, and within a
/// bucket the last inserted first (`QLIST_INSERT_HEAD`).
pub fn qdict_ordered(fields: Vec<(String, Value)>) -> Map<String, Value> {
    let mut keyed: Vec<(u32, usize, String, Value)> = fields
        .into_iter()
        .enumerate()
        .map(|(i, (k, v))| (qdict_bucket(&k), i, k, v))
        .collect();
    keyed.sort_by_key(|(bucket, i, ..)| (*bucket, std::cmp::Reverse(*i)));
    keyed.into_iter().map(|(_, _, k, v)| (k, v)).collect()
}

/// Pretty-prints `v` in qemu's style, without a trailing newline.
pub fn to_qemu_pretty(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v, 0);
    out
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("    ");
    }
}

fn write_value(out: &mut String, v: &Value, level: usize) {
    match v {
        Value::Object(map) => {
            out.push_str("{\n");
            let mut first = true;
            for (k, val) in map {
                if !first {
                    out.push_str(",\n");
                }
                first = false;
                indent(out, level + 1);
                write_string(out, k);
                out.push_str(": ");
                write_value(out, val, level + 1);
            }
            if !map.is_empty() {
                out.push('\n');
            }
            indent(out, level);
            out.push('}');
        }
        Value::Array(items) => {
            out.push_str("[\n");
            let mut first = true;
            for item in items {
                if !first {
                    out.push_str(",\n");
                }
                first = false;
                indent(out, level + 1);
                write_value(out, item, level + 1);
            }
            if !items.is_empty() {
                out.push('\n');
            }
            indent(out, level);
            out.push(']');
        }
        Value::String(text) => write_string(out, text),
        other => out.push_str(&other.to_string()),
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04X}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qdicts_print_in_bucket_order() {
        // qemu-img check --output=json of a compressed qcow2 image, as qemu-img 10 prints it.
        let fields = [
            "filename",
            "format",
            "check-errors",
            "image-end-offset",
            "total-clusters",
            "allocated-clusters",
            "fragmented-clusters",
            "compressed-clusters",
        ];
        let m = qdict_ordered(
            fields
                .iter()
                .map(|k| (k.to_string(), Value::Null))
                .collect(),
        );
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "image-end-offset",
                "compressed-clusters",
                "total-clusters",
                "check-errors",
                "allocated-clusters",
                "filename",
                "format",
                "fragmented-clusters"
            ]
        );
        assert_eq!(qdict_bucket("corruptions-fixed"), 203);
        assert_eq!(qdict_bucket("check-errors"), 204);
    }

    #[test]
    fn matches_qemu_layout() {
        let v = serde_json::json!({"children": [], "name": "file", "n": 1, "data": {}});
        let s = to_qemu_pretty(&v);
        let want = "{\n    \"children\": [\n    ],\n    \"name\": \"file\",\n    \"n\": 1,\n    \"data\": {\n    }\n}";
        assert_eq!(s, want);
    }

    #[test]
    fn strings_are_escaped_as_qemu_escapes_them() {
        let v = Value::String("a\"\\/\u{1}\u{7f}\té\u{fffd}\u{1f600}~".into());
        assert_eq!(
            to_qemu_pretty(&v),
            r#""a\"\\/\u0001\u007F\t\u00E9\uFFFD\uD83D\uDE00~""#
        );
    }
}
