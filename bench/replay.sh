#!/usr/bin/env bash
# Replay throughput: mapwatch replay against laurel on the same recorded
# audit log of at least 1,000,000 records (made here: auditd with
# log_format RAW and mapwatch's rules, during an exec storm of /bin/true
# and `cat /proc/<pid>/maps`). Both read the log from a file on one core;
# the figure is records per second of wall time (and CPU time). Then the
# same log as eight hosts' records, through mapwatch as an aggregation
# server's auditd plugin and as a replayed file. Run as root:
#
#   bash bench/replay.sh [RECORDS]         (default: 1000000)
source "$(dirname "$0")/lib.sh"
want=${1:-1000000}
start_auditd RAW
auditd_pid=$started
log=$work/auditd-RAW-plain/audit.log
"$work/storm" 0 3600 > /dev/null &
storm=$!
daemons+=("$storm")
sleep 60 & target=$!
while [ "$(wc -l < "$log")" -lt "$want" ]; do
    setsid -f bash -c "cat /proc/$target/maps > /dev/null"
    sleep 1
done
kill "$storm"
stop_daemon "$auditd_pid"
head -n "$want" "$log" > "$work/1m.log"
records=$(wc -l < "$work/1m.log")
execs=$(grep -c '^type=EXECVE' "$work/1m.log")
touch "$work/empty.toml" && chmod 600 "$work/empty.toml"

timed() { # prints "wall_s cpu_s" of the command
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/time -f '%U %S' -o "$work/time.out" "$@" > /dev/null 2>&1
    t1=$(date +%s.%N)
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') $(awk '{ printf "%.3f", $1 + $2 }' "$work/time.out")"
}
best() { # best wall time of three runs: "wall cpu"
    local best_line="" line
    for _ in 1 2 3; do
        line=$("$@")
        if [ -z "$best_line" ] || awk -v a="${line%% *}" -v b="${best_line%% *}" 'BEGIN { exit !(a < b) }'; then best_line=$line; fi
    done
    echo "$best_line"
}
mapwatch_run() { timed taskset -c 1 "$bin" replay --config "$work/empty.toml" "$work/1m.log"; }
mkdir -p "$work/laurel-out" && chown _laurel "$work/laurel-out"
sed -e "s|^directory = .*|directory = \"$work/laurel-out\"|" /etc/laurel/config.toml > "$work/laurel.toml"
laurel_run() { rm -f "$work/laurel-out/audit.log"*; timed taskset -c 1 sh -c "/usr/sbin/laurel --config $work/laurel.toml < $work/1m.log"; }
read -r mw_wall mw_cpu <<< "$(best mapwatch_run)"
read -r la_wall la_cpu <<< "$(best laurel_run)"
alerts=$("$bin" replay --config "$work/empty.toml" "$work/1m.log" 2> /dev/null | wc -l)
laurel_events=$(cat "$work/laurel-out/audit.log"* | wc -l)
echo
describe_machine
echo "Command: bash bench/replay.sh $want"
echo "Log: $records records ($execs exec events), $(du -h "$work/1m.log" | cut -f1), auditd RAW; mapwatch raised $alerts alerts, laurel wrote $laurel_events events."
echo
echo "| tool | wall s (best of 3) | CPU s | records/s (wall) | ratio |"
echo "| --- | ---: | ---: | ---: | ---: |"
mw_rate=$(awk -v n="$records" -v t="$mw_wall" 'BEGIN { printf "%.0f", n / t }')
la_rate=$(awk -v n="$records" -v t="$la_wall" 'BEGIN { printf "%.0f", n / t }')
echo "| mapwatch replay | $mw_wall | $mw_cpu | $mw_rate | $(awk -v a="$mw_rate" -v b="$la_rate" 'BEGIN { printf "%.1f×", a / b }') |"
echo "| laurel | $la_wall | $la_cpu | $la_rate | 1.0× |"

# The aggregation server: the same records as eight hosts' (node=host-1 ...
# node=host-8, in eight consecutive parts of the log, as a central auditd
# writes what au-remote sends), fed on stdin to mapwatch as the plugin of
# that auditd (`[plugin] aggregator = true`: the live service, every
# record another host's), and replayed as a file.
awk -v n="$records" '{ printf "node=host-%d %s\n", int((NR - 1) * 8 / n) + 1, $0 }' "$work/1m.log" > "$work/1m-nodes.log"
printf '[plugin]\naggregator = true\n[output]\njson_file = "/dev/null"\n[log]\nstats_interval_secs = 0\n' > "$work/aggregator.toml"
chmod 600 "$work/aggregator.toml"
plugin_run() { timed taskset -c 1 sh -c "'$bin' replay --config '$work/aggregator.toml' < '$work/1m-nodes.log'"; }
nodes_run() { timed taskset -c 1 "$bin" replay --config "$work/empty.toml" "$work/1m-nodes.log"; }
read -r pl_wall pl_cpu <<< "$(best plugin_run)"
read -r nd_wall nd_cpu <<< "$(best nodes_run)"
node_alerts=$("$bin" replay --config "$work/empty.toml" "$work/1m-nodes.log" 2> /dev/null | wc -l)
echo
echo "The same records as 8 hosts' ($node_alerts alerts):"
echo
echo "| mapwatch | wall s (best of 3) | CPU s | records/s (wall) |"
echo "| --- | ---: | ---: | ---: |"
echo "| aggregator plugin (stdin, live service) | $pl_wall | $pl_cpu | $(awk -v n="$records" -v t="$pl_wall" 'BEGIN { printf "%.0f", n / t }') |"
echo "| replay of the file | $nd_wall | $nd_cpu | $(awk -v n="$records" -v t="$nd_wall" 'BEGIN { printf "%.0f", n / t }') |"
