#!/usr/bin/env bash
# Detection latency: 500 positives (`cat /proc/<pid>/maps` by a bash entry
# leader) mixed into a 1,000 exec/s storm of /bin/true; for each, the time
# from the moment the command is handed to the shell to the moment its alert
# line is read from mapwatch's stdout (so bash's fork+exec is included).
# Reports p50/p99/max. Run as root on an otherwise idle machine:
#
#   bash bench/latency.sh [POSITIVES] [STORM_RATE]     (default: 500 1000)
#
# AUDIT_TOML="poll_interval_ms = 10" sets keys of mapwatch's [audit] table.
source "$(dirname "$0")/lib.sh"
positives=${1:-500}
rate=${2:-1000}
dir=$work/latency
mkdir -p "$dir/rules.d"
# The seed rule without its 100-alerts-per-5-minutes cap.
sed 's/^max_signals = 100$/max_signals = 1000000/' rules/proc_maps_discovery.toml > "$dir/rules.d/seed.toml"
cat > "$dir/mapwatch.toml" << CONF
[audit]
state_file = "$dir/state.json"
${AUDIT_TOML:-}
[log]
stats_interval_secs = 0
[rules]
directories = ["$dir/rules.d"]
CONF
chmod 600 "$dir/mapwatch.toml" "$dir/rules.d/seed.toml"
"$work/storm" "$rate" 3600 > /dev/null &
storm=$!
daemons+=("$storm")
python3 - "$bin" "$dir" "$positives" << 'PY'
import os, subprocess, sys, threading, time
binary, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
mw = subprocess.Popen([binary, "run", "--foreground", "--format", "json", "--config", f"{d}/mapwatch.toml"],
                      stdout=subprocess.PIPE, stderr=open(f"{d}/stderr", "w"))
while "ready" not in open(f"{d}/stderr").read():
    time.sleep(0.05)
arrived = {}
def reader():
    for line in mw.stdout:
        t = time.monotonic()
        i = line.find(b"/nonexistent/")
        if i >= 0:
            token = line[i + 13:line.index(b'"', i)].decode()
            arrived.setdefault(token, t)
threading.Thread(target=reader, daemon=True).start()
target = subprocess.Popen(["sleep", "3600"])
fifo = f"{d}/fifo"
os.mkfifo(fifo)
subprocess.run(["setsid", "-f", "bash", "-c", f"while read -r line; do eval \"$line\"; done < {fifo}"], check=True)
w = open(fifo, "w", buffering=1)
time.sleep(0.5)  # bash is reparented to pid 1 before the first command
sent = {}
for i in range(n):
    token = str(i)
    sent[token] = time.monotonic()
    w.write(f"cat /proc/{target.pid}/maps /nonexistent/{token} > /dev/null 2>&1\n")
    time.sleep(0.02)
deadline = time.monotonic() + 5
while len(arrived) < n and time.monotonic() < deadline:
    time.sleep(0.05)
w.close()
target.kill()
mw.terminate()
mw.wait()
lat = sorted((arrived[t] - sent[t]) * 1000 for t in sent if t in arrived)
missing = n - len(lat)
def pct(p):
    return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))]
print(f"| {n} | {len(lat)} | {missing} | {pct(50):.2f} | {pct(99):.2f} | {lat[-1]:.2f} |")
PY
kill "$storm" 2> /dev/null || true
