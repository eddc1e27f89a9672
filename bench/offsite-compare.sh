#!/usr/bin/env bash
# Offsite side by side (issue 24), all against ONE moto server on 127.0.0.1 that this script
# starts and stops (by its PID) on exit. Three rows, one run:
#
#   upload   `vertex-backup offsite push` of one storage backup of --size incompressible
#            bytes (compression "none": the archive is --size), against boto3's multipart
#            upload (TransferConfig, same part size and concurrency) and `rclone copy` (S3
#            remote, provider Other, same chunk size and upload concurrency; once with its
#            default whole-file MD5, once with --s3-disable-checksum). Whole processes under
#            GNU time, --runs rounds, the order rotating; medians; moto's own CPU per run.
#   catchup  storage_format = database_format = "snapshot": --snapshots full snapshots of a
#            gen_corpus tree of --dr-size with `gen_corpus --small-change` (~1 %) between
#            them, made with `create --no-offsite`, then ONE `offsite push --json`: the bytes
#            it reports sent (sum of push[].uploaded[].bytes) against the bytes of the
#            objects in the bucket afterwards. One round.
#   dr       disaster recovery of the newest of those full snapshots: an empty directory
#            with only a config (the README's runbook), `restore --from moto --latest full
#            --yes`, against `restic restore latest` from a restic repository on the same
#            moto (`restic backup` of the same tree, after the last change), a fresh restic
#            cache each round (a new server has none). --runs rounds, the order rotating.
#
#   bench/offsite-compare.sh [--size 1GiB] [--dr-size 2×SIZE] [--runs 3] [--snapshots 5]
#                            [--part-size-mib 16] [--concurrency 4] [--only upload,catchup,dr]
#                            [--work DIR] [--seed 42] [--bin PATH]
#
# Prints Markdown and writes bench/results/offsite-compare.md. moto is a single Python
# process on the same cores as the clients: ratios compare the clients against one slow
# server, not against a real S3.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/s3-server.sh
source "$root/scripts/s3-server.sh"

size=1GiB dr_size="" runs=3 snapshots=5 part_mib=16 concurrency=4 only=upload,catchup,dr
work=$root/bench/work seed=42 own_bin=""
invocation="bench/offsite-compare.sh $*"
usage() {
  echo "usage: bench/offsite-compare.sh [--size 1GiB] [--dr-size 2×SIZE] [--runs 3] [--snapshots 5]"
  echo "                                [--part-size-mib 16] [--concurrency 4] [--only upload,catchup,dr]"
  echo "                                [--work DIR] [--seed 42] [--bin PATH]"
}
while [ $# -gt 0 ]; do
  case $1 in
    --size) size=${2:?--size needs a value}; shift 2 ;;
    --dr-size) dr_size=${2:?--dr-size needs a value}; shift 2 ;;
    --runs) runs=${2:?--runs needs a value}; shift 2 ;;
    --snapshots) snapshots=${2:?--snapshots needs a value}; shift 2 ;;
    --part-size-mib) part_mib=${2:?--part-size-mib needs a value}; shift 2 ;;
    --concurrency) concurrency=${2:?--concurrency needs a value}; shift 2 ;;
    --only) only=${2:?--only needs a value}; shift 2 ;;
    --work) work=${2:?--work needs a value}; shift 2 ;;
    --seed) seed=${2:?--seed needs a value}; shift 2 ;;
    --bin) own_bin=${2:?--bin needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs takes a positive number"
[[ $snapshots =~ ^[1-9][0-9]*$ ]] || die "--snapshots takes a positive number"
[[ $seed =~ ^[0-9]+$ ]] || die "--seed takes a number"
to_bytes() {
  case $1 in
    *GiB) echo $(( ${1%GiB} * 1024 * 1024 * 1024 )) ;;
    *MiB) echo $(( ${1%MiB} * 1024 * 1024 )) ;;
    *) die "sizes take NGiB or NMiB, not $1" ;;
  esac
}
bytes=$(to_bytes "$size")
if [ -z "$dr_size" ]; then dr_size="$((bytes * 2 / 1048576))MiB"; fi
dr_bytes=$(to_bytes "$dr_size")
for o in ${only//,/ }; do
  case $o in upload | catchup | dr) ;; *) die "--only: unknown row $o (upload, catchup, dr)" ;; esac
