#!/usr/bin/env bash
# Static checks and unit tests for warren's Prometheus rules. No containers, no server.
#   1. fetch promtool from Debian's `prometheus` package into .build/tools (extracted, never
#      installed: installing the package would start a Prometheus server on this machine);
#   2. promtool check rules on every rule file;
#   3. promtool test rules on every unit test file;
#   4. check_runbooks.py: labels, annotations, runbook files, metric names;
#   5. mutate.py: every rule mutation listed in mutations.yml must make a test fail (skipped
#      when an earlier step failed: a failing suite "kills" every mutation). SKIP_MUTATIONS=1
#      skips it for a quick run.
# Set PROMTOOL=/path/to/promtool to use another binary. Exits non-zero if anything fails.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
rules_dir="$root/roles/prometheus/files/rules"
tools="$root/.build/tools/prometheus"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi

fetch_promtool() {
  local bin="$tools/root/usr/bin/promtool"
  if [[ -x "$bin" ]]; then
    echo "$bin"
    return 0
  fi
  local cache="$tools/debs"
  mkdir -p "$cache"
  if ! compgen -G "$cache/prometheus_*.deb" >/dev/null; then
    echo "[promtool] apt-get download prometheus (extracted only, not installed)" >&2
    if ! (cd "$cache" && apt-get download -qq prometheus >/dev/null 2>&1); then
      echo "[promtool] apt lists look stale: apt-get update" >&2
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
      (cd "$cache" && apt-get download -qq prometheus >&2) || return 1
    fi
  fi
  rm -rf "$tools/root"
  dpkg -x "$(compgen -G "$cache/prometheus_*.deb" | sort | tail -n1)" "$tools/root" || return 1
  [[ -x "$bin" ]] || return 1
  echo "$bin"
}

if [[ -n "${PROMTOOL:-}" ]]; then
  promtool="$PROMTOOL"
else
  promtool="$(fetch_promtool)" || { echo "[promtool] could not get promtool" >&2; exit 2; }
fi
echo "[promtool] $("$promtool" --version 2>&1 | head -n1)"

passed=0
failed=0
failures=()
step() {  # step NAME COMMAND...: run, show output only on failure, count
  local name="$1"
  shift
  local out
  if out="$("$@" 2>&1)"; then
    passed=$((passed + 1))
    printf '  ok    %s\n' "$name"
    [[ -n "${SHOW_LAST_LINE:-}" ]] && printf '        %s\n' "$(tail -n1 <<<"$out")"
  else
    failed=$((failed + 1))
    failures+=("$name")
    printf '  FAIL  %s\n%s\n' "$name" "$(sed 's/^/        /' <<<"$out")"
  fi
}

shopt -s nullglob
rule_files=("$rules_dir"/*.yml)
test_files=("$here"/*_test.yml)
if ((${#rule_files[@]} == 0 || ${#test_files[@]} == 0)); then
  echo "[promtool] no rule files or no test files found" >&2
  exit 2
fi

echo "[promtool] check rules (${#rule_files[@]} files)"
for f in "${rule_files[@]}"; do
  step "check rules ${f#"$root"/}" "$promtool" check rules "$f"
done

echo "[promtool] test rules (${#test_files[@]} files)"
groups=0
cases=0
count_py='import sys, yaml
tests = (yaml.safe_load(open(sys.argv[1])) or {}).get("tests") or []
print(len(tests), sum(len(t.get("alert_rule_test") or []) + len(t.get("promql_expr_test") or []) for t in tests))'
for f in "${test_files[@]}"; do
  read -r g n < <("$python" -c "$count_py" "$f")
  groups=$((groups + g))
  cases=$((cases + n))
  step "test rules ${f#"$root"/} ($g groups, $n evaluations)" \
    bash -c 'cd "$1" && "$2" test rules "$(basename "$3")"' _ "$here" "$promtool" "$f"
done

echo "[promtool] contract checks"
SHOW_LAST_LINE=1 step "check_runbooks.py (labels, annotations, runbooks, tests, metric names)" \
  "$python" "$here/check_runbooks.py" --root "$root"

mutation_score="not run"
if ((failed == 0)) && [[ -z "${SKIP_MUTATIONS:-}" ]]; then
  echo "[promtool] mutation testing (tests/promtool/mutations.yml)"
  mutate_out="$(mktemp)"
  if "$python" "$here/mutate.py" --promtool "$promtool" >"$mutate_out" 2>&1; then
    passed=$((passed + 1))
    printf '  ok    mutate.py (every listed mutation killed)\n'
  else
    failed=$((failed + 1))
    failures+=("mutate.py")
    printf '  FAIL  mutate.py\n'
    grep -E '^  (SURVIVED|STALE)|^(survived|stale):' "$mutate_out" | sed 's/^/        /'
  fi
  mutation_score="$(grep '^mutation score:' "$mutate_out" || echo 'mutation score: (no result)')"
  echo "        $mutation_score"
  rm -f "$mutate_out"
fi

echo
echo "[promtool] ${#rule_files[@]} rule files; ${#test_files[@]} test files with $groups test groups and $cases evaluations"
for f in "${failures[@]}"; do
  echo "[promtool] failed: $f"
done
echo "[promtool] $mutation_score   (tests/promtool/mutate.py; list: tests/promtool/mutations.yml)"
echo "promtool: $passed passed, $failed failed"
((failed == 0))
