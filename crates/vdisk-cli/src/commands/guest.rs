//! `vdisk filesystems`, `df`, `ls` and `cat`: the files inside an image, as libguestfs's
//! virt-filesystems, virt-df, virt-ls and virt-cat show them, with no VM appliance: the
//! filesystems are found and mounted by `vdisk::guest` and read by `vdisk-fs`.

use super::{parse_format, print_out};
use crate::cli::GuestArgs;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use vdisk::chain::{open_image, OpenRequest};
use vdisk::core::{Error, Result};
use vdisk::fs::{FileKind, Filesystem, Listed, Node, OpenOptions};
use vdisk::guest::{self, Found, Mounts};

/// The image's devices and their filesystems.
fn found(g: &GuestArgs) -> Result<Vec<Found>> {
    let req = OpenRequest {
        format: parse_format(g.format.clone())?,
        snapshot: None,
        follow_backing: true,
        for_check: false,
    };
    let img = open_image(&g.filename, &req)?;
    img.image.ready_for_io()?;
    let opts = OpenOptions {
        ignore_journal_recovery: g.ignore_journal,
    };
    guest::find(img.image.clone(), &opts)
}

/// The mounts `-m` asks for, or what inspection finds.
fn mounts(g: &GuestArgs, found: &[Found]) -> Result<Mounts> {
    if g.mounts.is_empty() {
        guest::inspect(found)
    } else {
        guest::mount_explicit(found, &g.mounts)
    }
}

/// Sizes as `df -h` and virt-filesystems `-h` print them: powers of 1024, one decimal below 10.
fn human(n: u64) -> String {
    const UNITS: [&str; 7] = ["", "K", "M", "G", "T", "P", "E"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}")
    } else if v < 10.0 {
        // df rounds up.
        format!("{:.1}{}", (v * 10.0).ceil() / 10.0, UNITS[u])
    } else {
        format!("{}{}", v.ceil() as u64, UNITS[u])
    }
}

/// What `filesystems` lists, in virt-filesystems' order: filesystems, logical volumes,
/// physical volumes.
pub(super) struct Lists {
    pub filesystems: bool,
    pub lvs: bool,
    pub pvs: bool,
}

pub(super) fn filesystems(g: GuestArgs, long: bool, human_sizes: bool, lists: Lists) -> Result<u8> {
    let found = found(&g)?;
    let mut listed: Vec<(&Found, &str)> = Vec::new();
    let mut add = |on: bool, kind: &'static str, pick: fn(&Found) -> bool| {
        if on {
            listed.extend(found.iter().filter(|f| pick(f)).map(|f| (f, kind)));
        }
    };
    add(lists.filesystems, "filesystem", |f| f.vfs.is_some());
    add(lists.lvs, "lv", |f| f.logical_volume);
    add(lists.pvs, "pv", |f| f.physical_volume);
    let mut t = String::new();
    if !long {
        for (f, _) in &listed {
            t.push_str(&format!("{}\n", f.identity.device));
        }
        print_out(&t)?;
        return Ok(0);
    }
    let rows: Vec<[String; 6]> = listed
        .iter()
        .map(|&(f, kind)| {
            let size = if human_sizes {
                human(f.size)
            } else {
                f.size.to_string()
            };
            let dash = || "-".to_string();
            if kind != "filesystem" {
                let uuid = f.lvm_uuid.clone().unwrap_or_else(dash);
                return [
                    f.identity.device.clone(),
                    kind.into(),
                    dash(),
                    dash(),
                    uuid,
                    size,
                ];
            }
            let label = f
                .identity
                .label
                .as_deref()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .filter(|l| !l.is_empty())
                .unwrap_or_else(dash);
            [
                f.identity.device.clone(),
                kind.into(),
                f.vfs.unwrap_or("-").into(),
                label,
                f.identity.uuid.clone().unwrap_or_else(dash),
                size,
            ]
        })
        .collect();
    t.push_str(&table(
        &["Name", "Type", "VFS", "Label", "UUID", "Size"],
        &rows,
    ));
    // Errors of the filesystems listed, and of logical volumes that could not be read at all
    // (thin, RAID, ... volumes).
    for f in &found {
        match (&f.fs, &f.unreadable) {
            (Err(e), _) if f.vfs.is_some() && lists.filesystems => {
                eprintln!("vdisk: {}: {e}", f.identity.device)
            }
            (_, Some(e)) if lists.filesystems || lists.lvs => {
                eprintln!("vdisk: {}: {e}", f.identity.device)
            }
            _ => {}
        }
    }
    print_out(&t)?;
    Ok(0)
}