done
wanted() { [[ ,$only, == *,$1,* ]]; }

deps=(/usr/bin/time:time python3:python3 sqlite3:sqlite3)
if wanted upload; then deps+=(rclone:rclone); fi
if wanted dr; then deps+=(restic:restic); fi
need_tools "${deps[@]}"
if [ -n "$own_bin" ]; then
  [ -x "$own_bin" ] || die "--bin $own_bin is not an executable"
  bin=$(cd "$(dirname "$own_bin")" && pwd)/$(basename "$own_bin")
  log "cargo build --release --example gen_corpus (the corpus generator)"
  (cd "$root" && cargo build --release --quiet --example gen_corpus)
else
  build
fi
ensure_moto_venv
py=$(moto_venv_dir)/bin/python

mkdir -p "$work"
work=$(cd "$work" && pwd)
w=$work/offsite-compare m=$work/offsite-compare/m
rm -rf "$w"
mkdir -p "$m"
start_moto # sets an EXIT trap that stops moto by its PID; ours below keeps that
trap 'stop_moto; rm -rf "$w"' EXIT
endpoint=$VERTEX_TEST_S3_ENDPOINT
moto_pid=$MOTO_PID
moto_line="moto $("$py" -c 'import moto; print(moto.__version__)') (one Python process, pid $moto_pid, on ${endpoint#http://})"
boto3_version=$("$py" -c 'import boto3; print(boto3.__version__)')

creds=$w/s3-credentials
bucket=vertex-bench
bench_s3_bucket "$py" "$endpoint" "$bucket" "$creds"

# Helpers in Python (the venv's boto3): delete a prefix, list a prefix, one upload.
cat >"$w/s3util.py" <<'PY'
import json, sys, boto3
endpoint, bucket, cmd, prefix = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint)
objs = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
    objs += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
if cmd == "delete":
    for i in range(0, len(objs), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k, _ in objs[i:i + 1000]]})
    for u in s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
elif cmd == "list":
    json.dump([{"key": k, "size": s} for k, s in objs], sys.stdout)
PY
cat >"$w/boto3_upload.py" <<'PY'
import sys, boto3
from boto3.s3.transfer import TransferConfig
endpoint, bucket, key, path, part, conc = sys.argv[1:7]
part = int(part) * 1024 * 1024
cfg = TransferConfig(multipart_threshold=part, multipart_chunksize=part,
                     max_concurrency=int(conc), use_threads=True)
boto3.client("s3", endpoint_url=endpoint).upload_file(path, bucket, key, Config=cfg)
PY
s3list() { "$py" "$w/s3util.py" "$endpoint" "$bucket" list "$1"; }
s3delete() { "$py" "$w/s3util.py" "$endpoint" "$bucket" delete "$1"; }

# moto's CPU (user + system seconds, from /proc) around each measured run: where the time
# of a client that waits on the server goes.
moto_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f\n", ($14 + $15) / hz}' "/proc/$moto_pid/stat"; }
# measure OUT COMMAND…: measure_run (lib.sh) with `sync` before it and moto's CPU over it
# to OUT.moto.
measure() {
  local out=$1 before; shift
  sync
  before=$(moto_cpu)
  measure_run "$out" "$@"
  awk -v a="$before" -v b="$(moto_cpu)" 'BEGIN {printf "%.2f\n", b - a}' >"$out.moto"
}

# offsite_block NAME PREFIX: an [[offsite]] table for our config
offsite_block() {
  cat <<TOML

[[offsite]]
name = "$1"
url = "s3://$bucket/$2"
endpoint = "$endpoint"
path_style = true
credentials_file = "$creds"
part_size = "$part_mib MiB"
concurrency = $concurrency
TOML
}

# rotate ROUND FUNCTION TOOL…: FUNCTION TOOL ROUND for each tool, the order rotating with ROUND
rotate() {
  local r=$1 f=$2 i; shift 2
  local tools=("$@") n=$#
  for ((i = 0; i < n; i++)); do "$f" "${tools[(i + r) % n]}" "$r"; done
}

