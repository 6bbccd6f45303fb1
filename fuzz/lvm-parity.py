#!/usr/bin/env python3
"""Compares `vdisk filesystems --lvs --pvs -l` with lvm2's `lvs` and `pvs` on the inputs of a
fuzz corpus (as root: lvm2 reads a loop device).

Each input is a device as the `lvm_open` target builds it (the first byte its length in 64 KiB
units, the rest its start, zeros after). lvm2 runs with activation off, no backups, and only that
loop device. Counts the inputs where both list the same visible logical volumes (volume group,
name, UUID, size) and physical volume UUID, and groups the others by what differs.

Usage: fuzz/lvm-parity.py VDISK CORPUS_DIR [SAMPLE] [SEED]
  e.g. fuzz/lvm-parity.py target/release/vdisk fuzz/corpus/lvm_open 300 1
"""

import os
import shutil
import subprocess
import sys
import tempfile

from parity_common import Tally, inputs, sample_from_args, write_device

LVM_CONFIG = (
    "global { activation = 0 } backup { backup = 0 archive = 0 } "
    "devices { obtain_device_list_from_udev = 0 }"
)


def run(cmd, **kw):
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=60, **kw)
    except subprocess.TimeoutExpired:
        return "timeout", b"", b""
    return r.returncode, r.stdout, r.stderr


def first_line(err):
    for line in err.decode(errors="replace").splitlines():
        line = line.strip()
        if line and "leaked on" not in line and "Activation disabled" not in line:
            return line[:100]
    return ""


def lvm2_view(dev):
    """The visible LVs as (vg, lv, uuid, size) and the PV UUIDs lvm2 reports, or why none."""
    env = dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1")
    common = ["--config", LVM_CONFIG, "--devices", dev, "--units", "b", "--nosuffix",
              "--noheadings", "--separator", "|"]
    rc, out, err = run(["lvs", *common, "-o", "vg_name,lv_name,lv_uuid,lv_size"], env=env)
    lvs = set()
    for line in out.decode(errors="replace").splitlines():
        f = [x.strip() for x in line.strip().split("|")]
        if len(f) == 4:
            lvs.add((f[0], f[1], f[2].replace("-", ""), int(f[3])))
    # The PV on this device (pvs also lists a group's missing PVs, as [unknown]).
    prc, pout, perr = run(["pvs", *common, "-o", "pv_name,pv_uuid"], env=env)
    pvs = set()
    for line in pout.decode(errors="replace").splitlines():
        f = [x.strip() for x in line.strip().split("|")]
        if len(f) == 2 and f[0] == dev:
            pvs.add(f[1].replace("-", ""))
    return lvs, pvs, (rc, first_line(err) or first_line(perr))


def vdisk_view(vdisk, img):
    rc, out, err = run([vdisk, "filesystems", "--lvs", "--pvs", "-l", "-f", "raw", img])
    lvs, pvs = set(), set()
    if rc != 0:
        return lvs, pvs, (rc, first_line(err))
    for line in out.decode(errors="replace").splitlines()[1:]:
        f = line.split()
        if len(f) != 6:
            continue
        if f[1] == "lv":
            _, _, vg, lv = f[0].split("/", 3)
            lvs.add((vg, lv, f[4], int(f[5])))
        elif f[1] == "pv":
            pvs.add(f[4])
    return lvs, pvs, (rc, first_line(err))


def main():
    vdisk, corpus, files = sample_from_args(__doc__, 300)
    same = with_pv = with_lvs = 0
    tally = Tally()
    tmp = tempfile.mkdtemp(prefix="lvm-parity-")
    try:
        for name, data in inputs(corpus, files):
            if not data:
                continue
            img = os.path.join(tmp, "dev.img")
            write_device(data, img)
            ours = vdisk_view(vdisk, img)
            rc, out, err = run(["losetup", "-f", "--show", img])
            if rc != 0:
                sys.exit(f"losetup: {err.decode(errors='replace')}")
            dev = out.decode().strip()
            try:
                theirs = lvm2_view(dev)
            finally:
                run(["losetup", "-d", dev])
            if ours[0] == theirs[0] and ours[1] == theirs[1]:
                same += 1
                with_pv += bool(ours[1])
                with_lvs += bool(ours[0])
                continue
            if ours[1] != theirs[1]:
                kind = f"PV: vdisk {len(ours[1])}, lvm2 {len(theirs[1])} ({theirs[2][1]})"
            elif not theirs[0]:
                kind = f"LVs only vdisk lists (lvm2: {theirs[2][1] or 'no LV'})"
            elif not ours[0]:
                kind = f"LVs only lvm2 lists (vdisk: {ours[2][1] or 'no LV'})"
            else:
                a, b = ours[0] - theirs[0], theirs[0] - ours[0]
                kind = "LV fields differ" if len(a) == len(b) else "LV sets differ"
            tally.add(kind, (name, sorted(ours[0])[:2], sorted(theirs[0])[:2]))
    finally:
        shutil.rmtree(tmp)
    print(f"{len(files)} inputs: {same} agree ({with_pv} on a PV, {with_lvs} on its volumes)")
    for kind, n, ex in tally.rows():
        print(f"  {n:4d}  {kind}\n        e.g. {ex[0]}: vdisk {ex[1]} lvm2 {ex[2]}")


if __name__ == "__main__":
    main()
