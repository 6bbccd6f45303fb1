#!/usr/bin/env python3
"""Compares `vdisk ls -l` (and `vdisk cat`) with the filesystem tools that read an image the way
vdisk-fs does, without mounting (debugfs for ext2/3/4, xfs_db for XFS, mtools' mdir for FAT), on
the inputs of the `fs_open` fuzz corpus.

Each input is a device as the `fs_open` target builds it (the first byte its length in 64 KiB
units, the rest its start, zeros after). From the root, up to 30 directories of each input are
listed by both, breadth first, through the directories both list: the names, each entry's type,
and (ext, FAT) the sizes of files and symlinks; and with debugfs, the bytes of files up to 1 MiB.
Counts the directories where both list the same, where only one lists (the other gives an error),
and where both list but differently, with examples. `--ignore-journal` is passed to vdisk, since
the tools read the filesystem as it is on disk.

Usage: fuzz/fs-parity.py VDISK CORPUS_DIR [SAMPLE] [SEED]
  e.g. fuzz/fs-parity.py target/release/vdisk fuzz/corpus/fs_open 300 1
"""

import os
import re
import shutil
import subprocess
import tempfile

from parity_common import Tally, inputs, sample_from_args, write_device

MAX_DIRS = 30
MAX_CAT = 1 << 20
TYPES = {0o040000: "d", 0o100000: "-", 0o120000: "l", 0o020000: "c", 0o060000: "b",
         0o010000: "p", 0o140000: "s"}
XFS_TYPES = {"directory": "d", "regular": "-", "symlink": "l", "chardev": "c", "blkdev": "b",
             "fifo": "p", "socket": "s"}


MDIR_LINE = re.compile(
    r"^(.{8}) (.{3})\s+(<DIR>|\d+)\s+\d{4}-\d\d-\d\d\s+\d\d?:\d\d\s?(?: (.+))?$"
)


def run(cmd, timeout=30, env=None):
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return "timeout", b"", b""
    return r.returncode, r.stdout, r.stderr


# mtools with the Linux driver's default codepage (437; mtools' own default is 850).
MTOOLS_ENV = dict(
    os.environ, MTOOLSRC=os.path.join(tempfile.gettempdir(), "fs-parity.mtoolsrc")
)
with open(MTOOLS_ENV["MTOOLSRC"], "w") as rc_file:
    rc_file.write("DEFAULT_CODEPAGE=437\n")


def join(d, name):
    return (d.rstrip(b"/") + b"/" + name) if d != b"/" else b"/" + name


# `ls -l`: mode, links, owner, group, size (or "major, minor"), date, time, name; `?` in each
# column but the name for an entry whose node cannot be read (its error is on stderr).
LS_LINE = re.compile(
    rb"^([^ ]+) +(?:[0-9]+|\?) +(?:[0-9]+|\?) +(?:[0-9]+|\?) +([0-9]+|[0-9]+, +[0-9]+|\?)"
    rb" +(?:[^ ]+ +[^ ]+|\?) (.*)$",
    re.S,
)
LAST_ERROR = {}


def ours(vdisk, img, d):
    """{name: (type, size)} of directory `d` as vdisk lists it, or None."""
    rc, out, err = run([vdisk, "ls", "-l", "--ignore-journal", "-f", "raw", img, d])
    # Exit 1 with a listing: some entries (shown with `?`) or link targets could not be read.
    listed = rc == 1 and (b"cannot access" in err or b"cannot read symbolic link" in err)
    if rc != 0 and not listed:
        LAST_ERROR["vdisk"] = err.decode(errors="replace").strip().split(": ")[-1][:60]
        return None
    entries = {}
    for line in out.split(b"\n"):
        # Split on blanks only: a name may hold any other byte (a form feed, say).
        m = LS_LINE.match(line)
        if not m:
            continue
        kind, size, name = chr(m.group(1)[0]), m.group(2), m.group(3)
        size = int(size) if size.isdigit() else None
        if kind == "l" and b" -> " in name:
            name = name.split(b" -> ", 1)[0]
        entries[name] = (kind, size)
    return entries


def debugfs(img, d):
    rc, out, _ = run(["debugfs", "-n", "-R", b"ls -p " + d, img])
    if rc != 0 or not out.startswith(b"/"):
        return None
    entries = {}
    for line in out.split(b"\n"):
        if not line.startswith(b"/") or not line.endswith(b"/"):
            continue
        head = line[1:].split(b"/", 4)
        if len(head) < 5:
            continue
        name, size = head[4][:-1].rsplit(b"/", 1)
        if name in (b".", b"..") or head[0] == b"0":
            continue
        kind = TYPES.get(int(head[1], 8) & 0o170000, "?")
        entries[name] = (kind, int(size) if size else None)
    return entries


