"""Shared by the *-parity.py scripts: their command line (VDISK CORPUS_DIR [SAMPLE] [SEED]) and
the sample of corpus inputs it picks, and the device the fs_open and lvm_open targets build from
an input."""

import os
import random
import sys


def sample_from_args(doc, default_sample):
    """(absolute path of vdisk, corpus directory, the sampled input names) from sys.argv; the
    usage text `doc` on a short command line."""
    if len(sys.argv) < 3:
        sys.exit(doc)
    vdisk, corpus = os.path.abspath(sys.argv[1]), sys.argv[2]
    sample = int(sys.argv[3]) if len(sys.argv) > 3 else default_sample
    random.seed(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    files = sorted(os.listdir(corpus))
    random.shuffle(files)
    return vdisk, corpus, files[:sample]


def write_device(data, path):
    """The device `vdisk_fuzz::sized_device` makes of an input: its first byte the length in
    64 KiB units (at least the rest of the input), the rest its start, zeros after."""
    body = data[1:]
    with open(path, "wb") as f:
        f.write(body)
        f.truncate(max(len(body), data[0] << 16))
