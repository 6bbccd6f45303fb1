"""Keeps a VM's free memory backed by its host while run.py times the tools.

On a VM with virtio-balloon free page reporting (this project's 2-core machines have it), the guest
tells the host about free 2 MiB blocks a moment after they are freed, and the host takes them back.
The next page the guest allocates there costs a host fault. Dropping the page cache frees gigabytes
at once, so a run's page-cache writes were fast or up to 4x slower depending only on how long ago
the cache was dropped (session 6: `cat` of the 1.2 GiB qcow2 into a new file, right after the drop
0.43-0.86 s, 5 s after it 1.65-2.11 s, all system time). Which tool got the slow pages depended on
the harness's timing, not on the tool.

`pause()` raises the reporting order beyond the largest free block so that nothing is reported,
then touches the free memory once so that all of it is backed; `restore()` puts the order back.
Both tools see the same, steady memory. Needs root; elsewhere it does nothing and says why. A
runner killed with SIGKILL cannot restore the order: `cat` the header's old value back into
/sys/module/page_reporting/parameters/page_reporting_order (9 on this project's machines).
"""

import atexit
import mmap
import os
import signal
import subprocess
import sys

PARAMS = "/sys/module/page_reporting/parameters"
ORDER = os.path.join(PARAMS, "page_reporting_order")
REPORTED = os.path.join(PARAMS, "reported_kib")
# Above the buddy allocator's largest order (10 on x86-64), so no free block qualifies.
NEVER = 11
# Left untouched by the pre-fault, for the page cache and processes of the run itself.
MARGIN = 1 << 30


def _read(path):
    with open(path) as f:
        return f.read().strip()


def reported_kib():
    """KiB of free memory the guest has reported to its host so far, or None without reporting."""
    try:
        return int(_read(REPORTED))
    except (OSError, ValueError):
        return None


def _mem_free():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemFree:"):
                return int(line.split()[1]) * 1024
    return 0


class Paused:
    def __init__(self):
        self.old = None

    def pause(self):
        """Returns a line for the table's header saying what was done or why not."""
        if not os.path.exists(ORDER):
            return "no free page reporting on this machine"
        try:
            self.old = _read(ORDER)
            with open(ORDER, "w") as f:
                f.write(f"{NEVER}\n")
            if _read(ORDER) != str(NEVER):
                raise OSError(f"the kernel kept {_read(ORDER)}")
        except OSError as e:
            self.old = None
            return f"free page reporting left on ({e}): cold timings vary with the host"
        atexit.register(self.restore)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        size = max(_mem_free() - MARGIN, 0) // mmap.PAGESIZE * mmap.PAGESIZE
        if size:
            # In a child: a peak RSS of gigabytes here would pass through fork into every timed
            # tool's ru_maxrss.
            subprocess.run([sys.executable, "-c", "import mmap; mmap.mmap(-1, " + str(size)
                            + ", flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)"],
                           check=True)
        return (f"free page reporting paused (page_reporting_order {self.old} -> {NEVER}, restored at exit) "
                f"after touching {size / 2**30:.1f} GiB of free memory")

    def restore(self):
        if self.old is not None:
            try:
                with open(ORDER, "w") as f:
                    f.write(f"{self.old}\n")
            except OSError:
                pass
            self.old = None

    def _on_signal(self, signum, _frame):
        self.restore()
        raise SystemExit(128 + signum)
