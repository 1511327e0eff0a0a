#!/usr/bin/env bash
# Runs inside the systemd test's guest (tests/systemd/run.sh), as root, once
# the machine is up: installs mapwatch.deb as a user would and checks the
# service under systemd in three deployments, one after the other:
#   alone       mapwatch is the audit daemon (no auditd running)
#   beside      auditd.service runs; mapwatch reads the multicast group
#   plugin      mapwatch.service off; auditd runs `mapwatch replay -` (the
#               shipped plugins.d/mapwatch.conf set active)
# Each check prints "ok: ..." or "FAIL: ...". The verdict (pass/fail) and
# the log go to the payload disk, which the host reads after power-off.
set -uo pipefail
payload=/mnt/payload
exec > >(tee "$payload/guest.log") 2>&1
failures=0
alerts=/var/log/mapwatch/alerts.json
seed_id=2f95540c-923e-4f57-9dae-de30169c68b9
extended_id=aae83d04-dbb2-4b2f-befb-4943ec0f6bf3

ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; failures=$((failures + 1)); }
check() { # DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; return 1; fi
}
wait_for() { # SECONDS COMMAND...: true once COMMAND succeeds
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

# The kernel's audit status fields mapwatch may change, and the rule list.
audit_state() {
    auditctl -s | awk '$1 ~ /^(enabled|pid|backlog_limit|backlog_wait_time)$/ { printf "%s=%s ", $1, $2 }'
    echo
    auditctl -l
}
same_audit_state() { # WHEN EXPECTED
    local now
    now=$(audit_state)
    if [ "$now" = "$2" ]; then
        ok "audit state after $1 is as before the install"
    else
        bad "audit state after $1: expected [$2], found [$now]"
    fi
}

main_pid() { systemctl show -p MainPID --value "$1"; }
service_ready() { # UNIT: active and running (Type=notify: after READY=1)
    [ "$(systemctl show -p ActiveState,SubState --value "$1" | tr '\n' ' ')" = "active running " ]
}

# A target process whose map the checks read, and a reader in a session of
# its own under bash, as an operator's shell would be.
target=
new_target() {
    [ -z "$target" ] || kill "$target" 2>/dev/null
    sleep 600 &
    target=$!
}
seed_alert() { # the seed rule's alert for $target, confirmed
    grep -F "\"$seed_id\"" "$alerts" 2>/dev/null | grep -F "/proc/$target/maps" | grep -qF '"confirmed":true'
}
extended_alert() {
    grep -F "\"$extended_id\"" "$alerts" 2>/dev/null | grep -qF "/proc/$target/maps"
}
detects() { # WHEN: both rules fire for a fresh target
    new_target
    setsid -f bash -c "sleep 0.3; cat /proc/$target/maps > /dev/null"
    check "$1: cat /proc/PID/maps gives the seed alert, confirmed" wait_for 20 seed_alert || explain
    new_target
    setsid -f bash -c "sleep 0.3; cat < /proc/$target/maps > /dev/null"
    check "$1: cat < /proc/PID/maps gives the extended rule's alert" wait_for 20 extended_alert || explain
    # A pid namespace with a procfs of its own, mounted after the service
    # started: watched from the service's next look (1 s), its pids named
    # as the host's.
    local marker=$((60000 + RANDOM))
    setsid -f unshare -pf --mount-proc bash -c "sleep $marker & sleep 3; cat < /proc/\$!/maps > /dev/null; sleep 5"
    check "$1: a new pid namespace's sibling process runs" wait_for 10 pgrep -f "^sleep $marker\$"
    target=$(pgrep -f "^sleep $marker\$" | head -1)
    check "$1: a read in a new pid namespace's own procfs gives the extended alert, in host pids" wait_for 30 namespaced_alert || explain
}
namespaced_alert() {
    grep -F "\"$extended_id\"" "$alerts" 2>/dev/null | grep -F "\"pid\":$target," | grep -qF '"ns_pid":'
}
explain() { # what the alert file and the journal say about a failed check
    echo "--- alerts naming /proc/$target/maps or pid $target:"
    grep -F -e "/proc/$target/maps" -e "\"pid\":$target" "$alerts" 2>/dev/null | cut -c1-1500
    echo "--- the service's lines on procfs instances:"
    journalctl -q --no-pager -u mapwatch | grep -i "procfs\|mount\|mark" | tail -30
    echo "--- the journal's last 40 lines but this test's own:"
    journalctl -q --no-pager -n 300 | grep -v "mapwatch-guest sh\[" | tail -40
    return 1
}

install() { # dpkg -i; the deployment's other checks need it
    if dpkg -i "$payload/mapwatch.deb"; then
        ok "dpkg -i installs the package"
    else
        bad "dpkg -i installs the package (the rest of this deployment is skipped)"
        return 1
    fi
}

journal_clean() { # UNIT SINCE: no warning or worse from UNIT since SINCE
    local lines
    # mapwatch's own lines carry their level (a `<N>` prefix on the stream).
    lines=$(journalctl -q --no-pager -u "$1" --since "$2" -p warning)
    [ -z "$lines" ] || { echo "$lines"; return 1; }
}

alone() {
    echo "=== alone: mapwatch.service is the audit daemon"
    local before since pid
    before=$(audit_state)
    since=$(date '+%Y-%m-%d %H:%M:%S')
    install || return
    check "the service is active and has sent READY=1" wait_for 30 service_ready mapwatch || explain
    detects "installed"
    check "the journal has no warning since the install" journal_clean mapwatch "$since"
    journalctl -q --no-pager -u mapwatch --since "$since" | tail -5

    pid=$(main_pid mapwatch)
    check "systemctl reload" systemctl reload mapwatch
    check "reload keeps the process ($pid)" wait_for 10 same_main_pid "$pid"
    detects "after reload"

    check "systemctl restart" systemctl restart mapwatch
    check "the service is ready again after restart" wait_for 30 service_ready mapwatch
    detects "after restart"

    check "systemctl stop" systemctl stop mapwatch
    same_audit_state "stop" "$before"

    # Who refused fanotify, as the operator reads it in the journal.
    refusal "SystemCallFilter=~fanotify_init" "refused by a system-call filter"
    refusal "CapabilityBoundingSet=~CAP_SYS_ADMIN" "needs CAP_SYS_ADMIN, which this process does not have"
    same_audit_state "the refused runs" "$before"

    check "systemctl start" systemctl start mapwatch
    pid=$(main_pid mapwatch)
    kill -9 "$pid"
    check "systemd restarts the service after kill -9" wait_for 30 restarted_since "$pid"
    detects "after kill -9 and restart"
    check "systemctl stop after the crash" systemctl stop mapwatch
    same_audit_state "kill -9, restart and stop" "$before"

    systemctl start mapwatch
    local exposure
    exposure=$(systemd-analyze security mapwatch 2>&1 | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
    check "online systemd-analyze security: ${exposure:-?} <= 3.0" awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 3.0) }'
    check "dpkg --purge" dpkg --purge mapwatch
    same_audit_state "purge" "$before"
    check "purge leaves no /var/log/mapwatch" test ! -e /var/log/mapwatch
}
refusal() { # PROPERTY MESSAGE: mapwatch in a transient unit with PROPERTY says MESSAGE
    local out
    out=$(systemd-run --quiet --wait --pipe -p "$1" -p SystemCallErrorNumber=EPERM -p RuntimeMaxSec=8 \
        /usr/sbin/mapwatch run --foreground 2>&1)
    if grep -qF "$2" <<<"$out"; then
        ok "under $1, mapwatch says fanotify $2"
    else
        bad "under $1, mapwatch does not say \"$2\": $(grep -i fanotify <<<"$out")"
    fi
}
same_main_pid() { # PID
    [ "$1" != 0 ] && [ "$(main_pid mapwatch)" = "$1" ] && service_ready mapwatch
}
restarted_since() { # OLDPID
    local now
    now=$(main_pid mapwatch)
    [ "$now" != 0 ] && [ "$now" != "$1" ] && service_ready mapwatch
}

