#!/bin/sh
# Installs what the end-to-end tests need, once: Debian's chromium, ripgrep and libkrb5-dev (when
# missing), then code-server + playwright-core from package-lock.json into this folder's node_modules.
# Idempotent: a stamp holding the lock file's hash skips npm ci when nothing changed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

# chromium: the browser; ripgrep: stands in for the rg binary @vscode/ripgrep would download from
# GitHub; libkrb5-dev: headers for kerberos' node-gyp build.
need=""
for p in chromium ripgrep libkrb5-dev; do
  dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || need="$need $p"
done
if [ -n "$need" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends $need || { apt-get update && apt-get install -y --no-install-recommends $need; }
fi

stamp="node_modules/.lora-lens-e2e-stamp"
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -x node_modules/.bin/code-server ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

# @vscode/ripgrep's postinstall downloads rg from GitHub unless it finds the asset in
# $TMPDIR/vscode-ripgrep-cache-<its version>/; seed it with Debian's rg (also 13.0.0).
# code-server 4.100.3 pins @vscode/ripgrep 1.15.11.
seed="$here/.cache/tmp"
rgver=1.15.11
mkdir -p "$seed/vscode-ripgrep-cache-$rgver" "$seed/rg"
cp "$(command -v rg)" "$seed/rg/rg"
tar czf "$seed/vscode-ripgrep-cache-$rgver/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz" -C "$seed/rg" rg

# npm_config_unsafe_perm: code-server's postinstall refuses to run as root without it.
# npm_config_yes: node-pty's postinstall runs `npx node-gyp`, which an npmrc with yes=false cancels.
TMPDIR="$seed" npm_config_unsafe_perm=true npm_config_yes=true \
  npm ci --no-audit --no-fund --foreground-scripts
echo "$want" > "$stamp"
