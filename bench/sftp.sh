#!/usr/bin/env bash
# SFTP targets beside the plain tools (issue 28): one backup of SIZE (random bytes: one
# storage archive, nothing compresses) sent to an OpenSSH server on loopback by
# `vertex-backup offsite push` to an sftp:// target, by `rsync -e ssh` (the seed's
# command; also with `--fsync`, durable as ours is, and with ours' cipher) and by OpenSSH's
# own `sftp` client, the same file to the same server, each into an empty directory,
# --runs rounds (the order rotating), medians. Every client uses the same key and
# host-key file; rsync and sftp run without compression (the data is random), as ours
# does. Ours prefers AES-GCM on a CPU with AES instructions (OpenSSH's default is
# ChaCha20-Poly1305), so the plain tools run both with their default and with ours'.
# Writes bench/results/sftp.md.
#
#   bench/sftp.sh [--size 1GiB] [--runs 3] [--bin PATH]
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

size=1GiB runs=3 own_bin=""
while [ $# -gt 0 ]; do
  case $1 in
    --size) size=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --bin) own_bin=$2; shift 2 ;;
    *) die "usage: bench/sftp.sh [--size 1GiB] [--runs 3] [--bin PATH]" ;;
  esac
done
need_tools /usr/sbin/sshd:openssh-server ssh:openssh-client rsync:rsync /usr/bin/time:time
if [ -n "$own_bin" ]; then bin=$own_bin; else build_profile release "timings"; fi

work=$root/bench/work/sftp
rm -rf "$work"
mkdir -p "$work/server" "$work/m"
m=$work/m

# The server: sshd on a free loopback port with a host key and a client key of its own.
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p /run/sshd
cat >"$work/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $work/host_key
PidFile none
AuthorizedKeysFile $work/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
Subsystem sftp internal-sftp
LogLevel ERROR
EOF
/usr/sbin/sshd -D -e -f "$work/sshd_config" &
sshd_pid=$!
trap 'kill "$sshd_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
echo "[127.0.0.1]:$port $(cut -d' ' -f1-2 "$work/host_key.pub")" >"$work/known_hosts"
user=$(id -un)
ssh_opts="-F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$work/known_hosts -o IdentitiesOnly=yes -i $work/client_key"
cipher=$(ssh $ssh_opts -p "$port" -v "$user@127.0.0.1" true 2>&1 | sed -n 's/.*kex: client->server cipher: \([^ ]*\).*/\1/p' | head -n1)
# Ours' first choice (src/offsite/sftp_session.rs): AES-GCM where the CPU has AES.
if grep -qw aes /proc/cpuinfo && grep -qw pclmulqdq /proc/cpuinfo; then ours_cipher=aes128-gcm@openssh.com; else ours_cipher=chacha20-poly1305@openssh.com; fi

# The payload: a storage backup of one file of random bytes (zstd cannot shrink it), made
# by `create`; rsync and sftp send the same archive.
case ${size%B} in
  *i) bytes=$(numfmt --from=iec-i "${size%B}") ;;
  *) bytes=$(numfmt --from=iec "${size%B}") ;;
esac
mkdir -p "$work/app/storage"
head -c "$bytes" /dev/urandom >"$work/app/storage/video.mp4"
cat >"$work/config.toml" <<EOF
[paths]
database = "$work/app/app_data.db"
storage = "$work/app/storage"
backup_dir = "$work/backups"

[backup]
min_free_space = "0"

[[offsite]]
name = "server"
url = "sftp://$user@127.0.0.1:$port$work/server/ours"
ssh_key = "$work/client_key"
known_hosts = "$work/known_hosts"
upload = ["storage"]
EOF
"$bin" --config "$work/config.toml" create --type storage --no-offsite >/dev/null
payload=$(find "$work/backups/storage" -name '*.tar.zst' | head -n1)
[ -f "$payload" ] || die "create made no storage archive"
bytes=$(stat -c %s "$payload")
sha=$(sha256sum "$payload" | cut -d' ' -f1)

