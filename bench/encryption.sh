#!/usr/bin/env bash
# Encryption benchmark (issue 15): a storage backup of the generated corpus with
# `[encryption] encrypt = "all"` (age, to the test fixture's public key) against the same
# backup without encryption, on the same tree in one run, alternating. Reports median wall
# times, the ratio (target ≤ 1.15×) and the peak RSS of both (target ≤ 64 MiB, GNU time).
# Before timing it checks that the encrypted run really wrote an age file — a build without
# local encryption would "pass" by writing plaintext — and refuses to report otherwise.
# Prints Markdown and writes bench/results/encryption.md.
#
#   bench/encryption.sh [--size 1GiB] [--runs 3] [--seed 42] [--compression zstd]
#                       [--work DIR] [--debug]
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

size=1GiB runs=3 seed=42 compression=zstd work=$root/bench/work profile=release
invocation="bench/encryption.sh $*"
usage() { echo "usage: bench/encryption.sh [--size 1GiB] [--runs 3] [--seed 42] [--compression zstd|gzip|none] [--work DIR] [--debug]"; }
while [ $# -gt 0 ]; do
  case $1 in
    --size) size=${2:?--size needs a value}; shift 2 ;;
    --runs) runs=${2:?--runs needs a value}; shift 2 ;;
    --seed) seed=${2:?--seed needs a value}; shift 2 ;;
    --compression) compression=${2:?--compression needs a value}; shift 2 ;;
    --work) work=${2:?--work needs a value}; shift 2 ;;
    --debug) profile=debug; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs takes a positive number"
case $compression in
  zstd) level=3 ext=.tar.zst untar=(tar --zstd -t) ;;
  gzip) level=6 ext=.tar.gz untar=(tar -zt) ;;
  none) level=0 ext=.tar untar=(tar -t) ;;
  *) die "--compression takes zstd, gzip or none" ;;
esac

recipients=$root/tests/fixtures/age/operator.pub
identity_fixture=$root/tests/fixtures/age/operator.key
[ -f "$recipients" ] || die "no test public key at $recipients"
need_tools /usr/bin/time:time sqlite3:sqlite3 sha256sum:coreutils 'age:age?'
gen=${CARGO_TARGET_DIR:-$root/target}/release/examples/gen_corpus
log "cargo build --release --example gen_corpus"
(cd "$root" && cargo build --release --quiet --example gen_corpus)
build_profile "$profile" "the times of both variants"

mkdir -p "$work"
work=$(cd "$work" && pwd)
corpus=$work/corpus-$size-seed$seed
make_corpus "$corpus" --size "$size" --seed "$seed"
run=$work/encryption
rm -rf "$run"
mkdir -p "$run"
write_config "$run/plain.toml" "$corpus" "$run/plain" "$compression" "$level"
write_config "$run/age.toml" "$corpus" "$run/age" "$compression" "$level"
cat >>"$run/age.toml" <<TOML

[encryption]
recipients_file = "$recipients"
encrypt = "all"
TOML

# backup VARIANT RUN: one storage backup into an emptied, synced backup dir (untimed prep)
backup() {
  rm -rf "${run:?}/$1"
  sync
  measure_run "$run/$1-$2" "$bin" --config "$run/$1.toml" -q create --type storage --no-offsite
}

# The encrypted run must have written an age file and said so in its metadata: on a build
# without local encryption (main before issue 15's engine work) `encrypt = "all"` either
# fails or writes plaintext, and a ratio of two plaintext backups would be meaningless.
check_encrypted() {
  local files=("$run"/age/storage/storage_backup_*) data="" f
  for f in "${files[@]}"; do
    case $f in *.json) ;; *) data=$f ;; esac
  done
  [ -n "$data" ] || die "the encrypted run wrote no storage backup in $run/age/storage"
  if [[ $data != *"$ext.age" ]] || [ "$(head -c 21 "$data")" != "age-encryption.org/v1" ]; then
    die "this build does not encrypt local backups: encrypt = \"all\" wrote $(basename "$data") in plain. Run again on a build with issue 15's local encryption (e15local) merged; no figures reported."
  fi
  grep -q '"scheme": *"age"' "${data%"$ext.age"}.json" ||
    die "$(basename "$data") is an age file but its metadata has no format.encryption: no figures reported"
}

