#!/bin/bash
# Does tracing idle processes make a busy one dearer? (docs/probes.md, "Host mode")
# Runs one busy CPython loop beside 5 + 15 idle ones and prints the busy loop's iterations per CPU second
# untraced, traced alone, with 5 idle traced, with 20 idle traced. Needs root and a built
# tracer; holds the machine-wide tracer lock so no other tracer is attached meanwhile.
# Usage: bench/host_links.sh [python]   (default: pyenv 3.11.7)
#        WINDOW=auto:2s/2500ms bench/host_links.sh   (every tracer run with --window WINDOW; the busy
#        loop then also keeps one block in 2000 so that its heap grows and auto windows open for it;
#        one round of 16-second phases, the five-idle phase left out; the rate is iterations over CPU
#        seconds from 6 s into the phase to its end: windows and the gaps between them alike)
set -euo pipefail
PY=${1:-/root/.pyenv/versions/3.11.7/bin/python3}
WINDOW=${WINDOW:-}
# STEADY=1 (with WINDOW): the busy loop keeps nothing, so auto windows never open on it: its
# `alone` row is then a steady process under --window auto against the untraced row.
LEAK_EVERY=2000
[ -n "${STEADY:-}" ] && LEAK_EVERY=0
T=${TRACER:-$(cd "$(dirname "$0")/.." && pwd)/target/release/tracer}
W=$(mktemp -d)
cat >"$W/busy_hostcheck.py" <<'PY'
import sys, time
out = open(sys.argv[1], "w")
leak_every = int(sys.argv[2]) if len(sys.argv) > 2 else 0
kept = []
# Per CPU second of this process (user + system, where the traps are charged), so that other
# work on the machine changes the figures less than wall-clock rates would.
w0 = time.time(); c0 = time.process_time(); n = 0; total = 0
while True:
    for _ in range(10000):
        b = bytearray(1000); del b
    n += 10000
    if leak_every:
        kept.extend(bytearray(1000) for _ in range(10000 // leak_every))
    if time.time() - w0 >= 1.0:
        c = time.process_time()
        total += n
        out.write(f"{n / (c - c0):.0f} {total} {c:.4f}\n"); out.flush(); w0 = time.time(); c0 = c; n = 0
PY
printf 'import time\nwhile True:\n    time.sleep(0.5)\n' >"$W/idle_hostcheck.py"
cp "$W/idle_hostcheck.py" "$W/idle_a_hostcheck.py"
exec 9>/tmp/tracer-tests.lock
flock 9
cd "$W"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 5); do "$PY" idle_a_hostcheck.py & pids+=($!); done
for _ in $(seq 15); do "$PY" idle_hostcheck.py & pids+=($!); done
"$PY" busy_hostcheck.py rates ${WINDOW:+$LEAK_EVERY} & busy=$!; pids+=($busy)
sleep 3
mark() { echo "$1 $(wc -l <rates)" >>marks; }
if [ -z "$WINDOW" ]; then
  for _ in 1 2; do
    mark untraced; sleep 6
    mark alone; "$T" record -q -p "$busy" -d 6 -f json -o /dev/null 2>/dev/null
    mark five; "$T" record -q --all --match 'busy_hostcheck|idle_a' -d 6 -f json -o /dev/null 2>/dev/null
    mark twenty; "$T" record -q --all --match hostcheck -d 6 -f json -o /dev/null 2>/dev/null
  done
else
  mark untraced; sleep 16
  mark alone; "$T" record -q -p "$busy" -d 16 --window "$WINDOW" -f json -o /dev/null 2>/dev/null
  mark twenty; "$T" record -q --all --match hostcheck -d 16 --window "$WINDOW" -f json -o /dev/null 2>/dev/null
fi
mark end
# Median of the 4 one-second rates before each phase ends (attaching takes its first seconds);
# with windows, iterations over CPU seconds from the 6th second on.
WINDOW="$WINDOW" "$PY" - <<'PY'
import os, statistics
lines = [x.split() for x in open("rates")]
marks = [line.split() for line in open("marks")]
for (name, a), (_, b) in zip(marks, marks[1:]):
    a, b = int(a), int(b)
    if os.environ["WINDOW"]:
        first, last = lines[a + 5], lines[b - 1]
        value = (int(last[1]) - int(first[1])) / (float(last[2]) - float(first[2]))
    else:
        seg = [int(x[0]) for x in lines[a:b]][-5:-1]
        value = statistics.median(seg) if seg else 0
    print(f"{name:9} {int(value):>9} iterations per CPU second")
PY
