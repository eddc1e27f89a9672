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
exit "$missing"
