#!/usr/bin/env bash
# Builds the .deb and .rpm, installs the .deb on this Debian machine and checks
# it end to end, inspects the .rpm, and checks the systemd unit. Run as root;
# CI runs it after the test suite. Needs cargo-deb, cargo-generate-rpm, rpm,
# systemd-analyze (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
# Paths here and in Cargo.toml's package metadata are under ./target.
unset CARGO_TARGET_DIR
fail() { echo "packaging check FAILED: $*" >&2; exit 1; }
step() { echo "== $*"; }

step "build (the README's install commands)"
# --- install section of README.md, verbatim ---
cargo build --release --locked
mkdir -p target/man && target/release/mapwatch manpage | gzip -9n > target/man/mapwatch.8.gz
cargo deb --no-build --locked
cargo generate-rpm
# --- end ---
deb=$(ls -t target/debian/mapwatch_*.deb | head -1)
rpm_file=$(ls -t target/generate-rpm/mapwatch-*.rpm | head -1)

step "the .deb: contents"
contents=$(dpkg-deb -c "$deb")
for f in ./usr/sbin/mapwatch ./etc/mapwatch/mapwatch.toml ./etc/logrotate.d/mapwatch ./etc/audit/plugins.d/mapwatch.conf \
         ./usr/share/mapwatch/rules/proc_maps_discovery.toml ./usr/share/mapwatch/rules/proc_maps_read_extended.toml \
         ./usr/share/mapwatch/rules/proc_layout_read.toml ./usr/share/mapwatch/rules/proc_mem_read.toml \
         ./usr/share/mapwatch/rules/proc_mem_write.toml ./usr/share/mapwatch/rules/ptrace_poke.toml \
         ./usr/share/mapwatch/rules/process_vm_write.toml ./usr/share/mapwatch/rules/process_vm_read.toml \
         ./usr/share/mapwatch/rules/proc_injection_chain.toml \
         ./usr/share/man/man8/mapwatch.8.gz ./usr/lib/systemd/system/mapwatch.service; do
    grep -q " $f\$" <<<"$contents" || fail "$f missing from $deb"
done

step "install"
dpkg -i "$deb"
[ "$(stat -c %a /usr/sbin/mapwatch)" = 755 ] || fail "/usr/sbin/mapwatch mode"
[ "$(stat -c '%U %a' /etc/mapwatch/mapwatch.toml)" = "root 644" ] || fail "config owner/mode"
[ -d /etc/mapwatch/rules.d ] || fail "/etc/mapwatch/rules.d not created"
dpkg-query -W -f='${Conffiles}\n' mapwatch | grep -q /etc/mapwatch/mapwatch.toml || fail "config is not a conffile"
dpkg-query -W -f='${Conffiles}\n' mapwatch | grep -q /etc/audit/plugins.d/mapwatch.conf || fail "plugin config is not a conffile"
grep -qx 'active = no' /etc/audit/plugins.d/mapwatch.conf || fail "the auditd plugin must ship inactive"
mapwatch --version | grep -q "mapwatch $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" || fail "version"
mapwatch check-config || fail "check-config on the packaged config"
man -w mapwatch > /dev/null || fail "man page"

step "systemd unit"
unit=/usr/lib/systemd/system/mapwatch.service
systemd-analyze verify "$unit" || fail "systemd-analyze verify"
exposure=$(systemd-analyze security --offline=true "$unit" 2>&1 | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
echo "exposure: $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 3.0) }' || fail "exposure $exposure above 3.0"
# With metrics on: the endpoint needs nothing the unit lacks (AF_INET and
# AF_UNIX are allowed); the textfile needs its directory writable.
with_metrics=$(mktemp -d)/mapwatch.service
sed 's|^LogsDirectoryMode=0750$|&\nReadWritePaths=/var/lib/prometheus/node-exporter|' "$unit" > "$with_metrics"
grep -q '^ReadWritePaths=' "$with_metrics" || fail "the metrics drop-in was not applied"
exposure_metrics=$(systemd-analyze security --offline=true "$with_metrics" 2>&1 | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
echo "exposure with the metrics textfile: $exposure_metrics"
awk -v e="$exposure_metrics" 'BEGIN { exit !(e != "" && e <= 3.0) }' || fail "exposure with metrics $exposure_metrics above 3.0"

step "run as the service would (the unit's ExecStart, no systemd here)"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
log=$(mktemp)
$exec_start 2> "$log" &
pid=$!
for _ in $(seq 100); do grep -q ready "$log" && break; sleep 0.1; done
grep -q ready "$log" || { cat "$log"; fail "the service did not become ready"; }
sleep 60 & target=$!
setsid -f bash -c "sleep 0.2; cat /proc/$target/maps > /dev/null"
for _ in $(seq 100); do grep -q "/proc/$target/maps" /var/log/mapwatch/alerts.json 2>/dev/null && break; sleep 0.1; done
grep -q "/proc/$target/maps" /var/log/mapwatch/alerts.json || { cat "$log"; fail "no alert in /var/log/mapwatch/alerts.json"; }
[ "$(stat -c %a /var/log/mapwatch/alerts.json)" = 600 ] || fail "alert file mode"
kill -TERM "$pid"; wait "$pid" || fail "the service did not exit cleanly"
kill "$target" 2>/dev/null || true
auditctl -l 2>/dev/null | grep -q mapwatch && fail "rules left behind"
rm -f "$log"

step "remove keeps the configuration; purge deletes it"
dpkg -r mapwatch
[ -f /etc/mapwatch/mapwatch.toml ] || fail "remove deleted the configuration"
[ ! -e /usr/sbin/mapwatch ] || fail "remove left the binary"
dpkg -P mapwatch
[ ! -e /etc/mapwatch ] || fail "purge left /etc/mapwatch"
[ ! -e /var/log/mapwatch ] || fail "purge left /var/log/mapwatch"

step "the .rpm"
files=$(rpm -qlp "$rpm_file")
for f in /usr/sbin/mapwatch /etc/mapwatch/mapwatch.toml /usr/lib/systemd/system/mapwatch.service /usr/share/man/man8/mapwatch.8.gz; do
    grep -qx "$f" <<<"$files" || fail "$f missing from $rpm_file"
done
rpm -qp --configfiles "$rpm_file" | grep -qx /etc/mapwatch/mapwatch.toml || fail "config is not %config in the rpm"
rpm -qp --scripts "$rpm_file" | grep -q "systemctl enable --now mapwatch.service" || fail "rpm scripts"

echo "packaging check passed: $deb, $rpm_file, exposure $exposure"
