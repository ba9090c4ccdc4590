#!/usr/bin/env bash
# How a user outside this repository gets warren: the built tarball installed with
# `ansible-galaxy collection install` into a clean virtualenv holding ansible-core alone, its
# dependencies from requirements.yml, then site.yml (and every other playbook the collection
# ships) syntax-checked by FQCN against that install, from a folder outside the repository so
# none of the repository's own config or paths help.
#
# No Galaxy server is reachable here, so requirements.yml's collections are installed from the
# copies the pinned `ansible` package bundles in .venv (type: dir), and the warren tarball with
# --offline: ansible-galaxy must then find every dependency galaxy.yml declares already installed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$root/.build/package-test
bundled=$root/.venv/lib/python3.11/site-packages/ansible_collections
core=$(grep -E '^ansible-core==' "$root/requirements.txt" | cut -d= -f3)
log() { printf '[package] %s\n' "$*"; }

tarball=$(ls "$root"/.build/dist/warren-rabbitmq-*.tar.gz 2>/dev/null | tail -n1)
[ -n "$tarball" ] || { log "no tarball in .build/dist: run make build first"; exit 1; }
bundled=$("$root/.venv/bin/python" -c 'import ansible_collections; print(list(ansible_collections.__path__)[0])' 2>/dev/null \
  || echo "$bundled")

rm -rf "$work/collections" "$work/run"
mkdir -p "$work/run"
# Nothing of the repository's own Ansible setup may help: no ansible.cfg, no .build/collections
# link, no collections found on the Python path.
cd "$work/run"
printf '[defaults]\n' > ansible.cfg
export ANSIBLE_CONFIG=$work/run/ansible.cfg ANSIBLE_COLLECTIONS_PATH=$work/collections ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
if [ ! -x "$work/venv/bin/ansible-playbook" ] || ! "$work/venv/bin/python" -c "import ansible.release as r; assert r.__version__ == '$core'" 2>/dev/null; then
  log "clean virtualenv with ansible-core $core only"
  rm -rf "$work/venv"
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q "ansible-core==$core" 2>&1 | grep -v '^WARNING: Location' || true
fi
if "$work/venv/bin/python" -c 'import ansible_collections' 2>/dev/null; then
  log "the clean virtualenv must not hold the ansible package's collections"; exit 1
fi

log "requirements.yml, from the collections bundled with the pinned ansible package"
"$work/venv/bin/python" - "$root/requirements.yml" "$bundled" "$work/requirements-dir.yml" <<'PY'
import sys, os, yaml
src, bundled, out = sys.argv[1:]
reqs = yaml.safe_load(open(src))["collections"]
entries = []
for r in reqs:
    ns, name = r["name"].split(".")
    path = os.path.join(bundled, ns, name)
    if not os.path.isdir(path):
        sys.exit(f"[package] {r['name']} is not bundled in {bundled}")
    entries.append({"name": path, "type": "dir"})
yaml.safe_dump({"collections": entries}, open(out, "w"))
PY
"$work/venv/bin/ansible-galaxy" collection install -r "$work/requirements-dir.yml" -p "$work/collections" \
  >"$work/galaxy.log" 2>&1 || { cat "$work/galaxy.log"; exit 1; }

log "ansible-galaxy collection install --offline $(basename "$tarball")"
"$work/venv/bin/ansible-galaxy" collection install --offline "$tarball" -p "$work/collections" \
  >"$work/galaxy.log" 2>&1 || { cat "$work/galaxy.log"; exit 1; }
installed=$work/collections/ansible_collections/warren/rabbitmq
[ -f "$installed/MANIFEST.json" ] || { log "warren.rabbitmq did not install into $work/collections"; exit 1; }

# A minimal inventory of the groups the playbooks target; only the structure matters here.
cat > "$work/run/hosts.yml" <<'INV'
all:
  children:
    rabbitmq: {hosts: {mq-1: {}, mq-2: {}, mq-3: {}}}
    monitoring: {hosts: {mon-1: {}}}
    loadgen: {hosts: {load-1: {}}}
    backup_runner: {hosts: {ops-1: {}}}
INV
checked=0
for pb in $(cd "$installed/playbooks" && find . -name '*.yml' -not -path '*/tasks/*' -not -path '*/vars/*' \
             -not -path '*/files/*' -not -path '*/templates/*' -not -path '*/common/*' -not -path '*_profiles/*' | sort); do
  name=${pb#./}; name=${name%.yml}
  # Only plays (a list whose items have hosts: or import_playbook:) are playbooks.
  if ! "$work/venv/bin/python" -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); sys.exit(0 if isinstance(d, list) and d and all(isinstance(p, dict) and ("hosts" in p or "ansible.builtin.import_playbook" in p or "import_playbook" in p) for p in d) else 1)' "$installed/playbooks/$pb"; then
    continue
  fi
  # Collection playbooks are addressed by FQCN when their name is an identifier (site, drills.kill);
  # names with dashes (backup-verify) cannot be, so those run by their installed path.
  if [[ $name =~ ^[a-z0-9_/]+$ ]]; then target=warren.rabbitmq.${name//\//.}; else target=$installed/playbooks/$pb; fi
  "$work/venv/bin/ansible-playbook" -i hosts.yml "$target" --syntax-check >/dev/null \
    || { log "syntax check FAILED: $target"; "$work/venv/bin/ansible-playbook" -i hosts.yml "$target" --syntax-check; exit 1; }
  checked=$((checked + 1))
done
[ "$checked" -gt 0 ] || { log "no playbook found in the installed collection"; exit 1; }
log "installed $(basename "$tarball") with ansible-core $core alone; $checked playbooks pass --syntax-check against it"
