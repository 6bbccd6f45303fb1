//! `--image-opts`: FILENAME given as QEMU's option string (`driver=qcow2,file.filename=x.qcow2`),
//! parsed as QEMU's `qemu_opts_parse` parses it (util/qemu-option.c: `key=value` pairs split at
//! commas, `,,` for a comma inside a value, a first bare word as the implied `file`, another bare
//! word `x` as `x=on` and `nox` as `x=off`). vdisk takes the format (`driver`) and the local file
//! (`file.filename`, through the `file` protocol) from it, accepts the options that only tune
//! QEMU's caching, locking and access mode (vdisk never needs them), and refuses every other
//! option by name rather than ignoring what it would change.

use crate::cli::Command;
use std::path::PathBuf;
use vdisk::core::{Error, Format, Result};

/// Options that change how QEMU caches, locks or accesses the image, never what it reads.
const IGNORED: &[&str] = &[
    "read-only",
    "auto-read-only",
    "force-share",
    "detect-zeroes",
    "discard",
    "cache.direct",
    "cache.no-flush",
    "file.cache.direct",
    "file.cache.no-flush",
    "file.locking",
    "file.aio",
    "file.aio-max-batch",
    "l2-cache-size",
    "l2-cache-entry-size",
    "refcount-cache-size",
    "cache-size",
    "cache-clean-interval",
    "lazy-refcounts",
    "pass-discard-request",
    "pass-discard-snapshot",
    "pass-discard-other",
    "discard-no-unref",
    "overlap-check",
];

/// Protocol drivers that are a local file or device, which vdisk opens as a file.
const LOCAL_PROTOCOLS: &[&str] = &["file", "host_device"];

/// The `(key, value)` pairs of a QEMU option string, in order.
pub fn pairs(spec: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = spec.chars().peekable();
    let mut first = true;
    while chars.peek().is_some() {
        // One parameter: up to a comma that is not doubled.
        let mut param = String::new();
        while let Some(c) = chars.next() {
            if c == ',' {
                if chars.peek() == Some(&',') {
                    chars.next();
                    param.push(',');
                    continue;
                }
                break;
            }
            param.push(c);
        }
        let pair = match param.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None if first => ("file".to_string(), param),
            None => match param.strip_prefix("no") {
                Some(k) => (k.to_string(), "off".to_string()),
                None => (param, "on".to_string()),
            },
        };
        out.push(pair);
        first = false;
    }
    out
}

/// The file and the format (`None`: probe it) that the option string `spec` names.
pub fn resolve(spec: &str) -> Result<(PathBuf, Option<String>)> {
    let fail = |m: String| Error::invalid(format!("Could not open '{spec}': {m}"));
    let mut driver: Option<String> = None;
    let mut filename: Option<String> = None;
    let mut protocol = "file".to_string();
    let mut disk: Option<String> = None;
    let mut key_secret: Option<(String, String)> = None;
    for (k, v) in pairs(spec) {
        match k.as_str() {
            "driver" => driver = Some(v),
            // The secret (`--object secret,id=ID,...`) that unlocks an encrypted image.
            "encrypt.key-secret" | "key-secret" => key_secret = Some((k, v)),
            // What the image's header says anyway (QEMU checks it against the header).
            "encrypt.format" => {}
            // vdisk's own: which disk of an OVA package to read.
            "disk" => disk = Some(v),
            "file.filename" => filename = Some(v),
            "file.driver" => protocol = v,
            // A string `file` names another block node, which a command line cannot define.
            "file" => {
                return Err(fail(format!(
                    "Cannot find device='{v}' nor node-name='{v}'"
                )))
            }
            k if IGNORED.contains(&k) || k.starts_with("overlap-check.") => {}
            k => {
                return Err(fail(format!(
                    "vdisk does not support the image option '{k}'"
                )))
            }
        }
    }
    if let Some(d) = &driver {
        if LOCAL_PROTOCOLS.contains(&d.as_str()) {
            return Err(fail(format!(
                "vdisk opens images, not the '{d}' protocol alone: give driver=FORMAT,file.filename=PATH"
            )));
        }
        d.parse::<Format>()
            .map_err(|_| fail(format!("Unknown driver '{d}'")))?;
    }
    if !LOCAL_PROTOCOLS.contains(&protocol.as_str()) {
        return Err(fail(format!(
            "vdisk reads local files only, not through the '{protocol}' protocol"
        )));
    }
    if let Some(name) = &disk {
        if driver.as_deref() != Some("ova") {
            return Err(fail(
                "the option 'disk' chooses a disk of an OVA package: give driver=ova with it"
                    .to_string(),
            ));
        }
        if let Some(f) = &filename {
            vdisk::ova::choose_disk(std::path::Path::new(f), name);
        }
    }
    if let (Some((k, id)), Some(f)) = (&key_secret, &filename) {
        let wanted = if driver.as_deref() == Some("luks") {
            "key-secret"
        } else {
            "encrypt.key-secret"
        };
        if k != wanted {
            return Err(fail(format!(
                "vdisk does not support the image option '{k}' here: give {wanted}"
            )));
        }
        let key = match crate::objects::secret(id) {
            Some(pw) => vdisk::core::secrets::Key::Password(pw),
            None => vdisk::core::secrets::Key::Undefined(id.clone()),
        };
        vdisk::core::secrets::set_key(std::path::Path::new(f), key);
        remember_key(f, k, id);
    }
    match (filename, driver) {
        (Some(f), d) => Ok((PathBuf::from(f), d)),
        (None, Some(_)) => Err(fail(
            "A block device must be specified for \"file\"".to_string(),
        )),
        (None, None) => Err(fail("Must specify either driver or file".to_string())),
    }
}

