#!/usr/bin/env bash
# The offline installer on a fresh Debian bookworm, as a technician uses it:
#
#   ../shared/tools/fresh-debian bash packaging/check-install.sh
#
# builds the amd64 packages, installs hcp-device with apt, checks its config and unit,
# upgrades it twice (the same version again, then a newer one) keeping a stored outbox
# file and an edited config, installs hcp-server, and removes and purges both (data
# kept unless HCP_PURGE_DATA=yes). Any failed step stops the run with its line.
# tests/test_package.py runs it; docs/packaging.md records a run.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
step() { printf '\n### %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

step "build"
./hcp package --arch amd64
device=$(ls dist/hcp-device_*_amd64.deb)
server=$(ls dist/hcp-server_*_amd64.deb)
font=$(ls dist/fonts-wqy-zenhei_*_all.deb)

step "no python3-venv, no pip on the target"
apt-get remove -y -qq python3-venv python3.11-venv >/dev/null
python3 -c 'import ensurepip' 2>/dev/null && fail "ensurepip still there"
python3 -m pip --version 2>/dev/null && fail "a system pip is there"

step "install hcp-device (apt pulls systemd from the archive: this chroot lacks it)"
apt-get install -y -qq "./$device" "./$font" >/dev/null
test -x /opt/hcp/device/venv/bin/hcp-device || fail "no venv"
hcp-device --version
id hcp-device
stat -c '%U:%G %a %n' /etc/hcp/device.toml /var/lib/hcp-device
systemctl is-enabled hcp-device.service && fail "enabled before the config was edited"

step "check-config with the technician's secrets in place"
hcp-device check-config --config /etc/hcp/device.toml && fail "OK without ca.crt and password"
install -m 0644 /dev/null /etc/hcp/ca.crt
printf 'secret\n' | install -m 0640 -g hcp-device /dev/stdin /etc/hcp/mqtt.password
hcp-device check-config --config /etc/hcp/device.toml
runuser -u hcp-device -- hcp-device check-config --config /etc/hcp/device.toml

step "systemd-analyze verify on the installed unit"
out=$(systemd-analyze verify /lib/systemd/system/hcp-device.service 2>&1) || fail "$out"
[ -z "$out" ] || fail "verify said: $out"
systemd-analyze security --offline=yes --no-pager hcp-device.service | tail -n 1

step "upgrade over itself keeps the outbox and the edited config"
printf 'a stored rating\n' > /var/lib/hcp-device/outbox.test
chown hcp-device: /var/lib/hcp-device/outbox.test
sed -i 's/^window_name = .*/window_name = "edited by the technician"/' /etc/hcp/device.toml
venv_before=$(readlink /opt/hcp/device/venv)
dpkg -i "$device" >/dev/null
[ "$(readlink /opt/hcp/device/venv)" != "$venv_before" ] || fail "venv not rebuilt"
[ ! -e "/opt/hcp/device/$venv_before" ] || fail "old venv left behind"
grep -q 'a stored rating' /var/lib/hcp-device/outbox.test || fail "outbox lost"
grep -q 'edited by the technician' /etc/hcp/device.toml || fail "config edit lost"
hcp-device check-config --config /etc/hcp/device.toml

step "upgrade to a newer version keeps them too"
rm -rf /tmp/newer && dpkg-deb -R "$device" /tmp/newer
sed -i 's/^Version: \(.*\)/Version: \1+1/' /tmp/newer/DEBIAN/control
dpkg-deb --root-owner-group -b /tmp/newer /tmp/hcp-device-newer.deb >/dev/null
apt-get install -y -qq /tmp/hcp-device-newer.deb >/dev/null
dpkg-query -W hcp-device
grep -q 'a stored rating' /var/lib/hcp-device/outbox.test || fail "outbox lost"
grep -q 'edited by the technician' /etc/hcp/device.toml || fail "config edit lost"
stat -c '%U:%G %a %n' /etc/hcp/device.toml

step "install hcp-server beside it"
apt-get install -y -qq "./$server" >/dev/null
hcp-bridge --version
hcp-platform --help >/dev/null
for u in hcp-bridge hcp-bridge-watch hcp-bridge-expired; do
    out=$(systemd-analyze verify "/lib/systemd/system/$u.service" 2>&1) || fail "$u: $out"
    [ -z "$out" ] || fail "$u: verify said: $out"
done
printf 'secret\n' | install -m 0640 -g hcp-bridge /dev/stdin /etc/hcp/watch.password
runuser -u hcp-bridge -- /opt/hcp/server/venv/bin/python -c '
from broker_bridge.watch.config import load_watch_config
from broker_bridge.config import load_bridge_config
load_watch_config("/etc/hcp/watch.toml"); load_bridge_config("/etc/hcp/bridge.toml")
print("watch.toml and bridge.toml load")'

step "remove, then purge: data kept unless asked"
apt-get remove -y -qq hcp-device >/dev/null
[ ! -e /opt/hcp/device ] || fail "/opt/hcp/device left after remove"
[ -f /var/lib/hcp-device/outbox.test ] || fail "remove deleted the outbox"
apt-get purge -y -qq hcp-device
[ -f /var/lib/hcp-device/outbox.test ] || fail "purge deleted the outbox"
[ ! -e /etc/hcp/device.toml ] || fail "purge left the conffile"
HCP_PURGE_DATA=yes apt-get purge -y -qq hcp-server >/dev/null
[ ! -e /var/lib/hcp-bridge-watch ] || fail "HCP_PURGE_DATA=yes kept the data"
[ ! -e /opt/hcp ] || fail "/opt/hcp left after both purged"

echo
echo "check-install: all steps passed"
