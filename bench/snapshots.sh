#!/usr/bin/env bash
# Snapshots side by side with restic, rustic and borg (issues 16, 25): vertex-backup's
# content-addressed snapshots (`storage_format = "snapshot"`, `database_format = "snapshot"`)
# against `restic backup`, `rustic backup` (restic's format in Rust) and `borg create` on the
# same trees in one run. Whole processes under GNU
# time (wall s, CPU s, peak RSS), and the bytes each adds to its repository (`du -sb` of the
# repository before and after; for ours the whole backup dir). Rows:
#
#   first     first backup of the corpus, fresh repositories each round
#   change    a second backup after `gen_corpus --small-change` (~1 % of the files), applied
#             once per round to the tree all three back up
#   restore   restore of the latest backup: `restore MANIFEST`, `restic restore latest`,
#             `rustic restore latest`, `borg extract`
#   weekly    seven weekly backups (six changes after the first; one round): final sizes
#   files     `gen_corpus --files N` (100 000; 1 000 000 is the scale row): a first backup,
#             --runs backups with nothing changed, every snapshot read back (ours `verify
#             --all --read-data`, `check --read-data`, borg `check --verify-data`), then the
#             older half forgotten and pruned
#   database  a `--db-size` database (256 MiB), a snapshot, 100 rows updated, a snapshot
#   repack    a backup, every other file deleted, a backup, then the first forgotten and the
#             store pruned (ours: `rotate`, keep_last 1, which repacks; restic: `forget
#             --keep-last 1 --prune`; borg: `prune --keep-last 1` + `compact`): the prune's
#             time and the repository's size after it ÷ a fresh repository of the kept tree
#
# first, change and restore share their --runs rounds (the order of the tools rotating each
# round), files repeats its no-change backup --runs times, database runs --runs rounds;
# medians. restic and rustic always encrypt; borg runs with `-e none` (no encryption), ours without
# encryption. Prints a Markdown report and writes it to bench/results/snapshots.md.
#
#   bench/snapshots.sh [--size 2GiB] [--runs 3] [--work DIR] [--seed 42]
#                      [--only first,change,restore,weekly,files,database,repack]
#                      [--files 100000] [--db-size 256MiB] [--tools ours,restic,rustic,borg]
#                      [--bin PATH]
#
# --bin PATH times that vertex-backup binary instead of building one (the corpus generator
# is still built); --tools restic,borg measures the baselines alone. rustic is installed with
# `cargo install rustic-rs --locked` when missing (into ~/.cargo/bin).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

size=2GiB runs=3 seed=42 work=$root/bench/work files_n=100000 db_size=256MiB
only=first,change,restore,weekly,files,database,repack tools=ours,restic,rustic,borg own_bin=""
invocation="bench/snapshots.sh $*"
usage() {
  echo "usage: bench/snapshots.sh [--size 2GiB] [--runs 3] [--work DIR] [--seed 42]"
  echo "                          [--only first,change,restore,weekly,files,database,repack]"
  echo "                          [--files 100000] [--db-size 256MiB] [--tools ours,restic,rustic,borg]"
  echo "                          [--bin PATH]"
}
while [ $# -gt 0 ]; do
  case $1 in
    --size) size=${2:?--size needs a value}; shift 2 ;;
    --runs) runs=${2:?--runs needs a value}; shift 2 ;;
    --work) work=${2:?--work needs a value}; shift 2 ;;
    --seed) seed=${2:?--seed needs a value}; shift 2 ;;
    --only) only=${2:?--only needs a value}; shift 2 ;;
    --files) files_n=${2:?--files needs a value}; shift 2 ;;
    --db-size) db_size=${2:?--db-size needs a value}; shift 2 ;;
    --tools) tools=${2:?--tools needs a value}; shift 2 ;;
    --bin) own_bin=${2:?--bin needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs takes a positive number"
[[ $seed =~ ^[0-9]+$ ]] || die "--seed takes a number"
[[ $files_n =~ ^[1-9][0-9]*$ ]] || die "--files takes a positive number"
for o in ${only//,/ }; do
  case $o in first | change | restore | weekly | files | database | repack) ;; *) die "--only: unknown row $o" ;; esac
done
tool_list=()
for t in ${tools//,/ }; do
  case $t in ours | restic | rustic | borg) tool_list+=("$t") ;; *) die "--tools: unknown tool $t (ours, restic, rustic, borg)" ;; esac
