#!/usr/bin/env bash
# Lab hosts: systemd containers under podman on a network of their own.
#   lab/lab.sh up      create (or reuse) the network and the hosts, wait for systemd
#   lab/lab.sh down    remove the hosts and the network, nothing else
#   lab/lab.sh status  list them
# Hosts and their containers come from inventories/lab (ansible_host is the container), with the
# inventory name as hostname and DNS alias, so nodes
# resolve each other by short name (rabbit@rmq1 ...). Leftovers from an earlier run are reused
# when running, restarted when stopped.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
image=${WARREN_LAB_IMAGE:-localhost/warren-lab-base:latest}
network=${WARREN_LAB_NETWORK:-warren-lab}
root=$(cd "$here/.." && pwd)
inventory=${WARREN_LAB_INVENTORY:-$root/inventories/lab}
ansible_inventory=${ANSIBLE_INVENTORY_BIN:-$root/.venv/bin/ansible-inventory}

# The hosts come from the lab inventory, the one place they are named: each host's container is
# its ansible_host, its hostname (and DNS alias) the inventory name, and warren_lab_publish lists
# the ports it publishes on the machine's loopback.
declare -a hosts=()
declare -A container=() publish=()
while IFS=$'\t' read -r h c p; do
  hosts+=("$h"); container[$h]=$c; publish[$h]=$p
done < <("$ansible_inventory" -i "$inventory" --list 2>/dev/null | python3 -c '
import json, sys
inv = json.load(sys.stdin)
hv = inv.get("_meta", {}).get("hostvars", {})
seen = []
def walk(group):
    g = inv.get(group, {})
    for h in g.get("hosts", []):
        if h not in seen:
            seen.append(h)
    for child in g.get("children", []):
        walk(child)
walk("all")
for h in seen:
    v = hv.get(h, {})
    print("\t".join([h, v.get("ansible_host", "warren-lab-" + h), " ".join(v.get("warren_lab_publish", []))]))
')
if [ "${#hosts[@]}" -eq 0 ]; then
  echo "[lab] no hosts found in $inventory (is $ansible_inventory installed? run: make venv)" >&2
  exit 1
fi

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
    c=${container[$h]}
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
            --systemd=always --cap-add NET_ADMIN --label warren-lab=1 --label "warren-lab-network=$network")
      for p in ${publish[$h]}; do args+=(-p "$p"); done
      podman "${args[@]}" "$image" >/dev/null
    fi
  done
  for h in "${hosts[@]}"; do wait_systemd "${container[$h]}"; done
  log "hosts up: ${hosts[*]} on network $network"
}

down() {
  # The inventory's hosts, and any container this lab made on its network (label) for a host
  # since dropped from the inventory.
  local names
  names=$( { for h in "${hosts[@]}"; do echo "${container[$h]}"; done
             podman ps -a --filter "label=warren-lab-network=$network" --format '{{.Names}}'; } | sort -u)
  for c in $names; do
    if podman container exists "$c"; then
      log "removing $c"
      podman rm -f -t 5 "$c" >/dev/null
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
