#!/usr/bin/env bash
# Exec storm: CPU cost per exec of mapwatch (fanotify on) against auditd
# (log_format RAW and ENRICHED) and auditd+laurel, all with the same audit
# rules (execve, execveat, setsid on both ABIs), at fixed rates of /bin/true
# and at the machine's maximum; kernel lost counts; the storm's own slowdown
# against audit off. Run as root on an otherwise idle machine:
#
#   bash bench/exec-storm.sh [SECONDS] [RATES...]      (default: 30 500 1000 2000 0)
#
# Rate 0 is "as fast as the storm can go". CPU is user+sys of every
# userspace process of the contender (auditd and laurel counted together).
source "$(dirname "$0")/lib.sh"
secs=${1:-30}
shift || true
rates=(${@:-500 1000 2000 0})

run_storm() { "$work/storm" "$1" "$secs"; }

declare -A result
measure() {
    local name=$1 rate=$2
    shift 2
    local pids=("$@")
    local lost0 cpu0 out lost1 cpu1
    lost0=$(kernel_lost)
    cpu0=$(cpu_ticks "${pids[@]}")
    out=$(run_storm "$rate")
    sleep 1 # what was queued is processed
    cpu1=$(cpu_ticks "${pids[@]}")
    lost1=$(kernel_lost)
    read -r execs elapsed achieved <<< "$out"
    local cpu_s us_per_exec
    cpu_s=$(awk -v t=$((cpu1 - cpu0)) -v hz="$ticks" 'BEGIN { printf "%.2f", t / hz }')
    us_per_exec=$(awk -v c="$cpu_s" -v n="$execs" 'BEGIN { printf "%.1f", c * 1e6 / n }')
    result[$name,$rate]="$execs $achieved $cpu_s $us_per_exec $((lost1 - lost0))"
    echo "$name rate=$rate: $execs execs ($achieved/s), CPU $cpu_s s = $us_per_exec µs/exec, lost $((lost1 - lost0))" >&2
}

for rate in "${rates[@]}"; do
    auditctl -e 0 > /dev/null
    lost0=$(kernel_lost)
    out=$(run_storm "$rate")
    read -r execs elapsed achieved <<< "$out"
    result[off,$rate]="$execs $achieved 0 0 0"
    echo "off rate=$rate: $execs execs ($achieved/s)" >&2

    start_mapwatch
    measure mapwatch "$rate" "$started"
    stop_daemon "$started"

    for format in RAW ENRICHED; do
        start_auditd "$format"
        measure "auditd-$format" "$rate" "$started"
        stop_daemon "$started"
    done

    start_auditd RAW laurel
    sleep 0.5
    laurel_pid=$(pgrep -P "$started" laurel)
    measure auditd-laurel "$rate" "$started" "$laurel_pid"
    stop_daemon "$started"
done

echo
describe_machine
echo "Command: bash bench/exec-storm.sh $secs ${rates[*]}"
echo
echo "| rate (exec/s) | contender | execs | achieved exec/s | CPU s | CPU µs/exec | kernel lost | ratio to auditd RAW | ratio to auditd+laurel |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for rate in "${rates[@]}"; do
    label=$rate
    [ "$rate" = 0 ] && label=max
    read -r _ _ _ raw_us _ <<< "${result[auditd-RAW,$rate]}"
    read -r _ _ _ laurel_us _ <<< "${result[auditd-laurel,$rate]}"
    for name in off mapwatch auditd-RAW auditd-ENRICHED auditd-laurel; do
        read -r execs achieved cpu_s us lost <<< "${result[$name,$rate]}"
        ratio_raw=$(awk -v a="$us" -v b="$raw_us" 'BEGIN { if (b > 0 && a > 0) printf "%.2f×", a / b; else print "" }')
        ratio_laurel=$(awk -v a="$us" -v b="$laurel_us" 'BEGIN { if (b > 0 && a > 0) printf "%.2f×", a / b; else print "" }')
        echo "| $label | $name | $execs | $achieved | $cpu_s | $us | $lost | $ratio_raw | $ratio_laurel |"
    done
done
