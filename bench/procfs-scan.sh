#!/usr/bin/env bash
# CPU cost of the look at every mount namespace for procfs instances.
#
# Runs mapwatch (release build) idle beside N-1 pid namespaces with a procfs
# of their own (`unshare -pf --mount-proc`), with `procfs_scan_ms` at 1000
# and at 60000 alternately, and prints its CPU ticks over SECONDS: the
# difference is what the scans cost. Run as root, with no other audit daemon:
#
#   bash bench/procfs-scan.sh [INSTANCES] [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
instances=${1:-50}
secs=${2:-30}
rounds=${3:-2}
cargo build --release --locked -q
bin=$PWD/target/release/mapwatch
source bench/procfs-namespaces.sh
start_procfs_namespaces "$instances"
sleep 2
echo "kernel $(uname -r), $(nproc) CPUs, $instances procfs instances, ${secs}s idle per run, CLK_TCK $(getconf CLK_TCK)"
echo
echo "| procfs_scan_ms | mapwatch CPU ticks | procfs instances watched |"
echo "| ---: | ---: | ---: |"
for _ in $(seq "$rounds"); do
    for scan in 1000 60000; do
        printf '[audit]\nstate_file = "%s/state.json"\n[fanotify]\nprocfs_scan_ms = %s\n[log]\nstats_interval_secs = 0\n' \
            "$work" "$scan" > "$work/config.toml"
        "$bin" run --foreground --format json --config "$work/config.toml" > "$work/alerts" 2> "$work/log" &
        pid=$!
        for _ in $(seq 100); do grep -q ready "$work/log" && break; sleep 0.1; done
        sleep 2
        before=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
        sleep "$secs"
        after=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
        kill -TERM "$pid"
        wait "$pid" || true
        watched=$(grep -o 'procfs: .* procfs instance(s) watched' "$work/log" | grep -o '[0-9]* procfs instance' | cut -d' ' -f1 || true)
        echo "| $scan | $((after - before)) | ${watched:-?} |"
    done
done
