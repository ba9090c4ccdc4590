#!/usr/bin/env bash
# ansible-test sanity for the collection's plugins: the full set (validate-modules, pylint, pep8,
# import, ansible-doc, yamllint, runtime-metadata, ... and the offline ones).
#
# ansible-test needs the collection under .../ansible_collections/warren/rabbitmq and refuses the
# symlink `make collection` creates, so this copies the files git knows (tracked or new, not
# ignored) into .build/sanity/ and runs there, from a throw-away git index (ansible-test lists
# files through git).
#
# Offline pip: the tests that need packages build their own virtualenvs and bootstrap pip with
# a script ansible-test downloads from ci-files.testing.ansible.com (not reachable here) unless
# ~/.ansible/test/cache/get_pip_<version>.py exists. They also run pip with a cleared environment
# and PIP_CONFIG_FILE=/dev/null, which drops this machine's index, find-links and CA settings.
# So this script seeds that cache with tests/sanity_get_pip.py: pip from ensurepip, plus this
# machine's `pip config list` written into each virtualenv's own pip.conf (pip reads a
# virtualenv's pip.conf even with PIP_CONFIG_FILE=/dev/null). The virtualenvs are kept under
# ~/.ansible/test/venv, so only the first run installs anything.
#
#   tests/sanity.sh            the full set
#   tests/sanity.sh offline    only the tests that need nothing beyond ansible-core
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/.build/sanity/ansible_collections/warren/rabbitmq"
ANSIBLE_TEST="${ANSIBLE_TEST:-$ROOT/.venv/bin/ansible-test}"
PIP="${PIP:-$ROOT/.venv/bin/pip}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
OFFLINE_TESTS=(compile empty-init line-endings no-assert no-get-exception no-illegal-filenames
               no-smart-quotes replace-urlopen shebang symlinks use-argspec-type-path use-compat-six
               action-plugin-docs ignores)

seed_pip_bootstrap() {
  # The pip version ansible-test bootstraps (get_venv_packages() in its python_requirements.py).
  local version cache
  version="$("$PYTHON" -c 'import ansible_test._internal.python_requirements as r, inspect, re
print(re.search(r"pip=.([0-9.]+).", inspect.getsource(r.get_venv_packages)).group(1))')"
  cache="$HOME/.ansible/test/cache/get_pip_${version//./_}.py"
  mkdir -p "$(dirname "$cache")"
  "$PIP" config list | "$PYTHON" -c '
import ast, sys
settings = {}
for line in sys.stdin:
    key, _, value = line.strip().partition("=")
    if value:
        settings[key.split(".", 1)[1]] = ast.literal_eval(value)
src = open(sys.argv[1]).read().replace("PIP_SETTINGS = {}", "PIP_SETTINGS = %r" % settings, 1)
open(sys.argv[2], "w").write(src)' "$ROOT/tests/sanity_get_pip.py" "$cache"
  echo "[sanity] pip bootstrap for ansible-test: $cache (pip $version from ensurepip + this machine's pip settings)"
}

rm -rf "$ROOT/.build/sanity"
mkdir -p "$DEST"
cd "$ROOT"
git ls-files --cached --others --exclude-standard -- plugins meta galaxy.yml README.md \
  | while read -r f; do [ -e "$f" ] && printf '%s\n' "$f"; done \
  | tar -cf - -T - | tar -xf - -C "$DEST"

cd "$DEST"
git init -q .
git add -A

if [ "${1:-}" = offline ]; then
  args=()
  for t in "${OFFLINE_TESTS[@]}"; do args+=(--test "$t"); done
  "$ANSIBLE_TEST" sanity --python 3.11 --color no "${args[@]}"
  echo "[sanity] passed (offline set): ${OFFLINE_TESTS[*]}"
  exit 0
fi
seed_pip_bootstrap
start=$SECONDS
"$ANSIBLE_TEST" sanity --python 3.11 --color no
echo "[sanity] passed: the full ansible-test sanity set in $((SECONDS - start)) s"
