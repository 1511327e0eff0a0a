#!/usr/bin/env bash
# User-space instructions per exec of the running service: mapwatch (as the
# service runs it, fanotify on) under callgrind while bench/storm.c runs
# /bin/true at a fixed rate. Unlike CPU time on a VM, which drifts by ±20%
# from one minute to the next, the count repeats to within a percent, so it
# tells whether a change to the exec path helped. It says nothing of the
# kernel's share (wake-ups, recvmmsg): bench/exec-storm.sh measures the
# whole. Run as root:
#
#   bash bench/exec-instructions.sh [RATE] [SECONDS]     (default: 200 5)
#
# callgrind runs mapwatch about 50 times slower, so keep the rate low
# enough for it to keep up (200 exec/s is).
source "$(dirname "$0")/lib.sh"
rate=${1:-200}
secs=${2:-5}
dpkg -s valgrind > /dev/null 2>&1 || apt-get install -y valgrind > /dev/null

dir=$work/callgrind
write_config "$dir"
valgrind --tool=callgrind --callgrind-out-file="$dir/out" \
    "$bin" run --config "$dir/mapwatch.toml" > /dev/null 2> "$dir/stderr" &
daemons+=($!)
pid=$!
for _ in $(seq 300); do grep -q ready "$dir/stderr" && break; sleep 0.1; done
grep -q ready "$dir/stderr" || { cat "$dir/stderr" >&2; exit 1; }
sleep 1
# Count from here: start-up and the seeding of the process table excluded.
callgrind_control -z "$pid" > /dev/null
read -r execs _ achieved <<< "$("$work/storm" "$rate" "$secs")"
sleep 2 # what was queued is processed
callgrind_control -d "$pid" > /dev/null
sleep 1
total=$(callgrind_annotate "$(ls -t "$dir"/out.* | head -1)" 2> /dev/null |
    awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')

echo
describe_machine
echo "Command: bash bench/exec-instructions.sh $rate $secs"
echo
echo "| execs | achieved exec/s | instructions | instructions per exec |"
echo "| ---: | ---: | ---: | ---: |"
echo "| $execs | $achieved | $total | $((total / execs)) |"
