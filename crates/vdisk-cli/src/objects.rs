//! `--object secret,id=ID,data=TEXT` (or `file=PATH`, `format=raw|base64`): the secrets an image
//! option `encrypt.key-secret=ID` or `key-secret=ID` names, as qemu-img takes them
//! (crypto/secret_common.c, with its messages). vdisk takes them off the command line before
//! parsing the rest, as qemu-img takes `--object` on every command; other object types, and
//! secrets encrypted with another secret (`keyid`, `iv`), are refused by name.

use std::ffi::OsString;
use std::sync::Mutex;
use vdisk::core::{Error, Result};

/// The secrets defined, by id.
static SECRETS: Mutex<Vec<(String, Vec<u8>)>> = Mutex::new(Vec::new());

/// Takes every `--object X` and `--object=X` out of `args` (after the command's name) and defines
/// the secrets they describe.
pub fn take(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--" {
            out.push(a);
            out.extend(it);
            break;
        }
        let spec = if a == "--object" {
            match it.next() {
                Some(v) => v,
                None => {
                    out.push(a);
                    continue;
                }
            }
        } else if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--object=")) {
            OsString::from(v)
        } else {
            out.push(a);
            continue;
        };
        define(&spec.to_string_lossy())?;
    }
    Ok(out)
}

/// Defines the object `spec` describes.
fn define(spec: &str) -> Result<()> {
    let pairs = crate::image_opts::pairs(spec);
    // The first bare word is the type (QEMU's implied `qom-type`).
    let mut kind = None;
    let (mut id, mut data, mut file, mut format) = (None, None, None, "raw".to_string());
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        match k.as_str() {
            "file" if i == 0 && !spec.starts_with("file=") => kind = Some(v),
            "qom-type" => kind = Some(v),
            "id" => id = Some(v),
            "data" => data = Some(v),
            "file" => file = Some(v),
            "format" => format = v,
            "loaded" => {}
            "keyid" | "iv" => {
                return Err(Error::invalid(format!(
                    "vdisk does not decrypt secrets: give the secret with data= or file= \
                     instead of '{k}'"
                )))
            }
            _ => {
                return Err(Error::invalid(format!("Parameter '{k}' is unexpected")));
            }
        }
    }
    match kind.as_deref() {
        Some("secret") => {}
        Some(other) => {
            return Err(Error::invalid(format!(
                "Parameter 'qom-type' does not accept value '{other}' (vdisk takes --object \
                 secret only)"
            )))
        }
        None => return Err(Error::invalid("Parameter 'qom-type' is missing")),
    }
    let id = id.ok_or_else(|| Error::invalid("Parameter 'id' is missing"))?;
    let raw = match (data, file) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid("'file' and 'data' are mutually exclusive"))
        }
        (Some(d), None) => d.into_bytes(),
        (None, Some(f)) => {
            std::fs::read(&f).map_err(|e| Error::invalid(format!("Unable to read {f}: {e}")))?
        }
        (None, None) => return Err(Error::invalid("Either 'file' or 'data' must be provided")),
    };
    let value = match format.as_str() {
        "raw" => raw,
        "base64" => {
            base64(&raw).ok_or_else(|| Error::invalid("Base64 data contains invalid characters"))?
        }
        other => {
            return Err(Error::invalid(format!(
                "Parameter 'format' does not accept value '{other}'"
            )))
        }
    };
    let mut s = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    if s.iter().any(|(i, _)| *i == id) {
        return Err(Error::invalid(format!(
            "attempt to add duplicate property '{id}' to object (type 'container')"
        )));
    }
    s.push((id, value));
    Ok(())
}

/// The secret `id`, if one was defined.
pub fn secret(id: &str) -> Option<Vec<u8>> {
    let s = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    s.iter().find(|(i, _)| i == id).map(|(_, v)| v.clone())
}

/// Standard base64 (RFC 4648 section 4, `=` padding), as glib's decoder takes it: None for a
/// character outside the alphabet.
fn base64(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_rfc4648_vectors() {
        for (t, want) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmFy", "foobar"),
        ] {
            assert_eq!(base64(t.as_bytes()).unwrap(), want.as_bytes(), "{t}");
        }
        assert_eq!(base64(b"@@"), None);
    }

    #[test]
    fn objects_are_taken_off_the_command_line() {
        let args: Vec<OsString> = [
            "info",
            "--object",
            "secret,id=t1,data=pw",
            "--object=secret,id=t2,data=cHc=,format=base64",
            "x.qcow2",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let rest = take(args).unwrap();
        assert_eq!(rest, ["info", "x.qcow2"].map(OsString::from));
        assert_eq!(secret("t1").unwrap(), b"pw");
        assert_eq!(secret("t2").unwrap(), b"pw");
        assert!(define("secret,id=t1,data=x").is_err());
        assert!(define("secret,data=x").is_err());
        assert!(define("iothread,id=t3").is_err());
        assert!(define("secret,id=t4,data=x,keyid=k").is_err());
    }
}
