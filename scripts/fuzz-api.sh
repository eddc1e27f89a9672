#!/usr/bin/env bash
# Fuzz the REST API with schemathesis, driven by the daemon's own /openapi.json.
# Not part of CI (it needs PyPI and takes minutes); run it by hand after changing the API:
#   scripts/fuzz-api.sh [--debug] [--max-examples N]
# It builds the release binary (--debug: the quicker dev build; $CARGO_TARGET_DIR is
# honoured), starts a daemon on a throw-away copy of examples/app with a random token on
# 127.0.0.1 (OS-chosen port), runs schemathesis against it (all checks: no 5xx, responses
# match the documented status codes, content types and body schemas, requests the document
# allows are accepted and the ones it forbids refused), and stops the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
max_examples=50
profile=release
[ "${1:-}" = "--debug" ] && { profile=debug; shift; }
[ "${1:-}" = "--max-examples" ] && max_examples=${2:?}

command -v schemathesis >/dev/null || command -v st >/dev/null || pip install --quiet schemathesis
st=$(command -v st || command -v schemathesis)

if [ "$profile" = release ]; then cargo build --release --quiet; else cargo build --quiet; fi
bin="${CARGO_TARGET_DIR:-target}/$profile/vertex-backup"
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cp -r examples/app/app_data examples/app/storage "$work/"
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat > "$work/config.toml" <<TOML
[paths]
database = "app_data/app_data.db"
storage = "storage"
backup_dir = "backups"
[backup]
min_free_space = "0"
[schedule]
full = "off"
database = "off"
storage = "off"
rotate = "off"
verify = "off"
[api]
listen = "127.0.0.1:0"
token = "$token"
TOML
chmod 600 "$work/config.toml"
"$bin" --config "$work/config.toml" daemon 2>"$work/daemon.log" &
pid=$!
for _ in $(seq 100); do
  base=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/daemon.log" | head -1 || true)
  [ -n "$base" ] && break
  sleep 0.1
done
[ -n "$base" ] || { cat "$work/daemon.log"; echo "the daemon did not start" >&2; exit 1; }
echo "fuzzing $base (max $max_examples examples per operation)"
"$st" run "$base/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --max-examples "$max_examples" \
  --request-timeout 120 \
  || status=$?
echo "daemon log tail:"; tail -5 "$work/daemon.log"
exit "${status:-0}"
