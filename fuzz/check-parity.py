#!/usr/bin/env python3
"""Compares `vdisk check` with `qemu-img check` (or `info`, or `check -r`) on the qcow2 images of a
fuzz corpus.

For a random sample of a corpus directory (the first two bytes of each `qcow2_mutate` input, the
operation and size bytes, are dropped), runs both checks and counts the images whose exit codes
differ, grouped by the last line each tool printed on standard error, with one example file each.
COMMAND is `check` (the default), `info`, or `leaks` / `all` for `check -r leaks|all`: each tool
then repairs its own copy, and a run differs when the exit codes differ, when standard output
differs apart from the image end offset (vdisk's repair is shadow-paged), or when qemu-img finds
its own result clean and vdisk's not.

Usage: fuzz/check-parity.py VDISK CORPUS_DIR [SAMPLE] [SEED] [COMMAND]
  e.g. fuzz/check-parity.py target/debug/vdisk fuzz/corpus/qcow2_open 400 3
       fuzz/check-parity.py target/debug/vdisk fuzz/corpus/qcow2_open 400 3 info
       fuzz/check-parity.py target/debug/vdisk fuzz/corpus/qcow2_mutate 150 3 all
"""

import os
import subprocess
import sys
import tempfile

from parity_common import Tally, inputs, last_line, sample_from_args


def without_end(out):
    return [l for l in out.decode(errors="replace").splitlines()
            if not l.startswith("Image end offset")]


def clean(img):
    return subprocess.run(["qemu-img", "check", "-f", "qcow2", img],
                          capture_output=True, timeout=60).returncode == 0


def repair_key(q, v, qimg, vimg):
    """The difference between two `check -r` runs, or None."""
    if q.returncode != v.returncode:
        return (q.returncode, v.returncode, last_line(q.stderr), last_line(v.stderr))
    if without_end(q.stdout) != without_end(v.stdout):
        return ("stdout", last_line(q.stdout), last_line(v.stdout))
    if clean(qimg) and not clean(vimg):
        return ("qemu-img's repair checks clean, vdisk's does not",)
    return None


def main():
    vdisk, corpus, files = sample_from_args(__doc__, 400)
    cmd = sys.argv[5] if len(sys.argv) > 5 else "check"
    tally = Tally()
    checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        img = os.path.join(tmp, "c.qcow2")
        qimg, vimg = os.path.join(tmp, "q.qcow2"), os.path.join(tmp, "v.qcow2")
        for name, data in inputs(corpus, files):
            if data[:4] != b"QFI\xfb":
                continue
            with open(img, "wb") as f:
                f.write(data)
            repair = cmd in ("leaks", "all")
            if repair:
                for copy in (qimg, vimg):
                    with open(copy, "wb") as f:
                        f.write(data)
            args = ["check", "-r", cmd] if repair else [cmd]
            try:
                q = subprocess.run(["qemu-img", *args, "-f", "qcow2", qimg if repair else img],
                                   capture_output=True, timeout=30)
                v = subprocess.run([vdisk, *args, "-f", "qcow2", vimg if repair else img],
                                   capture_output=True, timeout=30)
            except subprocess.TimeoutExpired:
                tally.add(("timeout",), name)
                continue
            checked += 1
            if repair:
                key = repair_key(q, v, qimg, vimg)
            elif q.returncode != v.returncode:
                key = (q.returncode, v.returncode, last_line(q.stderr), last_line(v.stderr))
            else:
                key = None
            if key:
                tally.add(key, name)
    print(f"checked {checked}, {'runs' if cmd in ('leaks', 'all') else 'exit codes'} differ "
          f"on {tally.total()}")
    for key, n, name in tally.rows()[:20]:
        print(n, key, name)


if __name__ == "__main__":
    main()
