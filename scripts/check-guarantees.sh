#!/usr/bin/env bash
# Every test that README.md's "Guarantees" section names must exist (a renamed or deleted
# test would otherwise leave a guarantee that nothing proves). `name_*` matches a prefix.
set -euo pipefail
cd "$(dirname "$0")/.."
tests=$(mktemp)
trap 'rm -f "$tests"' EXIT
cargo test --locked -q -- --list 2>/dev/null | sed -n 's/: test$//p' | sort -u > "$tests"
missing=0
count=0
while read -r name; do
  count=$((count + 1))
  if [[ "$name" == *'*' ]]; then
    grep -q "^${name%\*}" "$tests" || { echo "README names a test that does not exist: $name" >&2; missing=1; }
  else
    grep -qxF "$name" "$tests" || { echo "README names a test that does not exist: $name" >&2; missing=1; }
  fi
done < <(sed -n '/^## Guarantees/,/^## Retention/p' README.md | grep -o '`[a-z_]*::[a-z_:*0-9]*`' | tr -d '`' | sort -u)
[ "$missing" -eq 0 ] && echo "guarantees: all ${count} tests named in README.md exist"
# Every tool .ci/run installs for the tests is one README.md names (`tool` or `tool …`), so
# the README's list of what the tests need cannot fall behind CI's.
tools=0
for tool in $(grep -o 'command -v [a-z0-9_-]*' .ci/run | awk '{print $3}' | sort -u); do
  tools=$((tools + 1))
  grep -qF -e "\`$tool\`" -e "\`$tool " README.md ||
    { echo "README.md does not name \`$tool\`, which .ci/run installs for the tests" >&2; missing=1; }
done
[ "$missing" -eq 0 ] && echo "tools: all ${tools} tools .ci/run installs are named in README.md"
exit "$missing"
