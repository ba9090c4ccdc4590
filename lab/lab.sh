#!/usr/bin/env bash
# Lab hosts: systemd containers under podman on a network of their own.
#   lab/lab.sh up      create (or reuse) the network and the hosts, wait for systemd
#   lab/lab.sh down    remove the hosts and the network, nothing else
#   lab/lab.sh status  list them
# Containers are named warren-lab-<host>, with <host> as hostname and DNS alias, so nodes
# resolve each other by short name (rabbit@rmq1 ...). Leftovers from an earlier run are reused
# when running, restarted when stopped.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
image=${WARREN_LAB_IMAGE:-localhost/warren-lab-base:latest}
network=${WARREN_LAB_NETWORK:-warren-lab}
prefix=warren-lab-
hosts=(rmq1 rmq2 rmq3 mon1 load1)
# Published on loopback only: the management UI of rmq1 (HTTPS).
declare -A publish=([rmq1]="127.0.0.1:15671:15671" [mon1]="127.0.0.1:9090-9093:9090-9093")

log() { printf '[lab] %s\n' "$*"; }

wait_systemd() {
  local c=$1 state
  for _ in $(seq 1 60); do
    state=$(podman exec "$c" systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) return 0 ;; esac
    sleep 1
  done
  log "$c: systemd did not finish booting (state: ${state:-unknown})"; return 1
}

up() {
  if ! podman network exists "$network"; then
    log "creating network $network"
    podman network create "$network" >/dev/null
  fi
  for h in "${hosts[@]}"; do
    c=$prefix$h
    if podman container exists "$c"; then
      if [ "$(podman inspect -f '{{.State.Running}}' "$c")" != "true" ]; then
        log "$h: starting existing container $c"
        podman start "$c" >/dev/null
      else
        log "$h: running ($c)"
      fi
    else
      log "$h: creating container $c"
      args=(run -d --name "$c" --hostname "$h" --network "$network" --network-alias "$h"
            --systemd=always --cap-add NET_ADMIN --label warren-lab=1)
      if [ -n "${publish[$h]:-}" ]; then args+=(-p "${publish[$h]}"); fi
      podman "${args[@]}" "$image" >/dev/null
    fi
  done
  for h in "${hosts[@]}"; do wait_systemd "$prefix$h"; done
  log "hosts up: ${hosts[*]} on network $network"
}

down() {
  for h in "${hosts[@]}"; do
    if podman container exists "$prefix$h"; then
      log "removing $prefix$h"
      podman rm -f -t 5 "$prefix$h" >/dev/null
    fi
  done
  if podman network exists "$network"; then
    log "removing network $network"
    podman network rm "$network" >/dev/null
  fi
  log "lab removed (the base image is kept for the next run)"
}

status() {
  podman ps -a --filter label=warren-lab=1 --format '{{.Names}}\t{{.Status}}\t{{.Ports}}'
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