# --- upload: one archive of --size, four clients ---------------------------------------------
upload_tools=(ours boto3 rclone rclone_nosum)
if wanted upload; then
  u=$w/upload
  mkdir -p "$u/storage" "$u/app_data" "$u/backups"
  log "upload: writing $size of random data"
  head -c "$bytes" /dev/urandom >"$u/storage/video.bin"
  sqlite3 "$u/app_data/app_data.db" 'PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);' >/dev/null
  write_config "$u/config.toml" "$u" "$u/backups" none 0
  log "upload: making the storage backup (compression none)"
  "$bin" --config "$u/config.toml" -q create --type storage --no-offsite >/dev/null
  archive=$(ls "$u"/backups/storage/storage_backup_*.tar)
  archive_bytes=$(bytes_of "$archive")
  rm "$u/storage/video.bin"
  cat "$archive" >/dev/null # warm the page cache
  cat >"$u/rclone.conf" <<CONF
[moto]
type = s3
provider = Other
endpoint = $endpoint
access_key_id = bench
secret_access_key = bench-secret
region = us-east-1
force_path_style = true
CONF
  # AWS_CA_BUNDLE, when the environment sets one, makes rclone's AWS SDK refuse to start
  # ("unsupported transport"); moto is plain HTTP, so rclone runs without it.
  rclone_flags=(--config "$u/rclone.conf" --s3-chunk-size "${part_mib}Mi" --s3-upload-cutoff "${part_mib}Mi"
    --s3-upload-concurrency "$concurrency" --s3-no-check-bucket)
  upload_one() { # TOOL ROUND
    local tool=$1 r=$2 prefix="$1-$2" out=$m/upload-$1-$2 got
    log "upload: $tool (round $((r + 1))/$runs)"
    case $tool in
      ours)
        { cat "$u/config.toml"; offsite_block moto "$prefix"; } >"$u/run.toml"
        measure "$out" "$bin" --config "$u/run.toml" -q offsite push --target moto --json ;;
      boto3) measure "$out" "$py" "$w/boto3_upload.py" "$endpoint" "$bucket" "$prefix/$(basename "$archive")" "$archive" "$part_mib" "$concurrency" ;;
      rclone) measure "$out" env -u AWS_CA_BUNDLE rclone copy "${rclone_flags[@]}" "$archive" "moto:$bucket/$prefix/" ;;
      rclone_nosum) measure "$out" env -u AWS_CA_BUNDLE rclone copy "${rclone_flags[@]}" --s3-disable-checksum "$archive" "moto:$bucket/$prefix/" ;;
    esac
    # untimed: the archive must be in the bucket whole
    got=$(s3list "$prefix/" | "$py" -c 'import json, sys; print(max([o["size"] for o in json.load(sys.stdin)] or [0]))')
    [ "$got" = "$archive_bytes" ] || { cat "$out.log" >&2; die "$tool: the largest object under $prefix/ has $got bytes, the archive $archive_bytes"; }
    s3delete "$prefix/"
  }
  for ((r = 0; r < runs; r++)); do rotate "$r" upload_one "${upload_tools[@]}"; done
  rm -rf "$u/backups"
fi

# --- catchup and dr: a gen_corpus tree, N full snapshots, one push ----------------------------
if wanted catchup || wanted dr; then
  corpus=$work/corpus-$dr_size-seed$seed
  make_corpus "$corpus" --size "$dr_size" --seed "$seed"
  c=$w/catchup
  mkdir -p "$c/tree"
  cp -a "$corpus/storage" "$corpus/app_data" "$c/tree/"
  write_config "$c/config.toml" "$c/tree" "$c/backups" zstd 3 snapshot
  printf '\n[retention]\nkeep_last = 1000\n' >>"$c/config.toml"
  offsite_block moto catchup >>"$c/config.toml"
  : >"$m/changes.log"
  for ((i = 1; i <= snapshots; i++)); do
    if [ "$i" -gt 1 ]; then
      log "catchup: gen_corpus --small-change --seed $((seed + i))"
      "$gen" --out "$c/tree" --small-change --seed $((seed + i)) | tee -a "$m/changes.log" >&2
    fi
    log "catchup: full snapshot $i/$snapshots (create --no-offsite)"
    measure_run "$m/create-$i" "$bin" --config "$c/config.toml" -q create --type full --no-offsite
  done
  local_store=$(du_bytes "$c/backups")
  log "catchup: offsite push of $snapshots pending full snapshots"
  measure "$m/catchup-ours-0" "$bin" --config "$c/config.toml" -q offsite push --target moto --json
  "$py" - "$m/catchup-ours-0.log" >"$m/catchup.sent" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