log "first encrypted backup (checks that encryption happens, warms the page cache)"
find "$corpus" -type f -exec cat {} + >/dev/null
(backup age warmup) || die "the encrypted backup failed (output above): on a build without issue 15's local encryption, encrypt = \"all\" may be refused. No figures reported."
check_encrypted
interop="not checked (no \`age\` CLI)"
if command -v age >/dev/null; then
  key=$run/operator.key
  install -m 600 "$identity_fixture" "$key"
  enc=("$run"/age/storage/storage_backup_*"$ext.age")
  log "decrypting $(basename "${enc[0]}") with the age CLI"
  listed=$(age -d -i "$key" "${enc[0]}" | "${untar[@]}" | grep -vc '/$' || true)
  [ "$listed" -gt 0 ] || die "age -d | ${untar[*]} listed no files in ${enc[0]}"
  interop="\`age -d -i operator.key … | ${untar[*]}\` lists $listed files"
fi
backup plain warmup

for i in $(seq 1 "$runs"); do
  log "run $i/$runs: unencrypted storage backup"
  backup plain "$i"
  log "run $i/$runs: encrypted storage backup (encrypt = \"all\")"
  backup age "$i"
done
plain_bytes=$(bytes_of "$run/plain/storage")
age_bytes=$(bytes_of "$run/age/storage")
storage_bytes=$(bytes_of "$corpus/storage")
files=$(find "$corpus/storage" -type f | wc -l)

series() { ls "$run"/"$1"-[0-9]*."$2" | sort -V | xargs cat | tr '\n' ' '; }
plain_s=$(cat "$run"/plain-[0-9]*.s | median)
age_s=$(cat "$run"/age-[0-9]*.s | median)
plain_rss=$(cat "$run"/plain-*.rss | sort -n | tail -1)
age_rss=$(cat "$run"/age-*.rss | sort -n | tail -1)
ratio=$(awk -v a="$age_s" -v b="$plain_s" 'BEGIN {printf "%.2f", a / b}')
rate() { awk -v b="$storage_bytes" -v s="$1" 'BEGIN {printf "%.0f", b / 1048576 / s}'; }
kib_mib() { awk -v k="$1" 'BEGIN {printf "%.0f", k / 1024}'; }
verdict() { awk -v v="$1" -v t="$2" 'BEGIN {print (v <= t) ? "meets" : "MISSES"}'; }
ratio_verdict=$(verdict "$ratio" 1.15)
rss_verdict=$(verdict "$(kib_mib "$age_rss")" 64)

mkdir -p "$root/bench/results"
{
  echo "## Encryption (storage backup of $(mib "$storage_bytes") MiB, $files files, $compression, $runs runs, $profile build)"
  echo
  machine_info "$work"
  echo "- Command: \`${invocation% }\`; each variant once before timing (the encrypted one checked to be an age file), then alternating; backup dirs emptied and \`sync\`ed before every run, untimed"
  echo "- Encryption: \`[encryption] encrypt = \"all\"\`, one X25519 recipient (tests/fixtures/age/operator.pub); interop: $interop"
  echo
  echo "| variant | median s | MiB/s | runs (s) | CPU s (user + sys) | peak RSS | output |"
  echo "|---|--:|--:|---|---|--:|--:|"
  echo "| \`create --type storage\` | $plain_s | $(rate "$plain_s") | $(series plain s) | $(series plain cpu) | $(kib_mib "$plain_rss") MiB | $(mib "$plain_bytes") MiB |"
  echo "| \`create --type storage\`, encrypted (age) | $age_s | $(rate "$age_s") | $(series age s) | $(series age cpu) | $(kib_mib "$age_rss") MiB | $(mib "$age_bytes") MiB |"
  echo
  echo "Encrypted ÷ unencrypted: **${ratio}×** ($ratio_verdict the ≤ 1.15× target); peak RSS of the encrypted backup $(kib_mib "$age_rss") MiB ($rss_verdict the ≤ 64 MiB target)."
} | tee "$root/bench/results/encryption.md"
rm -rf "$run"
