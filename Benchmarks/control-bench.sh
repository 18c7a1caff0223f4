#!/bin/sh
# Latency of the control socket with 10,000 jobs: status and jobs, with 1 and 50 concurrent clients.
# Usage: Benchmarks/control-bench.sh [JOBS]   (builds release snapcrond and snapcronctl first)
set -eu
jobs=${1:-10000}
root=$(cd "$(dirname "$0")/.." && pwd)
swift build -c release --package-path "$root" --product snapcrond >/dev/null
swift build -c release --package-path "$root" --product snapcronctl >/dev/null
bin=$(swift build -c release --package-path "$root" --show-bin-path)
work=$(mktemp -d /tmp/snapcron-control-bench.XXXXXX)
daemon=
cleanup() {
    if [ -n "$daemon" ]; then kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
truncate -s 1M "$work/disk.img"
# Hashed fields spread the jobs over the day, as a real large schedule would be.
awk -v n="$jobs" -v disk="$work/disk.img" \
    'BEGIN { for (i = 0; i < n; i++) printf "H H * * *  job-%05d  local:%s  keep=3\n", i, disk }' > "$work/schedule"
"$bin/snapcrond" --schedule "$work/schedule" --state-dir "$work/state" --socket "$work/control.sock" \
    --log-level warning 2>"$work/daemon.log" &
daemon=$!
tries=0
until [ -S "$work/control.sock" ]; do
    tries=$((tries + 1))
    [ "$tries" -lt 600 ] || { echo "snapcrond did not start:" >&2; cat "$work/daemon.log" >&2; exit 1; }
    sleep 0.1
done
for method in status jobs; do
    for clients in 1 50; do
        # About 400 samples for status and 200-1,000 for jobs, so that p99 is not the maximum.
        case "$method/$clients" in
            status/1) requests=1000 ;; status/*) requests=40 ;;
            jobs/1) requests=200 ;; jobs/*) requests=20 ;;
        esac
        "$bin/snapcronctl" bench --socket "$work/control.sock" --method "$method" --clients "$clients" \
            --requests "$requests" --json
    done
done