done
[ ${#tool_list[@]} -gt 0 ] || die "--tools names no tool"
wanted() { [[ ,$only, == *,$1,* ]]; }
uses() { [[ ,$tools, == *,$1,* ]]; }

deps=(/usr/bin/time:time sqlite3:sqlite3)
if uses restic; then deps+=(restic:restic); fi
if uses borg; then deps+=(borg:borgbackup); fi
need_tools "${deps[@]}"
if uses rustic && ! command -v rustic >/dev/null 2>&1; then
  export PATH=$HOME/.cargo/bin:$PATH
  if ! command -v rustic >/dev/null 2>&1; then
    log "cargo install rustic-rs --locked (rustic: restic's repository format in Rust)"
    cargo install rustic-rs --locked >&2 || die "cargo install rustic-rs --locked failed (output above)"
  fi
fi
if uses ours && [ -z "$own_bin" ]; then
  build
else
  log "cargo build --release --example gen_corpus (the corpus generator)"
  (cd "$root" && cargo build --release --quiet --example gen_corpus)
  if [ -n "$own_bin" ]; then
    [ -x "$own_bin" ] || die "--bin $own_bin is not an executable"
    bin=$(cd "$(dirname "$own_bin")" && pwd)/$(basename "$own_bin")
  fi
fi
mkdir -p "$work"
work=$(cd "$work" && pwd)
snap=$work/snapshots m=$work/snapshots/m
rm -rf "$snap"
mkdir -p "$m"
trap 'rm -rf "$snap"' EXIT

# The tools' own state lives under the work dir: restic's cache, borg's cache, config and
# security dirs. One fixed bench password for restic (it cannot do without one).
export RESTIC_PASSWORD=vertex-bench-password RESTIC_CACHE_DIR=$snap/cache/restic
export RUSTIC_PASSWORD=vertex-bench-password RUSTIC_CACHE_DIR=$snap/cache/rustic
export BORG_BASE_DIR=$snap/cache/borg BORG_PASSPHRASE="" BORG_DISPLAY_PASSPHRASE=no
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
noscan=() # restic ≥ 0.15 can skip the size scan its progress bar wants; 0.14 has no such flag
if uses restic && restic help backup | grep -q -- '--no-scan'; then noscan=(--no-scan); fi

# Our config: snapshots for both kinds, zstd -3, and a retention that deletes nothing (the
# weekly row makes seven snapshots, the files row 1 + --runs).
snapshot_config() { # FILE TREE BACKUP_DIR
  write_config "$1" "$2" "$3" zstd 3 snapshot
  printf '\n[retention]\nkeep_last = 1000\n' >>"$1"
}

# Every context (first/change/restore share "main") has a directory $snap/CTX with the
# tree it backs up (src: the parent, item: the path in it), our backup dir ours/, restic's
# repository restic/, borg's borg/, and ours.toml. kind: what `create --type` makes.
declare -A src item kind final # final: bytes of each repository after the weekly row
context() { # CTX SRC ITEM KIND
  src[$1]=$2 item[$1]=$3 kind[$1]=$4
  mkdir -p "$snap/$1"
  snapshot_config "$snap/$1/ours.toml" "$2" "$snap/$1/ours"
}

# fresh_repos CTX: empty repositories (and caches) for every tool; untimed.
fresh_repos() {
  local d=$snap/$1
  rm -rf "$d/ours" "$d/restic" "$d/rustic" "$d/borg" "$snap/cache"
  if uses restic; then restic -r "$d/restic" init -q >"$d/restic-init.log" 2>&1 || { cat "$d/restic-init.log" >&2; die "restic init failed"; }; fi
  if uses rustic; then rustic -r "$d/rustic" --log-level warn init >"$d/rustic-init.log" 2>&1 || { cat "$d/rustic-init.log" >&2; die "rustic init failed"; }; fi
  if uses borg; then borg init -e none "$d/borg" >"$d/borg-init.log" 2>&1 || { cat "$d/borg-init.log" >&2; die "borg init failed"; }; fi
  return 0
}

# each_tool ROUND FUNCTION ARGS…: FUNCTION TOOL ARGS… for every tool, the order rotating
# with ROUND so that no tool always goes first.
each_tool() {
  local r=$1 f=$2 i n=${#tool_list[@]}
  shift 2
  for ((i = 0; i < n; i++)); do "$f" "${tool_list[(i + r) % n]}" "$@"; done
}

# backup TOOL CTX LABEL ROUND: one backup of the context's tree into TOOL's repository,
# measured as $m/CTX-LABEL-TOOL-ROUND.{s,cpu,rss} (measure_run) and .bytes, the growth of
# the repository. Borg names its archive LABEL-ROUND. A failure is fatal, with its output.
backup() {
  local tool=$1 ctx=$2 label=$3 r=$4 d=$snap/$2 out=$m/$2-$3-$1-$4 before
  before=$(du_bytes "$d/$tool")
  sync
  log "$ctx: $label backup, $tool (round $((r + 1)))"
  case $tool in
    ours) measure_run "$out" "$bin" --config "$d/ours.toml" -q create --type "${kind[$ctx]}" ;;
    restic) measure_run "$out" restic -r "$d/restic" backup -q "${noscan[@]}" "${src[$ctx]}/${item[$ctx]}" ;;
    rustic) measure_run "$out" rustic -r "$d/rustic" --log-level warn --no-progress backup "${src[$ctx]}/${item[$ctx]}" ;;
    borg) measure_run "$out" env -C "${src[$ctx]}" borg create "$d/borg::$label-$r" "${item[$ctx]}" ;;
  esac
  echo $(($(du_bytes "$d/$tool") - before)) >"$out.bytes"
}

