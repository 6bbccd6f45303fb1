//! Operations that change an image with the help of its backing chain, as qemu-img does them:
//! `rebase` (safe mode: keeps the guest content while switching backing files) and `commit`
//! (copies an overlay's data down into its backing image). Both write through the crash-safe
//! in-place writers (`vdisk_qcow2::mutate::open_writer`, `vdisk_raw::open_writer`) and then switch
//! metadata with one more crash-safe change, so an interruption between the two leaves a
//! consistent image that still reads the same.

use crate::chain::{canonical, open_backing_for, open_image, Layer, OpenRequest, OpenedImage};
use std::path::Path;
use std::sync::Arc;
use vdisk_core::extent::ExtentKind;
use vdisk_core::storage::resolve_relative;
use vdisk_core::zero::is_zero;
use vdisk_core::{Error, Format, ImageReader, ImageWriter, Payload, Result};
use vdisk_qcow2::mutate::Prealloc;

/// Bytes compared or copied per read.
const CHUNK: u64 = 1 << 20;

/// Reads `buf.len()` bytes at `offset` from `r`, zeros past its end.
fn read_padded(r: &dyn ImageReader, buf: &mut [u8], offset: u64) -> Result<()> {
    let size = r.virtual_size();
    let n = (buf.len() as u64).min(size.saturating_sub(offset)) as usize;
    buf[n..].fill(0);
    if n > 0 {
        r.read_at(&mut buf[..n], offset)?;
    }
    Ok(())
}

fn open_qcow2_chain(path: &Path) -> Result<OpenedImage> {
    let img = open_image(
        path,
        &OpenRequest {
            format: None,
            snapshot: None,
            follow_backing: true,
            for_check: false,
        },
    )?;
    if img.top().format != Format::Qcow2 {
        return Err(Error::unsupported(
            path,
            format!(
                "this operation on a {} image (only qcow2 is supported)",
                img.top().format
            ),
        ));
    }
    Ok(img)
}

/// Calls `f(start, end)` for each run of `layer` (from `offset` to its end) whose kind is wanted.
fn for_runs(
    layer: &dyn ImageReader,
    want: impl Fn(ExtentKind) -> bool,
    mut f: impl FnMut(u64, u64) -> Result<()>,
) -> Result<()> {
    let size = layer.virtual_size();
    let mut pos = 0u64;
    while pos < size {
        let e = layer.block_status(pos, size - pos)?;
        if e.length == 0 {
            return Err(Error::Other(format!(
                "block status returned an empty extent at {pos}"
            )));
        }
        let end = pos.saturating_add(e.length).min(size);
        if want(e.kind) {
            f(pos, end)?;
        }
        pos = end;
    }
    Ok(())
}

/// `qemu-img rebase -b NEW_BACKING -F FMT PATH` (safe mode) for a qcow2 image: every cluster that
/// the image does not allocate itself and whose content under the old chain differs from the new
/// backing chain's is written into the image (one transaction), then the backing reference is
/// switched. `new_backing` is resolved relative to the image's directory; `""` removes the backing
/// file (flattening: every cluster read from the old chain is copied in).
pub fn rebase_safe(path: &Path, new_backing: &str, new_fmt: Option<Format>) -> Result<()> {
    rebase_safe_with(path, new_backing, new_fmt, false)
}

/// [`rebase_safe`], with `compress` (`rebase -c`): the clusters copied into the image are stored
/// compressed where they compress (see `vdisk_qcow2::mutate::open_compressing_writer`).
pub fn rebase_safe_with(
    path: &Path,
    new_backing: &str,
    new_fmt: Option<Format>,
    compress: bool,
) -> Result<()> {
    rebase_safe_watched(path, new_backing, new_fmt, compress, &mut |_| {})
}

/// [`rebase_safe_with`], calling `step(share)` for each step of qemu-img's copy loop that counts
/// towards its progress (`qemu_progress_print(local_progress, 100)`): `share` is the percentage
/// one 2 MiB step stands for (`rebase -p` prints its progress lines from these).
pub fn rebase_safe_watched(
    path: &Path,
    new_backing: &str,
    new_fmt: Option<Format>,
    compress: bool,
    step: &mut dyn FnMut(f32),
) -> Result<()> {
    let fmt = rebase_copy(path, new_backing, new_fmt, compress, step)?;
    vdisk_qcow2::mutate::rebase_unsafe(path, new_backing, fmt.map(|f| f.name()))
}

