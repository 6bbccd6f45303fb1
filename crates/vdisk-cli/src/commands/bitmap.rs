//! `vdisk bitmap`: qemu-img bitmap's operations on the persistent dirty bitmaps of a qcow2 image
//! (`--add [-g SIZE]`, `--remove`, `--clear`, `--enable`, `--disable`, `--merge SOURCE [-b FILE
//! [-F FMT]]`), applied in the order given. Its options are read as qemu-img's getopt_long reads
//! them (the order of the operations matters, which clap's flags do not keep), checked in
//! qemu-img's order with its messages; the qcow2 crate does the work
//! (`vdisk_qcow2::mutate::bitmap_ops`).

use super::{cvtnum, open_image, parse_format, probe_path, OpenRequest};
use std::path::PathBuf;
use vdisk::core::{Error, Format, Result};
use vdisk::qcow2::mutate::{self, BitmapOp, MergeSource};

const HELP: &str = "Usage: vdisk bitmap [-f FMT | --image-opts]
        ( --add [-g SIZE] | --remove | --clear | --enable | --disable |
          --merge SOURCE [-b SRC_FILE [-F SRC_FMT]] )..
        FILE BITMAP

Changes the persistent dirty bitmaps of a qcow2 image (the record of which clusters were written
since a backup), applying each operation in the order given, as qemu-img bitmap does:
  -f, --format FMT        FILE's format (probed when omitted)
  --image-opts            FILE is QEMU's option string (driver=qcow2,file.filename=x.qcow2)
  --add                   create BITMAP, enabled (it records future writes)
  -g, --granularity SIZE  bytes each bit of a new bitmap covers (a power of 2, at least 512;
                          default: the cluster size, between 4 KiB and 64 KiB)
  --remove                remove BITMAP
  --clear                 clear every bit of BITMAP
  --enable, --disable     start or stop recording writes in BITMAP
  --merge SOURCE          set in BITMAP every bit set in bitmap SOURCE
  -b, --source-file FILE  take SOURCE from this image instead of FILE
  -F, --source-format FMT SRC_FILE's format (probed when omitted)

`vdisk info FILE` lists the bitmaps with their flags and granularity.";

/// What the command line asks for.
#[derive(Debug, Default)]
struct Request {
    ops: Vec<BitmapOp>,
    granularity: u64,
    format: Option<String>,
    image_opts: bool,
    source_file: Option<String>,
    source_format: Option<String>,
    files: Vec<String>,
    help: bool,
}

const LONG: &[(&str, bool)] = &[
    ("help", false),
    ("format", true),
    ("image-opts", false),
    ("add", false),
    ("granularity", true),
    ("remove", false),
    ("clear", false),
    ("enable", false),
    ("disable", false),
    ("merge", true),
    ("source-file", true),
    ("source-format", true),
    ("object", true),
];

/// The long option `given` names: exact, or the only one it abbreviates (getopt_long).
fn long_option(given: &str) -> Result<(&'static str, bool)> {
    if let Some(&(n, a)) = LONG.iter().find(|(n, _)| *n == given) {
        return Ok((n, a));
    }
    let matches: Vec<&(&str, bool)> = LONG.iter().filter(|(n, _)| n.starts_with(given)).collect();
    match matches.as_slice() {
        [(n, a)] => Ok((n, *a)),
        [] => Err(Error::invalid(format!("unrecognized option '--{given}'"))),
        _ => Err(Error::invalid(format!(
            "option '--{given}' is ambiguous; possibilities: {}",
            matches
                .iter()
                .map(|(n, _)| format!("'--{n}'"))
                .collect::<Vec<_>>()
                .join(" ")
        ))),
    }
}

