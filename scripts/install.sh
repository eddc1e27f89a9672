#!/usr/bin/env bash
# Installs vertex-backup as a systemd service: the binary, /etc/vertex-backup (the config
# and the environment file, readable by the service user, never overwritten), the backup
# directory and the unit. README.md "Install under systemd" runs it; tests/install.rs runs
# it into a scratch root and checks what it installed.
#
# usage: scripts/install.sh [--root DIR] [--bin FILE] [--owner USER:GROUP]
#   --root DIR        install under DIR instead of / (a scratch root, a package's staging
#                     directory): no user is created, nothing outside DIR is touched
#   --bin FILE        the binary to install (default: target/release/vertex-backup)
#   --owner USER:GROUP  the service user and group (default: vertex-backup:vertex-backup,
#                     created when missing); with --root they must exist on this host
#                     (numeric ids work). The unit's User=/Group= are not changed.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
root=""
bin="$src/target/release/vertex-backup"
owner="vertex-backup:vertex-backup"

die() {
  echo "install.sh: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --bin) bin=${2:?--bin needs a file}; shift 2 ;;
    --owner) owner=${2:?--owner needs USER:GROUP}; shift 2 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
case "$owner" in
  ?*:?*) user=${owner%%:*} group=${owner#*:} ;;
  *) die "--owner must be USER:GROUP, got: $owner" ;;
esac
[ -x "$bin" ] || die "no executable at $bin: run \`cargo build --release --locked\` first (or give --bin)"
[ "$(id -u)" -eq 0 ] || die "run as root: the files are owned by root and the service group"
if [ -n "$root" ]; then
  [ -d "$root" ] || die "--root $root is not a directory"
  root=$(cd "$root" && pwd)
else
  getent group "$group" >/dev/null || groupadd --system "$group"
  getent passwd "$user" >/dev/null ||
    useradd --system --gid "$group" --home-dir /var/lib/vertex-backup --no-create-home \
      --shell /usr/sbin/nologin "$user"
fi

etc="$root/etc/vertex-backup"
backups="$root/var/backups/vertex-ar"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The binary, the unit and the README the unit's Documentation= names.
install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system" "$root/usr/share/doc/vertex-backup"
install -m 0755 -o 0 -g 0 "$bin" "$root/usr/local/bin/vertex-backup"
install -m 0644 -o 0 -g 0 "$src/systemd/vertex-backup.service" "$root/etc/systemd/system/vertex-backup.service"
install -m 0644 -o 0 -g 0 "$src/README.md" "$root/usr/share/doc/vertex-backup/README.md"

# The config directory: root writes, the service group reads (the daemon watches the
# directory for saved edits, so it needs to list it too). Running the script again
# repairs the directory's mode and owner, and never overwrites what the operator wrote.
install -d -m 0750 -o 0 -g "$group" "$etc"
if [ -e "$etc/config.toml" ]; then
  echo "kept $etc/config.toml"
else
  # The seed's example paths point into the source tree; the service's are where the
  # unit's ReadWritePaths= expects them.
  sed -e '/^\[paths\]/,/^\[/ {
      s|^database = "[^"]*"|database = "/opt/vertex-ar/app_data/app_data.db"|
      s|^storage = "[^"]*"|storage = "/opt/vertex-ar/storage"|
      s|^backup_dir = "[^"]*"|backup_dir = "/var/backups/vertex-ar"|
    }' "$src/config/vertex-backup.toml" >"$work/config.toml"
  install -m 0640 -o 0 -g "$group" "$work/config.toml" "$etc/config.toml"
  echo "installed $etc/config.toml: edit [paths]"
fi
# Secrets stay out of the config (which the service group reads): systemd reads this file
# (EnvironmentFile=) and passes it to the daemon; `check-config` as the service user reads
# it too. A fresh API token is generated once.
if [ -e "$etc/env" ]; then
  echo "kept $etc/env"
else
  token=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
  cat >"$work/env" <<EOF
# Environment of the vertex-backup service (systemd EnvironmentFile=): KEY=value lines.
# TELEGRAM_BOT_TOKEN=123456:ABC...
# TELEGRAM_CHAT_ID=123456789
VERTEX_BACKUP_API_TOKEN=$token
EOF
  install -m 0640 -o 0 -g "$group" "$work/env" "$etc/env"
  echo "installed $etc/env with a new API token: add the Telegram bot token and chat id"
fi

# The backup directory: the service's alone.
install -d -m 0700 -o "$user" -g "$group" "$backups"