/// qemu-img rebase's step (`IO_BUF_SIZE`).
const REBASE_STEP: u64 = 2 << 20;

/// Whether `offset` is allocated in any of `layers` (qemu's `bdrv_is_allocated_above` down to,
/// not including, the new backing file), and for how many bytes from it (at most `n`) the answer
/// holds. `None` past the end of the first layer (qemu's "n = 0": the old backing file's end).
/// "Allocated" only makes the caller compare the range, so any doubt answers it.
fn allocated_above(layers: &[Layer], offset: u64, n: u64) -> Result<Option<(bool, u64)>> {
    let Some(first) = layers.first() else {
        return Ok(Some((false, n)));
    };
    if offset >= first.reader.virtual_size() {
        return Ok(None);
    }
    let mut run = n;
    for l in layers {
        let size = l.reader.virtual_size();
        if offset >= size {
            // Past a shorter layer's end the chain reads zeros, whatever lies below: allocated,
            // as qemu counts it.
            return Ok(Some((true, run)));
        }
        let e = l.reader.block_status(offset, run.min(size - offset))?;
        let len = e.length.clamp(1, run);
        if e.kind.is_present() {
            return Ok(Some((true, len)));
        }
        run = len;
    }
    Ok(Some((false, run)))
}

/// The first of rebase's two commits: the data that must not change is copied into the image,
/// which still names its old backing file. Returns the new backing format.
///
/// The loop is qemu-img's (`img_rebase`): 2 MiB steps over the image; a step the image allocates
/// itself is skipped, and so is one no layer between the image and the new backing file allocates
/// when that file is in the old chain; the rest is widened to the write alignment, and each
/// cluster of it whose content differs between the old chain and the new backing file is copied.
fn rebase_copy(
    path: &Path,
    new_backing: &str,
    new_fmt: Option<Format>,
    compress: bool,
    step: &mut dyn FnMut(f32),
) -> Result<Option<Format>> {
    let old = open_qcow2_chain(path)?;
    let fmt = if new_backing.is_empty() {
        None
    } else {
        Some(new_fmt.ok_or_else(|| {
            Error::invalid(format!(
                "Could not change the backing file to '{new_backing}': backing format must be specified"
            ))
        })?)
    };
    let new: Option<Arc<dyn ImageReader>> = match fmt {
        None => None,
        Some(f) => {
            let img = open_backing_for(path, new_backing, Some(f)).map_err(|e| {
                Error::Other(format!(
                    "Could not open new backing file '{new_backing}': {e}"
                ))
            })?;
            // The image itself in its new chain would make a loop no program could open
            // (qemu-img's image locks refuse it: "Failed to get shared "write" lock").
            let me = canonical(path);
            if let Some(l) = img.layers.iter().find(|l| canonical(&l.path) == me) {
                return Err(Error::invalid(format!(
                    "Could not open new backing file '{new_backing}': its chain includes '{}', \
                     the image being rebased, which would then be its own backing file",
                    l.path.display()
                )));
            }
            Some(img.image)
        }
    };
    // The new backing file's place in the old chain, when it is there (qemu's prefix chain).
    let prefix = (!new_backing.is_empty())
        .then(|| canonical(&resolve_relative(path, Path::new(new_backing))))
        .and_then(|want| {
            old.layers
                .iter()
                .skip(1)
                .position(|l| canonical(&l.path) == want)
                .map(|i| i + 1)
        });
    let top = Arc::clone(&old.top().reader);
    let size = top.virtual_size();
    let info = &old.top().info;
    let cs = info.cluster_size.unwrap_or(65536).max(512);
    let extended_l2 = info
        .format_specific
        .as_ref()
        .and_then(|(_, v)| v.get("extended-l2"))
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    // qemu's write_align: the subcluster (cluster / 32 with extended L2 entries), the cluster
    // when compressing.
    let align = if extended_l2 && !compress {
        cs / 32
    } else {
        cs
    }
    .max(512);
    let share = if size == 0 {
        0.0
    } else {
        100.0 / (size / size.min(REBASE_STEP)) as f32
    };
    let mut w = if compress {
        vdisk_qcow2::mutate::open_compressing_writer(path)?
    } else {
        vdisk_qcow2::mutate::open_writer(path)?
    };
    let mut done_to = 0u64;
    let mut a = vec![0u8; cs as usize];
    let mut b = vec![0u8; cs as usize];
    let mut offset = 0u64;
    while offset < size {
        let mut n = REBASE_STEP.min(size - offset);
        let e = top.block_status(offset, n)?;
        n = e.length.clamp(1, n);
        if e.kind != ExtentKind::Unallocated {
            offset += n;
            continue;
        }
        if let Some(k) = prefix {
            if let Some((allocated, run)) = allocated_above(&old.layers[1..k], offset, n)? {
                if !allocated {
                    offset += run;
                    continue;
                }
                n = run;
            }
        }
        let start = offset / align * align;
        let end = (offset + n).div_ceil(align).saturating_mul(align);
        let end = end.min(size).min(start + REBASE_STEP);
        let mut g = (start / cs * cs).max(done_to);
        while g < end {
            let len = cs.min(size - g) as usize;
            read_padded(old.image.as_ref(), &mut a[..len], g)?;
            match &new {
                Some(n) => read_padded(n.as_ref(), &mut b[..len], g)?,
                None => b[..len].fill(0),
            }
            if a[..len] != b[..len] {
                let p = if is_zero(&a[..len]) {
                    Payload::Zero(len as u64)
                } else {
                    Payload::data(a[..len].to_vec())
                };
                w.write(g, p)
                    .map_err(|e| Error::Other(format!("Error while writing to COW image: {e}")))?;
            }
            g += cs;
            done_to = g;
        }
        step(share);
        offset = end;
    }
    w.finish()?;
    Ok(fmt)
}

