#!/bin/bash
# Builds the carry folder (.device-carry/, ignored by git) for a session that is lent an NVIDIA
# H100/H200 device machine, which has no Node and no network: an xz-compressed tar of this machine's
# node binary, the built dist/ and out/ (compiled tests and benches), and node_modules/webgpu (its
# linux-x64 Dawn only), plus Debian's libvulkan1 .deb (the Vulkan loader; the device has the NVIDIA
# driver's ICD but maybe no loader). scripts/device/run-on-device.sh unpacks and runs it there.
# docs/gpu.md says how to call it. Fails loudly (set -e) and refuses a carry over its size budget.
#
#   bash scripts/device/prepare.sh            build first (npm run build, build:tests), then pack
#   SKIP_BUILD=1 bash scripts/device/prepare.sh   pack what is built
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
CARRY=.device-carry
# What travels is the working tree (tracked and untracked-not-ignored files) plus the carry: 64 MiB in all.
LIMIT=$((64 * 1024 * 1024))

[ "$(uname -m)" = x86_64 ] || { echo "prepare: the device is x86-64; this machine is $(uname -m), its node would not run there" >&2; exit 1; }
[ -f node_modules/webgpu/dist/linux-x64/dawn.node ] || { echo "prepare: node_modules/webgpu/dist/linux-x64/dawn.node is missing (npm ci)" >&2; exit 1; }

# Ignored by git twice: through .gitignore (tracked) and this clone's info/exclude (.git is a file in a worktree).
EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")"
grep -qx "/$CARRY/" "$EXCLUDE" 2>/dev/null || echo "/$CARRY/" >> "$EXCLUDE"
git check-ignore -q "$CARRY/x" || { echo "prepare: $CARRY/ is not ignored by git" >&2; exit 1; }

if [ "${SKIP_BUILD:-}" != 1 ]; then
  npm run build >&2
  npm run build:tests >&2 || echo "prepare: build:tests reported type errors; packing what tsc emitted" >&2
fi
for f in dist/cli.js out/bench/gpu.bench.js out/test/unit/gpu.test.js out/test/unit/gpu-cli.test.js; do
  [ -f "$f" ] || { echo "prepare: $f is missing (build first)" >&2; exit 1; }
done

rm -rf "$CARRY"
mkdir -p "$CARRY"
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
NODE=$(readlink -f "$(command -v node)")
mkdir -p "$STAGE/bin" "$STAGE/node_modules/webgpu/dist"
cp "$NODE" "$STAGE/bin/node"
cp -r dist out package.json "$STAGE/"
cp node_modules/webgpu/package.json "$STAGE/node_modules/webgpu/"
cp -r node_modules/webgpu/dist/linux-x64 "$STAGE/node_modules/webgpu/dist/"
# The unbundled out/ (benches, tests) requires its runtime packages itself; dist/ has them bundled.
cp -r node_modules/re2js "$STAGE/node_modules/"
# The unit tests read their fixtures through out/../test/fixtures: the GPU tests use none, so none travel.
echo "prepare: compressing $(du -sh "$STAGE" | cut -f1) with xz (a minute or two)" >&2
tar -C "$STAGE" -cf - . | xz -9e -T2 > "$CARRY/payload.tar.xz"

# The Vulkan loader, as the device README does it: amd64 packages through a private apt state.
APT="$STAGE/apt"
mkdir -p "$APT/lists/partial" "$APT/archives/partial"
O=(-o APT::Architecture=amd64 -o APT::Architectures=amd64 -o Dir::State::Lists="$APT/lists" -o Dir::Cache::archives="$APT/archives" -o Debug::NoLocking=1 -o APT::Sandbox::User=root -q)
apt-get "${O[@]}" update >&2
(cd "$CARRY" && apt-get "${O[@]}" download libvulkan1 >&2)
ls "$CARRY"/libvulkan1_*.deb >/dev/null

{
  echo "built: $(date -u +%FT%TZ) from $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src bench test || echo ' (with uncommitted changes)')"
  echo "node: $("$NODE" --version)"
  echo "webgpu: $(node -p "require('./node_modules/webgpu/package.json').version")"
  (cd "$CARRY" && sha256sum payload.tar.xz libvulkan1_*.deb)
} > "$CARRY/MANIFEST"

CARRY_BYTES=$(du -cb "$CARRY"/* | tail -1 | cut -f1)
TREE_BYTES=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
if [ -d shared ]; then TREE_BYTES=$((TREE_BYTES + $(du -sb shared | cut -f1))); fi
TOTAL=$((CARRY_BYTES + TREE_BYTES))
awk -v c="$CARRY_BYTES" -v t="$TREE_BYTES" 'BEGIN { printf "prepare: carry %.1f MiB + working tree %.1f MiB = %.1f MiB of the 64 MiB a device call takes\n", c / 1048576, t / 1048576, (c + t) / 1048576 }' >&2
cat "$CARRY/MANIFEST" >&2
if [ "$TOTAL" -ge "$LIMIT" ]; then echo "prepare: over the 64 MiB limit: a device call would refuse it" >&2; exit 1; fi
echo "prepare: ready; on the device: bash scripts/device/run-on-device.sh (carry: [\"$CARRY\"])" >&2
