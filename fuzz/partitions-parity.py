#!/usr/bin/env python3
"""Compares `vdisk partitions --output=json` with `sfdisk --json` on the inputs of a fuzz corpus.

Each input is a raw disk (as the `partitions` target reads it). Counts the inputs where the two
tools disagree on whether there is a table (exit codes), or agree that there is one and print
different JSON (the device name aside), grouped by what differs.

Usage: fuzz/partitions-parity.py VDISK CORPUS_DIR [SAMPLE] [SEED]
  e.g. fuzz/partitions-parity.py target/release/vdisk fuzz/corpus/partitions 500 1
"""

import json
import os
import subprocess
import tempfile

from parity_common import Tally, inputs, sample_from_args


def run(cmd, cwd):
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=30, cwd=cwd)
    except subprocess.TimeoutExpired:
        return "timeout", None
    if r.returncode != 0:
        return r.returncode, None
    # sfdisk prints its warnings on standard output, before the JSON.
    out = r.stdout[r.stdout.find(b"{"):] if b"{" in r.stdout else r.stdout
    try:
        return 0, json.loads(out)
    except json.JSONDecodeError:
        return "bad json", None


def what_differs(a, b):
    ta, tb = a["partitiontable"], b["partitiontable"]
    for k in sorted(set(ta) | set(tb)):
        if ta.get(k) != tb.get(k):
            if k == "partitions":
                pa, pb = ta.get(k, []), tb.get(k, [])
                if len(pa) != len(pb):
                    return f"partition count {len(pa)} vs {len(pb)} ({ta['label']})"
                for x, y in zip(pa, pb):
                    for f in sorted(set(x) | set(y)):
                        if x.get(f) != y.get(f):
                            return f"partition field {f} ({ta['label']})"
            return f"table field {k} ({ta.get('label')})"
    return "?"


def main():
    vdisk, corpus, files = sample_from_args(__doc__, 500)
    tally = Tally()
    tried = tables = 0
    with tempfile.TemporaryDirectory() as tmp:
        disk = os.path.join(tmp, "d.raw")
        for name, data in inputs(corpus, files):
            with open(disk, "wb") as f:
                f.write(data)
            # As qemu's raw driver (and so vdisk) sees the file: whole 512-byte sectors.
            size = os.path.getsize(disk)
            os.truncate(disk, -(-size // 512) * 512)
            tried += 1
            s_code, s_json = run(["sfdisk", "--json", "d.raw"], tmp)
            v_code, v_json = run([vdisk, "partitions", "-f", "raw", "--output=json", "d.raw"], tmp)
            key = None
            if (s_code == 0) != (v_code == 0):
                key = f"sfdisk exit {s_code}, vdisk exit {v_code}"
            elif s_code == 0:
                tables += 1
                if s_json != v_json:
                    key = what_differs(s_json, v_json)
            if key:
                tally.add(key, name)
    print(f"read {tried}, both found a table in {tables}, differ on {tally.total()}")
    for key, n, name in tally.rows():
        print(f"  {n} {key} (e.g. {name})")


if __name__ == "__main__":
    main()