/// `qemu-img commit [-b BASE] [-d] OVERLAY`: copies every range allocated in `overlay` (and in the
/// layers between it and `base`, which defaults to its backing file) into the base image (raw or
/// qcow2, grown first when smaller than the overlay), then empties the overlay when
/// `drop_overlay_data` (no `-d`). As in qemu-img, naming a base (`-b`) implies `-d`: the overlay
/// keeps its data. The range list kept in memory is one entry per allocated run of the layers.
pub fn commit(overlay: &Path, base: Option<&Path>, drop_overlay_data: bool) -> Result<()> {
    commit_limited(overlay, base, drop_overlay_data, 0)
}

/// [`commit`] with the writes to the base throttled to `rate` bytes a second (`commit -r`; 0 for
/// no limit), by the same leaky bucket as `convert -r` ([`vdisk_convert::RateLimited`]).
pub fn commit_limited(
    overlay: &Path,
    base: Option<&Path>,
    drop_overlay_data: bool,
    rate: u64,
) -> Result<()> {
    commit_watched(overlay, base, drop_overlay_data, rate, &mut |_, _| {})
}

/// [`commit_limited`], calling `progress(done, total)` after each write to the base: the bytes
/// copied so far of all the bytes to copy (`commit -p` prints its progress lines from these).
pub fn commit_watched(
    overlay: &Path,
    base: Option<&Path>,
    drop_overlay_data: bool,
    rate: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let mut chain = open_qcow2_chain(overlay)?;
    if chain.layers.len() < 2 {
        return Err(Error::invalid("Image does not have a backing file"));
    }
    let k = match base {
        None => 1,
        Some(b) => {
            let want = [canonical(b), canonical(&resolve_relative(overlay, b))];
            chain
                .layers
                .iter()
                .skip(1)
                .position(|l| want.contains(&canonical(&l.path)))
                .map(|i| i + 1)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "Did not find '{}' in the backing chain of '{}'",
                        b.display(),
                        overlay.display()
                    ))
                })?
        }
    };
    let size = chain.image.virtual_size();
    let (base_path, base_fmt) = (chain.layers[k].path.clone(), chain.layers[k].format);
    if chain.layers[k].reader.virtual_size() < size {
        grow(&base_path, base_fmt, size)?;
        chain = open_qcow2_chain(overlay)?;
    }
    let mut w: Box<dyn ImageWriter> = match base_fmt {
        Format::Raw => vdisk_raw::open_writer(&base_path)?,
        Format::Qcow2 => crate::registry::qcow2_writer_over_backing(&base_path)?,
        f => {
            return Err(Error::unsupported(
                &base_path,
                format!("commit into a {f} image"),
            ))
        }
    };
    if rate > 0 {
        w = Box::new(vdisk_convert::RateLimited::new(w, rate));
    }
    let g = w.caps().granularity.max(65536);
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for layer in &chain.layers[..k] {
        for_runs(
            layer.reader.as_ref(),
            |kind| kind != ExtentKind::Unallocated,
            |s, e| {
                runs.push((s / g * g, e.div_ceil(g).saturating_mul(g).min(size)));
                Ok(())
            },
        )?;
    }
    runs.sort_unstable();
    // The bytes to copy: the runs' union.
    let (mut total, mut end) = (0u64, 0u64);
    for &(s, e) in &runs {
        total += e.saturating_sub(s.max(end));
        end = end.max(e);
    }
    let mut buf = Vec::new();
    let mut done_to = 0u64;
    let mut done = 0u64;
    for (s, e) in runs {
        let mut pos = s.max(done_to);
        while pos < e {
            let n = CHUNK.max(g).min(e - pos);
            buf.resize(n as usize, 0);
            read_padded(chain.image.as_ref(), &mut buf, pos)?;
            let p = if is_zero(&buf) {
                Payload::Zero(n)
            } else {
                Payload::data(buf.clone())
            };
            w.write(pos, p)?;
            pos += n;
            done += n;
            progress(done, total);
        }
        done_to = done_to.max(e);
    }
    w.finish()?;
    drop(chain);
    if drop_overlay_data && base.is_none() {
        vdisk_qcow2::mutate::make_empty(overlay)?;
    }
    Ok(())
}

