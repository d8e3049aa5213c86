"""Run a command and print its wall time and peak RSS as JSON on the last line of stderr.

A fresh process per measurement: ``RUSAGE_CHILDREN`` is the max over this process's children, so it is
exactly the command's own peak (and that of its children, e.g. xdist workers are not included here).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

if __name__ == "__main__":
    t0 = time.perf_counter()
    proc = subprocess.run(sys.argv[1:], check=False)
    wall = time.perf_counter() - t0
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"rc": proc.returncode, "wall_s": wall, "peak_rss_mb": rss_kb / 1024}), file=sys.stderr)
    sys.exit(0)
