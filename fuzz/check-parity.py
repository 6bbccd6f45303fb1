#!/usr/bin/env python3
"""Compares `vdisk check` with `qemu-img check` on the qcow2 images of a fuzz corpus.

For a random sample of a corpus directory (the first two bytes of each `qcow2_mutate` input, the
operation and size bytes, are dropped), runs both checks and counts the images whose exit codes
differ, grouped by the last line each tool printed on standard error, with one example file each.

Usage: fuzz/check-parity.py VDISK CORPUS_DIR [SAMPLE] [SEED]
  e.g. fuzz/check-parity.py target/debug/vdisk fuzz/corpus/qcow2_open 400 3
"""

import collections
import os
import random
import subprocess
import sys
import tempfile


def last_line(text):
    lines = text.decode(errors="replace").strip().splitlines()
    return lines[-1][:70] if lines else ""


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    vdisk, corpus = sys.argv[1], sys.argv[2]
    sample = int(sys.argv[3]) if len(sys.argv) > 3 else 400
    random.seed(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    strip = 2 if os.path.basename(corpus.rstrip("/")).endswith("_mutate") else 0
    files = sorted(os.listdir(corpus))
    random.shuffle(files)
    kinds = collections.Counter()
    example = {}
    checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        img = os.path.join(tmp, "c.qcow2")
        for name in files[:sample]:
            with open(os.path.join(corpus, name), "rb") as f:
                data = f.read()[strip:]
            if data[:4] != b"QFI\xfb":
                continue
            with open(img, "wb") as f:
                f.write(data)
            try:
                q = subprocess.run(["qemu-img", "check", "-f", "qcow2", img],
                                   capture_output=True, timeout=30)
                v = subprocess.run([vdisk, "check", "-f", "qcow2", img],
                                   capture_output=True, timeout=30)
            except subprocess.TimeoutExpired:
                kinds[("timeout",)] += 1
                example.setdefault(("timeout",), name)
                continue
            checked += 1
            if q.returncode != v.returncode:
                key = (q.returncode, v.returncode, last_line(q.stderr), last_line(v.stderr))
                kinds[key] += 1
                example.setdefault(key, name)
    print(f"checked {checked}, exit codes differ on {sum(kinds.values())}")
    for key, n in kinds.most_common(20):
        print(n, key, example[key])


if __name__ == "__main__":
    main()
