#!/usr/bin/env bash
# Install sgd: the binary, the systemd unit and an example config (kept if one exists).
# Usage, as root: deploy/install.sh [PREFIX]   (PREFIX defaults to /usr/local)
#   SGD_BIN=FILE  install this binary instead of building one (relative to where you are)
#   DESTDIR=DIR   install under DIR (a staging root for packaging): nothing is enabled
set -euo pipefail
# A binary you built already: resolved before anything changes directory, so that a
# relative path means what it meant where you typed it.
bin=
if [ -n "${SGD_BIN:-}" ]; then
  if [ ! -f "$SGD_BIN" ] || [ ! -x "$SGD_BIN" ]; then
    echo "install.sh: SGD_BIN=$SGD_BIN is not an executable file (relative to $PWD)" >&2
    exit 1
  fi
  bin=$(realpath -- "$SGD_BIN")
fi
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
dest=${DESTDIR:-}
if [ -z "$bin" ]; then
  # Build one. A root shell's PATH may lack Go: try where the Go tarball installs.
  export PATH=$PATH:/usr/local/go/bin
  if ! command -v go >/dev/null; then
    echo "install.sh: no Go toolchain on PATH; build first (go build -o sgd ./cmd/sgd), then, as root: SGD_BIN=./sgd $0" >&2
    exit 1
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  go build -trimpath -o "$tmp/sgd" ./cmd/sgd
  bin=$tmp/sgd
fi
install -D -m 0755 "$bin" "$dest$prefix/bin/sgd"
echo "installed $bin as $dest$prefix/bin/sgd"
unit=$(sed "s#/usr/local/bin/sgd#$prefix/bin/sgd#g" deploy/systemd/sgd.service)
install -d "$dest/etc/systemd/system"
printf '%s\n' "$unit" > "$dest/etc/systemd/system/sgd.service"
chmod 0644 "$dest/etc/systemd/system/sgd.service"
install -d -m 0755 "$dest/etc/sgd"
if [ ! -e "$dest/etc/sgd/sgd.yaml" ]; then
  install -m 0644 examples/sgd.yaml "$dest/etc/sgd/sgd.yaml"
  echo "installed an example config at $dest/etc/sgd/sgd.yaml: edit its interfaces before starting"
fi
"$dest$prefix/bin/sgd" check --config "$dest/etc/sgd/sgd.yaml"
if [ -z "$dest" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "now: systemctl enable --now sgd"
fi
