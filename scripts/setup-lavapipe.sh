#!/bin/bash
# Installs Mesa 25's lavapipe (a Vulkan driver that runs on the CPU) from Debian bookworm-backports into
# a local, git-ignored folder, so that the GPU backend's tests run on machines without a GPU. Dawn
# rejects bookworm's own Mesa 22.3.6 (it lacks shader*ArrayDynamicIndexing). Nothing outside the folder
# changes: the packages are downloaded with a private apt sources list and unpacked with `dpkg -x`.
#
# Prints the environment the tests need (VK_ICD_FILENAMES, LD_LIBRARY_PATH) as `KEY=VALUE` lines on
# stdout; everything else goes to stderr. A second run reuses the unpacked driver (no network).
# The Vulkan loader itself (libvulkan.so.1) comes from bookworm's `libvulkan1`, unpacked the same way
# when the system does not have it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${LAVAPIPE_DIR:-$ROOT/.lavapipe}
LIB="$DIR/root/usr/lib/x86_64-linux-gnu"
ICD="$DIR/lvp_icd.json"

if [ "$(uname -m)" != x86_64 ]; then echo "setup-lavapipe: only x86_64 is supported" >&2; exit 1; fi

if [ ! -f "$DIR/.complete" ]; then
  rm -rf "$DIR"
  A="$DIR/apt"
  mkdir -p "$A/lists/partial" "$A/archives/partial" "$A/cache" "$DIR/root"
  # The Debian mirror this machine's apt already uses (deb822 .sources, or one-line sources.list).
  M=$(grep -hs "^URIs:" /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -m1 '/debian/\?$' || true)
  [ -n "$M" ] || M=$(grep -hs "^deb " /etc/apt/sources.list | awk '{print $2}' | grep -m1 '/debian/\?$' || true)
  [ -n "$M" ] || M=http://deb.debian.org/debian
  printf 'deb %s bookworm main\ndeb %s bookworm-backports main\n' "$M" "$M" > "$A/sources.list"
  O=(-o Dir::Etc::sourcelist="$A/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$A/lists"
     -o Dir::Cache="$A/cache" -o Dir::Cache::archives="$A/archives" -o Debug::NoLocking=1
     -o APT::Sandbox::User=root -q)
  apt-get "${O[@]}" update >&2
  # apt-get update exits 0 when a fetch fails: check that both package lists arrived.
  for suite in bookworm bookworm-backports; do
    ls "$A"/lists/*_dists_${suite}_main_binary-amd64_Packages* >/dev/null 2>&1 \
      || { echo "setup-lavapipe: could not fetch Debian's $suite package list from $M (no network, or the mirror is unreachable); the GPU tests need it once, then $DIR is reused" >&2; exit 1; }
  done
  # The backported driver, libdrm at the version it needs, and whatever else of its dependency closure
  # this system lacks (usually only the Vulkan loader, libvulkan1).
  PKGS="mesa-vulkan-drivers/bookworm-backports libdrm2/bookworm-backports libdrm-amdgpu1/bookworm-backports"
  for p in $(apt-cache "${O[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
      --no-replaces --no-enhances --no-pre-depends mesa-vulkan-drivers/bookworm-backports | grep -v '^ ' | grep -v '^<' | sort -u); do
    case $p in mesa-vulkan-drivers|libdrm2|libdrm-amdgpu1) continue ;; esac
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || PKGS="$PKGS $p/bookworm"
  done
  echo "setup-lavapipe: downloading $PKGS" >&2
  (cd "$A/archives" && apt-get "${O[@]}" download $PKGS >&2)
  for f in "$A"/archives/*.deb; do dpkg -x "$f" "$DIR/root"; done
  rm -rf "$A"
  sed "s|\"library_path\": \"[^\"]*\"|\"library_path\": \"$LIB/libvulkan_lvp.so\"|" \
    "$DIR/root/usr/share/vulkan/icd.d/lvp_icd.x86_64.json" > "$ICD" 2>/dev/null \
    || sed "s|\"library_path\": \"[^\"]*\"|\"library_path\": \"$LIB/libvulkan_lvp.so\"|" \
    "$DIR/root/usr/share/vulkan/icd.d/lvp_icd.json" > "$ICD"
  touch "$DIR/.complete"
fi
echo "VK_ICD_FILENAMES=$ICD"
echo "LD_LIBRARY_PATH=$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