/// The key options (`encrypt.key-secret=ID`) images were opened with, by file: qemu then names
/// the image by its options.
static KEYED: std::sync::Mutex<Vec<(PathBuf, String, String)>> = std::sync::Mutex::new(Vec::new());

fn remember_key(file: &str, key: &str, id: &str) {
    let mut n = KEYED.lock().unwrap_or_else(|p| p.into_inner());
    n.retain(|(p, _, _)| p.as_path() != std::path::Path::new(file));
    n.push((PathBuf::from(file), key.to_string(), id.to_string()));
}

/// The name qemu-img shows for the image at `file` of format `driver` (`image:` of `info`) when
/// it was opened with a key: `json:{...}`, its options as a QDict in QEMU's key order, in
/// `qobject_to_json`'s layout.
pub fn display_name(file: &std::path::Path, driver: &str) -> Option<String> {
    let (key, id) = {
        let n = KEYED.lock().unwrap_or_else(|p| p.into_inner());
        n.iter()
            .find(|(p, _, _)| p == file)
            .map(|(_, k, i)| (k.clone(), i.clone()))?
    };
    let mut top = serde_json::Map::new();
    top.insert(key, id.into());
    top.insert("driver".into(), driver.into());
    let mut f = serde_json::Map::new();
    f.insert("driver".into(), "file".into());
    f.insert("filename".into(), file.to_string_lossy().into());
    top.insert("file".into(), serde_json::Value::Object(f));
    fn layout(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::Object(m) => {
                let inner: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{}: {}", serde_json::Value::from(k.as_str()), layout(v)))
                    .collect();
                format!("{{{}}}", inner.join(", "))
            }
            other => other.to_string(),
        }
    }
    let ordered = serde_json::Value::Object(vdisk::qcow2::info::qdict_order(top));
    Some(format!("json:{}", layout(&ordered)))
}

