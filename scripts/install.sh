#!/usr/bin/env bash
# Installs vertex-backup as a systemd service: the binary, its bash/zsh/fish completions
# and man page, /etc/vertex-backup (the config and the environment file, readable by the
# service user, never overwritten), the backup directory and the unit. README.md "Install
# under systemd" runs it; tests/install.rs runs it into a scratch root and checks it.
#
# usage: scripts/install.sh [--root DIR [--package]] [--bin FILE] [--owner USER:GROUP]
#   --root DIR        install under DIR instead of / (a scratch root, a package's staging
#                     directory): no user is created, nothing outside DIR is touched
#   --package         with --root: the staging tree of the .deb (scripts/deb.sh): the
#                     binary in /usr/bin, the unit in /usr/lib/systemd/system (ExecStart=
#                     rewritten), no env file (its API token is made per machine by the
#                     postinst), and the ownership list always written, for the postinst
#   --bin FILE        the binary to install (default: target/release/vertex-backup)
#   --owner USER:GROUP  the service user and group (default: vertex-backup:vertex-backup,
#                     created when missing). With --root, names that do not exist on this
#                     host (a package built elsewhere) are not needed: those files stay
#                     root's and usr/share/doc/vertex-backup/ownership lists, by name, the
#                     owner and mode each must get on the target (a postinst applies it);
#                     numeric ids are used as given. The unit's User=/Group= are not changed.
#
# Everything is checked before anything is written: a failure leaves DIR as it was.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
root=""
bin="$src/target/release/vertex-backup"
owner="vertex-backup:vertex-backup"
package=""

die() {
  echo "install.sh: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --bin) bin=${2:?--bin needs a file}; shift 2 ;;
    --owner) owner=${2:?--owner needs USER:GROUP}; shift 2 ;;
    --package) package=yes; shift ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
case "$owner" in
  ?*:?*) user=${owner%%:*} group=${owner#*:} ;;
  *) die "--owner must be USER:GROUP, got: $owner" ;;
esac
[ -x "$bin" ] || die "no executable at $bin: run \`cargo build --release --locked\` first (or give --bin)"
[ "$(id -u)" -eq 0 ] || die "run as root: the files are owned by root and the service group"
for f in systemd/vertex-backup.service README.md config/vertex-backup.toml; do
  [ -f "$src/$f" ] || die "the source tree lacks $f: run this script from a checkout"
done
if [ -n "$root" ]; then
  [ -d "$root" ] || die "--root $root is not a directory"
  root=$(cd "$root" && pwd)
fi
[ -z "$package" ] || [ -n "$root" ] || die "--package needs --root (the package's staging directory)"
# Where the binary and the unit go: an install by hand keeps to /usr/local; a package to
# the distribution's places.
bindir=/usr/local/bin
unitdir=/etc/systemd/system
if [ -n "$package" ]; then
  bindir=/usr/bin
  unitdir=/usr/lib/systemd/system
fi

# id_of NAME DATABASE: a numeric id as given, a name's id on this host, or nothing.
id_of() {
  case $1 in
    *[!0-9]*) { getent "$2" "$1" || true; } | cut -d: -f3 ;;
    *) echo "$1" ;;
  esac
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# What the binary generates, before anything is installed: a binary that cannot run
# here fails now, not half way.
"$bin" completions bash >"$work/completion.bash" || die "$bin cannot generate its completions"
"$bin" completions zsh >"$work/completion.zsh" || die "$bin cannot generate its completions"
"$bin" completions fish >"$work/completion.fish" || die "$bin cannot generate its completions"
"$bin" man >"$work/vertex-backup.1" || die "$bin cannot generate its man page"

if [ -z "$root" ]; then
  getent group "$group" >/dev/null || groupadd --system "$group"
  getent passwd "$user" >/dev/null ||
    useradd --system --gid "$group" --home-dir /var/lib/vertex-backup --no-create-home \
      --shell /usr/sbin/nologin "$user"
fi
uid=$(id_of "$user" passwd)
gid=$(id_of "$group" group)
deferred=""
if [ -n "$package" ]; then
  # A package is built for other machines: their ids, not this host's.
  deferred=yes
  uid=0 gid=0
