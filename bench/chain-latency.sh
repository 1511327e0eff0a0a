#!/usr/bin/env bash
# Chain latency: a process reads a target's map and then writes into its
# memory (16 bytes read back into /proc/PID/mem, a PTRACE_POKEDATA, a
# process_vm_writev), ROUNDS times each, each on a fresh target; for each,
# the time from the write's return to the moment the chain rule's alert
# line is read from mapwatch's stdout. Optionally beside an exec storm.
# Reports p50/p99/max per way. Run as root:
#
#   bash bench/chain-latency.sh [ROUNDS] [STORM_RATE]     (default: 50 0)
source "$(dirname "$0")/lib.sh"
rounds=${1:-50}
rate=${2:-0}
dir=$work/chain
mkdir -p "$dir"
cat > "$dir/mapwatch.toml" << CONF
[audit]
state_file = "$dir/state.json"
[log]
stats_interval_secs = 0
CONF
chmod 600 "$dir/mapwatch.toml"
if [ "$rate" -gt 0 ]; then
    "$work/storm" "$rate" 3600 > /dev/null &
    daemons+=("$!")
fi
python3 - "$bin" "$dir" "$rounds" << 'PY'
import ctypes, json, os, subprocess, sys, threading, time
binary, d, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
CHAIN = "0f6c806b-d86e-4754-a76d-c190b0486697"
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.process_vm_writev.restype = ctypes.c_ssize_t
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

mw = subprocess.Popen([binary, "run", "--foreground", "--format", "json", "--config", f"{d}/mapwatch.toml"],
                      stdout=subprocess.PIPE, stderr=open(f"{d}/stderr", "w"))
while "ready" not in open(f"{d}/stderr").read():
    time.sleep(0.05)
arrived = {}
def reader():
    for line in mw.stdout:
        t = time.monotonic()
        doc = json.loads(line)
        if doc.get("rule", {}).get("id") == CHAIN:
            arrived.setdefault(doc["mapwatch"]["target"]["pid"], t)
threading.Thread(target=reader, daemon=True).start()

def writable(pid):
    with open(f"/proc/{pid}/maps") as maps:
        return next(int(l.split("-")[0], 16) for l in maps if l.split()[1].startswith("rw"))

def by_mem(pid, at):
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
        mem.seek(at)
        held = mem.read(16)
        mem.seek(at)
        mem.write(held)
        return time.monotonic()

def by_poke(pid, at):
    assert libc.ptrace(16, pid, None, None) == 0
    os.waitpid(pid, 0)
    word = libc.ptrace(2, pid, ctypes.c_void_p(at), None)
    assert libc.ptrace(5, pid, ctypes.c_void_p(at), ctypes.c_void_p(word & 0xffffffffffffffff)) == 0
    done = time.monotonic()
    libc.ptrace(17, pid, None, None)
    return done

def by_vm(pid, at):
    buf = ctypes.create_string_buffer(16)
    local = iovec(ctypes.cast(buf, ctypes.c_void_p), 16)
    remote = iovec(ctypes.c_void_p(at), 16)
    assert libc.process_vm_writev(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) == 16
    return time.monotonic()

for name, way in [("/proc/PID/mem", by_mem), ("PTRACE_POKEDATA", by_poke), ("process_vm_writev", by_vm)]:
    wrote = {}
    for _ in range(rounds):
        target = subprocess.Popen(["sleep", "3600"])
        time.sleep(0.05)
        wrote[target.pid] = way(target.pid, writable(target.pid))
        deadline = time.monotonic() + 2
        while target.pid not in arrived and time.monotonic() < deadline:
            time.sleep(0.005)
        target.kill()
        target.wait()
    lat = sorted((arrived[p] - t) * 1000 for p, t in wrote.items() if p in arrived)
    pct = lambda p: lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))] if lat else float("nan")
    print(f"| {name} | {rounds} | {len(lat)} | {pct(50):.2f} | {pct(99):.2f} | {lat[-1] if lat else float('nan'):.2f} |")
mw.terminate()
mw.wait()
PY