tree_stats() { # DIR: "N files, B bytes" of the regular files under DIR
  find "$1" -type f -printf '%s\n' | awk '{n++; s += $1} END {printf "%d files, %.0f bytes\n", n, s}'
}

# restore TOOL CTX ARCHIVE ROUND: restore the latest backup into an empty directory, timed
# like backup; then `sync -f` of the restored tree, timed apart (.sync: restic and borg do
# not fsync what they restore; ours does before it returns). The restored tree must have the
# source's file count and bytes.
restore() {
  local tool=$1 ctx=$2 archive=$3 r=$4 d=$snap/$2 out=$m/$2-restore-$1-$4 t=$snap/$2/restored start want got
  local manifests
  rm -rf "$t"
  sync
  log "$ctx: restore, $tool (round $((r + 1)))"
  case $tool in
    ours)
      manifests=("$d"/ours/storage/storage_snapshot_*.json)
      [ -f "${manifests[-1]}" ] || die "no storage_snapshot_*.json in $d/ours/storage to restore"
      measure_run "$out" "$bin" --config "$d/ours.toml" -q restore "${manifests[-1]}" --target "$t" --yes ;;
    restic) measure_run "$out" restic -r "$d/restic" restore latest -q --target "$t" ;;
    rustic) measure_run "$out" rustic -r "$d/rustic" --log-level warn --no-progress restore latest "$t" ;;
    borg) mkdir -p "$t" && measure_run "$out" env -C "$t" borg extract "$d/borg::$archive" ;;
  esac
  start=$(date +%s.%N)
  sync -f "$t"
  awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f\n", b - a}' >"$out.sync"
  want=$(tree_stats "${src[$ctx]}/${item[$ctx]}")
  got=$(tree_stats "$t")
  [ "$want" = "$got" ] || die "$tool restored $got into $t; the source has $want"
  rm -rf "$t"
}

# small_change TREE SEED: gen_corpus --small-change, its summary line kept for the report.
small_change() {
  "$gen" --out "$1" --small-change --seed "$2" | tee -a "$m/changes.log" >&2
}

# The ours side must work before anything is timed: one tiny storage snapshot, restored, and
# (for the database row) one database snapshot, in the layout of the CLI contract.
probe_ours() {
  local p=$snap/probe manifests
  mkdir -p "$p/tree/storage/client_1" "$p/tree/app_data"
  echo "probe" >"$p/tree/storage/client_1/a.txt"
  sqlite3 "$p/tree/app_data/app_data.db" "PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);" >/dev/null
  snapshot_config "$p/ours.toml" "$p/tree" "$p/ours"
  local hint="this build cannot make snapshots (issue 16: storage_format = \"snapshot\"); its output is above. Run on a build with the snapshot code, or with --tools restic,borg for the baselines alone"
  log "probe: a storage snapshot of one file with $bin"
  "$bin" --config "$p/ours.toml" -q create --type storage >"$p/log" 2>&1 || { cat "$p/log" >&2; die "$hint"; }
  manifests=("$p"/ours/storage/storage_snapshot_*.json)
  if ! { [ -f "${manifests[-1]}" ] && [ -f "${manifests[-1]%.json}.tree.zst" ] && [ -d "$p/ours/store/packs" ]; }; then
    find "$p/ours" >&2
    die "create --type storage with storage_format = \"snapshot\" wrote no storage/storage_snapshot_*.json + .tree.zst and store/packs/ (listing above)"
  fi
  "$bin" --config "$p/ours.toml" -q restore "${manifests[-1]}" --target "$p/restored" --yes >"$p/log" 2>&1 || { cat "$p/log" >&2; die "restore of a storage snapshot failed"; }
  [ "$(cat "$p/restored/client_1/a.txt" 2>/dev/null)" = probe ] || { find "$p/restored" >&2; die "restore of a storage snapshot did not give back client_1/a.txt (listing above)"; }
  if wanted database; then
    "$bin" --config "$p/ours.toml" -q create --type database >"$p/log" 2>&1 || { cat "$p/log" >&2; die "$hint"; }
    manifests=("$p"/ours/database/db_snapshot_*.json)
    if ! { [ -f "${manifests[-1]}" ] && [ -f "${manifests[-1]%.json}.tree.zst" ]; }; then
      find "$p/ours" >&2
      die "create --type database with database_format = \"snapshot\" wrote no database/db_snapshot_*.json + .tree.zst (listing above)"
    fi
  fi
  rm -rf "$p"
}
if uses ours; then probe_ours; fi

restic_info="" rustic_info="" borg_info=""
if uses restic; then
  restic init -q -r "$snap/probe-restic" >/dev/null
  restic_info="$(restic version | cut -d' ' -f1-2), repository format version $(restic -r "$snap/probe-restic" cat config | sed -n 's/.*"version": *\([0-9]*\).*/\1/p'), compression auto (its default), encrypted (always: AES-256-CTR + Poly1305)"
  rm -rf "$snap/probe-restic"
fi
if uses rustic; then
  rustic_info="$(rustic --version), restic's repository format (version 2), compression zstd level 3 (its default), encrypted (always)"
fi
if uses borg; then
  borg_info="$(borg --version), \`borg init -e none\` (no encryption, no authentication), compression lz4 (its default)"
