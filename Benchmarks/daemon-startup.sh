#!/usr/bin/env bash
# Start-up of the real snapcrond (release build) with N jobs on the local backend: time from exec to the
# "Ready" log line (READY=1 under systemd), and its resident memory then. Usage: Benchmarks/daemon-startup.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-100000}
work=$(mktemp -d /var/tmp/snapcron-startup.XXXXXX)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
swift build -c release --product snapcrond >/dev/null
truncate -s 1M "$work/disk.img"
expressions=("H H * * *" "H */4 * * *" "H H * * 1-5" "*/15 * * * *" "H 2 * * 0" "H H 1 * *" "@daily" "30 2 * * *")
zones=(UTC Asia/Taipei America/New_York Europe/Berlin)
{
    for ((i = 0; i < jobs; i++)); do
        (( i % 25000 == 0 )) && echo "CRON_TZ=${zones[$(( (i / 25000) % 4 ))]}"
        echo "${expressions[$(( i % 8 ))]} job-$i local:$work/disk.img keep=3 overlap=allow"
    done
} > "$work/schedule"
start=$(date +%s.%N)
.build/release/snapcrond --schedule "$work/schedule" --state-dir "$work/state" \
    > "$work/log" 2>&1 &
pid=$!
# The daemon logs "Ready" when it sends READY=1: store open, schedule loaded, fire queue built.
while ! grep -q "Ready" "$work/log" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$work/log"; exit 1; }
    sleep 0.02
done
ready=$(date +%s.%N)
sleep 1  # let start-up temporaries be freed and trimmed
rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
# CPU seconds used until now (utime + stime): on a loaded machine the wall time to Ready overstates the cost.
cpu_s=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' /proc/$pid/stat)
printf '{"measure":"daemon_startup","jobs":%d,"ready_s":%.3f,"cpu_s":%.2f,"rss_bytes":%d}\n' \
    "$jobs" "$(echo "$ready - $start" | bc)" "$cpu_s" "$((rss_kb * 1024))"
