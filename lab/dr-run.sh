#!/usr/bin/env bash
# One timed DR measurement in the lab, recorded: takes the lab lock (unless DR_RUN_NOLOCK=1, for
# commands that take it themselves, such as `make dr-drill`), notes the load average before and
# after, runs the command, and appends one JSON line to reports/dr/runs.jsonl:
#   {"label", "command", "start_utc", "end_utc", "wall_seconds", "rc", "load_before", "load_after", "log", "result"}
# "result" holds the output lines that match DR_RUN_GREP (an extended regular expression).
#
#   lab/dr-run.sh backup-1 .venv/bin/ansible-playbook -i inventories/lab playbooks/backup.yml
#
# The full output goes to .build/dr/<label>-<UTC>.log; the last lines are printed.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1
export CONTAINERS_CONF="$root/lab/containers.conf"
export ANSIBLE_CONFIG="$root/ansible.cfg"
label=${1:?usage: lab/dr-run.sh LABEL COMMAND...}
shift
[ "$#" -gt 0 ] || { echo "usage: lab/dr-run.sh LABEL COMMAND..." >&2; exit 2; }
mkdir -p .build/dr reports/dr
stamp=$(date -u +%Y%m%dT%H%M%SZ)
log=".build/dr/$label-$stamp.log"

# DR_RUN_WAIT=N: give up (exit 75, nothing run, nothing recorded) when the lock is not free within N s.
lock=(flock -o ${DR_RUN_WAIT:+-w "$DR_RUN_WAIT"} /tmp/warren-lab.lock)
[ "${DR_RUN_NOLOCK:-0}" = 1 ] && lock=()

printf '[dr-run] %s: waiting for the lab lock\n' "$label"
# The clock starts once the lock is held: the wrapper inside the lock records it.
"${lock[@]}" bash -c '
  printf "%s\n%s\n%s\n" "$(date -u +%FT%TZ)" "$(date +%s.%N)" "$(cut -d" " -f1-3 /proc/loadavg)" > "$0.start"
  "$@"; rc=$?
  printf "%s\n%s\n%s\n%s\n" "$(date -u +%FT%TZ)" "$(date +%s.%N)" "$(cut -d" " -f1-3 /proc/loadavg)" "$rc" > "$0.end"
  exit $rc' "$log" "$@" >"$log" 2>&1
if [ ! -e "$log.start" ]; then
  printf '[dr-run] %s: the lab lock was not free within %s s: not run\n' "$label" "${DR_RUN_WAIT:-}"
  exit 75
fi
{ read -r start_utc; read -r t0; read -r load_before; } <"$log.start"
{ read -r end_utc; read -r t1; read -r load_after; read -r rc; } <"$log.end"
rm -f "$log.start" "$log.end"

tail -n 15 "$log"
"$root/.venv/bin/python" - "$label" "$start_utc" "$end_utc" "$t0" "$t1" "$rc" "$load_before" "$load_after" "$log" \
  "${DR_RUN_GREP:-}" "$*" <<'PY'
import json, re, sys
label, start, end, t0, t1, rc, lb, la, log, pattern, command = sys.argv[1:]
result = []
if pattern:
    with open(log, errors="replace") as f:
        result = [line.strip() for line in f if re.search(pattern, line)][-12:]
rec = {"label": label, "command": command, "start_utc": start, "end_utc": end,
       "wall_seconds": round(float(t1) - float(t0), 1), "rc": int(rc),
       "load_before": lb, "load_after": la, "log": log, "result": result}
with open("reports/dr/runs.jsonl", "a") as f:
    f.write(json.dumps(rec) + "\n")
print("[dr-run] %s: rc=%s wall %.1f s, start %s, load %s -> %s"
      % (label, rc, rec["wall_seconds"], start, lb, la))
PY
exit "$rc"