assert all(r["ok"] for r in rows), rows
up = [u for r in rows for u in r["push"]["uploaded"]]
print(sum(u["bytes"] for u in up), sum(u["objects"] for u in up), len(up))
PY
  read -r sent_bytes sent_objects sent_backups <"$m/catchup.sent"
  s3list catchup/ >"$m/catchup.list"
  # Every object under the prefix, and apart the prefix's control objects (vertex-backup/:
  # the owner marker; locks are gone once the push ends), which no backup counts.
  read -r bucket_bytes bucket_objects ctl_bytes ctl_objects < <("$py" - "$m/catchup.list" <<'PY'
import json, sys
objs = json.load(open(sys.argv[1]))
ctl = [o for o in objs if o["key"].startswith("catchup/vertex-backup/")]
print(sum(o["size"] for o in objs), len(objs), sum(o["size"] for o in ctl), len(ctl))
PY
)
  data_bytes=$((bucket_bytes - ctl_bytes)) data_objects=$((bucket_objects - ctl_objects))
  pack_objects=$("$py" -c 'import json, sys; print(sum("/store/packs/" in o["key"] for o in json.load(open(sys.argv[1]))))' "$m/catchup.list")
  [ "$sent_backups" -ge "$snapshots" ] || die "the push sent $sent_backups backups, not $snapshots: $(cat "$m/catchup-ours-0.log")"
fi

if wanted dr; then
  tree=$c/tree
  src_stats=$(find "$tree/storage" -type f -printf '%s\n' | awk '{n++; s += $1} END {printf "%d files, %.0f bytes\n", n, s}')
  src_rows=$(sqlite3 "$tree/app_data/app_data.db" 'SELECT (SELECT count(*) FROM portraits) || " " || (SELECT count(*) FROM videos) || " " || (SELECT sum(view_count) FROM portraits)')
  export RESTIC_PASSWORD=vertex-bench-password RESTIC_REPOSITORY="s3:$endpoint/$bucket/restic"
  export RESTIC_CACHE_DIR=$w/restic-cache
  log "dr: restic init and backup of the same tree to moto (untimed reference)"
  restic init -q >"$m/restic-init.log" 2>&1 || { cat "$m/restic-init.log" >&2; die "restic init failed"; }
  measure "$m/restic-backup" env -C "$tree" restic backup -q storage app_data
  restic_repo_bytes=$(s3list restic/ | "$py" -c 'import json, sys; print(sum(o["size"] for o in json.load(sys.stdin)))')
  restic_info="$(restic version | cut -d' ' -f1-2), repository format $(restic cat config | sed -n 's/.*"version": *\([0-9]*\).*/\1/p') (compression auto), always encrypted"
  rm -rf "$RESTIC_CACHE_DIR"
  restored_stats() { find "$1" -type f -printf '%s\n' | awk '{n++; s += $1} END {printf "%d files, %.0f bytes\n", n, s}'; }
  dr_one() { # TOOL ROUND
    local tool=$1 r=$2 d=$w/dr-$1-$2 out=$m/dr-$1-$2 got rows start
    rm -rf "$d"
    mkdir -p "$d/etc"
    log "dr: $tool (round $((r + 1))/$runs)"
    case $tool in
      ours)
        # The runbook: a new server, nothing on its disk but the config (the app's paths
        # do not exist yet, backup_dir is new and empty), the target as the old one had it.
        write_config "$d/etc/config.toml" "$d/var-lib-vertex-ar" "$d/var-backups" zstd 3 snapshot
        offsite_block moto catchup >>"$d/etc/config.toml"
        measure "$out" env -C "$d" "$bin" --config "$d/etc/config.toml" -q restore --from moto --latest full --yes
        got=$(restored_stats "$d/var-lib-vertex-ar/storage")
        rows=$(sqlite3 "$d/var-lib-vertex-ar/app_data/app_data.db" 'SELECT (SELECT count(*) FROM portraits) || " " || (SELECT count(*) FROM videos) || " " || (SELECT sum(view_count) FROM portraits)')
        ;;
      restic)
        rm -rf "$RESTIC_CACHE_DIR" # a new server has no restic cache
        measure "$out" restic restore latest -q --target "$d/restored"
        start=$(date +%s.%N)
        sync -f "$d/restored"
        awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f\n", b - a}' >"$out.sync"
        got=$(restored_stats "$d/restored/storage")
        rows=$(sqlite3 "$d/restored/app_data/app_data.db" 'SELECT (SELECT count(*) FROM portraits) || " " || (SELECT count(*) FROM videos) || " " || (SELECT sum(view_count) FROM portraits)')
        rm -rf "$RESTIC_CACHE_DIR"
        ;;
    esac
    [ "$got" = "$src_stats" ] || die "$tool restored $got; the tree has $src_stats"
    [ "$rows" = "$src_rows" ] || die "$tool restored a database with '$rows' (portraits, videos, views); the tree's has '$src_rows'"
  }
  # Every round's tree stays until all rounds are done: ext4 without a journal (this work
  # dir) skips inodes freed in the last minute when it allocates new ones, one lookup each,
  # so a restore that follows the deletion of the previous round's 7 000 files spent seconds
  # in the kernel that depended only on which tool ran next.
  for ((r = 0; r < runs; r++)); do rotate "$r" dr_one ours restic; done
  rm -rf "$w"/dr-*