elif [ -z "$uid" ] || [ -z "$gid" ]; then
  # Only a staging root gets here (a real install created them above).
  [ -n "$root" ] || die "the service user $user or group $group could not be created"
  deferred=yes
  uid=0 gid=0
  echo "the service user $user or group $group does not exist on this host: their files stay root's; usr/share/doc/vertex-backup/ownership says what the target must set"
fi

etc="$root/etc/vertex-backup"
backups="$root/var/backups/vertex-ar"

# The binary, the unit (its ExecStart= naming where the binary went) and the README the
# unit's Documentation= names.
install -d -m 0755 "$root$bindir" "$root$unitdir" "$root/usr/share/doc/vertex-backup"
install -m 0755 -o 0 -g 0 "$bin" "$root$bindir/vertex-backup"
sed -e "s|^ExecStart=/usr/local/bin/vertex-backup |ExecStart=$bindir/vertex-backup |" \
  "$src/systemd/vertex-backup.service" >"$work/vertex-backup.service"
install -m 0644 -o 0 -g 0 "$work/vertex-backup.service" "$root$unitdir/vertex-backup.service"
install -m 0644 -o 0 -g 0 "$src/README.md" "$root/usr/share/doc/vertex-backup/README.md"

# Shell completions and the man page, generated by the binary from its own flag
# definitions (so they match the installed version), where bash-completion, zsh, fish and
# man look for packaged ones.
share="$root/usr/share"
install -d -m 0755 "$share/bash-completion/completions" "$share/zsh/site-functions" \
  "$share/fish/vendor_completions.d" "$share/man/man1"
install -m 0644 -o 0 -g 0 "$work/completion.bash" "$share/bash-completion/completions/vertex-backup"
install -m 0644 -o 0 -g 0 "$work/completion.zsh" "$share/zsh/site-functions/_vertex-backup"
install -m 0644 -o 0 -g 0 "$work/completion.fish" "$share/fish/vendor_completions.d/vertex-backup.fish"
install -m 0644 -o 0 -g 0 "$work/vertex-backup.1" "$share/man/man1/vertex-backup.1"

# The config directory: root writes, the service group reads (the daemon watches the
# directory for saved edits, so it needs to list it too). Running the script again
# repairs the directory's mode and owner, and never overwrites what the operator wrote.
install -d -m 0750 -o 0 -g "$gid" "$etc"
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
  install -m 0640 -o 0 -g "$gid" "$work/config.toml" "$etc/config.toml"
  echo "installed $etc/config.toml: edit [paths]"
fi
# Secrets stay out of the config (which the service group reads): systemd reads this file
# (EnvironmentFile=) and passes it to the daemon; `check-config` as the service user reads
# it too. A fresh API token is generated once.
if [ -n "$package" ]; then
  : # the postinst writes it on each machine, with a token of its own
elif [ -e "$etc/env" ]; then
  echo "kept $etc/env"
else
  token=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
  cat >"$work/env" <<EOF
# Environment of the vertex-backup service (systemd EnvironmentFile=): KEY=value lines.
# TELEGRAM_BOT_TOKEN=123456:ABC...
# TELEGRAM_CHAT_ID=123456789
VERTEX_BACKUP_API_TOKEN=$token
EOF
  install -m 0640 -o 0 -g "$gid" "$work/env" "$etc/env"
  echo "installed $etc/env with a new API token: add the Telegram bot token and chat id"
fi

# The backup directory: the service's alone.
install -d -m 0700 -o "$uid" -g "$gid" "$backups"

# With --root and a service user this host does not have: what the target must set.
if [ -n "$deferred" ]; then
  cat >"$work/ownership" <<EOF
# PATH OWNER:GROUP MODE: apply on the target once the user exists (chown, chmod).
/etc/vertex-backup root:$group 0750
/etc/vertex-backup/config.toml root:$group 0640
/etc/vertex-backup/env root:$group 0640
/var/backups/vertex-ar $user:$group 0700
EOF
  install -m 0644 -o 0 -g 0 "$work/ownership" "$root/usr/share/doc/vertex-backup/ownership"
fi
