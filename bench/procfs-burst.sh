#!/usr/bin/env bash
# procfs burst: mapwatch's CPU (scheduler runtime, all threads) and the
# fanotify events it took while /proc is read the way monitoring does it
# (ps aux, top, every process's status and stat), ROUNDS times. Compares
# builds: BINARY defaults to this tree's release build. LAYOUT=1 adds a
# read of every process's smaps_rollup to each round (memory monitoring:
# each is a layout read of another process, a first step of the chain
# rule). Run as root:
#
#   [LAYOUT=1] bash bench/procfs-burst.sh [ROUNDS] [BINARY...]     (default: 40)
source "$(dirname "$0")/lib.sh"
rounds=${1:-40}
shift || true
binaries=("$@")
[ ${#binaries[@]} -gt 0 ] || binaries=("$bin")
printf '%s\n' "[log]" "stats_interval_secs = 0" > "$work/mapwatch.toml"
chmod 600 "$work/mapwatch.toml"
echo "| binary | procfs events | mapwatch CPU, ms |"
echo "| --- | ---: | ---: |"
for binary in "${binaries[@]}"; do
    "$binary" run --foreground --format json --config "$work/mapwatch.toml" > /dev/null 2> "$work/stderr" &
    mw=$!
    daemons+=("$mw")
    until grep -q ready "$work/stderr"; do sleep 0.05; done
    before=$(cpu_ns "$mw")
    for _ in $(seq "$rounds"); do
        ps aux > /dev/null
        top -bn1 > /dev/null
        cat /proc/[0-9]*/status /proc/[0-9]*/stat > /dev/null 2>&1 || true
        if [ "${LAYOUT:-0}" = 1 ]; then cat /proc/[0-9]*/smaps_rollup > /dev/null 2>&1 || true; fi
    done
    after=$(cpu_ns "$mw")
    kill -INT "$mw"
    wait "$mw" || true
    events=$(grep -o 'proc_events=[0-9]*' "$work/stderr" | tail -1 | cut -d= -f2)
    echo "| $binary | $events | $(( (after - before) / 1000000 )) |"
done