/// Columns padded to their widest cell, the last (sizes) right-aligned, as virt-filesystems.
fn table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> String {
    let mut w = head.map(str::len);
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                l.push_str(&format!("{c:>width$}", width = w[i]));
            } else {
                l.push_str(&format!("{c:<width$} ", width = w[i]));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut t = line(head.to_vec());
    for r in rows {
        t.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    t
}

pub(super) fn df(g: GuestArgs, human_sizes: bool, inodes: bool) -> Result<u8> {
    let found = found(&g)?;
    let name = g.filename.display().to_string();
    let head = match (inodes, human_sizes) {
        (true, _) => ["Filesystem", "Inodes", "IUsed", "IFree", "IUse%"],
        (false, true) => ["Filesystem", "Size", "Used", "Available", "Use%"],
        (false, false) => ["Filesystem", "1K-blocks", "Used", "Available", "Use%"],
    };
    let mut t = format!(
        "{:<36}{:>10} {:>10} {:>10} {:>5}\n",
        head[0], head[1], head[2], head[3], head[4]
    );
    let mut status = 0;
    for f in found.iter().filter(|f| f.vfs.is_some()) {
        let fs = match &f.fs {
            Ok(fs) => fs,
            Err(e) => {
                eprintln!("vdisk: {}: {e}", f.identity.device);
                status = 1;
                continue;
            }
        };
        let u = fs.usage()?;
        let label = format!("{name}:{}", f.identity.device);
        let (total, used, avail, pct) = if inodes {
            let total = u.inodes.unwrap_or(0);
            let free = u.free_inodes.unwrap_or(0);
            let used = total.saturating_sub(free);
            (
                total.to_string(),
                used.to_string(),
                free.to_string(),
                percent(used, free),
            )
        } else {
            let used = u
                .blocks
                .saturating_sub(u.free_blocks)
                .saturating_mul(u.block_size);
            let total = u.blocks.saturating_mul(u.block_size);
            let avail = u.available_blocks.saturating_mul(u.block_size);
            let show = |b: u64| {
                if human_sizes {
                    human(b)
                } else {
                    b.div_ceil(1024).to_string()
                }
            };
            (show(total), show(used), show(avail), percent(used, avail))
        };
        t.push_str(&format!(
            "{label:<36}{total:>10} {used:>10} {avail:>10} {pct:>5}\n"
        ));
    }
    print_out(&t)?;
    Ok(status)
}

/// df's Use%: used over what a user could have (used + available), rounded up; `-` when both
/// are 0.
fn percent(used: u64, avail: u64) -> String {
    let total = u128::from(used) + u128::from(avail);
    if total == 0 {
        return "-".into();
    }
    format!("{}%", (u128::from(used) * 100).div_ceil(total))
}

pub(super) fn ls(g: GuestArgs, long: bool, recursive: bool, path: &OsStr) -> Result<u8> {
    let found = found(&g)?;
    let mounts = mounts(&g, &found)?;
    let path = path.as_bytes();
    // As ls does with its operands: `-l` shows a symlink itself; without it, a link to a
    // directory lists the directory.
    let (mut fs, mut node) = guest::lookup(&found, &mounts, path, false)?;
    if node.kind == FileKind::Symlink && !long {
        (fs, node) = guest::lookup(&found, &mounts, path, true)?;
    }
    let mut out = std::io::stdout().lock();
    if node.kind != FileKind::Directory {
        // As `ls FILE`: the file itself.
        let (line, link_error) = entry_line(fs, path, &node, long);
        write_out(&mut out, &line)?;
        return Ok(u8::from(
            link_error.is_some_and(|e| cannot("read symbolic link", path, &e)),
        ));
    }
    let base = path.strip_suffix(b"/").unwrap_or(path);
    let failed = list_dir(&found, &mounts, base, (fs, node), long, recursive, &mut out)?;
    // As ls: what could not be shown was said on standard error; the exit status says so.
    Ok(u8::from(failed))
}

/// Says on standard error that `what` failed for `path`, as ls says it; returns `true`.
fn cannot(what: &str, path: &[u8], e: &Error) -> bool {
    eprintln!(
        "vdisk: cannot {what} '{}': {e}",
        String::from_utf8_lossy(path)
    );
    true
}

/// One directory being listed by [`list_dir`]: its guest path, its filesystem, and its entries
/// not yet shown, sorted by name.
struct Level<'a> {
    path: Vec<u8>,
    fs: &'a dyn Filesystem,
    entries: std::vec::IntoIter<Listed>,
}