fn parse(args: &[String]) -> Result<Request> {
    let mut r = Request::default();
    let mut i = 0;
    let mut only_files = false;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if only_files || a == "-" || !a.starts_with('-') {
            r.files.push(a.clone());
            continue;
        }
        if a == "--" {
            only_files = true;
            continue;
        }
        // (option, its argument if it takes one)
        let mut opts: Vec<(String, Option<String>)> = Vec::new();
        if let Some(long) = a.strip_prefix("--") {
            let (given, inline) = match long.split_once('=') {
                Some((g, v)) => (g, Some(v.to_string())),
                None => (long, None),
            };
            let (name, takes) = long_option(given)?;
            let value = match (takes, inline) {
                (false, Some(_)) => {
                    return Err(Error::invalid(format!(
                        "option '--{name}' doesn't allow an argument"
                    )))
                }
                (false, None) => None,
                (true, Some(v)) => Some(v),
                (true, None) => {
                    let v = args.get(i).cloned().ok_or_else(|| {
                        Error::invalid(format!("option '--{name}' requires an argument"))
                    })?;
                    i += 1;
                    Some(v)
                }
            };
            opts.push((name.to_string(), value));
        } else {
            // Short options, possibly grouped; one taking an argument ends the group.
            let chars: Vec<char> = a[1..].chars().collect();
            let mut k = 0;
            while k < chars.len() {
                let c = chars[k];
                k += 1;
                let name = match c {
                    'h' => "help",
                    'f' => "format",
                    'g' => "granularity",
                    'b' => "source-file",
                    'F' => "source-format",
                    _ => return Err(Error::invalid(format!("invalid option -- '{c}'"))),
                };
                if c == 'h' {
                    opts.push((name.into(), None));
                    continue;
                }
                let rest: String = chars[k..].iter().collect();
                let value = if !rest.is_empty() {
                    rest
                } else {
                    let v = args.get(i).cloned().ok_or_else(|| {
                        Error::invalid(format!("option requires an argument -- '{c}'"))
                    })?;
                    i += 1;
                    v
                };
                opts.push((name.into(), Some(value)));
                break;
            }
        }
        for (name, value) in opts {
            let value = value.unwrap_or_default();
            match name.as_str() {
                "help" => r.help = true,
                "format" => r.format = Some(value),
                "image-opts" => r.image_opts = true,
                "add" => r.ops.push(BitmapOp::Add { granularity: None }),
                "granularity" => {
                    r.granularity = cvtnum("granularity", &value, 0, i64::MAX as u64)?;
                }
                "remove" => r.ops.push(BitmapOp::Remove),
                "clear" => r.ops.push(BitmapOp::Clear),
                "enable" => r.ops.push(BitmapOp::Enable),
                "disable" => r.ops.push(BitmapOp::Disable),
                "merge" => r.ops.push(BitmapOp::Merge { source: value }),
                "source-file" => r.source_file = Some(value),
                "source-format" => r.source_format = Some(value),
                _ => {
                    return Err(Error::invalid(
                        "vdisk takes no --object: QEMU objects (secrets, TLS credentials) are not supported",
                    ))
                }
            }
        }
    }
    Ok(r)
}

/// `vdisk bitmap ARGS...`.
pub(super) fn bitmap(args: &[String]) -> Result<u8> {
    let mut r = parse(args)?;
    if r.help {
        super::print_out(&format!("{HELP}\n"))?;
        return Ok(0);
    }
    if r.ops.is_empty() {
        return Err(Error::invalid(
            "Need at least one of --add, --remove, --clear, --enable, --disable, or --merge",
        ));
    }
    let add = r.ops.iter().any(|o| matches!(o, BitmapOp::Add { .. }));
    let merge = r.ops.iter().any(|o| matches!(o, BitmapOp::Merge { .. }));
    if r.granularity != 0 && !add {
        return Err(Error::invalid("granularity only supported with --add"));
    }
    if r.source_format.is_some() && r.source_file.is_none() {
        return Err(Error::invalid("-F only supported with -b"));
    }
    if r.source_file.is_some() && !merge {
        return Err(Error::invalid(
            "Merge bitmap source file only supported with --merge",
        ));
    }
    let [file, name] = r.files.as_slice() else {
        return Err(Error::invalid("Expecting filename and bitmap name"));
    };
    let (path, format) = if r.image_opts {
        if r.format.is_some() {
            return Err(Error::invalid(
                "--image-opts and --format are mutually exclusive",
            ));
        }
        crate::image_opts::resolve(file)?
    } else {
        (PathBuf::from(file), r.format.clone())
    };
    vdisk::core::locks::check_writable(&path)?;
    let fmt = match parse_format(format)? {
        Some(f) => f,
        None => probe_path(&path)?,
    };
    for op in &mut r.ops {
        if let BitmapOp::Add { granularity } = op {
            *granularity = Some(r.granularity);
        }
    }
    let merge_from = match &r.source_file {
        Some(src) => Some(merge_source(src, r.source_format.clone())?),
        None => None,
    };
    if fmt != Format::Qcow2 {
        return Err(other_format(&r.ops, name, &path));
    }
    mutate::bitmap_ops(&path, name, &r.ops, merge_from.as_ref())?;
    Ok(0)
}