# auditd's registration and its own rule, which mapwatch must leave alone.
auditd_registered() {
    local pid
    pid=$(main_pid auditd)
    [ "$pid" != 0 ] && auditctl -s | grep -qx "pid $pid"
}
start_auditd() {
    echo '-w /etc/hostname -p wa -k guest-auditd' >/etc/audit/rules.d/guest.rules
    check "auditd.service starts" systemctl start auditd
    check "auditd is the registered audit daemon" wait_for 20 auditd_registered
    check "auditd's rules are loaded" wait_for 20 sh -c 'auditctl -l | grep -q guest-auditd'
}

beside() {
    echo "=== beside: auditd.service runs; mapwatch.service reads the multicast group"
    start_auditd
    local before
    before=$(audit_state)
    install || return
    check "the service is active and has sent READY=1" wait_for 30 service_ready mapwatch || explain
    check "auditd.service is still active" systemctl is-active -q auditd
    detects "beside auditd"
    check "auditd is still the registered daemon" auditd_registered
    check "auditd's rule is still there" sh -c 'auditctl -l | grep -q guest-auditd'
    check "auditd's log received the reads' execs" grep -q 'exe="/usr/bin/cat"' /var/log/audit/audit.log
    check "systemctl stop" systemctl stop mapwatch
    same_audit_state "stop beside auditd" "$before"
    check "dpkg --purge" dpkg --purge mapwatch
    same_audit_state "purge beside auditd" "$before"
}

plugin() {
    echo "=== plugin: auditd runs mapwatch (plugins.d/mapwatch.conf active)"
    local rules_before
    rules_before=$(auditctl -l)
    install || return
    check "systemctl disable --now mapwatch" systemctl disable --now mapwatch
    sed -i 's/^active = no$/active = yes/' /etc/audit/plugins.d/mapwatch.conf
    check "systemctl restart auditd" systemctl restart auditd
    check "auditd is the registered audit daemon" wait_for 20 auditd_registered
    check "the plugin has added its rules" wait_for 30 sh -c 'auditctl -l | grep -q "key=mapwatch"' || explain
    detects "as auditd's plugin"
    check "auditd is still the registered daemon" auditd_registered
    check "auditd's rule is still there" sh -c 'auditctl -l | grep -q guest-auditd' || { auditctl -l; explain; }
    check "systemctl stop auditd" systemctl stop auditd
    check "the plugin removed its rules when auditd stopped" wait_for 10 sh -c '! auditctl -l | grep -q mapwatch'
    check "dpkg --purge" dpkg --purge mapwatch
    if [ "$(auditctl -l)" = "$rules_before" ]; then
        ok "the rule list after the plugin's run is as before the install"
    else
        bad "rules after the plugin's run: expected [$rules_before], found [$(auditctl -l)]"
    fi
}

echo "guest: Linux $(uname -r), $(systemctl --version | head -1)"
# DEPLOYMENTS=... on the host runs fewer (while working on one).
for deployment in $(cat "$payload/deployments" 2>/dev/null || echo alone beside plugin); do
    "$deployment"
done
systemctl stop auditd
new_target
kill "$target" 2>/dev/null

echo "guest: $failures failed checks"
if [ "$failures" -eq 0 ]; then echo pass >"$payload/verdict"; else echo fail >"$payload/verdict"; fi
