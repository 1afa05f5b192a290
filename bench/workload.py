"""Allocation-heavy CPython workload for `cargo xtask bench`.

Millions of objects of mixed sizes, through every libc allocation path CPython uses:

  - pymalloc (objects of 512 bytes or less: tuples, small dicts, small strs): libc sees only
    the 1 MiB arenas (mmap)
  - malloc: `b"x" * n` for n > 512 (PyObject_Malloc falls through to libc), list storage
  - calloc: `bytes(n)` for n > 512 (zero-filled, _PyBytes_FromSize(n, use_calloc=1))
  - realloc: lists growing by append (list_resize), bytearrays growing by `+=`
  - free: everything above is dropped again

plus a small planted leak: every LEAK_EVERY iterations one LEAK_SIZE-byte buffer is appended to a
module-level list at the line marked `# LEAK-SITE` (about 4 MiB per million iterations).

Protocol with the harness (so that start-up and attaching are not measured):
  1. prints `ready <pid>` on stdout once imports are done,
  2. waits until the file given by --go exists,
  3. runs the work loop and prints one line of JSON:
     {"elapsed_s": ..., "iterations": ..., "leak_site": "/abs/workload.py:NN", ...}
  4. if --hold FILE is given, waits until FILE exists before exiting (the tracer is stopped while
     the process is alive, and the leak is still live when it takes its final view).
"""

import argparse
import json
import os
import sys
import time

LEAK = []  # the planted leak: only grows
LEAK_EVERY = 250
LEAK_SIZE = 4096


def wait_for(path):
    while not os.path.exists(path):
        time.sleep(0.002)


def plant_leak(i):
    LEAK.append(b"L" * (LEAK_SIZE + (i & 7)))  # LEAK-SITE


def churn(i):
    """One iteration: about 9 libc calls (malloc, calloc, realloc, free) and ~40 small objects."""
    # pymalloc: small tuples, a small dict, small strings
    pairs = [(i, j) for j in range(8)]
    names = {"k%d" % j: j for j in range(6)}
    # malloc, sizes 600 .. 4600 bytes
    big = b"x" * (600 + (i * 37) % 4000)
    # calloc, sizes 700 .. 3700 bytes (zero-filled bytes)
    zeros = bytes(700 + (i * 13) % 3000)
    # realloc: a bytearray grown in place, past the pymalloc threshold
    buf = bytearray(big[:200])
    for _ in range(4):
        buf += big[:300]
    # realloc: a list grown by append (its item array: 8 bytes per slot, > 512 after 64)
    grow = []
    for k in range(120):
        grow.append(k)
    return len(pairs) + len(names) + len(zeros) + len(buf) + len(grow)


def work(iterations, leak_every=LEAK_EVERY, start=0):
    total = 0
    for i in range(start, iterations):
        total += churn(i)
        if i % leak_every == 0:
            plant_leak(i)
    return total


def work_paced(iterations, leak_every, pace):
    """An idle service: `pace` iterations at each of ten wake-ups a second, asleep in between.
    Returns the checksum and the seconds spent working (the sleeps left out)."""
    total, busy, i = 0, 0.0, 0
    tick = time.perf_counter()
    while i < iterations:
        t0 = time.perf_counter()
        end = min(i + pace, iterations)
        total += work(end, leak_every, start=i)
        busy += time.perf_counter() - t0
        i = end
        tick += 0.1
        time.sleep(max(0.0, tick - time.perf_counter()))
    return total, busy


def leak_site():
    path = os.path.abspath(__file__)
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if "# LEAK-SITE" in line and "LEAK.append" in line:
                return "%s:%d" % (path, n)
    return path + ":?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=1_000_000)
    ap.add_argument("--go", help="wait for this file to exist before starting the work loop")
    ap.add_argument("--hold", help="after the work, wait for this file to exist before exiting")
    ap.add_argument("--leak-every", type=int, default=LEAK_EVERY, help="iterations per planted leak block (the soak slows it down)")
    ap.add_argument("--pace", type=int, default=0, help="an idle service: this many iterations at each of ten wake-ups a second; elapsed_s is then the time spent working")
    ap.add_argument("--tag", help="ignored: a word for `tracer record --all --match` to find this process by")
    args = ap.parse_args()

    print("ready %d" % os.getpid(), flush=True)
    if args.go:
        wait_for(args.go)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    if args.pace > 0:
        total, elapsed = work_paced(args.iterations, max(1, args.leak_every), args.pace)
    else:
        total = work(args.iterations, max(1, args.leak_every))
        elapsed = time.perf_counter() - t0
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    print(
        json.dumps(
            {
                "elapsed_s": round(elapsed, 6),
                "wall_s": round(wall, 6),
                "cpu_s": round(cpu, 6),
                "iterations": args.iterations,
                "leaked_bytes": sum(len(b) for b in LEAK),
                "leak_site": leak_site(),
                "checksum": total,
                "python": "%d.%d.%d" % sys.version_info[:3],
            }
        ),
        flush=True,
    )
    if args.hold:
        wait_for(args.hold)


if __name__ == "__main__":
    main()