def xfs_db(img, d):
    rc, out, err = run(["xfs_db", "-r", "-c", b"path " + d, "-c", "ls", img])
    if rc != 0 or b"ls" in err or not out:
        return None
    entries = {}
    for line in out.split(b"\n"):
        f = line.split(None, 5)
        if len(f) < 6 or not f[0].isdigit():
            continue
        namelen = int(f[4])
        name = line[len(line) - len(f[5]):][:namelen]
        if name in (b".", b".."):
            continue
        entries[name] = (XFS_TYPES.get(f[2].decode(errors="replace"), "?"), None)
    return entries


def mdir(img, d):
    """mtools' listing: each entry's long name (else its short name), type and size."""
    rc, out, _ = run(["mdir", "-a", "-i", img, b"::" + d], env=MTOOLS_ENV)
    if rc != 0:
        return None
    entries = {}
    for line in out.decode(errors="replace").split("\n"):
        m = MDIR_LINE.match(line)
        if not m:
            continue
        base, ext, size, long_name = m.group(1), m.group(2), m.group(3), m.group(4)
        base, ext = base.split("\0")[0].rstrip(" "), ext.split("\0")[0].rstrip(" ")
        name = long_name or (base + "." + ext if ext else base)
        if name in (".", ".."):
            continue
        is_dir = size == "<DIR>"
        entries[name.encode()] = ("d" if is_dir else "-", None if is_dir else int(size))
    return entries


def vfs_of(vdisk, img):
    rc, out, _ = run([vdisk, "filesystems", "-l", "-f", "raw", img])
    for line in out.decode(errors="replace").splitlines()[1:]:
        f = line.split()
        if len(f) >= 3 and f[0] == "/dev/sda":
            return f[2]
    return None


def compare(a, b, check_sizes):
    if set(a) != set(b):
        return f"names ({len(set(a) - set(b))} only vdisk, {len(set(b) - set(a))} only tool)"
    for n in a:
        if a[n][0] != b[n][0] and "?" not in (a[n][0], b[n][0]):
            return f"type {a[n][0]} vs {b[n][0]}"
        if check_sizes and b[n][1] is not None and a[n][0] in "-l" and a[n][1] != b[n][1]:
            return "size"
    return None


def main():
    vdisk, corpus, files = sample_from_args(__doc__, 300)
    tally = Tally()
    tmp = tempfile.mkdtemp(prefix="fs-parity-")
    img = os.path.join(tmp, "dev.img")
    try:
        for name, data in inputs(corpus, files):
            if not data:
                continue
            write_device(data, img)
            vfs = vfs_of(vdisk, img)
            tool = {"ext2": debugfs, "ext3": debugfs, "ext4": debugfs, "xfs": xfs_db,
                    "vfat": mdir}.get(vfs)
            if tool is None:
                tally.add("inputs without a filesystem vdisk recognises")
                continue
            tally.add(f"inputs: {vfs}")
            todo, done = [b"/"], 0
            while todo and done < MAX_DIRS:
                d = todo.pop(0)
                done += 1
                a, b = ours(vdisk, img, d), tool(img, d)
                if a is None or b is None:
                    kind = {(True, True): "both refuse", (True, False): "only the tool lists",
                            (False, True): "only vdisk lists"}[(a is None, b is None)]
                    if a is None and b is not None:
                        kind += f" (vdisk: {LAST_ERROR.get('vdisk', '')})"
                    kind = f"{vfs}: {kind}"
                else:
                    diff = compare(a, b, tool is not xfs_db)
                    kind = f"{vfs}: {'same' if diff is None else 'differ: ' + diff}"
                    for n, (t, size) in sorted(a.items()):
                        if n in b and t == "d" and b[n][0] == "d":
                            todo.append(join(d, n))
                        if (diff is None and tool is debugfs and t == "-" and size is not None
                                and size <= MAX_CAT):
                            p = join(d, n)
                            rc1, o1, _ = run([vdisk, "cat", "--ignore-journal", "-f", "raw",
                                              img, p])
                            rc2, o2, e2 = run(["debugfs", "-n", "-R", b"cat " + p, img])
                            # debugfs reports a failed cat on stderr and exits 0; it prints
                            # inline data to the end of the inline area, past i_size.
                            tool_ok = rc2 == 0 and b"cat: " not in e2
                            same = rc1 == 0 and tool_ok and o2[:size] == o1 and len(o1) == size
                            ck = f"{vfs}: file bytes {'same' if same else 'differ'}"
                            if rc1 != 0 or not tool_ok:
                                ck = {(True, True): "both refuse", (True, False): "vdisk refuses",
                                      (False, True): "debugfs refuses"}[(rc1 != 0, not tool_ok)]
                                ck = f"{vfs}: file bytes: {ck}"
                            tally.add(ck, None if same else (name, p))
                tally.add(kind, None if "same" in kind else (name, d))
    finally:
        shutil.rmtree(tmp)
    print(f"{len(files)} inputs")
    for kind, n, ex in tally.rows(by_kind=True):
        print(f"  {n:5d}  {kind}" + (f"   e.g. {ex[0]} {ex[1]!r}" if ex else ""))


if __name__ == "__main__":
    main()
