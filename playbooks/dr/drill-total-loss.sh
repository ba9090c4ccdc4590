#!/usr/bin/env bash
# Total-loss drill in the lab (`make dr-drill`): every broker host is destroyed and recreated
# blank, then playbooks/dr-restore.yml brings the cluster back from the newest verified backup.
#
#   1. take a backup and verify it (not part of the RTO: it exists before a disaster);
#   2. destroy the broker containers warren-lab-rmq1..3 (mon1, the backup runner, stays: that
#      is why the backups live off the brokers) and recreate them blank (lab/lab.sh up);
#   3. dr-restore.yml: site.yml, import, health gate, canary; it prints the RTO per phase.
# DR_DRILL_BACKUP=0 skips step 1 (the newest verified backup in the store is restored).
# Holds the lab lock (/tmp/warren-lab.lock) for the whole run. If the restore fails, it runs
# site.yml again so the lab is left with a working cluster, and exits non-zero.
# Report: .build/dr/total-loss-<UTC>.json (dr-restore.yml's report plus the destroy/recreate time).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export CONTAINERS_CONF="$root/lab/containers.conf"
export ANSIBLE_CONFIG="$root/ansible.cfg"
bin="$root/.venv/bin"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$root/.build/dr"
mkdir -p "$out"
log="$out/total-loss-$stamp.log"
report="$out/total-loss-$stamp.json"
brokers=(rmq1 rmq2 rmq3)

secs() { local d=$(( ($2 - $1) / 100000000 )); printf '%d.%d' $((d / 10)) $((d % 10)); }
say() { printf '[dr-drill] %s\n' "$*"; }
play() { "$bin/ansible-playbook" -i inventories/lab "$@" >>"$log" 2>&1; }

# The lock is held by flock(1) itself (--close: this script gets no descriptor of it). A
# descriptor held by the script would be inherited by what it starts - podman's conmon for each
# recreated container lives as long as the container - and hold the lab lock forever.
if [ -z "${WARREN_DR_DRILL_LOCKED:-}" ]; then
  say "waiting for the lab lock"
  exec env WARREN_DR_DRILL_LOCKED=1 flock --close /tmp/warren-lab.lock "$0" "$@"
fi
say "lock held; log: $log"

if [ "${DR_DRILL_BACKUP:-1}" = 1 ]; then
  say "1/3 backup and verification (before the disaster, not part of the RTO)"
  play playbooks/backup.yml || { say "backup failed, nothing destroyed (see $log)"; exit 1; }
  play playbooks/backup-verify.yml || { say "verification failed, nothing destroyed (see $log)"; exit 1; }
else
  say "1/3 skipped (DR_DRILL_BACKUP=0): restoring the newest verified backup already stored"
fi

say "2/3 destroying ${brokers[*]} and recreating them blank"
t0=$(date +%s%N)
for h in "${brokers[@]}"; do podman rm -f -t 5 "warren-lab-$h" >/dev/null; done
t_destroyed=$(date +%s%N)
lab/lab.sh up >>"$log" 2>&1
t_blank=$(date +%s%N)
for h in "${brokers[@]}"; do
  if podman exec "warren-lab-$h" test -e /usr/sbin/rabbitmq-server; then say "$h is not blank?"; exit 1; fi
done
say "   blank hosts up after $(secs "$t0" "$t_blank") s (destroy $(secs "$t0" "$t_destroyed") s)"

say "3/3 dr-restore.yml (site.yml, import, health gate, canary)"
if ! play playbooks/dr-restore.yml -e "warren_dr_report_file=$report.restore"; then
  say "RESTORE FAILED (see $log); re-running site.yml so the lab has a working cluster"
  play playbooks/site.yml || say "site.yml failed too: run 'make lab' by hand"
  exit 1
fi
t_end=$(date +%s%N)

"$bin/python" - "$report.restore" "$report" "$t0" "$t_blank" "$t_end" <<'PY'
import json, sys
src, dst, t0, t_blank, t_end = sys.argv[1], sys.argv[2], *(int(x) / 1e9 for x in sys.argv[3:])
r = json.load(open(src))
r["drill"] = {"destroy_and_recreate_seconds": round(t_blank - t0, 1),
              "restore_wall_seconds": round(t_end - t_blank, 1),
              "destroy_to_canary_ok_seconds": round(t_end - t0, 1)}
json.dump(r, open(dst, "w"), indent=2)
p = r["phases_seconds"]
print("[dr-drill] backup      %s (verified: %s)" % (r["backup"], r["backup_verified"]))
print("[dr-drill] phases      select %s s | deploy (site.yml) %s s | import %s s | health %s s | canary %s s"
      % (p["select"], p["deploy"], p["import"], p["health"], p["canary"]))
print("[dr-drill] RTO         %s s from blank hosts to canary OK (goal 300 s: %s)"
      % (r["rto_seconds"], "met" if float(r["rto_seconds"]) <= 300 else "NOT met"))
print("[dr-drill] +recreate   %s s to destroy and recreate the hosts (lab only); destroy to canary OK %s s"
      % (r["drill"]["destroy_and_recreate_seconds"], r["drill"]["destroy_to_canary_ok_seconds"]))
PY
rm -f "$report.restore"
say "report: $report"