fi

# --- first, change, restore: --runs rounds on a copy of the corpus --------------------------
corpus=$work/corpus-$size-seed$seed
if wanted first || wanted change || wanted restore || wanted weekly || wanted repack; then
  make_corpus "$corpus" --size "$size" --seed "$seed"
  log "warming the page cache with the corpus (nothing is ever dropped from it)"
  find "$corpus" -type f -exec cat {} + >/dev/null
fi
# fresh_tree CTX: the corpus copied to the context's tree, file times kept (cp -a); the same
# path every round, so that each tool's second backup finds its first one's files.
fresh_tree() {
  rm -rf "$snap/$1/tree"
  mkdir -p "$snap/$1/tree"
  cp -a "$corpus/storage" "$corpus/app_data" "$snap/$1/tree/"
}
if wanted first || wanted change || wanted restore; then
  context main "$snap/main/tree" storage storage
  for ((r = 0; r < runs; r++)); do
    fresh_tree main
    fresh_repos main
    each_tool "$r" backup main first "$r"
    latest=first
    if wanted change; then
      log "main: --small-change --seed $((seed + 1)) on the tree (round $((r + 1)))"
      small_change "$snap/main/tree" $((seed + 1))
      each_tool "$r" backup main second "$r"
      latest=second
    fi
    if wanted restore; then each_tool "$r" restore main "$latest-$r" "$r"; fi
  done
  main_stats=$(tree_stats "$corpus/storage")
  rm -rf "$snap/main"
fi

# --- weekly: seven backups, six changes in between (one round) ------------------------------
if wanted weekly; then
  context weekly "$snap/weekly/tree" storage storage
  fresh_tree weekly
  fresh_repos weekly
  each_tool 0 backup weekly week0 0
  for w in 1 2 3 4 5 6; do
    log "weekly: --small-change --seed $((seed + w)) (week $w)"
    small_change "$snap/weekly/tree" $((seed + w))
    each_tool "$w" backup weekly "week$w" 0
  done
  for t in "${tool_list[@]}"; do final[$t]=$(du_bytes "$snap/weekly/$t"); done
  weekly_stats=$(tree_stats "$snap/weekly/tree/storage")
  rm -rf "$snap/weekly"
fi

# --- repack: half of every pack dead, then pruned (one round) ------------------------------
# prune TOOL CTX KEEP: forget all but the newest KEEP backups and prune the repository, timed
# like a backup ($m/CTX-prune-TOOL-0.*); .bytes is the repository's size afterwards.
prune() {
  local tool=$1 ctx=$2 keep=$3 d=$snap/$2 out=$m/$2-prune-$1-0
  sync
  log "$ctx: prune to the newest $keep, $tool"
  case $tool in
    ours)
      sed -i "s/^keep_last = .*/keep_last = $keep/" "$d/ours.toml"
      measure_run "$out" "$bin" --config "$d/ours.toml" -q rotate ;;
    restic) measure_run "$out" restic -r "$d/restic" forget -q --keep-last "$keep" --prune ;;
    rustic) measure_run "$out" rustic -r "$d/rustic" --log-level warn --no-progress forget --keep-last "$keep" --prune ;;
    borg) measure_run "$out" sh -c 'borg prune --keep-last "$2" "$1" && borg compact "$1"' prune "$d/borg" "$keep" ;;
  esac
  du_bytes "$d/$tool" >"$out.bytes"
}
# check TOOL CTX: every backup's data read back and hashed, timed ($m/CTX-check-TOOL-0.*):
# ours `verify --all --read-data`, `restic check --read-data`, `rustic check --read-data`,
# `borg check --verify-data`.
check() {
  local tool=$1 ctx=$2 d=$snap/$2 out=$m/$2-check-$1-0
  sync
  log "$ctx: check with every byte read, $tool"
  case $tool in
    ours) measure_run "$out" "$bin" --config "$d/ours.toml" -q verify --all --read-data ;;
    restic) measure_run "$out" restic -r "$d/restic" check -q --read-data ;;
    rustic) measure_run "$out" rustic -r "$d/rustic" --log-level warn --no-progress check --read-data ;;
    borg) measure_run "$out" borg check --verify-data "$d/borg" ;;
  esac
  echo 0 >"$out.bytes"
}
if wanted repack; then
  context repack "$snap/repack/tree" storage storage
  fresh_tree repack
  fresh_repos repack
  each_tool 0 backup repack first 0
  log "repack: every other file of the tree deleted"
  find "$snap/repack/tree/storage" -type f | sort | awk 'NR % 2 == 0' | xargs -d '\n' rm -f
  each_tool 0 backup repack second 0
  each_tool 0 prune repack 1
  repack_stats=$(tree_stats "$snap/repack/tree/storage")
  # The reference: a fresh repository holding the kept tree alone.
  context repackref "$snap/repack/tree" storage storage
  fresh_repos repackref
  each_tool 0 backup repackref first 0
  rm -rf "$snap/repack" "$snap/repackref"
fi

