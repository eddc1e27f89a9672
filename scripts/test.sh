#!/usr/bin/env bash
# The test command (README, .ci/run): `scripts/test.sh [cargo test arguments…]`.
# The offsite tests need an S3 API server: unless VERTEX_TEST_S3_ENDPOINT names one, this
# creates moto's virtualenv on first use (scripts/s3-server.sh; python3 and PyPI needed
# once), starts moto on a free loopback port, runs `cargo test --locked "$@"`, and stops
# moto again however the run ends. The exit status is cargo's.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VERTEX_TEST_S3_ENDPOINT:-}" ] || [ -z "${VERTEX_TEST_MOTO_SERVER:-}" ]; then
  # shellcheck source=scripts/s3-server.sh
  . scripts/s3-server.sh
  # The private-server tests need moto_server even when the shared server is given.
  ensure_moto_venv
  if [ -z "${VERTEX_TEST_S3_ENDPOINT:-}" ]; then
    start_moto
  else
    VERTEX_TEST_MOTO_SERVER="$(cd "$(moto_venv_dir)" && pwd)/bin/moto_server"
    export VERTEX_TEST_MOTO_SERVER
  fi
fi

# Not `exec`: this shell must outlive cargo so its EXIT trap stops moto.
status=0
cargo test --locked "$@" || status=$?
exit "$status"