/// Grows the base image to `size` before a commit (qemu-img commit does the same).
fn grow(path: &Path, fmt: Format, size: u64) -> Result<()> {
    match fmt {
        Format::Qcow2 => crate::registry::resize_qcow2(path, size, false, Prealloc::Off),
        Format::Raw => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|source| Error::Open {
                    path: path.to_path_buf(),
                    source,
                })?;
            f.set_len(size).map_err(|e| Error::io(path, size, e))
        }
        f => Err(Error::unsupported(path, format!("commit into a {f} image"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdisk_testutil::*;

    /// A crash between rebase's two commits leaves the image consistent, still on its old backing
    /// file, reading the same; and reading the same over the new one too.
    #[test]
    fn state_between_the_two_commits() {
        if !qemu_available() {
            return;
        }
        let d = Scratch::new("ops-reb-mid");
        let base = d.join("base.qcow2");
        let ps = |p: &Path| p.to_string_lossy().into_owned();
        qemu_create(&base, "qcow2", "", "2M");
        qemu_io("qcow2", &base, &["write -P 0x11 0 2M"]);
        let top = d.join("top.qcow2");
        let args = [
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
        ];
        qemu_img(&[&args[..], &[ps(&top).as_str()]].concat());
        qemu_io("qcow2", &top, &["write -P 0x22 64k 64k"]);
        let other = d.join("other.qcow2");
        qemu_create(&other, "qcow2", "", "2M");
        let before = qemu_raw_bytes(&top, Some("qcow2"));
        rebase_copy(&top, "other.qcow2", Some(Format::Qcow2), false, &mut |_| {}).unwrap();
        assert_qemu_check_clean(&top, "qcow2");
        assert_eq!(
            qemu_info_json(&top)["backing-filename"].as_str(),
            Some("base.qcow2")
        );
        assert_same_bytes(&qemu_raw_bytes(&top, Some("qcow2")), &before, "old chain");
        let copy = d.join("copy.qcow2");
        std::fs::copy(&top, &copy).unwrap();
        qemu_img(&[
            "rebase",
            "-u",
            "-b",
            "other.qcow2",
            "-F",
            "qcow2",
            &ps(&copy),
        ]);
        assert_same_bytes(&qemu_raw_bytes(&copy, Some("qcow2")), &before, "new chain");
    }
}
