"""Shared by the *-parity.py scripts: their command line (VDISK CORPUS_DIR [SAMPLE] [SEED]) and
the sample of corpus inputs it picks, reading those inputs, the device the fs_open and lvm_open
targets build from an input, and the tally of differences each script prints."""

import collections
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


def inputs(corpus, names):
    """(name, bytes) of each named input still in the corpus (a fuzzer running on it replaces
    files), without the operation and size bytes that start every `*_mutate` input."""
    strip = 2 if os.path.basename(corpus.rstrip("/")).endswith("_mutate") else 0
    for name in names:
        try:
            with open(os.path.join(corpus, name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        yield name, data[strip:]


def last_line(text, width=70):
    """The last line a tool printed (bytes), cut to `width` characters."""
    lines = text.decode(errors="replace").strip().splitlines()
    return lines[-1][:width] if lines else ""


def write_device(data, path):
    """The device `vdisk_fuzz::sized_device` makes of an input: its first byte the length in
    64 KiB units (at least the rest of the input), the rest its start, zeros after."""
    body = data[1:]
    with open(path, "wb") as f:
        f.write(body)
        f.truncate(max(len(body), data[0] << 16))


class Tally:
    """Each kind of outcome counted, with the first example given for it."""

    def __init__(self):
        self.counts = collections.Counter()
        self.examples = {}

    def add(self, kind, example=None):
        self.counts[kind] += 1
        if example is not None:
            self.examples.setdefault(kind, example)

    def total(self):
        return sum(self.counts.values())

    def rows(self, by_kind=False):
        """(kind, count, example or None), the most common first (or sorted by kind)."""
        order = sorted(self.counts.items()) if by_kind else self.counts.most_common()
        return [(kind, n, self.examples.get(kind)) for kind, n in order]