# --- files: many small files, a backup with nothing changed ---------------------------------
if wanted files; then
  fcorpus=$work/files-$files_n-seed$seed
  make_corpus "$fcorpus" --files "$files_n" --seed "$seed"
  log "warming the page cache with $fcorpus"
  find "$fcorpus" -type f -exec cat {} + >/dev/null
  context files "$fcorpus" storage storage # backed up in place: nothing writes to it
  fresh_repos files
  each_tool 0 backup files first 0
  for ((r = 0; r < runs; r++)); do each_tool "$r" backup files nochange "$r"; done
  each_tool 0 check files
  # 1 + --runs snapshots; the older half forgotten, the newer kept
  each_tool 0 prune files $(((runs + 2) / 2))
  files_stats=$(tree_stats "$fcorpus/storage")
  rm -rf "$snap/files"
fi

# --- database: a snapshot, 100 rows updated, a snapshot -------------------------------------
if wanted database; then
  dcorpus=$work/db-$db_size-seed$seed
  make_corpus "$dcorpus" --size 2MiB --db-size "$db_size" --seed "$seed"
  db_src=$dcorpus/app_data/app_data.db
  db_bytes=$(bytes_of "$db_src")
  # The table the update touches: the largest (dbstat, where sqlite3 has it; gen_corpus's
  # schema makes it portraits: nine columns, four of them paths and links). An update that
  # keeps the row's size, as the app's would.
  big_table=$(sqlite3 "$db_src" "SELECT name FROM dbstat WHERE name IN ('users', 'clients', 'portraits', 'videos') GROUP BY name ORDER BY sum(pgsize) DESC LIMIT 1" 2>/dev/null || true)
  case ${big_table:-portraits} in
    portraits) big_table=portraits set_clause="view_count = view_count + 1" ;;
    videos) set_clause="is_active = 1 - is_active" ;;
    clients) set_clause="phone = substr(phone, 1, 4) || substr(phone, 6) || substr(phone, 5, 1)" ;;
    *) die "the largest table of $db_src is $big_table, not one of gen_corpus's" ;;
  esac
  big_rows=$(sqlite3 "$db_src" "SELECT count(*) FROM $big_table")
  # 100 distinct ids drawn uniformly from 1..max(id) (the ids have no gaps: gen_corpus
  # numbers the rows 1, 2, …), from the seed: the same rows every round.
  ids=$(sqlite3 "$db_src" "SELECT max(id) FROM $big_table" | awk -v s="$seed" '{n = $1} END {
    srand(s)
    while (k < 100) { i = 1 + int(rand() * n); if (!(i in seen)) { seen[i]; k++; printf "%s%d", (k > 1 ? "," : ""), i } }
  }')
  context database "$snap/database/tree" app_data/app_data.db database
  for ((r = 0; r < runs; r++)); do
    rm -rf "$snap/database/tree"
    mkdir -p "$snap/database/tree"
    cp -a "$dcorpus/app_data" "$dcorpus/storage" "$snap/database/tree/"
    fresh_repos database
    each_tool "$r" backup database snap1 "$r"
    changed=$(sqlite3 "$snap/database/tree/app_data/app_data.db" "UPDATE $big_table SET $set_clause WHERE id IN ($ids); SELECT changes();")
    [ "$changed" = 100 ] || die "the update changed $changed rows of $big_table, not 100"
    [ ! -e "$snap/database/tree/app_data/app_data.db-wal" ] || die "sqlite3 left a WAL beside the database: the update is not in the .db file"
    each_tool "$r" backup database snap2 "$r"
  done
  rm -rf "$snap/database"
fi

# --- the report -----------------------------------------------------------------------------

# agg CTX LABEL TOOL FIELD: over the rounds, the median of s, cpu, bytes or sync; the
# largest rss; empty when not measured.
agg() {
  local f=("$m/$1-$2-$3"-*."$4")
  [ -f "${f[0]}" ] || return 0
  case $4 in
    rss) cat "${f[@]}" | sort -n | tail -n1 ;;
    bytes) # whole bytes (median's awk would print a large x.5 as 1.23457e+08)
      cat "${f[@]}" | sort -n | awk '{v[NR] = $1} END {printf "%.0f\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}' ;;
    *) cat "${f[@]}" | median ;;
  esac
}
series() { # CTX LABEL TOOL: the wall seconds of every round
  local f=("$m/$1-$2-$3"-*.s)
  [ -f "${f[0]}" ] || return 0
  printf '%s\n' "${f[@]}" | sort -V | xargs cat | awk '{printf "%s%.2f", (NR > 1 ? " " : ""), $1}'
}
ratio() { # A B: A ÷ B with two decimals and ×, or — when either is missing or B is 0
  awk -v a="$1" -v b="$2" 'BEGIN {if (a == "" || b == "" || b + 0 == 0) print "—"; else printf "%.2f×\n", a / b}'
}
num() { # VALUE FORMAT [DIVISOR]: VALUE ÷ DIVISOR printed with FORMAT, or — when missing
  awk -v v="$1" -v f="$2" -v d="${3:-1}" 'BEGIN {if (v == "") print "—"; else printf f "\n", v / d}'
}
mib_or() { num "$1" %.1f 1048576; }

