#!/usr/bin/env bash
# Side-by-side benchmark of vertex-backup against the stock tools on one generated corpus
# (issues 7 and 18): each operation and its baselines are timed as whole processes
# in alternating rounds (ours, theirs, ours, …; the order rotates each round) so drift of
# the machine hits both alike; medians, MiB/s, CPU, peak RSS, output size, ours ÷ theirs.
# `--busy` runs every group a second time with a bounded competing load beside it (a
# direct-I/O disk writer and a CPU hog on one core): the quiet and busy rows come from one
# run. Prints a Markdown report and writes it to bench/results/latest.md (busy: busy.md).
#
#   bench/run.sh [--size 1GiB] [--db-size SIZE] [--runs 5] [--work DIR] [--seed 42] [--busy]
#                [--only storage,database,full,gzip,restore,verify]
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

size=1GiB db_size="" runs=5 seed=42 work=$root/bench/work busy=no
only=storage,database,full,gzip,restore,verify
invocation="bench/run.sh $*"
usage() {
  echo "usage: bench/run.sh [--size 1GiB] [--db-size SIZE] [--runs 5] [--work DIR] [--seed 42] [--busy]"
  echo "                    [--only storage,database,full,gzip,restore,verify]"
}
while [ $# -gt 0 ]; do
  case $1 in
    --size) size=${2:?--size needs a value}; shift 2 ;;
    --db-size) db_size=${2:?--db-size needs a value}; shift 2 ;;
    --runs) runs=${2:?--runs needs a value}; shift 2 ;;
    --work) work=${2:?--work needs a value}; shift 2 ;;
    --seed) seed=${2:?--seed needs a value}; shift 2 ;;
    --busy) busy=yes; shift ;;
    --only) only=${2:?--only needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs takes a positive number"
wanted() { [[ ,$only, == *,$1,* ]]; }

need_tools tar:tar zstd:zstd gzip:gzip sqlite3:sqlite3 sha256sum:coreutils /usr/bin/time:time
if [ $busy = yes ]; then need_tools taskset:util-linux dd:coreutils; fi
build
mkdir -p "$work"
work=$(cd "$work" && pwd)
corpus=$work/corpus-$size-seed$seed${db_size:+-db$db_size}
make_corpus "$corpus" --size "$size" --seed "$seed" ${db_size:+--db-size "$db_size"}
out=$work/out tmp=$work/tmp fixture=$work/fixture
rm -rf "$out" "$tmp" "$fixture"
mkdir -p "$out" "$tmp"
write_config "$work/zstd.toml" "$corpus" "$out/ours" zstd 3
write_config "$work/gzip.toml" "$corpus" "$out/ours" gzip 6 # tar -czf runs gzip -6
write_config "$work/fixture.toml" "$corpus" "$fixture" zstd 3

log "making the storage archive that restore, verify and the baselines read"
"$bin" --config "$work/fixture.toml" -q create --type storage >/dev/null
archives=("$fixture"/storage/storage_backup_*.tar.zst)
if [ ${#archives[@]} != 1 ] || [ ! -f "${archives[0]}" ]; then
  die "expected one archive in $fixture/storage"
fi
archive=${archives[0]}

log "warming the page cache (nothing is ever dropped from it)"
find "$corpus" "$archive" -type f -exec cat {} + >/dev/null
storage_bytes=$(bytes_of "$corpus/storage")
db_bytes=$(bytes_of "$corpus/app_data")
archive_bytes=$(bytes_of "$archive")
files=$(find "$corpus/storage" -type f | wc -l)

# The competing load of --busy: a writer rewriting a 256 MiB file with O_DIRECT (disk
# queue contention without page cache of its own) and a spinning shell pinned to the
# last core. Bounded: one file, one core; stopped after each group and at exit.
load_pids=()
start_load() {
  local last=$(($(nproc) - 1))
  (while :; do dd if=/dev/zero of="$work/busy.dd" bs=1M count=256 oflag=direct conv=notrunc status=none; done) &
  load_pids+=($!)
  taskset -c "$last" bash -c 'while :; do :; done' &
  load_pids+=($!)
}
stop_load() {
  local p
  for p in "${load_pids[@]}"; do
    pkill -P "$p" 2>/dev/null || true
    kill "$p" 2>/dev/null || true
  done
  for p in "${load_pids[@]}"; do { wait "$p" || true; } 2>/dev/null; done
  load_pids=()
  rm -f "$work/busy.dd"
}
trap 'stop_load; rm -rf "$out" "$tmp"' EXIT

declare -A cmd prep inb outg med each rss cpu outb
# op NAME INPUT_BYTES OUTPUT_GLOBS PREPARE COMMAND: register one operation. COMMAND marks
# each process with {T}: nothing when timing, GNU time when measuring peak RSS and CPU.
op() { inb[$1]=$2 outg[$1]=$3 prep[$1]=$4 cmd[$1]=$5; }

# timed COMMAND: wall seconds of one run.
timed() {
  local start
  start=$(date +%s.%N)
  bash -c "set -o pipefail; $1" >/dev/null 2>>"$tmp/errors" || { cat "$tmp/errors" >&2; die "failed: $1"; }
  awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {print b - a}'
}

# group MODE NAME...: one run of each under GNU time (peak RSS, CPU; also the warm-up),
# then --runs rounds alternating them, rotating who goes first. Results keyed MODE:NAME.
group() {
  local mode=$1 n name i r k t plain; shift
  local names=("$@")
  n=${#names[@]}
  [ "$mode" = busy ] && start_load
  for name in "${names[@]}"; do
    log "$mode $name: ${cmd[$name]//\{T\} /}"
    t="/usr/bin/time -f '%M %U %S' -a -o $tmp/$mode-$name.time"
    rm -f "$tmp/$mode-$name.time"
    bash -c "${prep[$name]}"
    timed "${cmd[$name]//\{T\}/$t}" >/dev/null
    # KiB; a pipeline's processes run at the same time, so their peaks add up.
    rss[$mode:$name]=$(awk '$1 ~ /^[0-9]+$/ {s += $1} END {print s + 0}' "$tmp/$mode-$name.time")
    cpu[$mode:$name]=$(awk '$1 ~ /^[0-9]+$/ {s += $2 + $3} END {print s + 0}' "$tmp/$mode-$name.time")
    # shellcheck disable=SC2086 # the globs must expand
    outb[$name]=$(bytes_of ${outg[$name]})
  done
  for ((r = 0; r < runs; r++)); do
    for ((i = 0; i < n; i++)); do
      k=$(((i + r) % n)) name=${names[$k]}
      plain=${cmd[$name]//\{T\} /}
      bash -c "${prep[$name]}"
      timed "$plain" >>"$tmp/$mode-$name.runs"
    done
  done
  for name in "${names[@]}"; do
    med[$mode:$name]=$(median <"$tmp/$mode-$name.runs")
    each[$mode:$name]=$(awk '{printf "%s%.2f", (NR > 1 ? " " : ""), $1}' "$tmp/$mode-$name.runs")
  done
  [ "$mode" = busy ] && stop_load
  return 0
}

q() { printf '%q' "$1"; }
B=$(q "$bin") C=$(q "$corpus") O=$(q "$out") A=$(q "$archive") W=$(q "$work")
clean="rm -rf $O/ours && sync"
op ours_storage "$storage_bytes" "$O/ours/storage/*.tar.zst" "$clean" \
  "{T} $B --config $W/zstd.toml -q create --type storage"
op tar_zstd "$storage_bytes" "$O/storage.tar.zst" "rm -f $O/storage.tar.zst && sync" \
  "{T} tar -cf - -C $C storage | {T} zstd -3 -T0 -q > $O/storage.tar.zst"
op tar_zstd_sync "$storage_bytes" "$O/storage.tar.zst" "rm -f $O/storage.tar.zst && sync" \
  "{T} tar -cf - -C $C storage | {T} zstd -3 -T0 -q > $O/storage.tar.zst && sync $O/storage.tar.zst"
op ours_gzip "$storage_bytes" "$O/ours/storage/*.tar.gz" "$clean" \
  "{T} $B --config $W/gzip.toml -q create --type storage"
op tar_gzip "$storage_bytes" "$O/storage.tar.gz" "rm -f $O/storage.tar.gz && sync" \
  "{T} tar -czf $O/storage.tar.gz -C $C storage"
op ours_database "$db_bytes" "$O/ours/database/*.db" "$clean" \
  "{T} $B --config $W/zstd.toml -q create --type database"
op sqlite_backup "$db_bytes" "$O/db.sqlite" "rm -f $O/db.sqlite && sync" \
  "{T} sqlite3 $C/app_data/app_data.db '.backup $O/db.sqlite'"
op ours_full "$((storage_bytes + db_bytes))" "$O/ours/database/*.db $O/ours/storage/*.tar.zst" "$clean" \
  "{T} $B --config $W/zstd.toml -q create --type full"
op ours_restore "$storage_bytes" "$O/restored" "rm -rf $O/restored && sync" \
  "{T} $B --config $W/fixture.toml -q restore $A --target $O/restored --yes"
op zstd_untar "$storage_bytes" "$O/untar" "rm -rf $O/untar && mkdir -p $O/untar && sync" \
  "{T} zstd -dc $A | {T} tar -xf - -C $O/untar"
op zstd_untar_sync "$storage_bytes" "$O/untar" "rm -rf $O/untar && mkdir -p $O/untar && sync" \
  "{T} zstd -dc $A | {T} tar -xf - -C $O/untar && sync -f $O/untar"
op ours_verify "$archive_bytes" "" ":" "{T} $B --config $W/fixture.toml -q verify $A"
op sha256sum "$archive_bytes" "" ":" "{T} sha256sum $A"
op openssl_sha256 "$archive_bytes" "" ":" "{T} openssl dgst -sha256 $A"

modes=(quiet)
if [ $busy = yes ]; then modes+=(busy); fi
# The backups in one group, so that "full" and its two parts share the same rounds.
backups=()
if wanted storage; then backups+=(ours_storage tar_zstd tar_zstd_sync); fi
if wanted database; then backups+=(ours_database sqlite_backup); fi
if wanted full; then backups+=(ours_full); fi
for mode in "${modes[@]}"; do
  if [ ${#backups[@]} -gt 0 ]; then group "$mode" "${backups[@]}"; fi
  if wanted restore; then group "$mode" ours_restore zstd_untar zstd_untar_sync; fi
done
# gzip and verify: quiet only (the load is about disk writes; gzip takes minutes per round)
if wanted gzip; then group quiet ours_gzip tar_gzip; fi
if wanted verify; then
  if command -v openssl >/dev/null; then # hashing on the SHA extensions, when the CPU has them
    group quiet ours_verify sha256sum openssl_sha256
  else
    group quiet ours_verify sha256sum
  fi
fi
if wanted full && wanted storage && wanted database; then
  for mode in "${modes[@]}"; do
    # The two parts of a full backup, run one after the other: what "full" must not exceed.
    med[$mode:db_plus_storage]=$(awk -v a="${med[$mode:ours_database]}" -v b="${med[$mode:ours_storage]}" 'BEGIN {print a + b}')
  done
fi

row() { # MODE NAME OPERATION TOOL COMMAND: one line of the results table
  local m=$1 n=$2 s tput rssm cpus outm c=${5//|/\\|} # a | inside a table cell
  s=${med[$m:$n]:-}
  [ -n "$s" ] || return 0
  tput=$(awk -v b="${inb[$n]}" -v s="$s" 'BEGIN {printf "%.0f", b / 1048576 / s}')
  rssm=$(awk -v k="${rss[$m:$n]}" 'BEGIN {printf "%.1f", k / 1024}')
  cpus=$(awk -v c="${cpu[$m:$n]}" 'BEGIN {printf "%.2f", c}')
  outm="—"
  if [ "${outb[$n]}" != 0 ]; then outm=$(mib "${outb[$n]}"); fi
  # shellcheck disable=SC2016 # backticks are Markdown
  printf '| %s | %s | %s | `%s` | %.3f | %s | %s | %s | %s | %s |\n' "$m" "$3" "$4" "$c" "$s" "${each[$m:$n]}" "$tput" "$cpus" "$rssm" "$outm"
}

target() { # MODE OURS THEIRS LIMIT WHAT: one line of the targets table
  local m=$1 a=${med[$1:$2]:-} b=${med[$1:$3]:-}
  [ -n "$a" ] && [ -n "$b" ] || return 0
  awk -v m="$m" -v a="$a" -v b="$b" -v l="$4" -v w="$5" -v k="${rss[$m:$2]:-0}" 'BEGIN {
    r = a / b
    printf "| %s | %s | %.3f | %.3f | **%.2f×** | ≤ %.2f× | %s | %.1f %s |\n", m, w, a, b, r, l,
      (r <= l ? "met" : "**MISSED**"), k / 1024, (k <= 65536 ? "met" : "**MISSED**")
  }'
}

report() {
  echo "# vertex-backup benchmark"
  echo
  echo "Command: \`${invocation% }\` — each operation and its baselines in $runs alternating rounds (whole processes, the order rotating each round), medians; one run under GNU time before them for peak RSS and CPU."
  echo "Corpus (\`gen_corpus --size $size --seed $seed${db_size:+ --db-size $db_size}\`): $files files, $(mib "$storage_bytes") MiB of storage, database $(mib "$db_bytes") MiB; our zstd archive of it: $(mib "$archive_bytes") MiB."
  echo "**Warm page cache**: nothing is dropped from the cache (the corpus is read once before timing); outputs are deleted and \`sync\`ed before every run, untimed."
  if [ $busy = yes ]; then
    echo "**busy** rows: while the group runs, \`dd if=/dev/zero bs=1M count=256 oflag=direct\` rewrites one file in a loop on the same disk and a shell loop spins on core $(($(nproc) - 1)) (\`taskset\`)."
  fi
  echo
  echo "## Machine"
  echo
  machine_info "$work"
  echo
  echo "## Targets"
  echo
  echo "| Load | Comparison | Ours s | Theirs s | Ours ÷ theirs | Target | | Peak RSS MiB (≤ 64) |"
  echo "|---|---|--:|--:|--:|---|---|---|"
  for m in "${modes[@]}"; do
    target "$m" ours_storage tar_zstd_sync 1.0 "storage vs \`tar \| zstd -3 -T0 && sync\`"
    if [ "$m" = quiet ]; then target "$m" ours_storage tar_zstd 1.1 "storage vs \`tar \| zstd -3 -T0\` (unsynced)"; fi
    target "$m" ours_database sqlite_backup 1.15 "database vs \`sqlite3 .backup\`"
    target "$m" ours_restore zstd_untar_sync 1.0 "restore vs \`zstd -dc \| tar -x && sync -f\`"
    target "$m" ours_full db_plus_storage 1.0 "full vs our database + storage"
  done
  target quiet ours_gzip tar_gzip 1.0 "storage (gzip) vs \`tar -czf\`"
  echo
  echo "## Results"
  echo
  echo "| Load | Operation | Tool | Command | Median s | Runs s | MiB/s | CPU s | Peak RSS MiB | Output MiB |"
  echo "|---|---|---|---|--:|---|--:|--:|--:|--:|"
  for m in quiet busy; do
    row $m ours_storage "storage (zstd)" ours "vertex-backup create --type storage"
    row $m tar_zstd "storage (zstd)" "tar + zstd" "tar -cf - storage | zstd -3 -T0 > out"
    row $m tar_zstd_sync "storage (zstd)" "tar + zstd + sync" "tar -cf - storage | zstd -3 -T0 > out && sync out"
    row $m ours_database database ours "vertex-backup create --type database"
    row $m sqlite_backup database sqlite3 "sqlite3 DB '.backup X'"
    row $m ours_full full ours "vertex-backup create --type full"
    row $m ours_restore restore ours "vertex-backup restore ARCHIVE --target DIR --yes"
    row $m zstd_untar restore "zstd + tar" "zstd -dc ARCHIVE | tar -xf -"
    row $m zstd_untar_sync restore "zstd + tar + sync" "zstd -dc ARCHIVE | tar -xf - && sync -f DIR"
    row $m ours_gzip "storage (gzip)" ours "create --type storage, compression = gzip (level 6)"
    row $m tar_gzip "storage (gzip)" "tar -z" "tar -czf out storage"
    row $m ours_verify verify ours "vertex-backup verify ARCHIVE"
    row $m sha256sum verify sha256sum "sha256sum ARCHIVE"
    row $m openssl_sha256 verify openssl "openssl dgst -sha256 ARCHIVE"
  done
  echo
  echo "- MiB/s: bytes of input ÷ median (storage tree, database, both for full; the restored tree for restore; the archive for verify). Verify's own target is absolute: ≥ 800 MiB/s."
  echo "- CPU s and peak RSS: GNU time (user + system; maximum resident set size) of the one measured run; for a pipeline the sum over its processes (\`tar -czf\` counts only the larger of tar and its gzip child)."
  echo "- Our backups fsync the archive and its metadata (docs/design.md §2), and our restore \`syncfs\`es the restored tree before it swaps it in: the \`&& sync\` baselines are the equal-durability ones. Our database backup includes \`PRAGMA quick_check\` (the default) and SHA-256 of the copy; \`sqlite3 .backup\` checks nothing (it does fsync)."
  echo "- Restore and the \`zstd | tar\` baselines read the same archive (ours); our restore verifies its checksum on the way."
}

mkdir -p "$root/bench/results"
name=latest
if [ $busy = yes ]; then name=busy; fi
report | tee "$root/bench/results/$name.md"
