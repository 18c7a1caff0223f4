#!/usr/bin/env bash
# /metrics of the real snapcrond (release build) with N jobs while they fire: every job runs every 2 minutes on
# an exec backend whose create is /bin/true (an instant image), so the daemon spawns N processes per wave and
# every series exists from the second wave on. Scrapes with curl back to back from the first wave to the end of
# the second, and prints the latency (time_total) quantiles of each wave and the exposition's size.
# Usage: Benchmarks/metrics-bench.sh [N]   (default 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-10000}
work=$(mktemp -d /var/tmp/snapcron-metrics-bench.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
swift build -c release --product snapcrond >/dev/null
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/snapcron.toml" <<TOML
[daemon]
state_dir = "$work/state"
metrics_listen = "127.0.0.1:$port"
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
while [ "$(date +%s)" -lt "$end" ]; do
    t=$(date +%s)
    curl -s -o "$work/body" -w "%{time_total} %{size_download}\n" "http://127.0.0.1:$port/metrics" |
        awk -v t="$t" -v first="$first" '{ print (t < first + 120 ? 1 : 2), $1 * 1000, $2 }' >> "$work/samples"
done
runs=$(grep -c '"Run succeeded"\|Run succeeded' "$work/log" || true)
for wave in 1 2; do
    awk -v w="$wave" '$1 == w { print $2, $3 }' "$work/samples" | sort -n |
        awk -v w="$wave" -v jobs="$jobs" '{ ms[NR] = $1; size = $2 } END {
            printf "{\"bench\": \"metrics\", \"jobs\": %d, \"wave\": %d, \"scrapes\": %d, \"p50_ms\": %.1f, \"p99_ms\": %.1f, \"max_ms\": %.1f, \"bytes\": %d}\n",
                jobs, w, NR, ms[int(NR * 0.5) + 1], ms[int(NR * 0.99) + 1 > NR ? NR : int(NR * 0.99) + 1], ms[NR], size }'
done
echo "{\"runs_succeeded_logged\": $runs, \"rss_kb\": $(awk '/VmRSS/ {print $2}' /proc/$pid/status)}"