/// The entries of the directory at guest path `dir`, sorted by name as `ls` sorts them in the C
/// locale; with `recursive`, full paths and every directory below (depth first, a directory's
/// entries right after its own line), each entered once (a mount point is listed from the
/// filesystem mounted on it), at most `MAX_WALK_DEPTH` deep (`vdisk::fs::walk::may_enter`) with a stack of the directories
/// being listed rather than recursion. An entry whose node cannot be read (a damaged inode) is
/// listed by name, `?` in its other columns, as ls lists what it cannot `stat`, and said on
/// standard error, as is a directory below `dir` that cannot be listed; returns whether any was.
fn list_dir<'a>(
    found: &'a [Found],
    mounts: &Mounts,
    dir: &[u8],
    (fs, node): (&'a dyn Filesystem, Node),
    long: bool,
    recursive: bool,
    out: &mut impl Write,
) -> Result<bool> {
    // A directory is one node of one filesystem.
    let key =
        |fs: &dyn Filesystem, id: u64| (fs as *const dyn Filesystem as *const () as usize, id);
    let sorted = |mut entries: Vec<Listed>| {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries.into_iter()
    };
    let mut seen = std::collections::HashSet::new();
    seen.insert(key(fs, node.id));
    let mut levels = vec![Level {
        path: dir.to_vec(),
        fs,
        entries: sorted(fs.list_dir(&node)?),
    }];
    let mut failed = false;
    while let Some(level) = levels.last_mut() {
        let Some(e) = level.entries.next() else {
            levels.pop();
            continue;
        };
        let fs = level.fs;
        let mut full = level.path.clone();
        full.push(b'/');
        full.extend_from_slice(&e.name);
        let shown: &[u8] = if recursive { &full } else { &e.name };
        // A mount point shows the root of what is mounted there.
        let entry = match guest::mounted_at(mounts, &full) {
            Some((i, rest)) if rest == b"/" => {
                let f = found[i].filesystem()?;
                f.root().map(|r| (f, r))
            }
            _ => e.node.map(|n| (fs, n)),
        };
        let (efs, enode) = match entry {
            Ok(x) => x,
            // A name alone needs no node (ls reads none either).
            Err(_) if !long && !recursive => {
                write_out(out, &[shown, b"\n"].concat())?;
                continue;
            }
            Err(err) => {
                failed |= cannot("access", &full, &err);
                let mut line = Vec::new();
                if long {
                    line.extend_from_slice(
                        format!(
                            "?????????? {:>3} {:>5} {:>5} {:>10} {:>16} ",
                            "?", "?", "?", "?", "?"
                        )
                        .as_bytes(),
                    );
                }
                line.extend_from_slice(shown);
                line.push(b'\n');
                write_out(out, &line)?;
                continue;
            }
        };
        let (line, link_error) = entry_line(efs, shown, &enode, long);
        write_out(out, &line)?;
        if let Some(err) = link_error {
            failed |= cannot("read symbolic link", &full, &err);
        }
        if !recursive || enode.kind != FileKind::Directory || !seen.insert(key(efs, enode.id)) {
            continue;
        }
        vdisk::fs::walk::may_enter(levels.len(), &full)?;
        match efs.list_dir(&enode) {
            Ok(entries) => levels.push(Level {
                path: full,
                fs: efs,
                entries: sorted(entries),
            }),
            // A directory below the one asked for: said, and the listing goes on, as ls -R.
            Err(err) => failed |= cannot("open directory", &full, &err),
        }
    }
    Ok(failed)
}

fn write_out(out: &mut impl Write, line: &[u8]) -> Result<()> {
    out.write_all(line)
        .map_err(|e| Error::Other(format!("standard output: {e}")))
}

