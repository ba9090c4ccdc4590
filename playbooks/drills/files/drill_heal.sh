#!/bin/sh
# Undo every warren drill fault on this RabbitMQ node. Idempotent: safe to run when nothing
# is injected. Run by the drills (always), by playbooks/drills/heal.yml, and by the node's own
# self-heal timer (warren-drill-heal.timer) when a drill's hard bound passes.
#   - the nftables table inet warren_drill (partition)
#   - a netem qdisc recorded in /run/warren-drill/netem_dev (latency)
#   - a stopped (SIGSTOP) Erlang VM (pause)
#   - a stopped rabbitmq-server (kill, majority_loss, full_restart): started, not waited for
#   - runtime disk/memory thresholds recorded in /run/warren-drill/ (alarms)
# Prints one line: "healed: <what was undone>" or "healed: nothing to undo". Exit 1 when a
# threshold could not be restored (the node did not come up within 180 s).
set -u
state=/run/warren-drill
did=""
rc=0

if command -v nft >/dev/null 2>&1 && nft list table inet warren_drill >/dev/null 2>&1; then
    nft delete table inet warren_drill && did="$did nftables"
fi

if [ -f "$state/netem_dev" ]; then
    dev=$(cat "$state/netem_dev")
    if tc qdisc show dev "$dev" 2>/dev/null | grep -q netem; then
        tc qdisc del dev "$dev" root && did="$did netem($dev)"
    fi
    rm -f "$state/netem_dev"
fi

pid=$(systemctl show -p MainPID --value rabbitmq-server 2>/dev/null || echo 0)
if [ "${pid:-0}" -gt 0 ] 2>/dev/null && grep -q '^State:[[:space:]]*T' "/proc/$pid/status" 2>/dev/null; then
    kill -CONT "$pid" && did="$did SIGCONT($pid)"
fi

if ! systemctl is-active --quiet rabbitmq-server && [ "$(systemctl is-active rabbitmq-server)" != activating ]; then
    # --no-block: after a full stop, nodes wait for each other's tables; starting them one
    # after another and waiting for each would deadlock.
    systemctl start --no-block rabbitmq-server && did="$did start"
fi

if [ -f "$state/disk_free_limit" ] || [ -f "$state/vm_memory_high_watermark" ]; then
    if timeout 180 sh -c 'until rabbitmq-diagnostics -q check_running >/dev/null 2>&1; do sleep 2; done'; then
        if [ -f "$state/disk_free_limit" ]; then
            rabbitmqctl -q set_disk_free_limit "$(cat "$state/disk_free_limit")" \
                && rm -f "$state/disk_free_limit" && did="$did disk_free_limit" || rc=1
        fi
        if [ -f "$state/vm_memory_high_watermark" ]; then
            # shellcheck disable=SC2046  # "0.4" or "absolute 123": the words are arguments
            rabbitmqctl -q set_vm_memory_high_watermark $(cat "$state/vm_memory_high_watermark") \
                && rm -f "$state/vm_memory_high_watermark" && did="$did vm_memory_high_watermark" || rc=1
        fi
    else
        echo "the node did not run within 180 s: thresholds in $state not restored" >&2
        rc=1
    fi
fi

# The self-heal timer is not needed any more (harmless if it is the one running this).
systemctl stop warren-drill-heal.timer >/dev/null 2>&1 || true

echo "healed:${did:- nothing to undo}"
exit $rc
