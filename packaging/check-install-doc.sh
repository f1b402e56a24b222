#!/usr/bin/env bash
# docs/install.md section 1 (the hall's broker), followed as written by a technician with
# sudo on a fresh Debian bookworm — the commands are read from the document itself:
#
#   ../shared/tools/fresh-debian bash packaging/check-install-doc.sh
#
# Only what a chroot cannot do is changed: the broker's address is 127.0.0.1 (not the
# example 192.168.10.2) and its ports are free ones (the chroot shares the host's
# network, where 1883 may be taken), mosquitto is started by hand instead of by
# systemctl, and the USB stick is a folder. Then a device's login over TLS with the CA carried over, the
# ACL refusing a device posing as another, and the loopback listener refusing devices.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
step() { printf '\n### %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
DOC=$PWD/docs/install.md
read -r TLS_PORT LOCAL_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')

# block SECTION N: the N-th ```sh block (from 1) under the heading SECTION.
block() {
    python3 - "$DOC" "$1" "$2" <<'EOF'
import sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
heading, n = sys.argv[2], int(sys.argv[3])
blocks, inside, fence, current = [], False, False, []
for line in lines:
    if line.startswith("```"):
        if fence and current is not None:
            blocks.append("\n".join(current) + "\n")
        fence, current = not fence, ([] if line == "```sh" and inside else None)
    elif fence:
        if current is not None:
            current.append(line)
    elif line.startswith("#"):
        inside = line == heading
print(blocks[n - 1].replace("192.168.10.2", "127.0.0.1"), end="")
EOF
}
ports() { sed -e "s/-p 8883 /-p $TLS_PORT /; s/-p 1883 /-p $LOCAL_PORT /"; }
as_tech() { (cd /home/tech && runuser -u tech -- bash -euo pipefail -c "$1"); }

step "build the server package; a technician with sudo"
./hcp package --arch amd64 --only hcp-server
server=$(ls "$PWD"/dist/hcp-server_*_amd64.deb)
apt-get install -y -qq sudo >/dev/null
useradd --create-home --shell /bin/bash tech
echo 'tech ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/tech
mkdir -p /media/usb && chown tech: /media/usb
# The technician answers apt's "Do you want to continue? [Y/n]" with Y.
echo 'APT::Get::Assume-Yes "true";' > /etc/apt/apt.conf.d/90technician-says-yes

step "1.1 the packages"
as_tech "$(block '### 1.1 The packages' 1 | sed "s#./hcp-server_0.1.0_arm64.deb#$server#")"

SECTION='### mosquitto with per-device users and a topic ACL'
step "the sample config"
as_tech "$(block "$SECTION" 1)"
sed -i -e "s/^listener 8883\$/listener $TLS_PORT/" -e "s/^listener 1883 /listener $LOCAL_PORT /" \
    /etc/mosquitto/mosquitto.conf
grep -q "^listener $TLS_PORT\$" /etc/mosquitto/mosquitto.conf || fail "sample listeners changed"
grep -q "^listener $LOCAL_PORT 127.0.0.1\$" /etc/mosquitto/mosquitto.conf || fail "sample listeners changed"
step "certificates"
as_tech "$(block "$SECTION" 2)"
sudo test -f /etc/mosquitto/certs/broker.key || fail "broker.key not in /etc/mosquitto/certs"
step "ca.key off the broker, ca.crt to the stick"
as_tech "$(block "$SECTION" 3)"
{ [ -f /media/usb/ca.crt ] && [ -f /media/usb/hall-HG01-ca.key ]; } || fail "stick"
step "users"
printf '421100-HG01-W03\n421100-HG01-W04\n' > /home/tech/devices.txt
as_tech "$(block "$SECTION" 4)"
for u in hcp-bridge-1 hcp-bridge-1-expired hcp-bridge-2 hcp-watch hcp-platform hcp-forget; do
    grep -q "^$u:" /etc/mosquitto/hcp-services.passwd || fail "$u not created"
done
[ "$(sed -n 's/^hcp-bridge-1://p' /home/tech/services.plain)" = \
  "$(sed -n 's/^hcp-bridge-1-expired://p' /home/tech/services.plain)" ] \
    || fail "hcp-bridge-1 and its forwarder do not share bridge.toml's password"
grep -q '^421100-HG01-W03:' /etc/mosquitto/hcp-services.passwd && fail "a device on loopback"

step "mosquitto with the sample config (systemctl restart mosquitto, by hand)"
install -d -o mosquitto -g mosquitto /run/mosquitto
mosquitto -c /etc/mosquitto/mosquitto.conf > /tmp/mosquitto.log 2>&1 &
# It must die with this script: the chroot shares the host's processes, and a broker left
# running keeps fresh-debian's output pipe open (its caller then waits for ever).
mosquitto_pid=$!
trap 'kill "$mosquitto_pid" 2>/dev/null || true' EXIT
for port in "$TLS_PORT" "$LOCAL_PORT"; do
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.2
    done
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { cat /tmp/mosquitto.log; fail "nothing on $port"; }
done
cat /tmp/mosquitto.log

step "the services' login on loopback"
monitor=$(sed -n 's/^hcp-monitor://p' /home/tech/services.plain)
as_tech "$(block "$SECTION" 6 | ports | sed "s#<its password>#$monitor#")" > /tmp/sub.log 2>&1 || true
cat /tmp/sub.log
grep -q 'received CONNACK (0)' /tmp/sub.log || fail "hcp-monitor refused on loopback"

step "the devices into the dynamic-security plugin"
as_tech "$(block "$SECTION" 7 | ports)" > /tmp/dynsec.log 2>&1 || { cat /tmp/dynsec.log; fail "adding the devices"; }
cat /tmp/dynsec.log
grep -q '"error"' /tmp/dynsec.log && fail "the plugin refused a command"
[ "$(grep -c '"createClient"' /tmp/dynsec.log)" = 2 ] || fail "not every device was created"

step "a device: the CA from the stick, its password, the broker's checks"
install -d /etc/hcp
install -m 0644 /media/usb/ca.crt /etc/hcp/ca.crt
sed -n 's/^421100-HG01-W03://p' /home/tech/devices.plain > /etc/hcp/mqtt.password
out=$(as_tech "$(block '### 2.6 Check, then start' 3 | ports | sed 's/mosquitto_sub /mosquitto_sub -W 3 /')" 2>&1) || true
echo "$out"
grep -q 'received CONNACK (0)' <<<"$out" || fail "device refused over TLS"
grep -q 'received SUBACK' <<<"$out" || fail "device could not subscribe"
out=$(as_tech "$(block '### 2.6 Check, then start' 4 | ports)" 2>&1) || true
echo "$out"
grep -q 'Not authorized' <<<"$out" || fail "posing as another device was not refused"
out=$(mosquitto_sub -h 127.0.0.1 -p "$TLS_PORT" --cafile /etc/hcp/ca.crt -V mqttv5 -d -W 3 \
      -u 421100-HG01-W03 -P "$(cat /etc/hcp/mqtt.password)" -t '$share/bridge/hcp/v1/+/rating' 2>&1) || true
echo "$out"
grep -q 'Subscribed (mid: 1): 135' <<<"$out" || fail "a device joined the bridges' shared subscription"
device_pw=$(cat /etc/hcp/mqtt.password)
out=$(mosquitto_sub -h 127.0.0.1 -p "$LOCAL_PORT" -V mqttv5 -d -W 3 -u 421100-HG01-W03 -P "$device_pw" \
      -i 421100-HG01-W04 -t x 2>&1) || true
echo "$out"
grep -q 'received CONNACK (0)' <<<"$out" && fail "a device logged in on loopback"

step "on loopback a service asking for the device's client id gets its own"
mosquitto_sub -h 127.0.0.1 -p "$TLS_PORT" --cafile /etc/hcp/ca.crt -V mqttv5 -W 8 \
    -u 421100-HG01-W03 -i 421100-HG01-W03 -P "$device_pw" \
    -t 'hcp/v1/421100-HG01-W03/receipt' > /tmp/device-sub.log 2>&1 &
device=$!
taken=$(grep -c 'already connected' /tmp/mosquitto.log || true)
seen=$(grep -c "as 421100-HG01-W03 (" /tmp/mosquitto.log || true)
monitors=$(grep -c "as hcp-monitor (" /tmp/mosquitto.log || true)
for _ in $(seq 50); do
    [ "$(grep -c "as 421100-HG01-W03 (" /tmp/mosquitto.log)" -gt "$seen" ] && break
    sleep 0.1
done
out=$(mosquitto_sub -h 127.0.0.1 -p "$LOCAL_PORT" -V mqttv5 -d -W 2 -u hcp-monitor -P "$monitor" \
      -i 421100-HG01-W03 -t 'hcp/v1/#' 2>&1) || true
echo "$out"
grep -q 'received CONNACK (0)' <<<"$out" || fail "hcp-monitor refused on loopback"
[ "$(grep -c "as hcp-monitor (" /tmp/mosquitto.log)" -gt "$monitors" ] \
    || fail "the monitor was not given its own client id"
[ "$(grep -c 'already connected' /tmp/mosquitto.log || true)" = "$taken" ] \
    || { tail -5 /tmp/mosquitto.log; fail "a service on loopback threw the device off"; }
kill "$device" 2>/dev/null || true

echo
echo "check-install-doc: all steps passed"
