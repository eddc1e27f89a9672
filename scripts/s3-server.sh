#!/usr/bin/env bash
# The S3 API server the offsite tests (issue 14) talk to: moto's server, from a virtualenv
# this script creates on first use (python3 and PyPI needed once), on a free loopback port.
#
# Sourced (scripts/test.sh does):
#   . scripts/s3-server.sh; ensure_moto_venv; start_moto
# leaves moto running until the sourcing shell exits (an EXIT trap stops it by PID) and
# exports
#   VERTEX_TEST_S3_ENDPOINT  http://127.0.0.1:PORT, the shared server (tests/util/s3.rs)
#   VERTEX_TEST_MOTO_SERVER  the venv's moto_server, for tests that start, stop and restart
#                            a private server of their own
# Run: `scripts/s3-server.sh [COMMAND…]` starts moto and runs COMMAND with those variables
# set (its exit status is the script's), or without a command prints them and serves until
# interrupted.
#
# The venv lives at ${VERTEX_TEST_VENV:-$HOME/.cache/vertex-backup/s3-venv} so it survives
# clones and `cargo clean`; it is rebuilt only when moto is missing or the wrong version.

MOTO_VERSION=5.2.5

moto_venv_dir() {
  echo "${VERTEX_TEST_VENV:-$HOME/.cache/vertex-backup/s3-venv}"
}

# True when the venv has the pinned moto (with its server extra) and boto3.
moto_venv_ok() {
  local venv
  venv=$(moto_venv_dir)
  [ -x "$venv/bin/moto_server" ] && "$venv/bin/python" -c "
import sys, boto3, flask, moto
sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null
}

# Create the venv with moto[server] and boto3 unless it is already there.
ensure_moto_venv() {
  local venv
  venv=$(moto_venv_dir)
  moto_venv_ok && return 0
  echo "s3-server: creating the S3 test server's virtualenv in $venv (moto[server]==$MOTO_VERSION)" >&2
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv" || {
    echo "s3-server: python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
    return 1
  }
  "$venv/bin/pip" install -q "moto[server]==$MOTO_VERSION" boto3 || {
    echo "s3-server: pip install of moto[server]==$MOTO_VERSION failed (PyPI reachable?)" >&2
    return 1
  }
  moto_venv_ok || {
    echo "s3-server: the virtualenv in $venv has no working moto_server after install" >&2
    return 1
  }
}

# A port nobody listens on, chosen by the OS (bound then released: start_moto retries if
# another process takes it in between).
free_loopback_port() {
  python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

# True when an HTTP GET to 127.0.0.1:$1 gets a status line back (pure bash: no curl needed).
http_answers() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    IFS= read -r -t 5 line <&3 && [[ $line == HTTP/* ]]
  ) 2>/dev/null
}

stop_moto() {
  if [ -n "${MOTO_PID:-}" ]; then
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
    MOTO_PID=
  fi
  [ -n "${MOTO_LOG:-}" ] && rm -f "$MOTO_LOG"
  MOTO_LOG=
}

# Start moto on a free loopback port, wait until it answers, export the endpoint.
start_moto() {
  local venv port attempt deadline
  venv=$(cd "$(moto_venv_dir)" && pwd) || return 1
  # Stop it however the shell ends: INT and TERM become exits so the EXIT trap runs.
  trap stop_moto EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  for attempt in 1 2 3; do
    port=$(free_loopback_port) || return 1
    MOTO_LOG=$(mktemp "${TMPDIR:-/tmp}/moto-server.XXXXXX.log")
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$MOTO_LOG" 2>&1 &
    MOTO_PID=$!
    deadline=$((SECONDS + 60))
    while kill -0 "$MOTO_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
      if http_answers "$port"; then
        export VERTEX_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
        export VERTEX_TEST_MOTO_SERVER="$venv/bin/moto_server"
        echo "s3-server: moto (pid $MOTO_PID) answers on $VERTEX_TEST_S3_ENDPOINT" >&2
        return 0
      fi
      sleep 0.1 # poll interval only: the loop ends on the server's answer
    done
    echo "s3-server: moto did not answer on port $port (attempt $attempt); its log:" >&2
    cat "$MOTO_LOG" >&2
    stop_moto
  done
  return 1
}

# Run as a program rather than sourced.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  ensure_moto_venv
  start_moto
  if [ $# -gt 0 ]; then
    status=0
    "$@" || status=$?
    exit "$status"
  fi
  echo "VERTEX_TEST_S3_ENDPOINT=$VERTEX_TEST_S3_ENDPOINT"
  echo "VERTEX_TEST_MOTO_SERVER=$VERTEX_TEST_MOTO_SERVER"
  echo "s3-server: serving until interrupted (Ctrl-C)" >&2
  wait "$MOTO_PID"
fi
