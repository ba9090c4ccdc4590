#!/usr/bin/env python3
"""Node-state sampler of a warren drill (runs on a loadgen host, standard library only).

Once a second it asks every broker's own management API how that node is, and asks the
reachable nodes which node leads the workload queue. One JSON line per sample:

  {"ts": 1764750000.12, "node": "rabbit@rmq1", "state": "running", "ms": 12, "detail": ""}
  {"ts": 1764750000.15, "leader": "rabbit@rmq2", "via": "rabbit@rmq3"}

States: running, alarm (memory or disk alarm on), partitioned (it lists unreachable peers),
down (connection refused: the rabbit app or the node is stopped, e.g. paused by pause_minority),
unresponsive (no answer within the timeout: SIGSTOP, overload), error (any other answer).

Bounded: it stops after --max-seconds, or as soon as the --stop file exists.

    python3 drill_sampler.py --config sampler.json --out samples.jsonl --max-seconds 900 --stop STOPFILE
"""

import argparse
import base64
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request


def _request(url, auth, context, timeout):
    req = urllib.request.Request(url, headers={'Authorization': 'Basic ' + auth})
    with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
        return json.loads(resp.read().decode('utf-8'))


def classify(doc):
    """Map one /api/nodes/<node> document to (state, detail)."""
    if not doc.get('running', False):
        return 'down', 'not running'
    if doc.get('partitions'):
        return 'partitioned', 'cannot reach ' + ', '.join(doc['partitions'])
    alarms = [name for key, name in (('mem_alarm', 'memory'), ('disk_free_alarm', 'disk')) if doc.get(key)]
    if alarms:
        return 'alarm', ' '.join(alarms) + ' alarm'
    return 'running', ''


def probe_node(broker, auth, context, timeout):
    """Ask the node itself; returns (state, detail)."""
    url = '%s/api/nodes/%s?memory=false&binary=false' % (broker['url'], urllib.parse.quote(broker['node'], safe=''))
    try:
        return classify(_request(url, auth, context, timeout))
    except urllib.error.HTTPError as exc:
        return 'error', 'HTTP %s' % exc.code
    except (socket.timeout, TimeoutError):
        return 'unresponsive', 'no answer in %ss' % timeout
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return 'unresponsive', 'no answer in %ss' % timeout
        if isinstance(reason, ConnectionRefusedError):
            return 'down', 'connection refused'
        return 'error', str(reason)[:120]
    except (OSError, ValueError) as exc:
        return 'error', str(exc)[:120]


def probe_leader(broker, queue_path, auth, context, timeout):
    url = '%s/api/queues/%s?disable_stats=true' % (broker['url'], queue_path)
    try:
        doc = _request(url, auth, context, timeout)
    except (OSError, ValueError):
        return None
    return doc.get('leader') or doc.get('node')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', required=True, help='JSON: brokers [{node, url}], user, password, ca_file, vhost, queue')
    parser.add_argument('--out', required=True)
    parser.add_argument('--max-seconds', type=float, default=900)
    parser.add_argument('--stop', required=True, help='stop as soon as this file exists')
    parser.add_argument('--interval', type=float, default=1.0)
    parser.add_argument('--timeout', type=float, default=2.0)
    args = parser.parse_args(argv)

    with open(args.config, encoding='utf-8') as handle:
        cfg = json.load(handle)
    auth = base64.b64encode(('%s:%s' % (cfg['user'], cfg['password'])).encode()).decode()
    context = ssl.create_default_context(cafile=cfg['ca_file']) if cfg.get('ca_file') else None
    queue_path = None
    if cfg.get('queue'):
        queue_path = '%s/%s' % (urllib.parse.quote(cfg.get('vhost', '/'), safe=''), urllib.parse.quote(cfg['queue'], safe=''))

    deadline = time.monotonic() + args.max_seconds
    lock = threading.Lock()
    with open(args.out, 'a', encoding='utf-8') as out:
        def write(line):
            with lock:
                out.write(json.dumps(line, sort_keys=True) + '\n')
                out.flush()

        def sample(broker):
            started = time.time()
            state, detail = probe_node(broker, auth, context, args.timeout)
            write(dict(ts=round(started, 3), node=broker['node'], state=state, detail=detail,
                       ms=int((time.time() - started) * 1000)))
            return state

        while time.monotonic() < deadline and not os.path.exists(args.stop):
            tick = time.monotonic()
            threads = [threading.Thread(target=sample, args=(b,), daemon=True) for b in cfg['brokers']]
            for t in threads:
                t.start()
            if queue_path:
                for broker in cfg['brokers']:
                    leader = probe_leader(broker, queue_path, auth, context, min(args.timeout, 1.0))
                    if leader:
                        write(dict(ts=round(time.time(), 3), leader=leader, via=broker['node']))
                        break
            for t in threads:
                t.join(args.timeout + 1)
            time.sleep(max(0.0, args.interval - (time.monotonic() - tick)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