/// The `-b` image's bitmaps (none unless it is a qcow2 image of version 3), opened read-only
/// without its backing chain, as qemu-img opens it.
fn merge_source(file: &str, format: Option<String>) -> Result<MergeSource> {
    let path = std::path::Path::new(file);
    let storage = std::sync::Arc::new(vdisk::core::FileStorage::open(path)?);
    let format = match parse_format(format)? {
        Some(f) => f,
        None => vdisk::core::probe_format(storage.as_ref())?,
    };
    if format != Format::Qcow2 {
        let req = OpenRequest {
            format: Some(format),
            snapshot: None,
            follow_backing: false,
            for_check: false,
        };
        let size = open_image(path, &req)?.image.virtual_size();
        return Ok(MergeSource {
            size,
            bitmaps: Vec::new(),
        });
    }
    let files = std::sync::Arc::new(vdisk::core::storage::HostFiles);
    let image = vdisk::qcow2::open(storage, files, &Default::default())?;
    let bitmaps = if image.header().version >= 3 {
        mutate::read_persistent_bitmaps(&image)?
    } else {
        Vec::new()
    };
    Ok(MergeSource {
        size: vdisk::core::ImageReader::virtual_size(&image),
        bitmaps,
    })
}

/// What QEMU says when the first operation meets an image of a format without bitmaps: none is
/// found, and none can be stored.
fn other_format(ops: &[BitmapOp], name: &str, path: &std::path::Path) -> Error {
    let op = &ops[0];
    let why = match op {
        BitmapOp::Add { .. } => format!(
            "Can't store persistent bitmaps to {}: Operation not supported",
            path.display()
        ),
        _ => format!("Dirty bitmap '{name}' not found"),
    };
    op.failed(name, &why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_are_read_as_getopt_long_reads_them() {
        let r = parse(&args(
            "--add x.qcow2 -g64k --rem --merge=s --merge t b0 -b o.qcow2",
        ))
        .unwrap();
        assert_eq!(
            r.ops,
            vec![
                BitmapOp::Add { granularity: None },
                BitmapOp::Remove,
                BitmapOp::Merge { source: "s".into() },
                BitmapOp::Merge { source: "t".into() }
            ]
        );
        assert_eq!(r.granularity, 65536);
        assert_eq!(r.files, ["x.qcow2", "b0"]);
        assert_eq!(r.source_file.as_deref(), Some("o.qcow2"));
        let e = |s: &str| parse(&args(s)).unwrap_err().to_string();
        assert!(e("--s x y").contains("ambiguous"), "{}", e("--s x y"));
        assert!(e("--bogus x y").contains("unrecognized option '--bogus'"));
        assert!(e("-z x y").contains("invalid option -- 'z'"));
        assert!(e("x y --merge").contains("option '--merge' requires an argument"));
        assert!(e("x y -g").contains("option requires an argument -- 'g'"));
        assert!(e("--add=1 x y").contains("doesn't allow an argument"));
    }
}
