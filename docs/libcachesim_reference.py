#!/usr/bin/env python3
"""Reference hit ratios from libCacheSim's own policies on a one-id-per-line
trace, replayed as `storage/benches/hit_ratio.rs` replays it (one request per
line, unit-size objects, insert on miss), to compare with the hydracache,
moka and quick_cache lines that bench prints. Not run in CI.

    python3 docs/libcachesim_reference.py [trace] [size ...]

Defaults: ../shared/traces/cloudphysics.txt (next to the repository) and the
bench's sizes 500 1000 2500 5000 10000. Installs the `libcachesim` PyPI
package (0.3.5, the version the trace's README quotes) if it is missing.
"""

import importlib
import os
import subprocess
import sys

VERSION = "0.3.5"


def load_libcachesim():
    try:
        return importlib.import_module("libcachesim")
    except ImportError:
        subprocess.check_call(
            [sys.executable, "-m", "pip", "install", "--quiet", f"libcachesim=={VERSION}"]
        )
        return importlib.import_module("libcachesim")


def hit_ratio(lcs, policy, ids, size):
    cache = policy(cache_size=size)
    req = lcs.Request()
    req.obj_size = 1
    hits = 0
    for i, obj in enumerate(ids):
        req.obj_id = obj
        req.clock_time = i
        if cache.get(req):  # inserts on a miss
            hits += 1
    return 100.0 * hits / len(ids)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default = os.path.join(here, "..", "..", "shared", "traces", "cloudphysics.txt")
    trace = sys.argv[1] if len(sys.argv) > 1 else default
    sizes = [int(s) for s in sys.argv[2:]] or [500, 1000, 2500, 5000, 10000]
    lcs = load_libcachesim()
    with open(trace) as f:
        ids = [int(line) for line in f if line.strip()]
    policies = [
        ("LRU", lcs.LRU),
        ("ARC", lcs.ARC),
        ("LIRS", lcs.LIRS),
        ("S3-FIFO", lcs.S3FIFO),
        ("W-TinyLFU", lcs.WTinyLFU),
        ("SIEVE", lcs.Sieve),
    ]
    print(f"{os.path.basename(trace)}: {len(ids)} requests, libcachesim {VERSION}")
    print(f"{'entries':>8} " + " ".join(f"{name:>10}" for name, _ in policies) + f" {'best':>16}")
    for size in sizes:
        ratios = [(hit_ratio(lcs, p, ids, size), name) for name, p in policies]
        best = max(ratios)
        cells = " ".join(f"{r:>9.2f}%" for r, _ in ratios)
        print(f"{size:>8} {cells} {best[1]:>9} {best[0]:.2f}%")


if __name__ == "__main__":
    main()