fi

# --- report ------------------------------------------------------------------------------------
agg() { # ROW TOOL FIELD: median over the rounds (rss: the largest)
  local f=("$m/$1-$2"-[0-9]*."$3")
  [ -f "${f[0]}" ] || return 0
  case $3 in
    rss) cat "${f[@]}" | sort -n | tail -n1 ;;
    *) cat "${f[@]}" | median ;;
  esac
}
series() { # ROW TOOL FIELD: every round's value, in round order
  local f=("$m/$1-$2"-[0-9]*."$3")
  [ -f "${f[0]}" ] || return 0
  printf '%s\n' "${f[@]}" | sort -V | xargs cat | awk '{printf "%s%.2f", (NR > 1 ? " " : ""), $1}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "" || b == "" || b + 0 == 0) print "—"; else printf "%.2f×\n", a / b}'; }
verdict() { # A B LIMIT: met when A ÷ B ≤ LIMIT
  awk -v a="$1" -v b="$2" -v l="$3" 'BEGIN {if (a == "" || b == "" || b + 0 == 0) print "not measured"; else print (a / b <= l + 1e-9 ? "met" : "**MISSED**")}'
}
kib_mib() { awk -v k="$1" 'BEGIN {printf "%.0f", k / 1024}'; }
secs() { awk -v s="$1" 'BEGIN {printf "%.2f", s}'; }
rate() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.0f", b / 1048576 / s}'; }