/// Replaces a command's option strings by the files and formats they name (`--image-opts`), so
/// that the command then runs as with `-f FORMAT FILE`. As in qemu-img, `--image-opts` and a
/// format flag exclude each other; for `convert` it applies to the sources only.
pub fn apply(cmd: &mut Command) -> Result<()> {
    match cmd {
        Command::Info {
            image_opts: true,
            format,
            filename,
            ..
        }
        | Command::Map {
            image_opts: true,
            format,
            filename,
            ..
        }
        | Command::Partitions {
            image_opts: true,
            format,
            filename,
            ..
        }
        | Command::Check {
            image_opts: true,
            format,
            filename,
            ..
        }
        | Command::Snapshot {
            image_opts: true,
            format,
            filename,
            ..
        }
        | Command::Rebase {
            image_opts: true,
            format,
            filename,
            ..
        }
        | Command::Commit {
            image_opts: true,
            format,
            filename,
            ..
        }
        | Command::Resize {
            image_opts: true,
            format,
            filename,
            ..
        } => take(format, filename),
        Command::Measure {
            image_opts: true,
            format,
            filename: Some(filename),
            ..
        }
        | Command::Amend {
            image_opts: true,
            format,
            filename: Some(filename),
            ..
        } => take(format, filename),
        Command::Compare {
            image_opts: true,
            format_a,
            format_b,
            first,
            second,
            ..
        } => {
            if format_b.is_some() {
                return Err(exclusive());
            }
            take(format_a, first)?;
            let mut fb = None;
            take(&mut fb, second)?;
            *format_b = fb;
            Ok(())
        }
        Command::Bench(a) if a.image_opts => take(&mut a.format, &mut a.filename),
        Command::Convert(a) if a.image_opts => {
            if a.format.is_some() {
                return Err(exclusive());
            }
            let Some((_, sources)) = a.files.split_last_mut() else {
                return Ok(());
            };
            // One format for all sources, as -f gives: they must agree.
            let mut format = None;
            for s in sources {
                let mut f = None;
                take(&mut f, s)?;
                if format.is_some() && f != format {
                    return Err(Error::invalid(
                        "vdisk: the sources' option strings name different drivers; convert them one at a time",
                    ));
                }
                format = f;
            }
            a.format = format;
            Ok(())
        }
        _ => Ok(()),
    }
}

fn exclusive() -> Error {
    Error::invalid("--image-opts and --format are mutually exclusive")
}

fn take(format: &mut Option<String>, filename: &mut PathBuf) -> Result<()> {
    if format.is_some() {
        return Err(exclusive());
    }
    let (path, driver) = resolve(&filename.to_string_lossy())?;
    *filename = path;
    *format = driver;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_strings_split_as_qemu_splits_them() {
        let p = pairs("driver=qcow2,file.filename=a,,b.qcow2,cache.direct,noforce-share");
        let want = [
            ("driver", "qcow2"),
            ("file.filename", "a,b.qcow2"),
            ("cache.direct", "on"),
            ("force-share", "off"),
        ];
        let got: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);
        assert_eq!(pairs("x.qcow2"), vec![("file".into(), "x.qcow2".into())]);
    }

    #[test]
    fn file_and_format_come_from_driver_and_file_filename() {
        let (p, f) = resolve("driver=qcow2,file.driver=file,file.filename=x.qcow2").unwrap();
        assert_eq!((p, f.as_deref()), (PathBuf::from("x.qcow2"), Some("qcow2")));
        let (p, f) = resolve("file.filename=y.img,read-only=on,l2-cache-size=1M").unwrap();
        assert_eq!((p, f), (PathBuf::from("y.img"), None));
    }

    #[test]
    fn what_vdisk_cannot_honour_is_refused_by_name() {
        let e = |s: &str| resolve(s).unwrap_err().to_string();
        assert!(e("driver=qcow2,file.filename=x,foo=bar").contains("option 'foo'"));
        // The key of an encrypted image, under the name its format takes.
        assert!(e("driver=luks,file.filename=x,encrypt.key-secret=s").contains("give key-secret"));
        assert!(e("driver=qcow2,file.filename=x,key-secret=s").contains("give encrypt.key-secret"));
        assert!(e("driver=nope,file.filename=x").contains("Unknown driver 'nope'"));
        assert!(e("driver=qcow2,file.driver=nbd,file.filename=x").contains("'nbd' protocol"));
        assert!(e("x.qcow2").contains("Cannot find device='x.qcow2' nor node-name='x.qcow2'"));
        assert!(e("driver=qcow2").contains("A block device must be specified"));
        assert!(e("filename=x").contains("option 'filename'"));
    }
}
