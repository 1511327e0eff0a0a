# Shared by the bench/ scripts: peers installed from the distribution, the
# release build, the storm generator, daemons started on private configs,
# CPU accounting, and the kernel's audit state restored on every exit.
# shellcheck shell=bash

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
# shellcheck source=bench/auditd-conf.sh
source "$root/bench/auditd-conf.sh"
[ "$(id -u)" = 0 ] || { echo "bench: run as root (audit and fanotify)" >&2; exit 1; }
for pkg in auditd laurel gcc python3 procps time curl; do
    dpkg -s "$pkg" > /dev/null 2>&1 || need="${need:-} $pkg"
done
if [ -n "${need:-}" ]; then apt-get install -y $need > /dev/null; fi
cargo build --release --locked -q
bin=$root/target/release/mapwatch
work=$(mktemp -d /tmp/mapwatch-bench.XXXXXX)
gcc -O2 -o "$work/storm" "$root/bench/storm.c"
daemons=()
backlog_before=$(auditctl -s | awk '$1 == "backlog_limit" { print $2 }')

cleanup() {
    for pid in "${daemons[@]}"; do kill -TERM "$pid" 2> /dev/null || true; done
    for pid in "${daemons[@]}"; do
        while kill -0 "$pid" 2> /dev/null; do sleep 0.1; done
    done
    auditctl -D -k mapwatch > /dev/null 2>&1 || true
    auditctl -e 0 > /dev/null 2>&1 || true
    auditctl -b "$backlog_before" > /dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The same rules for every contender: what mapwatch installs.
audit_rules() {
    auditctl -b 8192 > /dev/null
    auditctl -a always,exit -F arch=b64 -S execve,execveat,setsid -k mapwatch > /dev/null
    auditctl -a always,exit -F arch=b32 -S execve,execveat,setsid -k mapwatch > /dev/null
    auditctl -a always,exit -F arch=b64 -S ioctl -F a1=0xc0686611 -k mapwatch > /dev/null
    auditctl -a always,exit -F arch=b32 -S ioctl -F a1=0xc0686611 -k mapwatch > /dev/null
    local arch range
    for arch in b64 b32; do
        for range in 4:6 13:16 0x4205:0x4206; do
            auditctl -a always,exit -F arch=$arch -S ptrace -F "a0>=${range%:*}" -F "a0<=${range#*:}" -k mapwatch > /dev/null
        done
        auditctl -a always,exit -F arch=$arch -S process_vm_readv,process_vm_writev -k mapwatch > /dev/null
    done
    auditctl -e 1 > /dev/null
}

kernel_lost() { auditctl -s | awk '$1 == "lost" { print $2 }'; }

# CPU time in nanoseconds of the given pids, all their threads: the
# scheduler's own runtime (/proc/PID/task/TID/schedstat), not the 10 ms
# ticks of /proc/PID/stat, which are too coarse for 10-second runs. Every
# contender's threads live as long as it does, so none is missed.
cpu_ns() {
    local pid
    for pid in "$@"; do cat /proc/"$pid"/task/*/schedstat; done | awk '{ s += $1 } END { printf "%.0f\n", s }'
}

# Machine, kernel and versions, for the results' header.
describe_machine() {
    echo "Machine: $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r), $(. /etc/os-release; echo "$PRETTY_NAME")."
    echo "Versions: mapwatch $("$bin" --version | awk '{ print $2 }'), auditd $(dpkg-query -W -f='${Version}' auditd), laurel $(dpkg-query -W -f='${Version}' laurel), $(rustc --version | cut -d' ' -f1-2)."
}

# $1/mapwatch.toml: the service's defaults, with its state, alerts and no
# stats line under $1, keys of [audit] from $AUDIT_TOML (say,
# "poll_interval_ms = 10"), and the TOML in $2 (more tables) appended.
write_config() {
    mkdir -p "$1"
    cat > "$1/mapwatch.toml" << CONF
[audit]
state_file = "$1/state.json"
${AUDIT_TOML:-}
[log]
stats_interval_secs = 0
[output]
json_file = "$1/alerts.json"
${2:-}
CONF
    chmod 600 "$1/mapwatch.toml"
}

# mapwatch as the service runs it (fanotify on), with the TOML in $1
# appended to its configuration; sets $started to its pid once ready.
start_mapwatch() {
    local dir=$work/mapwatch
    write_config "$dir" "${1:-}"
    : > "$dir/stderr"
    "$bin" run --config "$dir/mapwatch.toml" > /dev/null 2> "$dir/stderr" &
    started=$!
    daemons+=("$started")
    for _ in $(seq 100); do grep -q ready "$dir/stderr" && break; sleep 0.1; done
    grep -q ready "$dir/stderr" || { cat "$dir/stderr" >&2; exit 1; }
}

# auditd -n on a private config; $1: RAW or ENRICHED, $2: "laurel" to add
# laurel as its plugin. Sets $started to auditd's pid once registered, with
# the rules in.
start_auditd() {
    local format=$1 plugin=${2:-} dir=$work/auditd-$1-${2:-plain}
    mkdir -p "$dir/plugins.d"
    auditd_conf "$dir" "$format" > "$dir/auditd.conf"
    chmod 600 "$dir/auditd.conf"
    if [ "$plugin" = laurel ]; then
        mkdir -p "$dir/laurel"
        chown _laurel "$dir/laurel"
        sed -e "s|^directory = .*|directory = \"$dir/laurel\"|" /etc/laurel/config.toml > "$dir/laurel.toml"
        cat > "$dir/plugins.d/laurel.conf" << CONF
active = yes
direction = out
type = always
format = string
path = /usr/sbin/laurel
args = --config $dir/laurel.toml
CONF
    fi
    auditd -n -c "$dir" > /dev/null 2>&1 &
    started=$!
    daemons+=("$started")
    for _ in $(seq 100); do
        [ "$(auditctl -s | awk '$1 == "pid" { print $2 }')" = "$started" ] && break
        sleep 0.1
    done
    audit_rules
}

stop_daemon() {
    kill -TERM "$1" 2> /dev/null || true
    while kill -0 "$1" 2> /dev/null; do sleep 0.1; done
    auditctl -D -k mapwatch > /dev/null 2>&1 || true
    auditctl -e 0 > /dev/null 2>&1 || true
}
