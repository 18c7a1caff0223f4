#!/usr/bin/env bash
# /metrics of the real snapcrond (release build) with N jobs while they fire: every job runs every 2 minutes on
# an exec backend whose create is /bin/true (an instant image), so the daemon spawns N processes per wave and
# every series exists from the second wave on. Scrapes back to back with curl asking for gzip as Prometheus does
# (the body dropped as it arrives: the latency is the daemon's, to the last byte, not the scraper's decoding) from
# the first wave to the end of the second, and prints the latency (time_total) quantiles of each wave and of the
# second wave's first 60 s (the creates), the exposition's sizes and the daemon's resident memory at the end.
# Usage: Benchmarks/metrics-bench.sh [N]   (default 10000); METRICS=off runs the same waves without the listener and
# without scrapes, for the resident memory the metrics cost.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-10000}
work=$(mktemp -d /var/tmp/snapcron-metrics-bench.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
swift build -c release --product snapcrond >/dev/null 2>&1
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/snapcron.toml" <<TOML
[daemon]
state_dir = "$work/state"
$([ "${METRICS:-on}" = off ] || echo "metrics_listen = \"127.0.0.1:$port\"")
max_concurrent_creates = 16

[backends.instant]
type = "exec"
create = ["/bin/true"]
status = ["/bin/true"]
delete = ["/bin/true"]
TOML
for ((i = 0; i < jobs; i++)); do echo "*/2 * * * * job-$i instant:vm-$i keep=2"; done > "$work/schedule"
.build/release/snapcrond --config "$work/snapcron.toml" --schedule "$work/schedule" > "$work/log" 2>&1 &
pid=$!
while ! grep -q "Ready" "$work/log" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$work/log"; exit 1; }
    sleep 0.1
done
# Wait for the first even minute (the first wave), then scrape through it and the next one.
now=$(date +%s)
first=$(( (now / 120 + 1) * 120 ))
sleep $(( first - now ))
end=$(( first + 240 ))
: > "$work/samples"
while [ "${METRICS:-on}" = off ] && [ "$(date +%s)" -lt "$end" ]; do sleep 1; done
while [ "$(date +%s)" -lt "$end" ]; do
    echo "$(date +%s.%N) $(curl -s -H 'Accept-Encoding: gzip' -o /dev/null -w '%{time_total} %{size_download}' "http://127.0.0.1:$port/metrics")" >> "$work/samples"
done
plain=$(curl -s "http://127.0.0.1:$port/metrics" | wc -c || true)
rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
succeeded=$(grep -c "Run succeeded" "$work/log" || true)
python3 - "$work/samples" "$first" "$jobs" "$plain" "$rss_kb" "$succeeded" <<'PY'
import json, sys
path, first, jobs, plain, rss_kb, succeeded = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
rows = [line.split() for line in open(path) if len(line.split()) == 3]
def summary(name, selected):
    ms = sorted(float(r[1]) * 1000 for r in selected)
    if not ms:
        return
    q = lambda p: ms[min(len(ms) - 1, int(len(ms) * p))]
    print(json.dumps({"bench": "metrics", "jobs": jobs, "window": name, "scrapes": len(ms), "p50_ms": round(q(0.5), 1),
                      "p99_ms": round(q(0.99), 1), "max_ms": round(ms[-1], 1), "gzip_bytes": int(selected[-1][2])}))
summary("wave 1 (series appear)", [r for r in rows if float(r[0]) < first + 120])
summary("wave 2 (all series)", [r for r in rows if float(r[0]) >= first + 120])
summary("wave 2, first 60 s (creates running)", [r for r in rows if first + 120 <= float(r[0]) < first + 180])
print(json.dumps({"plain_bytes": plain, "rss_kb": rss_kb, "runs_succeeded": succeeded}))
PY
