# Shared helpers of the bench/ scripts; sourced, not run.
# shellcheck shell=bash

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Where cargo puts what `build` makes: $CARGO_TARGET_DIR when set (a relative one is taken
# from the root of the clone, where `build` runs cargo), else target/.
case ${CARGO_TARGET_DIR:-} in
  "") target_dir=$root/target ;;
  /*) target_dir=$CARGO_TARGET_DIR ;;
  *) target_dir=$root/$CARGO_TARGET_DIR ;;
esac
bin=$target_dir/release/vertex-backup
gen=$target_dir/release/examples/gen_corpus
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg) # a busy machine makes every number noisy

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Install the missing tools with apt-get when we can (Debian/Ubuntu: as root, else through
# sudo); args are "command:package" pairs. Tools that stay missing are fatal unless marked
# optional with '?'.
need_tools() {
  local want=() spec cmd pkg apt=() why=""
  for spec in "$@"; do
    cmd=${spec%%:*}; pkg=${spec#*:}; pkg=${pkg%\?}
    command -v "$cmd" >/dev/null 2>&1 || want+=("$pkg")
  done
  if [ ${#want[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
      why=" (no apt-get on this machine to install it with)"
    elif [ "$(id -u)" = 0 ]; then
      apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
    elif command -v sudo >/dev/null; then
      apt=(sudo env DEBIAN_FRONTEND=noninteractive apt-get)
    else
      why=" (not root and no sudo: apt-get cannot install it)"
    fi
  fi
  if [ ${#apt[@]} -gt 0 ]; then
    log "installing ${want[*]}"
    "${apt[@]}" install -y "${want[@]}" >&2 ||
      { "${apt[@]}" update >&2 && "${apt[@]}" install -y "${want[@]}" >&2; } ||
      { log "apt-get could not install ${want[*]}"; why=" (apt-get install failed, see above)"; }
  fi
  for spec in "$@"; do
    cmd=${spec%%:*}
    if ! command -v "$cmd" >/dev/null 2>&1; then
      [[ $spec == *\? ]] && { log "$cmd is missing: falling back"; continue; }
      pkg=${spec#*:}
      die "$cmd is missing (package ${pkg%\?})$why; install it and run again"
    fi
  done
}

build() {
  log "cargo build --release (binary and corpus generator)"
  (cd "$root" && cargo build --release --quiet && cargo build --release --quiet --example gen_corpus)
}

# build_profile PROFILE WHAT: build the binary as release or (--debug) debug; sets $bin to it
# (under $target_dir: $CARGO_TARGET_DIR, default target/). WHAT says whose times a debug build makes
# pessimistic, for the log.
build_profile() {
  bin=$target_dir/$1/vertex-backup
  if [ "$1" = release ]; then
    log "cargo build --release"
    (cd "$root" && cargo build --release --quiet)
  else
    log "using the DEBUG binary (--debug): $2 are pessimistic"
    (cd "$root" && cargo build --quiet)
  fi
  [ -x "$bin" ] || die "no binary at $bin"
}

# measure_run OUT_PREFIX COMMAND…: run under GNU time -v; wall seconds to OUT_PREFIX.s, peak
# RSS KiB to .rss, CPU s (user + system) to .cpu; the output to .log. A failure is fatal.
measure_run() {
  local out=$1 start end; shift
  start=$(date +%s.%N)
  /usr/bin/time -v -o "$out.time" "$@" >"$out.log" 2>&1 || { cat "$out.log" "$out.time" >&2; die "failed: $*"; }
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f\n", b - a}' >"$out.s"
  awk -F': ' '/Maximum resident set size/ {print $2}' "$out.time" >"$out.rss"
  awk -F': ' '/User time|System time/ {s += $2} END {printf "%.1f\n", s}' "$out.time" >"$out.cpu"
}

# make_corpus DIR GEN-ARGS...: generate once, again only when the generator's source changed;
# a corpus counts only once it is complete.
make_corpus() {
  local dir=$1 stamp; shift
  stamp=$(sha256sum "$root/examples/gen_corpus.rs" | cut -d' ' -f1)
  if [ "$(cat "$dir/.complete" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$dir"
    log "generating corpus $dir ($*)"
    "$gen" --out "$dir" "$@" >&2
    echo "$stamp" >"$dir/.complete"
  fi
}

# write_config FILE CORPUS BACKUP_DIR COMPRESSION LEVEL [FORMAT]: FORMAT "snapshot" makes
# both storage and database backups snapshots (content packs under BACKUP_DIR/store, issue
# 16); the default, "archive", writes no format keys (tar archives and database copies).
write_config() {
  cat >"$1" <<EOF
[paths]
database = "$2/app_data/app_data.db"
storage = "$2/storage"
backup_dir = "$3"

[backup]
compression = "$4"
compression_level = $5
threads = 0
min_free_space = "0"
EOF
  case ${6:-archive} in
    archive) ;;
    snapshot) printf 'storage_format = "snapshot"\ndatabase_format = "snapshot"\n' >>"$1" ;;
    *) die "write_config: unknown format $6" ;;
  esac
}

# Sum of the sizes of the regular files under the given paths (0 when none exist).
bytes_of() {
  local p total=0 n
  for p in "$@"; do
    [ -e "$p" ] || continue
    n=$(find "$p" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f\n", s}')
    total=$((total + n))
  done
  echo "$total"
}

# du -sb of PATH: bytes of everything under it, directories included (0 when it is missing).
du_bytes() {
  if [ -e "$1" ]; then du -sb "$1" | cut -f1; else echo 0; fi
}

# Median of the numbers on stdin.
median() {
  sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }

# The machine, as Markdown bullet lines.
machine_info() {
  local cpu mem fs sha
  cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
  mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
  fs=$(df -T "$1" | awk 'NR == 2 {print $2 " on " $1}')
  if grep -qw sha_ni /proc/cpuinfo; then sha=yes; else sha=no; fi
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)')"
  echo "- CPU: ${cpu:-unknown}, $(nproc) cores online (SHA-NI: $sha); memory $mem"
  echo "- Kernel: $(uname -sr); work dir filesystem: $fs; load average at start: $load_at_start"
  echo "- Tools: $("$bin" --version 2>/dev/null | head -n1); $(rustc --version); $(tar --version | head -n1);" \
    "zstd $(zstd -V | grep -o "v[0-9.]*" | head -n1); sqlite3 $(sqlite3 --version | cut -d' ' -f1); $(gzip --version | head -n1);" \
    "$(sha256sum --version | head -n1)$(command -v hyperfine >/dev/null && echo "; $(hyperfine --version)")"
}

# bench_s3_bucket PYTHON ENDPOINT BUCKET CREDS: the benchmarks' S3 credentials (any key
# moto accepts) written to CREDS (0600) and exported as AWS_* for the other clients, and
# BUCKET created on the server at ENDPOINT with boto3 (PYTHON: moto's virtualenv).
bench_s3_bucket() {
  local py=$1 endpoint=$2 bucket=$3 creds=$4
  printf '[default]\naws_access_key_id = bench\naws_secret_access_key = bench-secret\n' >"$creds"
  chmod 600 "$creds"
  export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_DEFAULT_REGION=us-east-1
  "$py" - "$endpoint" "$bucket" <<'PY'
import sys, boto3
boto3.client("s3", endpoint_url=sys.argv[1]).create_bucket(Bucket=sys.argv[2])
PY
}
