#!/usr/bin/env python3
"""Compares `vdisk bitmap` with `qemu-img bitmap` on the qcow2 images of a fuzz corpus.

For a random sample of a corpus directory (the first two bytes of each `qcow2_mutate` input, the
operation and size bytes, are dropped), each tool runs the same bitmap commands on its own copy of
the image: an `--add`; and when the image has bitmaps, an `--add` with `--merge` of the first one
into the new one, `--clear` and `--disable` of that first bitmap, and its `--remove`. A run differs when the exit codes differ, or when both
succeed and then `qemu-img info` lists other bitmaps, or qemu-img's copy checks clean and vdisk's
does not. Prints the differences grouped by kind, with one example file each.

Usage: fuzz/bitmap-parity.py VDISK CORPUS_DIR [SAMPLE] [SEED]
  e.g. fuzz/bitmap-parity.py target/release/vdisk fuzz/corpus/qcow2_mutate 300 1
"""

import json
import os
import re
import shutil
import subprocess
import tempfile

from parity_common import Tally, inputs, last_line, sample_from_args


def run(argv):
    try:
        return subprocess.run(argv, capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return None


def error_kind(r):
    """The last line of standard error, numbers and the copy's path generalised (for grouping)."""
    line = last_line(r.stderr, 1000)
    line = re.sub(r"/\S*/[qv]\.qcow2", "FILE", line)
    return re.sub(r"[0-9]+", "N", line)[:80]


def bitmaps(img):
    r = run(["qemu-img", "info", "-U", "--output=json", "-f", "qcow2", img])
    if r is None or r.returncode != 0:
        return None
    data = json.loads(r.stdout).get("format-specific", {}).get("data", {})
    return data.get("bitmaps")


def clean(img):
    r = run(["qemu-img", "check", "-f", "qcow2", img])
    return r is not None and r.returncode == 0


def first_bitmap(img):
    listed = bitmaps(img) or []
    return listed[0]["name"] if listed else None


def main():
    vdisk, corpus, files = sample_from_args(__doc__, 300)
    tally = Tally()
    runs = 0
    succeeded = 0
    with tempfile.TemporaryDirectory() as tmp:
        src, q, v = (os.path.join(tmp, n) for n in ("src.qcow2", "q.qcow2", "v.qcow2"))
        for name, data in inputs(corpus, files):
            if data[:4] != b"QFI\xfb":
                continue
            with open(src, "wb") as f:
                f.write(data)
            first = first_bitmap(src)
            runs_here = [(["--add"], "fuzz-new")]
            if first is not None:
                runs_here += [
                    (["--add", "-g", "4k", "--merge", first], "fuzz-new"),
                    (["--clear", "--disable"], first),
                    (["--remove"], first),
                ]
            for ops, target in runs_here:
                shutil.copy(src, q)
                shutil.copy(src, v)
                rq = run(["qemu-img", "bitmap", "-f", "qcow2", *ops, q, target])
                rv = run([vdisk, "bitmap", "-f", "qcow2", *ops, v, target])
                runs += 1
                succeeded += rq is not None and rq.returncode == 0
                if rq is None or rv is None:
                    key = ("timeout", "qemu-img" if rq is None else "vdisk")
                elif rq.returncode != rv.returncode:
                    key = (" ".join(ops), rq.returncode, rv.returncode, error_kind(rq),
                           error_kind(rv))
                elif rq.returncode == 0 and bitmaps(q) != bitmaps(v):
                    key = (" ".join(ops), "bitmaps listed differ")
                elif rq.returncode == 0 and clean(q) and not clean(v):
                    key = (" ".join(ops), "qemu-img's copy checks clean, vdisk's does not")
                else:
                    continue
                tally.add(key, name)
    print(f"{runs} runs ({succeeded} succeeded with qemu-img), {tally.total()} differ")
    for key, n, name in tally.rows()[:25]:
        print(n, key, name)


if __name__ == "__main__":
    main()
