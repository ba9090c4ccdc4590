#!/bin/bash
# Lab proof that playbooks/loadtest.yml deletes its test queues when a run fails half-way (the
# rescue of its runs play). Creates a queue named like a test queue, runs the load test with a
# run that fails, and checks the queue is gone. Run under the lab lock:
#   flock -o /tmp/warren-lab.lock tests/lab/loadtest_cleanup.sh
# Prints the HTTP status after the run: 404 = deleted (the rescue worked).
set -u
cd "$(dirname "$0")/../.."
P=$(cat .lab/state/admin_password)
API=https://127.0.0.1:15671/api
C="curl -sS --cacert .lab/state/ca/ca.pem -u admin:$P"
Q=warren.loadtest.leftover.0
echo "create $Q:"; $C -X PUT -H 'content-type: application/json' -d '{"durable":true,"arguments":{"x-queue-type":"quorum"}}' -w '%{http_code}\n' "$API/queues/warren/$Q"
export ANSIBLE_CONFIG=$PWD/ansible.cfg
.venv/bin/ansible-playbook -i inventories/lab playbooks/loadtest.yml -e loadtest_check_steady_state=false -e loadtest_install_generator=false \
  -e '{"loadtest_runs":[{"name":"fail","params":{"queue_type":"bogus","rates":[10],"step_seconds":5}}]}' > .build/loadtest-cleanup-proof.log 2>&1
echo "playbook rc=$?"
grep -E 'failed in|deleted|fatal|PLAY RECAP' -A0 .build/loadtest-cleanup-proof.log | tail -8
echo "after: $($C -o /dev/null -w '%{http_code}' "$API/queues/warren/$Q")  (404 = deleted)"
