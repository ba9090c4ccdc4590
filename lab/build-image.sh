#!/usr/bin/env bash
# Build the lab base image: a debootstrapped Debian 13 (trixie) with systemd and python3,
# imported into podman. Rebuilt only when this recipe changes: the image is tagged with a hash
# of this file, so an unchanged recipe finds its image and exits at once.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
name=${WARREN_LAB_IMAGE_NAME:-localhost/warren-lab-base}
suite=trixie
packages=systemd,systemd-sysv,dbus,python3,python3-apt,iproute2,sudo,procps,ca-certificates,gnupg,curl,nftables,less,openssh-server
tag=$(cat "$0" | sha256sum | cut -c1-12)

log() { printf '[lab-image] %s\n' "$*"; }

if podman image exists "$name:$tag"; then
  log "image $name:$tag is up to date"
  podman tag "$name:$tag" "$name:latest"
  exit 0
fi

# Use the same Debian mirror as the host's own apt sources: this machine can reach only that.
mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
  | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
mirror=${WARREN_LAB_MIRROR:-${mirror:-http://deb.debian.org/debian}}

rootfs=$(mktemp -d /var/tmp/warren-rootfs.XXXXXX)
chmod 755 "$rootfs"
trap 'rm -rf "$rootfs"' EXIT

log "debootstrap $suite from $mirror (about a minute)"
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
  || { tail -n 30 "$rootfs.log"; log "debootstrap failed; full log in $rootfs.log"; exit 1; }
rm -f "$rootfs.log"

# A systemd container has no console login or udev; mask what would only fail or wait.
for unit in getty@tty1.service console-getty.service systemd-udevd.service systemd-udev-trigger.service \
            systemd-networkd-wait-online.service systemd-resolved.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
# sshd, for scenarios that reach their hosts the way real VMs are reached (molecule/production).
# Host keys are made per container at first boot, never baked into the shared image.
rm -f "$rootfs"/etc/ssh/ssh_host_*
mkdir -p "$rootfs/etc/systemd/system/ssh.service.d"
cat > "$rootfs/etc/systemd/system/ssh.service.d/warren-lab-hostkeys.conf" <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
# Pre-fetch (not install) the packages warren's roles install, so lab and Molecule hosts install
# them from the image's own apt cache instead of downloading them again on every run. The roles
# still run the real apt install.
prefetch="rabbitmq-server prometheus prometheus-alertmanager prometheus-node-exporter python3-pika python3-prometheus-client python3-venv age rsync cron logrotate"
chroot "$rootfs" apt-get update -qq >/dev/null
log "pre-fetching packages: $prefetch"
chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --download-only $prefetch >/dev/null
echo "warren-lab-base $tag" > "$rootfs/etc/warren-lab-image"

log "importing into podman as $name:$tag"
tar -C "$rootfs" -c . | podman import --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$name:$tag" >/dev/null
podman tag "$name:$tag" "$name:latest"
# Drop older builds of this image so they do not pile up.
podman images --format '{{.Repository}}:{{.Tag}}' | grep -E "^$name:[0-9a-f]{12}$" | grep -v ":$tag$" \
  | xargs -r podman rmi >/dev/null 2>&1 || true
log "built $name:$tag"
