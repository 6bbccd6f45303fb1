#!/usr/bin/env python3
"""Compares `vdisk convert -O raw` with `qemu-img convert -O raw` on the images of a fuzz corpus.

For a random sample of a corpus directory (the first two bytes of each `*_mutate` input, the
operation and size bytes, are dropped; each `vhdx_open` input is laid out as the sparse file
fuzz/src/paged.rs makes of it), takes each qcow2, VMDK (sparse header or descriptor), VDI, VHD
(footer copy at offset 0) or VHDX image whose virtual size qemu-img reports as at most MAX_MIB
(default 64), converts it to raw with both tools, and counts the images where the exit codes
differ (grouped by the last line each tool printed on standard error) or where both succeed and the
raw bytes differ (grouped by the format).
The format is given with `-f`, from the image's magic, so that neither tool probes. This is the
project's first rule (every reader returns what `qemu-img convert -O raw` returns) on hostile images.

Usage: fuzz/convert-parity.py VDISK CORPUS_DIR [SAMPLE] [SEED] [MAX_MIB]
  e.g. fuzz/convert-parity.py target/release/vdisk fuzz/corpus/probe 400 3
PARITY_ARGS in the environment adds arguments to both tools' convert, e.g.
  PARITY_ARGS=--salvage fuzz/convert-parity.py target/release/vdisk fuzz/corpus/probe 400 3
"""

import collections
import json
import os
import subprocess
import sys
import tempfile

from parity_common import Tally, inputs, last_line, sample_from_args


def format_of(data):
    if data[:4] == b"QFI\xfb":
        return "qcow2"
    if data[:4] == b"KDMV" or data[:21] == b"# Disk DescriptorFile":
        return "vmdk"
    if data[0x40:0x44] == b"\x7f\x10\xda\xbe":
        return "vdi"
    if data[:8] == b"conectix":
        return "vpc"
    if data[:8] == b"vhdxfile":
        return "vhdx"
    return None


KIB, MIB = 1024, 1024 * 1024
# PAGE_OFFSETS of fuzz/src/paged.rs.
PAGE_OFFSETS = [0, 64 * KIB, 128 * KIB, 192 * KIB, 256 * KIB, MIB, MIB + 4 * KIB, 2 * MIB, 3 * MIB,
                3 * MIB + 64 * KIB, 4 * MIB, 5 * MIB, 6 * MIB, 8 * MIB, 12 * MIB, 16 * MIB]


def write_paged(data, path):
    """Writes the sparse file fuzz/src/paged.rs makes of `data`; returns its first page."""
    extra, data = (data[0] * MIB, data[1:]) if data else (0, b"")
    end = 0
    with open(path, "wb") as f:
        for off, i in zip(PAGE_OFFSETS, range(0, len(data), 4096)):
            page = data[i:i + 4096]
            f.seek(off)
            f.write(page)
            end = off + len(page)
        f.truncate(end + extra)
    return data[:4096]


def virtual_size(fmt, img):
    r = subprocess.run(["qemu-img", "info", "--output=json", "-f", fmt, img],
                       capture_output=True, timeout=30)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout).get("virtual-size")


def same_bytes(a, b):
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def main():
    vdisk, corpus, files = sample_from_args(__doc__, 400)
    max_bytes = (int(sys.argv[5]) if len(sys.argv) > 5 else 64) << 20
    extra = os.environ.get("PARITY_ARGS", "").split()
    paged = os.path.basename(corpus.rstrip("/")) == "vhdx_open"
    tally = Tally()
    tried = compared = too_big = 0
    with tempfile.TemporaryDirectory() as tmp:
        qraw, vraw = os.path.join(tmp, "q.raw"), os.path.join(tmp, "v.raw")
        for name, data in inputs(corpus, files):
            fmt = format_of(data[1:] if paged else data)
            if fmt is None:
                continue
            img = os.path.join(tmp, "src." + fmt)
            if paged:
                write_paged(data, img)
            else:
                with open(img, "wb") as f:
                    f.write(data)
            size = virtual_size(fmt, img)
            if size is not None and size > max_bytes:
                too_big += 1
                continue
            tried += 1
            for out in (qraw, vraw):
                if os.path.exists(out):
                    os.remove(out)
            try:
                q = subprocess.run(["qemu-img", "convert", *extra, "-f", fmt, "-O", "raw", img,
                                    qraw], capture_output=True, timeout=30)
                v = subprocess.run([vdisk, "convert", *extra, "-f", fmt, "-O", "raw", img, vraw],
                                   capture_output=True, timeout=30)
            except subprocess.TimeoutExpired:
                tally.add(("timeout", fmt), name)
                continue
            key = None
            if q.returncode != v.returncode:
                key = (fmt, q.returncode, v.returncode, last_line(q.stderr, 160),
                       last_line(v.stderr, 160))
            elif q.returncode == 0:
                compared += 1
                if not same_bytes(qraw, vraw):
                    key = (fmt, "raw bytes differ")
            if key:
                tally.add(key, name)
    print(f"converted {tried} ({too_big} over the size limit left out), both succeeded and were "
          f"compared on {compared}, differ on {tally.total()}")
    ways = collections.Counter()
    for key, n, _ in tally.rows():
        if key[0] == "timeout":
            ways["a tool timed out"] += n
        elif key[1] == "raw bytes differ":
            ways["both succeed, raw bytes differ"] += n
        elif key[1] == 0 and "past the end" in key[4]:
            ways["qemu-img converts (zeros past the end of the file), vdisk fails"] += n
        elif key[1] == 0:
            ways["qemu-img converts, vdisk fails"] += n
        elif key[2] == 0:
            ways["qemu-img fails, vdisk converts"] += n
        else:
            ways["both fail, exit codes differ"] += n
    for way, n in sorted(ways.items()):
        print(f"  {way}: {n}")
    for key, n, name in tally.rows():
        print(n, key, name)


if __name__ == "__main__":
    main()
