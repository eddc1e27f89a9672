#!/usr/bin/env bash
# Builds the .deb: the release binary (unless --bin names one), staged by
# `scripts/install.sh --package` into target/deb-root (the one install procedure decides
# every path, owner and mode), then packaged by `cargo deb` from the metadata in
# Cargo.toml ([package.metadata.deb]: those files, the postinst and prerm in debian/).
#
# usage: scripts/deb.sh [--bin FILE] [--out DIR] [--fast]
#   --bin FILE   the binary to package (default: `cargo build --release --locked`'s)
#   --out DIR    where the .deb goes (default: target/debian)
#   --fast       faster, weaker compression (the tests package a debug binary)
# Needs root (the staged files are root's) and cargo-deb (`cargo install cargo-deb`).
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
bin=""
out="$src/target/debian"
fast=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=${2:?--bin needs a file}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --fast) fast=(--fast); shift ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "deb.sh: unknown argument: $1 (see --help)" >&2; exit 1 ;;
  esac
done
command -v cargo-deb >/dev/null || {
  echo "deb.sh: cargo-deb is not installed: cargo install cargo-deb --locked" >&2
  exit 1
}
if [ -z "$bin" ]; then
  (cd "$src" && cargo build --release --locked)
  bin="${CARGO_TARGET_DIR:-$src/target}/release/vertex-backup"
fi
stage="$src/target/deb-root"
rm -rf "$stage"
mkdir -p "$stage" "$out"
"$src/scripts/install.sh" --root "$stage" --package --bin "$bin"
cd "$src"
cargo deb --no-build --no-strip "${fast[@]}" --output "$out"
