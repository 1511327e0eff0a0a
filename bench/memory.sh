#!/usr/bin/env bash
# Memory: mapwatch's RSS (VmRSS, and the peak VmHWM) with 10,000 extra live
# processes in its table, then sampled every 10 s through a storm of execs
# (default 10 minutes at 1,000 exec/s) to show whether it grows. Run as
# root on an otherwise idle machine:
#
#   bash bench/memory.sh [STORM_SECONDS] [STORM_RATE] [LIVE_PROCESSES]
source "$(dirname "$0")/lib.sh"
secs=${1:-600}
rate=${2:-1000}
live=${3:-10000}
rss() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }

echo "starting $live sleeping processes" >&2
python3 - "$live" "$work/forked" << 'PY' &
import os, signal, sys, time
os.setpgrp()
# Stopped by the harness: take every sleeper along.
signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
for _ in range(int(sys.argv[1])):
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pause()
        os._exit(0)
open(sys.argv[2], "w").close()
time.sleep(100000)
PY
holder=$!
disown "$holder"
daemons+=("$holder")
while [ ! -e "$work/forked" ]; do sleep 0.5; done
start_mapwatch
mw=$started
known=$(grep -o '[0-9]* processes known' "$work/mapwatch/stderr")
after_start=$(rss "$mw" VmRSS)
echo "after start ($known): VmRSS $after_start KiB, VmHWM $(rss "$mw" VmHWM) KiB" >&2
"$work/storm" "$rate" "$secs" > "$work/storm.out" &
storm=$!
daemons+=("$storm")
samples=()
elapsed=0
while kill -0 "$storm" 2> /dev/null; do
    sleep 10
    elapsed=$((elapsed + 10))
    kill -0 "$storm" 2> /dev/null || break
    samples+=("$(rss "$mw" VmRSS)")
    echo "t=${elapsed}s VmRSS ${samples[-1]} KiB" >&2
done
read -r execs _ achieved < "$work/storm.out"
peak=$(rss "$mw" VmHWM)
pkill -P "$holder" 2> /dev/null || true
echo
describe_machine
echo "Command: bash bench/memory.sh $secs $rate $live"
echo
echo "| live processes in table | storm | execs | VmRSS after start | VmRSS at 1 min | VmRSS at end | min..max during storm | VmHWM (peak) |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
sorted=$(printf '%s\n' "${samples[@]}" | sort -n)
echo "| $known | $secs s at $rate/s ($achieved/s achieved) | $execs | $after_start KiB | ${samples[5]:-?} KiB | ${samples[-1]} KiB | $(head -1 <<< "$sorted")..$(tail -1 <<< "$sorted") KiB | $peak KiB |"
