//! JSON printed the way qemu-img prints it (qobject's pretty printer): four-space indents, `"key": value`,
//! and empty containers opened and closed on separate lines.

use serde_json::Value;

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
                out.push_str(&Value::String(k.clone()).to_string());
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
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_qemu_layout() {
        let v = serde_json::json!({"children": [], "name": "file", "n": 1, "data": {}});
        let s = to_qemu_pretty(&v);
        let want = "{\n    \"children\": [\n    ],\n    \"name\": \"file\",\n    \"n\": 1,\n    \"data\": {\n    }\n}";
        assert_eq!(s, want);
    }
}