report() {
  echo "# Offsite side by side (issue 24): upload, catch-up, disaster recovery"
  echo
  echo "Command: \`${invocation% }\` — one run; whole processes under GNU time (\`/usr/bin/time -v\`), \`sync\` before each (untimed); $runs round(s), the order of the clients rotating each round; medians of wall and CPU s, the largest peak RSS. Every client talks to the **same single moto server** (started by the script on 127.0.0.1, stopped by its PID at exit); \"moto CPU s\" is that server's user + system time over the run (\`/proc/PID/stat\`)."
  echo
  echo "## Machine"
  echo
  machine_info "$w"
  echo "- Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg). **Shared machine**: 2 cores, used at the same time by another engineer's tests and builds; moto, the client and that load compete for the cores, which moves single runs by tens of percent."
  echo "- Server: $moto_line; boto3 $boto3_version (the venv's); $(rclone version 2>/dev/null | head -n1)${restic_info:+; $restic_info}"
  echo
  echo "## Targets"
  echo
  echo "| Row | Measure | Ours | Theirs | Ours ÷ theirs | Target | |"
  echo "|---|---|--:|--:|--:|---|---|"
  if wanted upload; then
    local o b rc rn orss
    o=$(agg upload ours s) b=$(agg upload boto3 s) rc=$(agg upload rclone s) rn=$(agg upload rclone_nosum s) orss=$(agg upload ours rss)
    echo "| upload | wall s vs boto3 | $(secs "$o") | $(secs "$b") | **$(ratio "$o" "$b")** | ≤ 1.00× | $(verdict "$o" "$b" 1.0) |"
    echo "| upload | wall s vs \`rclone copy\` (its default: whole-file MD5 first) | $(secs "$o") | $(secs "$rc") | **$(ratio "$o" "$rc")** | ≤ 1.00× | $(verdict "$o" "$rc" 1.0) |"
    echo "| upload | wall s vs \`rclone copy --s3-disable-checksum\` (reference) | $(secs "$o") | $(secs "$rn") | $(ratio "$o" "$rn") | (≤ 1.00×) | $(verdict "$o" "$rn" 1.0) |"
    echo "| upload | our peak RSS MiB | $(kib_mib "$orss") | — | — | ≤ 64 MiB | $(awk -v k="$orss" 'BEGIN {print (k / 1024 <= 64 ? "met" : "**MISSED**")}') |"
  fi
  if wanted catchup; then
    echo "| catch-up | bytes sent ÷ bytes of the backups' objects in the bucket | $sent_bytes | $data_bytes | **$(awk -v a="$sent_bytes" -v b="$data_bytes" 'BEGIN {printf "%.4f", a / b}')** | 1.00 ± 0.01 | $(awk -v a="$sent_bytes" -v b="$data_bytes" 'BEGIN {r = a / b; print (r >= 0.99 && r <= 1.01 ? "met" : "**MISSED**")}') |"
  fi
  if wanted dr; then
    local od rd rs
    od=$(agg dr ours s) rd=$(agg dr restic s) rs=$(awk -v a="$rd" -v b="$(agg dr restic sync)" 'BEGIN {printf "%.3f", a + b}')
    echo "| DR | wall s, \`restore --from moto --latest full\` vs \`restic restore latest\` | $(secs "$od") | $(secs "$rd") | **$(ratio "$od" "$rd")** | ≤ 1.00× | $(verdict "$od" "$rd" 1.0) |"
    echo "| DR | … vs restic + \`sync -f\` (equal durability; reference) | $(secs "$od") | $(secs "$rs") | $(ratio "$od" "$rs") | (≤ 1.00×) | $(verdict "$od" "$rs" 1.0) |"
  fi
  if wanted upload; then
    echo
    echo "## Upload of one $(mib "$archive_bytes") MiB archive (part size $part_mib MiB, concurrency $concurrency)"
    echo
    echo "| Client | Command | Median s | MiB/s | Runs s | CPU s (median) | moto CPU s (median) | Peak RSS MiB |"
    echo "|---|---|--:|--:|---|--:|--:|--:|"
    local t cmd s
    for t in "${upload_tools[@]}"; do
      case $t in
        ours) cmd="\`vertex-backup offsite push --target moto --json\` (\`part_size = \"$part_mib MiB\"\`, \`concurrency = $concurrency\`)" ;;
        boto3) cmd="boto3 \`upload_file\`, \`TransferConfig(multipart_threshold=multipart_chunksize=$part_mib MiB, max_concurrency=$concurrency)\`" ;;
        rclone) cmd="\`rclone copy --s3-chunk-size ${part_mib}Mi --s3-upload-cutoff ${part_mib}Mi --s3-upload-concurrency $concurrency --s3-no-check-bucket\`" ;;
        rclone_nosum) cmd="the same \`--s3-disable-checksum\`" ;;
      esac
      s=$(agg upload "$t" s)
      echo "| $t | $cmd | $(secs "$s") | $(rate "$archive_bytes" "$s") | $(series upload "$t" s) | $(agg upload "$t" cpu) | $(agg upload "$t" moto) | $(kib_mib "$(agg upload "$t" rss)") |"
    done
    echo
    echo "- Each upload goes to an empty prefix and is checked (untimed) to be in the bucket at its full size; the prefix is deleted after it. Our wall time is the whole push: config, listing, owner marker and lock, upload with our SHA-256 and SigV4 payload hashes, HEAD check, state, remote retention."
    echo "- rclone: the target row uses its default, which reads the whole file once for an MD5 before the upload and stores it as \`X-Amz-Meta-Md5chksum\`: like ours, an end-to-end checksum kept with the object (ours is the SHA-256 from the local manifest, sent as \`x-amz-meta-sha256\` and checked against the bytes as they stream). \`--s3-disable-checksum\` drops that pass (and the end-to-end checksum): reference row."
  fi
  if wanted catchup; then
    echo
    echo "## Catch-up of $snapshots pending full snapshots ($(mib "$dr_bytes") MiB corpus)"
    echo
    echo "- Tree: \`gen_corpus --size $dr_size --seed $seed\`, then \`gen_corpus --small-change --seed S\` before each later snapshot (S = $((seed + 2))…$((seed + snapshots))): $(sed -n 1p "$m/changes.log" | sed 's/.*: //')."
    echo "- Snapshots: \`create --type full --no-offsite\` with \`storage_format = database_format = \"snapshot\"\`, zstd 3; wall s $(for ((i = 1; i <= snapshots; i++)); do printf '%s ' "$(secs "$(cat "$m/create-$i.s")")"; done| sed 's/ $//'); local backup dir afterwards $(mib "$local_store") MiB."
    echo "- One \`offsite push --target moto --json\`: $(secs "$(cat "$m/catchup-ours-0.s")") s wall, $(cat "$m/catchup-ours-0.cpu") s CPU, peak RSS $(kib_mib "$(cat "$m/catchup-ours-0.rss")") MiB, moto CPU $(cat "$m/catchup-ours-0.moto") s; it sent $sent_backups backups (full manifests and their members), $sent_objects objects, **$sent_bytes bytes** ($(mib "$sent_bytes") MiB; sum of \`push[].uploaded[].bytes\`)."
    echo "- The bucket afterwards (\`list_objects_v2\` of the prefix): $bucket_objects objects, $bucket_bytes bytes; of them $ctl_objects control object(s) under \`vertex-backup/\` ($ctl_bytes bytes: the owner marker; no backup counts them), so the backups' objects are **$data_objects objects, $data_bytes bytes** ($pack_objects packs). Every key is unique, so a pack sent twice would count twice in the bytes sent and once here."
  fi
  if wanted dr; then
    echo
    echo "## Disaster recovery of the newest full snapshot from moto"
    echo
    echo "| Tool | Command | Median s | MiB/s | Runs s | \`sync -f\` s | CPU s (median) | moto CPU s (median) | Peak RSS MiB |"
    echo "|---|---|--:|--:|---|--:|--:|--:|--:|"
    local t cmd s tb sy
    tb=$(echo "$src_stats" | awk '{print $3}')
    for t in ours restic; do
      case $t in
        ours) cmd="\`restore --from moto --latest full --yes\` in an empty directory with only the config" ;;
        restic) cmd="\`restic restore latest --target DIR\`, an empty cache" ;;
      esac
      s=$(agg dr "$t" s)
      if [ "$t" = ours ]; then sy="— (syncs itself)"; else sy=$(secs "$(agg dr "$t" sync)"); fi
      echo "| $t | $cmd | $(secs "$s") | $(rate "$tb" "$s") | $(series dr "$t" s) | $sy | $(agg dr "$t" cpu) | $(agg dr "$t" moto) | $(kib_mib "$(agg dr "$t" rss)") |"
    done
    echo
    echo "- Restored: storage $src_stats (MiB/s counts these) and the database (checked: portraits, videos and the sum of view counts equal the tree's), both tools; checked untimed after each round and deleted only after the last (deleting 7 000 files just before the next round's restore costs that restore seconds of ext4 inode allocation)."
    echo "- Ours: the runbook of README.md — a new directory with nothing but \`etc/config.toml\` (the app's paths and \`backup_dir\` not yet there, the target as the old server had it); the restore downloads the snapshot's objects into \`backup_dir\` (every object checked), verifies, and restores the storage tree and the database (reassembled from its snapshot), fsynced before it returns. restic does not fsync what it restores: \`sync -f\` of its tree is timed apart and added in the reference line."
    echo "- restic: \`restic backup -q storage app_data\` of the same tree after the last change into \`s3:…/restic\` on the same moto ($(secs "$(cat "$m/restic-backup.s")") s, repository $(mib "$restic_repo_bytes") MiB; our $snapshots snapshots take $(mib "${data_bytes:-0}") MiB there); every restore with an empty \`RESTIC_CACHE_DIR\`, as on a new server."
  fi
}

mkdir -p "$root/bench/results"
report | tee "$root/bench/results/offsite-compare.md"