tools=(ours rsync rsync_fsync rsync_same sftp)
one() { # TOOL ROUND
  local t=$1 r=$2 dest=$work/server/$1
  rm -rf "$dest" && mkdir -p "$dest"
  sync
  case $t in
    ours) measure_run "$m/$t-$r" "$bin" --config "$work/config.toml" offsite push ;;
    rsync) measure_run "$m/$t-$r" rsync -a --inplace -e "ssh $ssh_opts -p $port" "$payload" "$user@127.0.0.1:$dest/" ;;
    rsync_fsync) measure_run "$m/$t-$r" rsync -a --inplace --fsync -e "ssh $ssh_opts -p $port" "$payload" "$user@127.0.0.1:$dest/" ;;
    rsync_same) measure_run "$m/$t-$r" rsync -a --inplace --fsync -e "ssh $ssh_opts -c $ours_cipher -p $port" "$payload" "$user@127.0.0.1:$dest/" ;;
    sftp) echo "put $payload $dest/payload" >"$work/batch"
      measure_run "$m/$t-$r" sftp $ssh_opts -P "$port" -b "$work/batch" "$user@127.0.0.1" ;;
  esac
}
for ((r = 0; r < runs; r++)); do
  for ((i = 0; i < ${#tools[@]}; i++)); do
    t=${tools[$(((i + r) % ${#tools[@]}))]}
    log "round $((r + 1)): $t"
    one "$t" "$r"
  done
done
# Each landed whole: the same bytes on the server.
for t in "${tools[@]}"; do
  f=$(find "$work/server/$t" -type f -size "+$((bytes / 1024 - 1))k" | head -n1)
  [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$sha" ] || die "$t's copy differs"
done

# Reading back the same object: ours `offsite verify` (downloads and hashes every byte of
# it: verify_sample is 2 GiB), rsync and sftp copying it to a local file.
back() { # TOOL ROUND
  local t=$1 r=$2 out=$work/back
  rm -rf "$out" && mkdir -p "$out"
  case $t in
    ours) measure_run "$m/back_$t-$r" "$bin" --config "$work/config.toml" offsite verify ;;
    rsync) measure_run "$m/back_$t-$r" rsync -a -e "ssh $ssh_opts -p $port" "$user@127.0.0.1:$work/server/rsync/$(basename "$payload")" "$out/" ;;
    rsync_same) measure_run "$m/back_$t-$r" rsync -a -e "ssh $ssh_opts -c $ours_cipher -p $port" "$user@127.0.0.1:$work/server/rsync/$(basename "$payload")" "$out/" ;;
    sftp) echo "get $work/server/sftp/payload $out/payload" >"$work/batch"
      measure_run "$m/back_$t-$r" sftp $ssh_opts -P "$port" -b "$work/batch" "$user@127.0.0.1" ;;
  esac
}
back_tools=(ours rsync rsync_same sftp)
for ((r = 0; r < runs; r++)); do
  for ((i = 0; i < ${#back_tools[@]}; i++)); do
    t=${back_tools[$(((i + r) % ${#back_tools[@]}))]}
    log "read back, round $((r + 1)): $t"
    back "$t" "$r"
  done
done

med() { cat "$m/$1"-*."$2" | median; }
out=$root/bench/results/sftp.md
{
  echo "# An sftp:// target beside rsync -e ssh and OpenSSH's sftp"
  echo
  echo "Command: \`bench/sftp.sh --size $size --runs $runs\` — one file of $(mib "$bytes") MiB of random bytes (a storage archive) sent to \`sshd\` on 127.0.0.1 (\`internal-sftp\`) into an empty directory, $runs rounds, the order rotating; medians of wall and CPU s (client side: our process, rsync or sftp with their ssh), the largest peak RSS. Ciphers: the plain tools' default ${cipher:-unknown}, ours' ${ours_cipher} (rows marked *same cipher* run rsync with it too); no compression anywhere."
  echo
  machine_info "$work"
  echo
  echo "| Tool | Command | Median s | Runs s | MiB/s | CPU s | Peak RSS MiB | Ours ÷ this |"
  echo "|---|---|--:|---|--:|--:|--:|--:|"
  ours_s=$(med ours s)
  for t in "${tools[@]}"; do
    s=$(med "$t" s)
    runs_s=$(printf '%s\n' "$m/$t"-*.s | sort -V | xargs cat | awk '{printf "%s%.2f", (NR > 1 ? " " : ""), $1}')
    rss=$(cat "$m/$t"-*.rss | sort -n | tail -n1)
    case $t in
      ours) cmd="vertex-backup offsite push (sftp://)" ;;
      rsync) cmd="rsync -a --inplace -e ssh FILE HOST:DIR/" ;;
      rsync_fsync) cmd="rsync -a --inplace --fsync -e ssh FILE HOST:DIR/" ;;
      rsync_same) cmd="rsync -a --inplace --fsync -e 'ssh -c $ours_cipher' FILE HOST:DIR/ (same cipher)" ;;
      sftp) cmd="sftp -b (put FILE)" ;;
    esac
    echo "| $t | \`$cmd\` | $s | $runs_s | $(awk -v b="$bytes" -v s="$s" 'BEGIN {printf "%.0f", b / 1048576 / s}') | $(med "$t" cpu) | $(awk -v k="$rss" 'BEGIN {printf "%.1f", k / 1024}') | $(awk -v a="$ours_s" -v b="$s" 'BEGIN {printf "%.2f×", a / b}') |"
  done
  echo
  echo "Reading the object back (ours: \`offsite verify\`, which downloads and hashes it; rsync and sftp: into a local file):"
  echo
  echo "| Tool | Median s | Runs s | MiB/s | CPU s | Ours ÷ this |"
  echo "|---|--:|---|--:|--:|--:|"
  ours_b=$(med back_ours s)
  for t in "${back_tools[@]}"; do
    s=$(med "back_$t" s)
    runs_s=$(printf '%s\n' "$m/back_$t"-*.s | sort -V | xargs cat | awk '{printf "%s%.2f", (NR > 1 ? " " : ""), $1}')
    echo "| $t | $s | $runs_s | $(awk -v b="$bytes" -v s="$s" 'BEGIN {printf "%.0f", b / 1048576 / s}') | $(med "back_$t" cpu) | $(awk -v a="$ours_b" -v b="$s" 'BEGIN {printf "%.2f×", a / b}') |"
  done
  echo
  echo 'Target (issue 28): ours ≤ 1.2× rsync'"'"'s time. Ours flushes each object to the server'"'"'s disk (`fsync@openssh.com`) before renaming it into place; plain rsync and sftp leave the file in the server'"'"'s page cache, `rsync --fsync` flushes it as we do. `rsync_same` is rsync with `--fsync` and ours'"'"' cipher: the same work on the wire and on the server'"'"'s disk.'
} >"$out"
cat "$out"
