#!/usr/bin/env bash
# Exec storm: CPU cost per exec of mapwatch (fanotify on) against auditd
# (log_format RAW and ENRICHED) and auditd+laurel, all with the same audit
# rules (execve, execveat, setsid on both ABIs), at fixed rates of /bin/true
# and at the machine's maximum; kernel lost counts; the storm's own slowdown
# against audit off. Run as root on an otherwise idle machine:
#
#   bash bench/exec-storm.sh [SECONDS] [ROUNDS] [RATES...]   (default: 10 5 500 1000 2000 0)
#
# CONTENDERS="mapwatch mapwatch-metrics auditd-RAW" picks some of them;
# mapwatch-metrics is mapwatch with [metrics] listen and textfile on, scraped
# every second as Prometheus would (the scraper's own CPU is not counted);
# mapwatch-elastic is mapwatch with Elastic's 189 Linux exec rules loaded
# beside its own (MAPWATCH_ELASTIC_RULES, default ../shared/testdata/elastic-rules).
#
# Rate 0 is "as fast as the storm can go". CPU is the scheduler's runtime
# (user+sys, in ns) of every userspace process of the contender, all its
# threads (auditd and laurel counted together).
#
# A VM's CPU cost per exec drifts by ±20% from one minute to the next (the
# host's load, where the scheduler places the wake-ups), so one long run per
# contender compares contenders measured at different moments. Instead each
# rate runs ROUNDS rounds; a round measures every contender once, SECONDS
# each, back to back, starting with a different contender each round. The
# table gives each contender's median over the rounds, and the ratio to
# auditd RAW is the median of the rounds' own ratios: contenders compared
# within a minute of each other.
source "$(dirname "$0")/lib.sh"
secs=${1:-10}
rounds=${2:-5}
shift 2 || true
rates=(${@:-500 1000 2000 0})
read -r -a contenders <<< "${CONTENDERS:-mapwatch auditd-RAW auditd-ENRICHED auditd-laurel}"
metrics_port=19464

run_storm() { "$work/storm" "$1" "$secs"; }

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
spread() { tr ' ' '\n' | grep -v '^$' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s–%s", lo, hi }'; }

# Per contender and rate, space-separated over the rounds.
declare -A us execs achieved lost
measure() {
    local name=$1 rate=$2
    shift 2
    local pids=("$@")
    local lost0 cpu0 out lost1 cpu1 n elapsed rate_done cpu_s per_exec
    lost0=$(kernel_lost)
    cpu0=$(cpu_ns "${pids[@]}")
    out=$(run_storm "$rate")
    sleep 1 # what was queued is processed
    cpu1=$(cpu_ns "${pids[@]}")
    lost1=$(kernel_lost)
    read -r n elapsed rate_done <<< "$out"
    cpu_s=$(awk -v t=$((cpu1 - cpu0)) 'BEGIN { printf "%.3f", t / 1e9 }')
    per_exec=$(awk -v c="$cpu_s" -v n="$n" 'BEGIN { printf "%.1f", c * 1e6 / n }')
    us[$name,$rate]+=" $per_exec"
    execs[$name,$rate]+=" $n"
    achieved[$name,$rate]+=" $rate_done"
    lost[$name,$rate]+=" $((lost1 - lost0))"
    echo "$name rate=$rate: $n execs ($rate_done/s), CPU $cpu_s s = $per_exec µs/exec, lost $((lost1 - lost0))" >&2
}

run_contender() {
    local name=$1 rate=$2
    case $name in
        mapwatch)
            start_mapwatch
            measure mapwatch "$rate" "$started"
            ;;
        mapwatch-elastic)
            start_mapwatch "$(printf '[rules]\ndirectories = ["%s"]\n' "${MAPWATCH_ELASTIC_RULES:-$root/../shared/testdata/elastic-rules}")"
            measure mapwatch-elastic "$rate" "$started"
            ;;
        mapwatch-metrics)
            start_mapwatch "$(printf '[metrics]\nlisten = "127.0.0.1:%s"\ntextfile = "%s/mapwatch.prom"\ninterval_secs = 15\n' "$metrics_port" "$work")"
            (while :; do curl -s -o /dev/null "http://127.0.0.1:$metrics_port/metrics"; sleep 1; done) &
            local scraper=$!
            measure mapwatch-metrics "$rate" "$started"
            kill "$scraper"
            wait "$scraper" 2> /dev/null || true
            ;;
        auditd-RAW | auditd-ENRICHED)
            start_auditd "${name#auditd-}"
            measure "$name" "$rate" "$started"
            ;;
        auditd-laurel)
            start_auditd RAW laurel
            local laurel_pid=
            for _ in $(seq 50); do
                laurel_pid=$(pgrep -P "$started" laurel) && break
                sleep 0.1
            done
            [ -n "$laurel_pid" ] || { echo "bench: auditd started no laurel" >&2; exit 1; }
            measure auditd-laurel "$rate" "$started" "$laurel_pid"
            ;;
    esac
    stop_daemon "$started"
}

for rate in "${rates[@]}"; do
    for round in $(seq 0 $((rounds - 1))); do
        auditctl -e 0 > /dev/null
        out=$(run_storm "$rate")
        read -r n elapsed rate_done <<< "$out"
        execs[off,$rate]+=" $n"
        achieved[off,$rate]+=" $rate_done"
        echo "off rate=$rate: $n execs ($rate_done/s)" >&2
        for i in "${!contenders[@]}"; do
            run_contender "${contenders[$(((i + round) % ${#contenders[@]}))]}" "$rate"
        done
    done
done

# The rounds' own ratios of $1 to $2 at rate $3, space-separated.
round_ratios() {
    paste -d' ' <(echo ${us[$1,$3]:-} | tr ' ' '\n') <(echo ${us[$2,$3]:-} | tr ' ' '\n') |
        awk '$2 > 0 { printf "%.3f ", $1 / $2 }'
}

echo
describe_machine
echo "Command: bash bench/exec-storm.sh $secs $rounds ${rates[*]}"
echo
echo "| rate (exec/s) | contender | achieved exec/s | CPU µs/exec, median | range over rounds | kernel lost (all rounds) | ratio to auditd RAW (median of rounds) | range | ratio to auditd+laurel |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for rate in "${rates[@]}"; do
    label=$rate
    [ "$rate" = 0 ] && label=max
    for name in off "${contenders[@]}"; do
        rate_done=$(echo "${achieved[$name,$rate]}" | median)
        if [ "$name" = off ]; then
            echo "| $label | off | $rate_done | | | | | | |"
            continue
        fi
        per_exec=$(echo "${us[$name,$rate]}" | median)
        range=$(echo "${us[$name,$rate]}" | spread)
        lost_total=$(echo "${lost[$name,$rate]}" | tr ' ' '\n' | awk '{ s += $1 } END { print s + 0 }')
        raw=$(round_ratios "$name" auditd-RAW "$rate")
        laurel=$(round_ratios "$name" auditd-laurel "$rate")
        [ -n "$laurel" ] && laurel="$(echo "$laurel" | median)×"
        echo "| $label | $name | $rate_done | $per_exec | $range | $lost_total | $(echo "$raw" | median)× | $(echo "$raw" | spread) | $laurel |"
    done
done
