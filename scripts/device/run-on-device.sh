#!/bin/bash
# Runs on an NVIDIA H100/H200 device machine (x86-64, no Node, no network), from the repository root,
# with .device-carry/ built by scripts/device/prepare.sh and named in the call's carry. Unpacks node,
# dist/, out/ and Dawn into /tmp, the Vulkan loader from the carried .deb into /tmp (not into /),
# points the loader at the NVIDIA driver's ICD, then runs, each step with its own time limit:
#   1. the adapter Dawn sees and its limits                       -> $OUT/adapter.txt
#   2. the GPU backend's agreement tests on the real GPU           -> $OUT/gpu-tests.log
#      (test/unit/gpu*.test.ts: every kernel bit-identical / within 1e-6 of the CPU, CLI merges byte-identical)
#   3. bench/gpu.bench.ts: memory bandwidth, per-kernel GB/s and GFLOP/s, and whole-job merge, compare,
#      mask times on GPU vs CPU                                    -> $OUT/bench.log, $OUT/bench.json
# and a summary of all three in $OUT/summary.txt. Everything is also printed (the call's output tail).
# About 3 to 5 minutes, at most 8 (the step limits); call it with timeout_s 540. LAYERS (default 4)
# sizes the jobs' model. A dry run here on lavapipe: SOFTWARE_OK=1 QUICK=1 with the environment
# scripts/setup-lavapipe.sh prints (docs/gpu.md has the whole procedure).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/.device-out}
mkdir -p "$OUT"
C=$ROOT/.device-carry
W=${WORK:-/tmp/lora-lens-device}
LAYERS=${LAYERS:-4}
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
fail() { say "run-on-device: $*"; exit 1; }

[ -f "$C/payload.tar.xz" ] || fail "no $C/payload.tar.xz: run scripts/device/prepare.sh here first and name .device-carry in the call's carry"
say "== $(date -u +%FT%TZ) $(uname -m) $(cat "$C/MANIFEST" 2>/dev/null | head -1)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader 2>&1 | sed 's/^/nvidia-smi: /' | tee -a "$SUMMARY"

# 1. Unpack (xz may be missing there: Python's lzma reads it too).
rm -rf "$W" && mkdir -p "$W"
if command -v xz >/dev/null; then
  xz -dc "$C/payload.tar.xz" | tar -C "$W" -xf - || fail "unpacking the payload failed"
else
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' "$C/payload.tar.xz" "$W" || fail "unpacking the payload failed"
fi
NODE=$W/bin/node
"$NODE" --version >/dev/null || fail "the carried node does not run here"

# The Vulkan loader: the system's if it has one, else the carried libvulkan1 unpacked under $W.
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1 '; then
  deb=$(ls "$C"/libvulkan1_*.deb 2>/dev/null | head -1)
  [ -n "$deb" ] || fail "no Vulkan loader here and no libvulkan1 .deb in the carry"
  dpkg -x "$deb" "$W/vulkan" || fail "cannot unpack $deb"
  export LD_LIBRARY_PATH=$W/vulkan/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  say "vulkan loader: carried $(basename "$deb")"
else
  say "vulkan loader: the system's"
fi
# The NVIDIA driver's ICD (on these machines under /usr/local/nvidia, where the loader does not look).
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ]; then
  for f in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    if [ -f "$f" ]; then export VK_DRIVER_FILES=$f; break; fi
  done
fi
say "vulkan ICD: ${VK_DRIVER_FILES:-${VK_ICD_FILENAMES:-none found; the loader searches its defaults}}"
export __EGL_VENDOR_LIBRARY_FILENAMES=${__EGL_VENDOR_LIBRARY_FILENAMES:-/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json}
export XDG_RUNTIME_DIR=$(mktemp -d)
# A hardware GPU must be found without the software-adapter escape hatch (SOFTWARE_OK=1: a dry run on lavapipe).
if [ "${SOFTWARE_OK:-}" = 1 ]; then export LORA_LENS_ALLOW_SOFTWARE_GPU=1; else unset LORA_LENS_ALLOW_SOFTWARE_GPU; fi
QUICK_FLAG=; [ "${QUICK:-}" = 1 ] && QUICK_FLAG=--quick

cd "$W"
# 1. The adapter.
timeout 60 "$NODE" -e '
  const { openGpu } = require("./out/src/engine/kernels/gpu/dawn.js");
  openGpu().then((r) => {
    if (!r.ok) { console.log("NO ADAPTER: " + r.reason); process.exit(3); }
    const a = r.gpu.adapter, L = r.gpu.device.limits;
    console.log(`adapter: ${a.description || a.device} vendor=${a.vendor} architecture=${a.architecture} software=${a.software}`);
    console.log(`features: ${[...r.gpu.device.features].sort().join(" ")}`);
    console.log(`limits: maxStorageBufferBindingSize=${L.maxStorageBufferBindingSize} maxBufferSize=${L.maxBufferSize} maxComputeWorkgroupsPerDimension=${L.maxComputeWorkgroupsPerDimension} maxComputeInvocationsPerWorkgroup=${L.maxComputeInvocationsPerWorkgroup}`);
    process.exit(0);
  });' > "$OUT/adapter.txt" 2>&1
rc=$?
tee -a "$SUMMARY" < "$OUT/adapter.txt"
[ $rc = 0 ] || fail "no usable GPU adapter (exit $rc); see above"

# 2. Agreement tests on the GPU (required: a missing adapter fails them).
say "== GPU agreement tests"
LORA_LENS_GPU_TESTS=required timeout 180 "$NODE" --test --test-reporter=spec out/test/unit/gpu.test.js out/test/unit/gpu-cli.test.js > "$OUT/gpu-tests.log" 2>&1
rc=$?
grep -E '^(ℹ (tests|pass|fail)|✖)|^\s+✖' "$OUT/gpu-tests.log" | head -20 | tee -a "$SUMMARY"
say "gpu tests: exit $rc"

# 3. The benchmark (bandwidth, kernels, whole jobs).
say "== bench/gpu.bench.ts (layers=$LAYERS)"
timeout 300 "$NODE" --expose-gc out/bench/gpu.bench.js $QUICK_FLAG --layers "$LAYERS" --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
rc=$?
grep -v '^Warning' "$OUT/bench.log" | tee -a "$SUMMARY"
say "bench: exit $rc"
say "== done $(date -u +%FT%TZ)"