# result CTX LABEL ROW: one line per tool of the results table
result() {
  local ctx=$1 label=$2 row=$3 t s b added extra rs rb
  for t in "${tool_list[@]}"; do
    s=$(agg "$ctx" "$label" "$t" s)
    [ -n "$s" ] || continue
    b=$(agg "$ctx" "$label" "$t" bytes)
    added=$(num "$b" %.2f 1048576) extra="—"
    if [ "$label" = restore ]; then added="—" extra=$(num "$(agg "$ctx" "$label" "$t" sync)" %.3f); fi
    rs="" rb=""
    if [ "$t" != ours ] && uses ours; then
      rs=$(ratio "$(agg "$ctx" "$label" ours s)" "$s")
      # bytes: only against at least 1 MiB (a no-change backup adds a few KiB: ratios of noise)
      if [ "$label" != restore ] && [ "${b:-0}" -ge 1048576 ]; then rb=$(ratio "$(agg "$ctx" "$label" ours bytes)" "$b"); fi
    fi
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$row" "$t" "$(num "$s" %.3f)" "$(series "$ctx" "$label" "$t")" \
      "$(num "$(agg "$ctx" "$label" "$t" cpu)" %.1f)" "$(num "$(agg "$ctx" "$label" "$t" rss)" %.1f 1024)" \
      "$added" "$extra" "${rs:-—}" "${rb:-—}"
  done
}

# target ROW WHAT OURS RESTIC RUSTIC BORG LIMIT KIND: one line of the targets table. KIND
# ratio: ours ÷ restic and ours ÷ rustic ≤ LIMIT (each where measured); abs: ours ≤ LIMIT
# (in the unit of the values).
target() {
  local verdict r1 r2
  if [ "$8" = ratio ]; then
    r1=$(ratio "$3" "$4") r2=$(ratio "$3" "$5")
    verdict=$(awk -v a="$3" -v b="$4" -v c="$5" -v l="$7" 'BEGIN {
      if (a == "" || ((b == "" || b + 0 == 0) && (c == "" || c + 0 == 0))) { print "not measured"; exit }
      ok = 1
      if (b != "" && b + 0 != 0 && a / b > l) ok = 0
      if (c != "" && c + 0 != 0 && a / c > l) ok = 0
      print (ok ? "met" : "**MISSED**")
    }')
    printf '| %s | %s | %s | %s | %s | %s | **%s** | **%s** | ≤ %.2f× | %s |\n' "$1" "$2" "${3:-—}" "${4:-—}" "${5:-—}" "${6:-—}" "$r1" "$r2" "$7" "$verdict"
  else
    verdict=$(awk -v a="$3" -v l="$7" 'BEGIN {if (a == "") print "not measured"; else print (a <= l ? "met" : "**MISSED**")}')
    printf '| %s | %s | %s | %s | %s | %s | — | — | ≤ %s | %s |\n' "$1" "$2" "${3:-—}" "${4:-—}" "${5:-—}" "${6:-—}" "$7" "$verdict"
  fi
}
# v CTX LABEL TOOL FIELD [FORMAT DIVISOR]: a formatted median (rss: the largest), "" when missing
v() {
  local x
  x=$(agg "$1" "$2" "$3" "$4")
  [ -n "$x" ] || return 0
  num "$x" "${5:-%.3f}" "${6:-1}"
}
vsum() { # CTX LABEL TOOL: the sum of .s and .sync (restore, then sync -f)
  local a b
  a=$(agg "$1" "$2" "$3" s) b=$(agg "$1" "$2" "$3" sync)
  [ -n "$a" ] && [ -n "$b" ] || return 0
  awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f\n", a + b}'
}
repack_share() { # TOOL: its repository's bytes after the prune ÷ a fresh one of the kept tree
  local a b
  a=$(agg repack prune "$1" bytes) b=$(agg repackref first "$1" bytes)
  [ -n "$a" ] && [ -n "$b" ] || return 0
  awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f\n", a / b}'
}
final_mib() { # TOOL: its repository's MiB after the weekly row, "" when not measured
  if [ -n "${final[$1]:-}" ]; then num "${final[$1]}" %.1f 1048576; fi
}
weekly_line() { # TOOL: wall s and added MiB of each week, the sum of the walls, the final size
  local t=$1 w s="" b="" total=0 x r="—"
  for w in 0 1 2 3 4 5 6; do
    x=$(cat "$m/weekly-week$w-$t-0.s")
    s+="${s:+ }$(num "$x" %.2f)" total=$(awk -v a="$total" -v b="$x" 'BEGIN {print a + b}')
    b+="${b:+ }$(mib_or "$(cat "$m/weekly-week$w-$t-0.bytes")")"
  done
  if [ "$t" != ours ] && uses ours; then r=$(ratio "${final[ours]}" "${final[$t]}"); fi
  printf '| %s | %s | %.2f | %s | %s | %s |\n' "$t" "$s" "$total" "$b" "$(mib_or "${final[$t]}")" "$r"
}