/// One line of a listing: the name, or with `long` what `ls -l` shows (mode, links, uid, gid,
/// size or device numbers, modification time in UTC, name, ` -> target` for a link); and why
/// a link's target could not be read (the line then ends at the name, as ls ends it).
fn entry_line(fs: &dyn Filesystem, name: &[u8], n: &Node, long: bool) -> (Vec<u8>, Option<Error>) {
    let mut line = Vec::new();
    if long {
        let size = match n.rdev {
            Some((maj, min)) => format!("{maj}, {min}"),
            None => n.size.to_string(),
        };
        line.extend_from_slice(
            format!(
                "{} {:>3} {:>5} {:>5} {:>10} {} ",
                mode_string(n.mode),
                n.nlink,
                n.uid,
                n.gid,
                size,
                utc_time(n.mtime)
            )
            .as_bytes(),
        );
    }
    line.extend_from_slice(name);
    let mut link_error = None;
    if long && n.kind == FileKind::Symlink {
        match fs.read_link(n) {
            Ok(target) => {
                line.extend_from_slice(b" -> ");
                line.extend_from_slice(&target);
            }
            Err(e) => link_error = Some(e),
        }
    }
    line.push(b'\n');
    (line, link_error)
}

/// `ls -l`'s mode column: type letter and rwx triplets with setuid, setgid and sticky bits.
fn mode_string(mode: u32) -> String {
    let kind = match FileKind::from_mode(mode) {
        FileKind::Directory => 'd',
        FileKind::Symlink => 'l',
        FileKind::CharDevice => 'c',
        FileKind::BlockDevice => 'b',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
        FileKind::Regular => '-',
        FileKind::Unknown => '?',
    };
    let mut s = String::from(kind);
    for (shift, special, lower, upper) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (mode & special != 0, x) {
            (true, true) => lower,
            (true, false) => upper,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// `YYYY-MM-DD HH:MM` in UTC (civil-from-days, proleptic Gregorian).
fn utc_time(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        secs / 3600,
        (secs % 3600) / 60
    )
}

pub(super) fn cat(g: GuestArgs, paths: &[OsString]) -> Result<u8> {
    let found = found(&g)?;
    let mounts = mounts(&g, &found)?;
    let mut out = std::io::stdout().lock();
    for p in paths {
        let (fs, node) = guest::lookup(&found, &mounts, p.as_bytes(), true)?;
        if node.kind != FileKind::Regular {
            return Err(Error::invalid(format!(
                "{}: not a regular file ({})",
                p.to_string_lossy(),
                match node.kind {
                    FileKind::Directory => "a directory",
                    _ => "a special file",
                }
            )));
        }
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < node.size {
            let n = fs.read(&node, at, &mut buf)?;
            if n == 0 {
                break;
            }
            write_out(&mut out, &buf[..n])?;
            at += n as u64;
        }
    }
    out.flush()
        .map_err(|e| Error::Other(format!("standard output: {e}")))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_ls_writes_them() {
        assert_eq!(mode_string(0o100644), "-rw-r--r--");
        assert_eq!(mode_string(0o040755), "drwxr-xr-x");
        assert_eq!(mode_string(0o120777), "lrwxrwxrwx");
        assert_eq!(mode_string(0o104755), "-rwsr-xr-x");
        assert_eq!(mode_string(0o102644), "-rw-r-Sr--");
        assert_eq!(mode_string(0o041777), "drwxrwxrwt");
        assert_eq!(mode_string(0o041776), "drwxrwxrwT");
        assert_eq!(mode_string(0o020620), "crw--w----");
    }

    /// Values from `date -u -d @T '+%Y-%m-%d %H:%M'`.
    #[test]
    fn times_are_utc_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc_time(1_795_000_000), "2026-11-18 11:06");
        assert_eq!(utc_time(-1), "1969-12-31 23:59");
    }

    /// Values from `numfmt --to=iec --round=up` (df -h's rounding).
    #[test]
    fn sizes_round_up_as_df_h() {
        assert_eq!(human(0), "0");
        assert_eq!(human(1023), "1023");
        assert_eq!(human(1024), "1.0K");
        assert_eq!(human(1025), "1.1K");
        assert_eq!(human(128 << 20), "128M");
        assert_eq!(human(4_194_304_000), "4.0G");
        assert_eq!(percent(0, 0), "-");
        assert_eq!(percent(1, 99), "1%");
        assert_eq!(percent(1, 199), "1%");
        assert_eq!(percent(50, 50), "50%");
    }
}
