#!/usr/bin/env bash
# CPU cost of fanotify read confirmation under a /proc-heavy load.
#
# Runs mapwatch (release build) with fanotify on, then off, while a loop of
# `ps aux` opens /proc files at a paced rate, and reports mapwatch's CPU time
# (user+sys, from /proc/<pid>/stat) as a share of one core, with the /proc
# event rate fanotify saw. Run as root, with no other audit daemon:
#
#   [INSTANCES=N] bash bench/fanotify-ps.sh [SECONDS] [PS_RUNS_PER_SECOND]
#
# BIN=PATH runs that binary instead of this tree's release build (A/B of
# two builds with one script); MODES="true" skips the run without fanotify.
#
# INSTANCES=N (default 1) runs N-1 pid namespaces with a procfs of their own
# (`unshare -pf --mount-proc`) beside the host's, all of which mapwatch
# watches (and looks for every second).
#
# Defaults: 20 s, 15 ps runs/s (about 5,000 /proc opens/s on a machine with
# ~70 processes; the output gives the measured rate). Use 0 for "as fast as
# possible".
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
rate=${2:-15}
if [ -n "${BIN:-}" ]; then
    bin=$BIN
else
    cargo build --release --locked -q
    bin=target/release/mapwatch
fi
source bench/procfs-namespaces.sh
start_procfs_namespaces "${INSTANCES:-1}"
ticks=$(getconf CLK_TCK)
# Until the namespaces of a previous run are gone (a pid namespace's end
# takes a while), so each run's `ps` sees the same processes.
for _ in $(seq 100); do
    if [ "$(pgrep -c -x -f 'sleep 1000000')" -le $((${INSTANCES:-1} - 1)) ] &&
        ! ps -eo stat=,comm= | grep -q '^Z.* sleep$'; then
        break
    fi
    sleep 0.1
done
# /proc opens of one `ps aux` now, counted once with strace: the load is
# given in opens/s (fanotify's events say less once files are ignored).
opens_per_ps=$(strace -f -qq -e trace=openat -o /dev/stdout ps aux 2> /dev/null | grep -c '"/proc/' || true)

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# In a subshell, so `wait` only waits for its own `ps` runs.
ps_loop() (
    local end=$((SECONDS + secs))
    if [ "$rate" -eq 0 ]; then
        while [ $SECONDS -lt $end ]; do ps aux > /dev/null; done
    else
        local pause
        pause=$(awk -v r="$rate" 'BEGIN { printf "%.4f", 1 / r }')
        while [ $SECONDS -lt $end ]; do ps aux > /dev/null & sleep "$pause"; done
        wait
    fi
)

run() {
    local mode=$1
    cat > "$work/$mode.toml" <<CONF
[audit]
state_file = "$work/state-$mode.json"
[fanotify]
enabled = $mode
[log]
stats_interval_secs = 0
CONF
    "$bin" run --foreground --format json --config "$work/$mode.toml" > "$work/$mode.alerts" 2> "$work/$mode.log" &
    local pid=$!
    for _ in $(seq 100); do grep -q ready "$work/$mode.log" && break; sleep 0.1; done
    grep -q ready "$work/$mode.log" || { cat "$work/$mode.log"; exit 1; }
    local before after
    before=$(cpu_ticks "$pid")
    local start_ns=$(date +%s%N)
    local runs_before=$(ls -d /proc/[0-9]* | wc -l)
    ps_loop
    after=$(cpu_ticks "$pid")
    local wall_ns=$(( $(date +%s%N) - start_ns ))
    kill -TERM "$pid"; wait "$pid" || true
    local events
    events=$(grep -o 'proc_events=[0-9]*' "$work/$mode.log" | tail -1 | cut -d= -f2)
    local records
    records=$(grep -o ' records=[0-9]*' "$work/$mode.log" | tail -1 | cut -d= -f2)
    local watched
    # Builds before issue 15 have no such gauge.
    watched=$( (grep -o 'procfs_instances_watched=[0-9]*' "$work/$mode.log" || true) | tail -1 | cut -d= -f2)
    awk -v opens="$opens_per_ps" -v rate="$rate" -v m="$mode" -v t=$((after - before)) -v hz="$ticks" -v ns="$wall_ns" -v ev="${events:-0}" -v rec="${records:-0}" -v procs="$runs_before" -v watched="${watched:-0}" 'BEGIN {
        wall = ns / 1e9; cpu = t / hz
        load = rate > 0 ? sprintf("%.0f", opens * rate) : "-"
        printf "| %-5s | %d | %s | %5.1f s | %6.2f s | %5.2f %% | %8.0f | %7.0f | %d |\n", m, watched, load, wall, cpu, 100 * cpu / wall, ev / wall, rec / wall, procs
    }'
}

echo "kernel $(uname -r), $(nproc) CPUs, ${secs}s per mode, ps runs/s: ${rate} (0 = unpaced)"
echo
echo "| fanotify | procfs watched | /proc opens/s (ps) | wall | mapwatch CPU | share of one core | /proc events/s (fanotify) | audit records/s | processes |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for mode in ${MODES:-true false}; do
    run "$mode"
done