report() {
  local mb=1048576
  echo "# vertex-backup snapshots vs restic, rustic and borg"
  echo
  echo "Command: \`${invocation% }\` — whole processes under GNU time; first, change and restore share the same rounds, $runs of them (fresh repositories and a fresh copy of the corpus each round, the order of the tools rotating), medians of wall and CPU s, the largest peak RSS; weekly is one round."
  if [ -n "${main_stats:-}" ] || [ -n "${weekly_stats:-}" ]; then
    echo "Corpus (\`gen_corpus --size $size --seed $seed\`): storage $(awk -v s="$(tree_stats "$corpus/storage")" 'BEGIN {split(s, a, " "); printf "%d files, %.1f MiB", a[1], a[3] / 1048576}'), copied (\`cp -a\`) to the same path every round; each tool backs up its \`storage/\`."
  fi
  if [ -s "$m/changes.log" ]; then
    echo "Changes: \`gen_corpus --small-change --seed S\` on the copy, S = $((seed + 1)) for the change row, $((seed + 1))…$((seed + 6)) for weeks 1–6: $(sed -n 1p "$m/changes.log" | sed 's/.*: //')."
  fi
  echo "**Warm page cache**: nothing is dropped from the cache; \`sync\` before every timed run, untimed."
  echo
  echo "## Tools"
  echo
  if uses ours; then echo "- ours: $("$bin" --version | head -n1), \`storage_format = \"snapshot\"\`, \`database_format = \"snapshot\"\`, zstd level 3, all cores (\`threads = 0\`), no encryption"; fi
  if uses restic; then echo "- restic: $restic_info; \`restic backup -q${noscan[*]:+ ${noscan[*]}} PATH\`, default concurrency"; fi
  if uses rustic; then echo "- rustic: $rustic_info; \`rustic backup PATH\`, \`rustic restore latest DIR\`, \`rustic forget --keep-last 1 --prune\` (\`--log-level warn --no-progress\`), default concurrency"; fi
  if uses borg; then echo "- borg: $borg_info; \`borg create REPO::NAME storage\` from the tree's parent; single-threaded (borg 1.x)"; fi
  echo "- Fairness: restic and rustic cannot be run unencrypted, so their figures include AES + Poly1305 on every blob; borg and ours run unencrypted. Repository bytes are \`du -sb\` of the repository (ours: the whole backup dir); the tools' caches (restic's, borg's, under the work dir) are not counted."
  echo
  echo "## Machine"
  echo
  machine_info "$work"
  echo "- Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (anything else running moves these numbers by tens of percent)"
  echo
  echo "## Targets"
  echo
  echo "| Row | Measure | Ours | restic | rustic | borg | Ours ÷ restic | Ours ÷ rustic | Target | |"
  echo "|---|---|--:|--:|--:|--:|--:|--:|---|---|"
  if wanted first; then
    target first "wall s, first backup" "$(v main first ours s)" "$(v main first restic s)" "$(v main first rustic s)" "$(v main first borg s)" 0.6 ratio
  fi
  if wanted change; then
    target change "wall s, backup after a 1 % change" "$(v main second ours s)" "$(v main second restic s)" "$(v main second rustic s)" "$(v main second borg s)" 1.0 ratio
    target change "MiB added by it" "$(v main second ours bytes %.2f $mb)" "$(v main second restic bytes %.2f $mb)" "$(v main second rustic bytes %.2f $mb)" "$(v main second borg bytes %.2f $mb)" 1.1 ratio
  fi
  if wanted restore; then
    target restore "wall s, restore of the latest" "$(v main restore ours s)" "$(v main restore restic s)" "$(v main restore rustic s)" "$(v main restore borg s)" 1.0 ratio
    target restore "wall s, ours vs theirs + \`sync -f\` (equal durability; reference)" "$(v main restore ours s)" "$(vsum main restore restic)" "$(vsum main restore rustic)" "$(vsum main restore borg)" 1.0 ratio
  fi
  if wanted weekly; then
    target weekly "MiB of the repository after 7 weekly backups" "$(final_mib ours)" "$(final_mib restic)" "$(final_mib rustic)" "$(final_mib borg)" 1.0 ratio
  fi
  if wanted files; then
    # 100 000 files: a no-change backup in 2 s and 64 MiB; 1 000 000 (the scale row): 10 s
    # and 128 MiB, for the first backup too
    local nochange_s=2 rss_mib=64
    if ((files_n >= 1000000)); then nochange_s=10 rss_mib=128; fi
    target files "wall s, $files_n files, first backup" "$(v files first ours s)" "$(v files first restic s)" "$(v files first rustic s)" "$(v files first borg s)" 0.6 ratio
    target files "peak RSS MiB of it" "$(v files first ours rss %.1f 1024)" "$(v files first restic rss %.1f 1024)" "$(v files first rustic rss %.1f 1024)" "$(v files first borg rss %.1f 1024)" $rss_mib abs
    target files "wall s, $files_n files, nothing changed" "$(v files nochange ours s)" "$(v files nochange restic s)" "$(v files nochange rustic s)" "$(v files nochange borg s)" $nochange_s abs
    target files "peak RSS MiB of it" "$(v files nochange ours rss %.1f 1024)" "$(v files nochange restic rss %.1f 1024)" "$(v files nochange rustic rss %.1f 1024)" "$(v files nochange borg rss %.1f 1024)" $rss_mib abs
    target files "wall s, every snapshot read back (\`verify --all --read-data\`, \`check --read-data\`)" "$(v files check ours s)" "$(v files check restic s)" "$(v files check rustic s)" "$(v files check borg s)" 1.0 ratio
    target files "wall s, prune after forgetting the older half" "$(v files prune ours s)" "$(v files prune restic s)" "$(v files prune rustic s)" "$(v files prune borg s)" 1.0 ratio
  fi
  if wanted repack; then
    target repack "repository after prune ÷ a fresh one of the kept tree" "$(repack_share ours)" "$(repack_share restic)" "$(repack_share rustic)" "$(repack_share borg)" 1.10 abs
    target repack "wall s, prune with half of every pack dead" "$(v repack prune ours s)" "$(v repack prune restic s)" "$(v repack prune rustic s)" "$(v repack prune borg s)" 1.0 ratio
  fi
  if wanted database; then
    target database "MiB added by the snapshot after 100 rows changed" "$(v database snap2 ours bytes %.2f $mb)" "$(v database snap2 restic bytes %.2f $mb)" "$(v database snap2 rustic bytes %.2f $mb)" "$(v database snap2 borg bytes %.2f $mb)" 4 abs
  fi
  echo
  echo "## Results"
  echo
  echo "| Row | Tool | Median s | Runs s | CPU s | Peak RSS MiB | Added MiB | \`sync -f\` s | Ours ÷ this, s | Ours ÷ this, bytes |"
  echo "|---|---|--:|---|--:|--:|--:|--:|--:|--:|"
  if wanted first; then result main first "first backup"; fi
  if wanted change; then result main second "after a 1 % change"; fi
  if wanted restore; then result main restore "restore of the latest"; fi
  if wanted files; then
    result files first "$files_n files: first backup"
    result files nochange "$files_n files: nothing changed"
    result files check "$files_n files: every snapshot read back"
    result files prune "$files_n files: prune to the newer half (bytes: the repository after)"
  fi
  if wanted repack; then
    result repack first "repack: first backup"
    result repack second "repack: half the files deleted"
    result repack prune "repack: prune (bytes: the repository after)"
    result repackref first "repack: fresh repository of the kept tree"
  fi
  if wanted database; then
    result database snap1 "database: first"
    result database snap2 "database: 100 rows changed"
  fi
  if wanted weekly; then
    echo
    echo "## Seven weekly backups (one round)"
    echo
    echo "| Tool | Wall s, weeks 0–6 | Sum s | MiB added, weeks 0–6 | Repository MiB at the end | Ours ÷ this |"
    echo "|---|---|--:|---|--:|--:|"
    for t in "${tool_list[@]}"; do weekly_line "$t"; done
    echo
    echo "Storage after week 6: $weekly_stats."
  fi
  echo
  echo "- Added MiB: growth of \`du -sb\` of the repository over that backup (median of the rounds); ours counts its whole backup dir (snapshot metadata, trees, packs)."
  echo "- CPU s: user + system (median); peak RSS: GNU time's maximum resident set size, the largest of the rounds."
  if wanted restore; then
    echo "- Restore: into an empty directory, checked afterwards to hold the source's file count and bytes. Our restore syncs the tree before it returns; \`restic restore\`, \`rustic restore\` and \`borg extract\` do not, so \`sync -f\` of the restored tree is timed apart (column \`sync -f\` s) and the equal-durability line adds it to theirs."
  fi
  if wanted files; then
    echo "- Files: \`gen_corpus --files $files_n --seed $seed\` ($files_stats), backed up in place; one first backup, then --runs ($runs) backups with nothing changed, the order rotating; then every snapshot read back (one run), and the older half forgotten and pruned (keep the newest $(((runs + 2) / 2)); one run)."
  fi
  if wanted repack; then
    echo "- Repack: the corpus backed up, every other file (in path order) deleted ($repack_stats left), backed up again; then ours \`rotate\` with keep_last = 1 and the default \`max_unused = \"5%\"\` (forget + repack + sweep), restic and rustic \`forget --keep-last 1 --prune\` (their default \`--max-unused 5%\`), borg \`prune --keep-last 1\` then \`compact\`. The share is the repository's \`du -sb\` after the prune ÷ that of a fresh repository holding only the kept tree (1.00: nothing dead kept)."
  fi
  if wanted database; then
    echo "- Database: \`gen_corpus --size 2MiB --db-size $db_size --seed $seed\` ($(mib "$db_bytes") MiB, WAL mode), copied each round; between the two backups \`sqlite3\` sets \`$set_clause\` in 100 of the $big_rows rows of \`$big_table\` (the largest table), drawn at random from the seed: the same rows every round. Ours: \`create --type database\`; restic and borg back up the .db file (reference)."
  fi
}

mkdir -p "$root/bench/results"
report | tee "$root/bench/results/snapshots.md"
