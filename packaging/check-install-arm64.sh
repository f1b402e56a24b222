#!/usr/bin/env bash
# The arm64 device package installed in a Debian bookworm arm64 root, run through
# qemu-user on an amd64 machine: the closest to a Pi without a Pi.
#
#   sudo packaging/check-install-arm64.sh [dist/hcp-device_<version>_arm64.deb]
#
# Needs root, and installs Debian's qemu-user-static, binfmt-support and debootstrap on
# this machine (registering qemu for foreign binaries system-wide). The arm64 base is
# built once (about ten minutes under emulation) and kept in /var/tmp/hcp-arm64-base;
# every run starts from a copy of it. Not part of the test suite: it changes the machine.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "check-install-arm64: needs root" >&2; exit 2; }
cd "$(dirname "$0")/.."
debs=(dist/hcp-device_*_arm64.deb) fonts=(dist/fonts-wqy-zenhei_*_all.deb)
deb=${1:-${debs[-1]}}
font=${fonts[-1]}
base=/var/tmp/hcp-arm64-base
export DEBIAN_FRONTEND=noninteractive

for tool in qemu-aarch64-static update-binfmts debootstrap; do
    command -v "$tool" >/dev/null || {
        apt-get update -qq
        apt-get install -y -qq qemu-user-static binfmt-support debootstrap >/dev/null
        break
    }
done
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true

if [ ! -f "$base/.ready" ]; then
    rm -rf "$base"
    debootstrap --arch=arm64 --variant=minbase --include=python3,ca-certificates bookworm \
        "$base" http://deb.debian.org/debian >/dev/null
    printf '#!/bin/sh\nexit 101\n' > "$base/usr/sbin/policy-rc.d"
    chmod +x "$base/usr/sbin/policy-rc.d"
    touch "$base/.ready"
fi

root=$(mktemp -d /var/tmp/hcp-arm64.XXXXXX)
cleanup() {
    for m in dev/pts dev sys proc; do umount -l "$root/$m" 2>/dev/null || true; done
    rm -rf "$root"
}
trap cleanup EXIT
cp -a "$base/." "$root/"
cp /etc/resolv.conf "$root/etc/resolv.conf"
for m in proc sys dev dev/pts; do mount --bind "/$m" "$root/$m"; done
cp "$deb" "$font" "$root/root/"
cat > "$root/root/check.sh" <<EOF
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
echo "machine \$(uname -m), \$(python3 --version)"
apt-get update -qq
apt-get install -y -qq ./$(basename "$deb") ./$(basename "$font") >/dev/null
hcp-device --version
/opt/hcp/device/venv/bin/python -c 'import lgpio, PIL, luma.oled, gpiozero, serial, tinydb, paho.mqtt
print("imports: lgpio", lgpio.__file__.rsplit("/", 2)[-2], "Pillow", PIL.__version__)'
install -m 0644 /dev/null /etc/hcp/ca.crt
printf 'secret\n' | install -m 0640 -g hcp-device /dev/stdin /etc/hcp/mqtt.password
runuser -u hcp-device -- hcp-device check-config --config /etc/hcp/device.toml
out=\$(systemd-analyze verify /lib/systemd/system/hcp-device.service 2>&1)
[ -z "\$out" ] || { echo "verify: \$out"; exit 1; }
echo "check-install-arm64: all steps passed"
EOF
chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    bash -c 'cd /root && bash check.sh'
