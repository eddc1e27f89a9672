#!/usr/bin/env bash
# Side-by-side benchmark of vertex-backup against the stock tools on one generated corpus
# (SPEC §10, issue 7): median wall time, MiB/s, peak RSS, output size, ours ÷ theirs.
# Prints a Markdown report and writes it to bench/results/latest.md. See bench/README.md.
#
#   bench/run.sh [--size 1GiB] [--runs 3] [--work DIR] [--seed 42]
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

size=1GiB runs=3 seed=42 work=$root/bench/work
invocation="bench/run.sh $*"
usage() { echo "usage: bench/run.sh [--size 1GiB] [--runs 3] [--work DIR] [--seed 42]"; }
while [ $# -gt 0 ]; do
  case $1 in
    --size) size=${2:?--size needs a value}; shift 2 ;;
    --runs) runs=${2:?--runs needs a value}; shift 2 ;;
    --work) work=${2:?--work needs a value}; shift 2 ;;
    --seed) seed=${2:?--seed needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs takes a positive number"

need_tools tar:tar zstd:zstd gzip:gzip sqlite3:sqlite3 sha256sum:coreutils /usr/bin/time:time 'hyperfine:hyperfine?'
build
mkdir -p "$work"
work=$(cd "$work" && pwd)
corpus=$work/corpus-$size-seed$seed
make_corpus "$corpus" --size "$size" --seed "$seed"
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

declare -A med rss outb inb
# bench NAME INPUT_BYTES OUTPUT_GLOBS PREPARE COMMAND
# COMMAND marks each process with {T}: nothing when timing, GNU time when measuring peak RSS
# (once, before the timed runs, which it also warms up). PREPARE runs before every run.
bench() {
  local name=$1 prep=$4 cmd=$5 plain t start i
  plain=${cmd//\{T\} /}
  t="/usr/bin/time -f %M -a -o $tmp/$name.rss"
  log "$name: $plain"
  inb[$name]=$2
  bash -c "$prep"
  if ! bash -c "set -o pipefail; ${cmd//\{T\}/$t}" >/dev/null 2>"$tmp/$name.err"; then
    cat "$tmp/$name.err" >&2
    die "$name failed"
  fi
  # KiB; a pipeline's processes run at the same time, so their peaks add up.
  rss[$name]=$(awk '$1 ~ /^[0-9]+$/ {s += $1} END {print s + 0}' "$tmp/$name.rss")
  # shellcheck disable=SC2086 # the globs must expand
  outb[$name]=$(bytes_of $3)
  if command -v hyperfine >/dev/null; then
    hyperfine --runs "$runs" --shell bash --prepare "$prep" --export-csv "$tmp/$name.csv" \
      --command-name "$name" "$plain" >&2
    med[$name]=$(awk -F, 'NR == 2 {print $4}' "$tmp/$name.csv")
  else
    med[$name]=$(for ((i = 0; i < runs; i++)); do
      bash -c "$prep"
      start=$(date +%s.%N)
      bash -c "$plain" >/dev/null
      awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {print b - a}'
    done | median)
  fi
}

q() { printf '%q' "$1"; }
B=$(q "$bin") C=$(q "$corpus") O=$(q "$out") A=$(q "$archive") W=$(q "$work")
clean="rm -rf $O/ours && sync"
bench ours_storage "$storage_bytes" "$O/ours/storage/*.tar.zst" "$clean" \
  "{T} $B --config $W/zstd.toml -q create --type storage"
bench tar_zstd "$storage_bytes" "$O/storage.tar.zst" "rm -f $O/storage.tar.zst && sync" \
  "{T} tar -cf - -C $C storage | {T} zstd -3 -T0 -q > $O/storage.tar.zst"
# The same made durable like ours (which fsyncs): for reference, not a target.
bench tar_zstd_fsync "$storage_bytes" "$O/storage.tar.zst" "rm -f $O/storage.tar.zst && sync" \
  "{T} tar -cf - -C $C storage | {T} zstd -3 -T0 -q > $O/storage.tar.zst && sync $O/storage.tar.zst"
bench ours_gzip "$storage_bytes" "$O/ours/storage/*.tar.gz" "$clean" \
  "{T} $B --config $W/gzip.toml -q create --type storage"
bench tar_gzip "$storage_bytes" "$O/storage.tar.gz" "rm -f $O/storage.tar.gz && sync" \
  "{T} tar -czf $O/storage.tar.gz -C $C storage"
bench ours_database "$db_bytes" "$O/ours/database/*.db" "$clean" \
  "{T} $B --config $W/zstd.toml -q create --type database"
bench sqlite_backup "$db_bytes" "$O/db.sqlite" "rm -f $O/db.sqlite && sync" \
  "{T} sqlite3 $C/app_data/app_data.db '.backup $O/db.sqlite'"
bench ours_full "$((storage_bytes + db_bytes))" "$O/ours/database/*.db $O/ours/storage/*.tar.zst" "$clean" \
  "{T} $B --config $W/zstd.toml -q create --type full"
bench ours_restore "$storage_bytes" "$O/restored" "rm -rf $O/restored && sync" \
  "{T} $B --config $W/fixture.toml -q restore $A --target $O/restored --yes"
[ "${outb[ours_restore]}" = "$storage_bytes" ] ||
  log "WARNING: the restored tree holds ${outb[ours_restore]} bytes, the corpus $storage_bytes"
bench zstd_untar "$storage_bytes" "$O/untar" "rm -rf $O/untar && mkdir -p $O/untar && sync" \
  "{T} zstd -dc $A | {T} tar -xf - -C $O/untar"
bench ours_verify "$archive_bytes" "" ":" "{T} $B --config $W/fixture.toml -q verify $A"
bench sha256sum "$archive_bytes" "" ":" "{T} sha256sum $A"
if command -v openssl >/dev/null; then # hashing on the SHA extensions, when the CPU has them
  bench openssl_sha256 "$archive_bytes" "" ":" "{T} openssl dgst -sha256 $A"
fi
# The two parts of a full backup, run one after the other: what "full" must not exceed.
med[db_plus_storage]=$(awk -v a="${med[ours_database]}" -v b="${med[ours_storage]}" 'BEGIN {print a + b}')

row() { # NAME OPERATION TOOL COMMAND [BASELINE [LIMIT]]: one line of the table
  local n=$1 s tput rssm outm ratio="—" target="" cmd=${4//|/\\|} # a | inside a table cell
  s=${med[$n]}
  tput=$(awk -v b="${inb[$n]}" -v s="$s" 'BEGIN {printf "%.0f", b / 1048576 / s}')
  rssm=$(awk -v k="${rss[$n]}" 'BEGIN {printf "%.1f", k / 1024}')
  outm="—"
  if [ "${outb[$n]}" != 0 ]; then outm=$(mib "${outb[$n]}"); fi
  if [ $# -ge 5 ]; then
    ratio=$(awk -v a="$s" -v b="${med[$5]}" 'BEGIN {printf "%.2f×", a / b}')
    if [ $# -ge 6 ]; then
      target=$(awk -v a="$s" -v b="${med[$5]}" -v l="$6" \
        'BEGIN {printf "≤ %.1f× %s", l, (a / b <= l ? "met" : "**MISSED**")}')
    else # verify: an absolute target
      target=$(awk -v t="$tput" 'BEGIN {printf "≥ 800 MiB/s %s", (t >= 800 ? "met" : "**MISSED**")}')
    fi
    target+=$(awk -v k="${rss[$n]}" 'BEGIN {printf "; RSS ≤ 64 MiB %s", (k <= 65536 ? "met" : "**MISSED**")}')
  fi
  # shellcheck disable=SC2016 # backticks are Markdown
  printf '| %s | %s | `%s` | %.3f | %s | %s | %s | %s | %s |\n' "$2" "$3" "$cmd" "$s" "$tput" "$rssm" "$outm" "$ratio" "$target"
}

report() {
  echo "# vertex-backup benchmark"
  echo
  echo "Command: \`${invocation% }\` — median of $runs timed runs ($(command -v hyperfine >/dev/null && echo hyperfine || echo 'a shell loop')) after one run under GNU time for peak RSS."
  echo "Corpus (\`gen_corpus --size $size --seed $seed\`): $files files, $(mib "$storage_bytes") MiB of storage, database $(mib "$db_bytes") MiB; our zstd archive of it: $(mib "$archive_bytes") MiB."
  echo "**Warm page cache**: nothing is dropped from the cache (the corpus is read once before timing); outputs are deleted and \`sync\`ed before every run, untimed."
  echo
  echo "## Machine"
  echo
  machine_info "$work"
  echo
  echo "## Results"
  echo
  echo "| Operation | Tool | Command | Median s | MiB/s | Peak RSS MiB | Output MiB | Ours ÷ theirs | Target |"
  echo "|---|---|---|--:|--:|--:|--:|--:|---|"
  row ours_storage "storage (zstd)" ours "vertex-backup create --type storage" tar_zstd 1.0
  row tar_zstd "storage (zstd)" "tar + zstd" "tar -cf - storage | zstd -3 -T0 > out"
  row tar_zstd_fsync "storage (zstd)" "tar + zstd + fsync" "tar -cf - storage | zstd -3 -T0 > out && sync out"
  row ours_gzip "storage (gzip)" ours "create --type storage, compression = gzip (level 6)" tar_gzip 1.0
  row tar_gzip "storage (gzip)" "tar -z" "tar -czf out storage"
  row ours_database database ours "vertex-backup create --type database" sqlite_backup 1.5
  row sqlite_backup database sqlite3 "sqlite3 DB '.backup X'"
  row ours_full full ours "vertex-backup create --type full" db_plus_storage 1.0
  # shellcheck disable=SC2016 # backticks are Markdown
  printf '| full | ours, parts | `create --type database` + `create --type storage` | %.3f | | | | — | |\n' "${med[db_plus_storage]}"
  row ours_restore restore ours "vertex-backup restore ARCHIVE --target DIR --yes" zstd_untar 1.0
  row zstd_untar restore "zstd + tar" "zstd -dc ARCHIVE | tar -xf -"
  row ours_verify verify ours "vertex-backup verify ARCHIVE" sha256sum
  row sha256sum verify sha256sum "sha256sum ARCHIVE"
  if [ -n "${med[openssl_sha256]:-}" ]; then
    row openssl_sha256 verify openssl "openssl dgst -sha256 ARCHIVE"
  fi
  echo
  echo "- MiB/s: bytes of input ÷ median (storage tree, database, both for full; the restored tree for restore; the archive for verify)."
  echo "- Peak RSS: GNU time's maximum resident set size; for a pipeline the sum over its processes (\`tar -czf\` counts only the larger of tar and its gzip child)."
  echo "- Our backups fsync the archive and its metadata (SPEC §3); the baselines do not (the \`tar + zstd + fsync\` row shows what that costs them; the target compares with plain \`tar | zstd\`). Our database backup includes \`PRAGMA quick_check\` (the default); \`sqlite3 .backup\` checks nothing."
  echo "- Restore and the \`zstd | tar\` baseline read the same archive (ours); our restore verifies its checksum on the way. Verify checks the checksum and reads the archive end to end; \`sha256sum\` and \`openssl dgst\` only hash it (reading + hashing: the ceiling for verify, whose target is absolute: ≥ 800 MiB/s)."
}

mkdir -p "$root/bench/results"
report | tee "$root/bench/results/latest.md"
rm -rf "$out" "$tmp"
