#!/usr/bin/env bash
# Records the inputs of the golden tests (tests/golden.rs): Debian's auditd,
# on a log and configuration of its own, with a plugin that tees auditd's
# plugin feed to a file, while a scenario of /proc/<pid>/maps reads runs in
# a session of its own. The scenario's processes get pids above 4190000
# (pid_max raised for the recording, then put back), so that no process of
# the machine that later runs the tests has them: the read events, whose
# processes mapwatch looks up in procfs, then find nothing there, on every
# machine. Needs root; restores the audit state, pid_max and the rules.
#
#   bash tests/golden/record.sh        # writes tests/golden/inputs/
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/auditd-conf.sh
source "$here/../../bench/auditd-conf.sh"
out=$here/inputs
dir=$(mktemp -d)
key=mapwatch-golden
pid_max=$(cat /proc/sys/kernel/pid_max)
enabled=$(auditctl -s | awk '$1 == "enabled" { print $2 }')
auditd_pid=
cleanup() {
    auditctl -D -k "$key" >/dev/null 2>&1 || true
    [ -n "$auditd_pid" ] && kill "$auditd_pid" 2>/dev/null && wait "$auditd_pid" 2>/dev/null
    echo "$pid_max" > /proc/sys/kernel/pid_max
    auditctl -e "$enabled" >/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
if pgrep -x auditd >/dev/null || [ "$(auditctl -s | awk '$1 == "pid" { print $2 }')" != 0 ]; then
    echo "record.sh: an audit daemon is registered; stop it first" >&2
    exit 1
fi

mkdir -p "$dir/plugins.d" "$out"
cat > "$dir/plugins.d/feed.conf" <<CONF
active = yes
direction = out
path = /usr/bin/tee
type = always
args = $dir/feed.log
format = string
CONF
auditd_conf "$dir" RAW > "$dir/auditd.conf"
chmod 600 "$dir/auditd.conf" "$dir/plugins.d/feed.conf"
auditd -n -c "$dir" >/dev/null 2>"$dir/auditd.stderr" &
auditd_pid=$!
for _ in $(seq 100); do
    [ "$(auditctl -s | awk '$1 == "pid" { print $2 }')" = "$auditd_pid" ] && break
    sleep 0.1
done
for arch in b64 b32; do
    auditctl -a always,exit -F arch=$arch -S execve,execveat,setsid -k "$key" >/dev/null
done

echo 4194304 > /proc/sys/kernel/pid_max
echo 4190000 > /proc/sys/kernel/ns_last_pid
# Each reader runs in the background and is waited for, so its pid can be
# written down with the file it read: fanotify's reads, which no audit
# record carries (reads.txt: reader pid, path, in order).
setsid bash --norc -c '
    reads=$1
    sleep 600 & victim=$!
    read_by() { wait $!; echo "$! $1" >> "$reads"; }
    cat /proc/$victim/maps > /dev/null & read_by /proc/$victim/maps
    cat /proc/self/maps > /dev/null & read_by "/proc/$!/maps"
    grep -c r-xp /proc/$victim/task/$victim/maps > /dev/null & read_by /proc/$victim/task/$victim/maps
    (cd /proc/$victim && exec cat maps > /dev/null) & read_by /proc/$victim/maps
    cat < /proc/$victim/maps > /dev/null & read_by /proc/$victim/maps
    head -c1 /proc/$victim/maps > /dev/null & read_by /proc/$victim/maps
    /usr/bin/python3 -c "open(\"/proc/$victim/maps\").read()" & read_by /proc/$victim/maps
    cat /PROC/$victim/MAPS 2> /dev/null & wait $!
    cat "$(printf "/proc/%s\n\377/maps" $victim)" 2> /dev/null & wait $!
    cat /etc/hostname > /dev/null & wait $!
    kill $victim
' golden "$dir/reads.txt"
echo "$pid_max" > /proc/sys/kernel/pid_max

auditctl -D -k "$key" >/dev/null
sleep 1
kill "$auditd_pid"
wait "$auditd_pid" || true
auditd_pid=
grep -v '^type=DAEMON_\|^type=CONFIG_CHANGE\|^type=SERVICE_' "$dir/audit.log" > "$out/audit.log"
grep -v 'type=DAEMON_\|type=CONFIG_CHANGE\|type=SERVICE_' "$dir/feed.log" > "$out/plugin-feed.log"
cp "$dir/reads.txt" "$out/reads.txt"
wc -l "$out"/*
