#!/usr/bin/env bash
# Install sgd: the binary, the systemd unit and an example config (kept if one exists).
# Usage: sudo deploy/install.sh [PREFIX]   (PREFIX defaults to /usr/local; DESTDIR is honoured)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
dest=${DESTDIR:-}
# A binary you built already (SGD_BIN=./sgd), or build one: sudo's PATH usually lacks Go.
bin=${SGD_BIN:-}
if [ -z "$bin" ]; then
  export PATH=$PATH:/usr/local/go/bin
  if ! command -v go >/dev/null; then
    echo "install.sh: no Go toolchain on PATH; build first (go build -o sgd ./cmd/sgd) and run: sudo SGD_BIN=./sgd $0" >&2
    exit 1
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  go build -trimpath -o "$tmp/sgd" ./cmd/sgd
  bin=$tmp/sgd
fi
install -D -m 0755 "$bin" "$dest$prefix/bin/sgd"
unit=$(sed "s#/usr/local/bin/sgd#$prefix/bin/sgd#g" deploy/systemd/sgd.service)
install -d "$dest/etc/systemd/system"
printf '%s\n' "$unit" > "$dest/etc/systemd/system/sgd.service"
chmod 0644 "$dest/etc/systemd/system/sgd.service"
install -d -m 0755 "$dest/etc/sgd"
if [ ! -e "$dest/etc/sgd/sgd.yaml" ]; then
  install -m 0644 examples/sgd.yaml "$dest/etc/sgd/sgd.yaml"
  echo "installed an example config at /etc/sgd/sgd.yaml: edit its interfaces before starting"
fi
"$dest$prefix/bin/sgd" check --config "$dest/etc/sgd/sgd.yaml"
if [ -z "$dest" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "now: systemctl enable --now sgd"
fi
