#!/usr/bin/env bash
# ansible-test sanity for the collection's plugins.
#
# ansible-test needs the collection under .../ansible_collections/warren/rabbitmq and refuses the
# symlink `make collection` creates, so this copies the files git knows (tracked or new, not
# ignored) into .build/sanity/ and runs there, from a throw-away git index (ansible-test lists
# files through git).
#
# By default it runs the tests that need nothing beyond ansible-core. The others (pylint, pep8,
# validate-modules, ansible-doc, yamllint, import, runtime-metadata...) build their own
# virtualenvs: ansible-test downloads a pip bootstrap script from ci-files.testing.ansible.com
# and runs pip with PIP_CONFIG_FILE=/dev/null, which drops this machine's index and CA settings,
# so they cannot install here. Where they can, run `tests/sanity.sh all`.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/.build/sanity/ansible_collections/warren/rabbitmq"
ANSIBLE_TEST="${ANSIBLE_TEST:-$ROOT/.venv/bin/ansible-test}"
OFFLINE_TESTS=(compile empty-init line-endings no-assert no-get-exception no-illegal-filenames
               no-smart-quotes replace-urlopen shebang symlinks use-argspec-type-path use-compat-six
               action-plugin-docs ignores)

rm -rf "$ROOT/.build/sanity"
mkdir -p "$DEST"
cd "$ROOT"
git ls-files --cached --others --exclude-standard -- plugins meta galaxy.yml README.md \
  | while read -r f; do [ -e "$f" ] && printf '%s\n' "$f"; done \
  | tar -cf - -T - | tar -xf - -C "$DEST"

cd "$DEST"
git init -q .
git add -A

if [ "${1:-}" = all ]; then
  exec "$ANSIBLE_TEST" sanity --python 3.11 --color no
fi
args=()
for t in "${OFFLINE_TESTS[@]}"; do args+=(--test "$t"); done
"$ANSIBLE_TEST" sanity --python 3.11 --color no "${args[@]}"
echo "[sanity] passed: ${OFFLINE_TESTS[*]}"
