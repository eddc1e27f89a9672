#!/usr/bin/env bash
# How `create --type storage` scales with the number of files (issue 7, item 4): small files
# (1–16 KiB) in growing numbers; time should grow linearly and peak memory stay flat.
# Prints a Markdown report and writes it to bench/results/scaling.md. See bench/README.md.
#
#   bench/scaling.sh [--counts "10000 30000 100000"] [--runs 3] [--work DIR] [--seed 42]
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

counts="10000 30000 100000" runs=3 seed=42 work=$root/bench/work
invocation="bench/scaling.sh $*"
usage() { echo "usage: bench/scaling.sh [--counts \"10000 30000 100000\"] [--runs 3] [--work DIR] [--seed 42]"; }
while [ $# -gt 0 ]; do
  case $1 in
    --counts) counts=${2:?--counts needs a value}; shift 2 ;;
    --runs) runs=${2:?--runs needs a value}; shift 2 ;;
    --work) work=${2:?--work needs a value}; shift 2 ;;
    --seed) seed=${2:?--seed needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs takes a positive number"

need_tools /usr/bin/time:time tar:tar zstd:zstd
build
mkdir -p "$work"
work=$(cd "$work" && pwd)
out=$work/scaling-out tmp=$work/tmp
mkdir -p "$tmp"

rows=() first_per_file="" first_rss=""
for n in $counts; do
  corpus=$work/files-$n-seed$seed
  make_corpus "$corpus" --files "$n" --seed "$seed"
  write_config "$work/scaling.toml" "$corpus" "$out" zstd 3
  find "$corpus" -type f -exec cat {} + >/dev/null # warm page cache; nothing is dropped
  bytes=$(bytes_of "$corpus/storage")
  peak=0
  : >"$tmp/times"
  for ((r = 0; r < runs; r++)); do
    rm -rf "$out"
    sync
    log "$n files, run $((r + 1))/$runs"
    start=$(date +%s.%N)
    /usr/bin/time -f %M -o "$tmp/rss" "$bin" --config "$work/scaling.toml" -q create --type storage >/dev/null
    awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {print b - a}' >>"$tmp/times"
    kib=$(tail -n1 "$tmp/rss")
    [ "$kib" -gt "$peak" ] && peak=$kib
  done
  secs=$(median <"$tmp/times")
  : >"$tmp/tar_times" # the same tree through tar | zstd, for reference
  for ((r = 0; r < runs; r++)); do
    rm -f "$work/scaling.tar.zst"
    sync
    start=$(date +%s.%N)
    tar -cf - -C "$corpus" storage | zstd -3 -T0 -q >"$work/scaling.tar.zst"
    awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {print b - a}' >>"$tmp/tar_times"
  done
  rm -f "$work/scaling.tar.zst"
  tar_secs=$(median <"$tmp/tar_times")
  per_file=$(awk -v s="$secs" -v n="$n" 'BEGIN {print s / n * 1e6}')
  first_per_file=${first_per_file:-$per_file} first_rss=${first_rss:-$peak}
  rows+=("$(awk -v n="$n" -v b="$bytes" -v s="$secs" -v p="$per_file" -v k="$peak" -v f0="$first_per_file" -v k0="$first_rss" -v t="$tar_secs" \
    'BEGIN {printf "| %d | %.1f | %.3f | %.1f | %.2f | %.0f | %.1f | %.2f | %.3f | %.2f× |", n, b / 1048576, s, p, p / f0, b / 1048576 / s, k / 1024, k / k0, t, s / t}')")
done
rm -rf "$out"

report() {
  echo "# vertex-backup scaling: create --type storage on many small files"
  echo
  echo "Command: \`${invocation% }\` — median of $runs runs each; corpora from \`gen_corpus --files N --seed $seed\` (files of 1–16 KiB, 4 portraits of 6 files per client directory)."
  echo "**Warm page cache**: nothing is dropped from the cache; the output is deleted and \`sync\`ed before every run, untimed."
  echo
  echo "## Machine"
  echo
  machine_info "$work"
  echo
  echo "## Results"
  echo
  echo "| Files | Storage MiB | Median s | µs per file | per file ÷ first | MiB/s | Peak RSS MiB | RSS ÷ first | tar \\| zstd -3 -T0 s | Ours ÷ tar |"
  echo "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "- Linear time: \"per file ÷ first\" stays near 1.0. Flat memory: \"RSS ÷ first\" stays near 1.0 (target: peak RSS ≤ 64 MiB at any size)."
  echo "- Peak RSS: GNU time's maximum resident set size of the whole run."
  echo "- \`tar | zstd\`: \`tar -cf - storage | zstd -3 -T0 > out\` on the same tree (median of $runs), for reference."
}

mkdir -p "$root/bench/results"
report | tee "$root/bench/results/scaling.md"
