#!/usr/bin/env python3
"""vdisk vs qemu-img, side by side, on the corpus built by benches/make-corpus.sh.

    benches/run.py [--dir DIR] [--reps N] [--threads 1,2] [--cases a,b] [--no-scaling] [--warm]

Every case runs vdisk and qemu-img ALTERNATELY (v q v q ...), `--reps` times each (default 3), and
reports the median of each measure: wall time, CPU time (user+sys of the child, from wait4) and peak
RSS (GNU time's %M), with the vdisk/qemu-img ratio of each. Compressed outputs also report
their size ratio. Before every run the outputs are deleted, dirty pages synced and, as root, the
page cache dropped (echo 3 > /proc/sys/vm/drop_caches); otherwise (or with --warm) each case's input is read
just before the case so that both tools run warm, and the table says so. As root on a VM with free page
reporting, that reporting is paused for the run (benches/hostmem.py says why).

vdisk runs with `-t unsafe` (no fsync before the rename, which is what qemu-img convert does by
default); the `... durable` row shows vdisk's default (fsync) for the cost of durability.
Outputs go to DIR/scratch and are removed after each run.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

import hostmem

# GNU time (Debian package `time`), for the tools' peak RSS (see run_once).
TIME = "/usr/bin/time"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=os.environ.get("VDISK_BENCH_DIR", "/work/bench-corpus"))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--vdisk", default=os.environ.get("VDISK_BIN", os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "/work/target/bench"), "release", "vdisk")))
    p.add_argument("--qemu-img", default="qemu-img")
    p.add_argument("--threads", default=None,
                   help="comma-separated -m values for the thread-scaling table (default: 1,2,...,nproc)")
    p.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    p.add_argument("--no-scaling", action="store_true", help="skip the thread-scaling table")
    p.add_argument("--no-main", action="store_true", help="skip the main table (defaults of both tools)")
    p.add_argument("--warm", action="store_true", help="do not drop the page cache; warm inputs instead")
    p.add_argument("--no-verify", action="store_true", help="skip qemu-img compare of vdisk outputs")
    p.add_argument("--keep-page-reporting", action="store_true",
                   help="leave virtio-balloon free page reporting on (see benches/hostmem.py)")
    return p.parse_args()


class Case:
    def __init__(self, name, src, src_fmt, out_fmt=None, out_opts=(), compress=False, durable=False,
                 info=False, size_ratio=False, needs=None, offload=False, secret=None):
        self.name, self.src, self.src_fmt = name, src, src_fmt
        self.out_fmt, self.out_opts, self.compress = out_fmt, list(out_opts), compress
        self.durable, self.info, self.size_ratio = durable, info, size_ratio
        self.needs = needs  # the writer capability this case needs (probed on a tiny image)
        self.offload = offload  # -C (copy offloading) for both tools
        self.secret = secret  # the password of an encrypted source (secret id "bench0")

    def source_args(self, src):
        """How both tools name the source: `-f FMT FILE`, or an encrypted one with its key."""
        if self.secret is None:
            return ["-f", self.src_fmt, src]
        return ["--object", f"secret,id=bench0,data={self.secret}", "--image-opts",
                f"driver={self.src_fmt},file.filename={src},encrypt.key-secret=bench0"]

    def out_name(self, tool):
        ext = {"raw": "raw", "qcow2": "qcow2", "vmdk": "vmdk", "vdi": "vdi"}[self.out_fmt]
        return f"{tool}-{self.name.replace(' ', '_').replace('>', '')}.{ext}"

    def argv(self, tool, binary, scratch, corpus, threads):
        src = os.path.join(corpus, self.src)
        if self.info:
            return [binary, "info", "-f", self.src_fmt, src]
        a = [binary, "convert", "-O", self.out_fmt]
        if threads is not None:
            a += ["-m", str(threads)]
        if self.compress:
            a.append("-c")
        if self.offload:
            a.append("-C")
        for o in self.out_opts:
            a += ["-o", o]
        if tool == "vdisk" and not self.durable:
            a += ["-t", "unsafe"]
        return a + self.source_args(src) + [os.path.join(scratch, self.out_name(tool))]


CASES = [
    Case("info qcow2", "disk.qcow2", "qcow2", info=True),
    Case("info vmdk", "disk.vmdk", "vmdk", info=True),
    Case("qcow2->raw", "disk.qcow2", "qcow2", "raw"),
    Case("qcow2->raw durable", "disk.qcow2", "qcow2", "raw", durable=True),
    Case("qcow2->raw -C", "disk.qcow2", "qcow2", "raw", offload=True, needs="-C"),
    Case("raw->raw -C", "random-1g.raw", "raw", "raw", offload=True, needs="-C"),
    Case("raw->qcow2 -C", "disk.raw", "raw", "qcow2", offload=True, needs="-C qcow2"),
    Case("raw->qcow2", "disk.raw", "raw", "qcow2", needs="qcow2"),
    Case("vmdk->qcow2", "disk.vmdk", "vmdk", "qcow2", needs="qcow2"),
    Case("vmdk->raw", "disk.vmdk", "vmdk", "raw"),
    Case("vdi->raw", "disk.vdi", "vdi", "raw"),
    Case("raw->vdi", "disk.raw", "raw", "vdi"),
    Case("random raw->raw", "random-1g.raw", "raw", "raw"),
    Case("zlib qcow2->raw", "disk-zlib.qcow2", "qcow2", "raw"),
    Case("zstd qcow2->raw", "disk-zstd.qcow2", "qcow2", "raw"),
    Case("stream vmdk->raw", "disk-stream.vmdk", "vmdk", "raw"),
    Case("luks qcow2->raw", "disk-luks.qcow2", "qcow2", "raw", secret="bench"),
    Case("raw->zlib qcow2", "disk.raw", "raw", "qcow2", compress=True, size_ratio=True, needs="qcow2 -c"),
    Case("raw->zstd qcow2", "disk.raw", "raw", "qcow2", ["compression_type=zstd"], compress=True,
         size_ratio=True, needs="qcow2 -c zstd"),
    Case("raw->stream vmdk", "disk.raw", "raw", "vmdk", ["subformat=streamOptimized"], size_ratio=True,
         needs="vmdk stream"),
    Case("1T sparse qcow2->raw", "sparse-1t.qcow2", "qcow2", "raw"),
]

PROBES = {
    "qcow2": ["-O", "qcow2"],
    "qcow2 -c": ["-O", "qcow2", "-c"],
    "qcow2 -c zstd": ["-O", "qcow2", "-c", "-o", "compression_type=zstd"],
    "vmdk stream": ["-O", "vmdk", "-o", "subformat=streamOptimized"],
    "-C": ["-O", "raw", "-C"],
    "-C qcow2": ["-O", "qcow2", "-C"],
}


def probe(vdisk, scratch, what):
    """Whether vdisk can write `what` now: convert a 1 MiB patterned raw image and qemu-img check it."""
    src = os.path.join(scratch, "probe.raw")
    dst = os.path.join(scratch, "probe.out")
    with open(src, "wb") as f:
        f.write(bytes(range(256)) * 4096)
    try:
        r = subprocess.run([vdisk, "convert", "-f", "raw"] + PROBES[what] + [src, dst],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return False, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"
        return True, ""
    finally:
        for p in (src, dst):
            if os.path.exists(p):
                os.remove(p)


def can_drop_caches():
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def warm(path):
    with open(path, "rb") as f:
        while f.read(8 << 20):
            pass


def clean(scratch):
    for n in os.listdir(scratch):
        os.remove(os.path.join(scratch, n))


def run_once(argv, scratch, cold):
    """Runs argv, returns (wall s, cpu s, peak rss KiB, output bytes or None).

    The peak RSS comes from GNU time, which forks the tool: a child forked from this Python
    process carries the harness's own peak (about 17 MiB) into its ru_maxrss through exec, so
    wait4 here could never report less. CPU time (user+sys, the tool's included) is wait4's."""
    clean(scratch)
    if cold:
        drop_caches()
        # Loads GNU time itself back into the page cache, so that its start costs each tool the
        # same millisecond, not a cold read of its binary inside the timed interval.
        subprocess.run([TIME, "-o", os.devnull, "true"], check=True)
    rss_file = os.path.join(scratch, ".rss")
    t0 = time.monotonic()
    p = subprocess.Popen([TIME, "-f", "%M", "-o", rss_file] + argv,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {err.strip()}")
    with open(rss_file) as f:
        rss = int(f.read().split()[-1])
    os.remove(rss_file)
    out = argv[-1] if argv[1] == "convert" else None
    size = os.path.getsize(out) if out and os.path.exists(out) else None
    return wall, ru.ru_utime + ru.ru_stime, rss, size


def verify(qemu, case, corpus, out):
    src = case.source_args(os.path.join(corpus, case.src))
    if case.secret is None:
        argv = [qemu, "compare", "-F", case.out_fmt] + src + [out]
    else:
        # --image-opts names both images with option strings.
        argv = [qemu, "compare"] + src + [f"driver={case.out_fmt},file.filename={out}"]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        return "COMPARE FAILED: " + (r.stdout + r.stderr).strip()
    r = subprocess.run([qemu, "check", "-f", case.out_fmt, out], capture_output=True, text=True)
    if case.out_fmt != "raw" and r.returncode != 0:
        return "CHECK FAILED: " + (r.stdout + r.stderr).strip()
    return None


def fmt_time(s):
    return f"{s:.3f}" if s < 10 else f"{s:.2f}"


def ratio(a, b):
    return f"{a / b:.2f}" if b else "-"


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


HEADER = ("| case | -m | vdisk wall s | qemu wall s | wall ratio | vdisk CPU s | qemu CPU s | CPU ratio "
          "| vdisk RSS MiB | qemu RSS MiB | RSS ratio | out size ratio | load |")
RULE = "|" + "---|" * 13


def bench_case(case, threads, args, scratch, cold, na):
    if case.needs and case.needs in na:
        return f"| {case.name} | {threads or 'default'} | n/a: not implemented ({na[case.needs]}) |" + " |" * 10
    res = {"vdisk": [], "qemu": []}
    note = ""
    if not cold:
        # Just before the case: the machine's DAMON pages out what nobody touched for a minute.
        warm(os.path.join(args.dir, case.src))
    for i in range(args.reps):
        for tool, binary in (("vdisk", args.vdisk), ("qemu", args.qemu_img)):
            argv = case.argv(tool, binary, scratch, args.dir, threads)
            res[tool].append(run_once(argv, scratch, cold))
            if tool == "vdisk" and i == 0 and not case.info and not args.no_verify:
                bad = verify(args.qemu_img, case, args.dir, argv[-1])
                if bad:
                    note = " " + bad.replace("\n", " ")[:120]
            clean(scratch)
    med = {t: [statistics.median(r[k] for r in rs) for k in range(3)] for t, rs in res.items()}
    size = ""
    if case.size_ratio:
        vs = statistics.median(r[3] for r in res["vdisk"])
        qs = statistics.median(r[3] for r in res["qemu"])
        size = f"{ratio(vs, qs)} ({vs / 2**20:.0f}/{qs / 2**20:.0f} MiB)"
    v, q = med["vdisk"], med["qemu"]
    return (f"| {case.name}{note} | {threads or 'default'} | {fmt_time(v[0])} | {fmt_time(q[0])} | "
            f"**{ratio(v[0], q[0])}** | {fmt_time(v[1])} | {fmt_time(q[1])} | {ratio(v[1], q[1])} | "
            f"{v[2] / 1024:.1f} | {q[2] / 1024:.1f} | {ratio(v[2], q[2])} | {size} | {loadavg()} |")


def main():
    args = parse_args()
    if not os.access(TIME, os.X_OK):
        sys.exit(f"no GNU time at {TIME} (it measures peak RSS): apt-get install -y time")
    if not os.path.isfile(args.vdisk):
        sys.exit(f"no vdisk binary at {args.vdisk}: cargo build --release -p vdisk-cli (CARGO_TARGET_DIR=...)")
    missing = [c.src for c in CASES if not os.path.exists(os.path.join(args.dir, c.src))]
    if missing:
        sys.exit(f"corpus incomplete in {args.dir} (missing {', '.join(sorted(set(missing)))}): "
                 f"run benches/make-corpus.sh {args.dir}")
    scratch = os.path.join(args.dir, "scratch")
    os.makedirs(scratch, exist_ok=True)
    clean(scratch)
    cases = CASES
    if args.cases:
        want = [w.strip() for w in args.cases.split(",")]
        cases = [c for c in CASES if c.name in want]
        unknown = set(want) - {c.name for c in cases}
        if unknown:
            sys.exit(f"unknown cases {sorted(unknown)}; known: {[c.name for c in CASES]}")
    na = {}
    for what in PROBES:
        ok, why = probe(args.vdisk, scratch, what)
        if not ok:
            na[what] = why
    cold = not args.warm and can_drop_caches()
    memory = "free page reporting left on (--keep-page-reporting)"
    if not args.keep_page_reporting:
        memory = hostmem.Paused().pause()
    reported = hostmem.reported_kib()
    ncpu = os.cpu_count() or 1
    threads = ([int(t) for t in args.threads.split(",")] if args.threads
               else sorted({1, 2, ncpu}))
    qv = subprocess.run([args.qemu_img, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    vv = subprocess.run([args.vdisk, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"# vdisk vs qemu-img, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"# {vv} ({args.vdisk}) vs {qv}; {ncpu} CPUs; load {loadavg()} at start")
    print(f"# medians of {args.reps} alternating runs each; page cache "
          + ("dropped before every run (cold)" if cold else "NOT dropped: inputs warmed once, both tools warm"))
    print(f"# vdisk convert runs with -t unsafe (no fsync, like qemu-img's default) except the 'durable' row")
    print(f"# command: {' '.join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])}")
    print(f"# memory: {memory}")
    for what, why in na.items():
        print(f"# vdisk cannot write {what} yet: {why}")
    sys.stdout.flush()
    if not args.no_main:
        print("\nBoth tools with their default parallelism (vdisk -m 8, qemu-img -m 8 coroutines):\n")
        print(HEADER)
        print(RULE)
        for c in cases:
            print(bench_case(c, None, args, scratch, cold, na), flush=True)
    if not args.no_scaling:
        print("\nThread scaling (the same -m for both tools; qemu-img's -m counts coroutines):\n")
        print(HEADER)
        print(RULE)
        for c in cases:
            if c.info or c.durable:
                continue
            for t in threads:
                print(bench_case(c, t, args, scratch, cold, na), flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n# load {loadavg()} at end")
    if reported is not None:
        print(f"# free memory reported to the host during the runs: "
              f"{(hostmem.reported_kib() - reported) / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
