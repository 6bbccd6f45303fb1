#!/usr/bin/env python3
"""A/B of conversion variants on one image of the corpus, for trying a change before run.py.

    benches/ab.py [--dir DIR] [--reps N] [--warm] SRC SRC_FMT OUT_FMT VARIANT...

Each VARIANT is a command that is given `-f SRC_FMT -O OUT_FMT SRC OUT` after its own words, e.g.
"/tmp/vdisk-old convert -t unsafe", "/tmp/vdisk-new convert -t unsafe -m 2"; a variant starting
with "qemu" runs `qemu-img convert` with the rest as its flags ("qemu", "qemu -m 2"). The
variants run ALTERNATELY, `--reps` rounds (default 7), under the same conditions as run.py: the
page cache is dropped before every run (as root; `--warm` reads the source in instead), and free
page reporting is paused (benches/hostmem.py). Prints the median and range of the wall time, the
median CPU time and the peak RSS of each variant, and its ratio to the first `qemu` variant.
"""

import argparse
import os
import shlex
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostmem  # noqa: E402
import run  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/work/bench-corpus")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--warm", action="store_true")
    ap.add_argument("--qemu-img", default="qemu-img")
    ap.add_argument("src")
    ap.add_argument("src_fmt")
    ap.add_argument("out_fmt")
    ap.add_argument("variants", nargs="+")
    args = ap.parse_args()
    src = os.path.join(args.dir, args.src)
    scratch = os.path.join(args.dir, "scratch")
    os.makedirs(scratch, exist_ok=True)
    out = os.path.join(scratch, "ab.out")
    cold = not args.warm and run.can_drop_caches()
    print("#", hostmem.Paused().pause())
    print(f"# {args.reps} rounds, {'cold' if cold else 'warm'}; load {run.loadavg()} at start")
    argvs = []
    for v in args.variants:
        words = shlex.split(v)
        if words[0] == "qemu":
            words = [args.qemu_img, "convert"] + words[1:]
        argvs.append(words + ["-f", args.src_fmt, "-O", args.out_fmt, src, out])
    results = {v: [] for v in args.variants}
    for _ in range(args.reps):
        for v, argv in zip(args.variants, argvs):
            if not cold:
                run.warm(src)
            wall, cpu, rss, _ = run.run_once(argv, scratch, cold)
            results[v].append((wall, cpu, rss))
    run.clean(scratch)
    qemu = next((v for v in args.variants if shlex.split(v)[0] == "qemu"), None)
    base = statistics.median(w for w, _, _ in results[qemu]) if qemu else None
    for v in args.variants:
        walls = [w for w, _, _ in results[v]]
        wall = statistics.median(walls)
        cpu = statistics.median(c for _, c, _ in results[v])
        rss = max(r for _, _, r in results[v]) / 1024
        ratio = f"  ratio {wall / base:.2f}" if base else ""
        print(f"{v[-50:]:50s} wall {wall:.3f} ({min(walls):.2f}-{max(walls):.2f})  "
              f"cpu {cpu:.3f}  rss {rss:.1f} MiB{ratio}")
    print(f"# load {run.loadavg()} at end")


if __name__ == "__main__":
    main()
