#!/bin/bash
# Does tracing idle processes make a busy one dearer? (docs/probes.md, "Host mode")
# Runs one busy CPython loop beside 5 + 15 idle ones and prints the busy loop's iterations per CPU second
# untraced, traced alone, with 5 idle traced, with 20 idle traced. Needs root and a built
# tracer; holds the machine-wide tracer lock so no other tracer is attached meanwhile.
# Usage: bench/host_links.sh [python]   (default: pyenv 3.11.7)
set -euo pipefail
PY=${1:-/root/.pyenv/versions/3.11.7/bin/python3}
T=$(cd "$(dirname "$0")/.." && pwd)/target/release/tracer
W=$(mktemp -d)
cat >"$W/busy_hostcheck.py" <<'PY'
import sys, time
out = open(sys.argv[1], "w")
# Per CPU second of this process (user + system, where the traps are charged), so that other
# work on the machine changes the figures less than wall-clock rates would.
w0 = time.time(); c0 = time.process_time(); n = 0
while True:
    for _ in range(10000):
        b = bytearray(1000); del b
    n += 10000
    if time.time() - w0 >= 1.0:
        c = time.process_time()
        out.write(f"{n / (c - c0):.0f}\n"); out.flush(); w0 = time.time(); c0 = c; n = 0
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
"$PY" busy_hostcheck.py rates & busy=$!; pids+=($busy)
sleep 3
mark() { echo "$1 $(wc -l <rates)" >>marks; }
for _ in 1 2; do
  mark untraced; sleep 6
  mark alone; "$T" record -q -p "$busy" -d 6 -f json -o /dev/null 2>/dev/null
  mark five; "$T" record -q --all --match 'busy_hostcheck|idle_a' -d 6 -f json -o /dev/null 2>/dev/null
  mark twenty; "$T" record -q --all --match hostcheck -d 6 -f json -o /dev/null 2>/dev/null
done
mark end
# Median of the 4 one-second rates before each phase ends (attaching takes its first seconds).
"$PY" - <<'PY'
import statistics
rates = [int(x) for x in open("rates")]
marks = [line.split() for line in open("marks")]
for (name, a), (_, b) in zip(marks, marks[1:]):
    seg = rates[int(a):int(b)][-5:-1]
    print(f"{name:9} {int(statistics.median(seg)) if seg else 0:>9} iterations per CPU second")
PY
