#!/usr/bin/env bash
# Builds (or finds in the cache) the L1 kernel for one variant and prints the
# bzImage path on stdout. Progress goes to stderr.
# Cache: $PINION_CACHE (default ~/.cache/pinion), keyed by the source package
# version and a hash of every config fragment, so a warm run never rebuilds.
set -euo pipefail
# `build-kernel.sh headers` installs the same source's uAPI headers instead
# (linux/vfio.h, linux/iommufd.h, linux/kvm.h for the C reference programs and
# the uAPI check), plus the iommufd selftest header, and prints the include
# directory.
variant=${1:?usage: build-kernel.sh type1|compat|headers}
here=$(cd "$(dirname "$0")" && pwd)
frag="$here/kernel/$variant.config"
[ "$variant" = headers ] || [ -f "$frag" ] || { echo "rig: unknown kernel variant '$variant' (use type1 or compat)" >&2; exit 2; }
cache=${PINION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pinion}
mkdir -p "$cache/kernels"

tarball=$("$here/fetch-kernel-source.sh" "$cache/src")
deb=$(basename "$(ls "$cache"/src/linux-source-*.deb | head -n1)")
src="$cache/linux-${deb%.deb}"
if [ ! -f "$src/.pinion-extracted" ]; then
  echo "rig: unpacking $(basename "$tarball") ..." >&2
  rm -rf "$src"; mkdir -p "$src"
  tar -xf "$tarball" -C "$src" --strip-components=1
  touch "$src/.pinion-extracted"
fi
if [ "$variant" = headers ]; then
  hdr="$cache/headers-${deb%.deb}"
  if [ ! -f "$hdr/include/linux/iommufd.h" ]; then
    make -C "$src" O="$cache/headers-build" INSTALL_HDR_PATH="$hdr.tmp" headers_install >"$cache/headers.log" 2>&1 \
      || { echo "rig: headers_install failed; last lines of $cache/headers.log:" >&2; tail -n 20 "$cache/headers.log" >&2; exit 1; }
    rm -rf "$hdr" "$cache/headers-build"; mv "$hdr.tmp" "$hdr"
  fi
  # Not uAPI, but pin-core drives the iommufd mock domain with it (test/unit/uapi.test.ts checks against it).
  if [ ! -f "$hdr/include/iommufd_test.h" ]; then
    cp "$src/drivers/iommu/iommufd/iommufd_test.h" "$hdr/include/.iommufd_test.h.$$"
    mv "$hdr/include/.iommufd_test.h.$$" "$hdr/include/iommufd_test.h"
  fi
  echo "$hdr/include"; exit 0
fi
exec 9>"$cache/kernel-build.lock"
flock 9
key=$( { echo "$deb"; cat "$here/kernel/base.config" "$here/kernel/pinion.config" "$frag"; } | sha256sum | cut -c1-16)
out="$cache/kernels/$variant-$key"
if [ -f "$out/bzImage" ]; then echo "$out/bzImage"; exit 0; fi

build="$cache/build-${deb%.deb}"
log="$cache/kernel-build-$variant.log"
mkdir -p "$build"
start=$(date +%s)
{
  make -C "$src" O="$build" allnoconfig
  "$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" \
    "$here/kernel/base.config" "$here/kernel/pinion.config" "$frag"
  make -C "$src" O="$build" olddefconfig
} >"$log" 2>&1 || { echo "rig: kernel config failed; last lines of $log:" >&2; tail -n 30 "$log" >&2; exit 1; }

# Every fragment line (the last word on each symbol) must survive
# olddefconfig; a silent drop means a missing dependency.
missing=$(cat "$here/kernel/base.config" "$here/kernel/pinion.config" "$frag" | grep -E '^CONFIG_' \
  | awk -F= '{ last[$1] = $0 } END { for (s in last) print last[s] }' | while IFS= read -r line; do
  sym=${line%%=*}; val=${line#*=}
  if [ "$val" = n ]; then
    if grep -q "^$sym=" "$build/.config"; then echo "$line"; fi
  else
    grep -qx "$line" "$build/.config" || echo "$line"
  fi
done | sort || true)
if [ -n "$missing" ]; then
  echo "rig: kernel config dropped requested options (missing dependencies?):" >&2
  echo "$missing" | sed 's/^/  /' >&2
  exit 1
fi

jobs=$(( $(nproc) + 1 ))
tty=0; [ -t 2 ] && tty=1
last=0; step="starting"
set +e
make -C "$src" O="$build" -j"$jobs" bzImage 2>&1 | tee -a "$log" | while IFS= read -r l; do
  case "$l" in "  "[A-Z]*) step=${l#  } ;; esac
  now=$(date +%s)
  if [ $tty = 1 ] || [ $((now - last)) -ge 30 ]; then
    el=$((now - start))
    msg=$(printf 'rig: building %s kernel: %dm%02ds  %s' "$variant" $((el / 60)) $((el % 60)) "$(echo "$step" | tr -s ' ' | cut -c1-60)")
    if [ $tty = 1 ]; then printf '\r\033[K%s' "$msg" >&2; else echo "$msg" >&2; fi
    last=$now
  fi
done
rc=${PIPESTATUS[0]}
set -e
[ $tty = 1 ] && printf '\n' >&2
if [ "$rc" != 0 ] || [ ! -f "$build/arch/x86/boot/bzImage" ]; then
  echo "rig: kernel build failed (make exit $rc); last lines of $log:" >&2
  grep -E 'error|Error' "$log" | tail -n 10 >&2 || true
  tail -n 20 "$log" >&2
  exit 1
fi
mkdir -p "$out"
cp "$build/arch/x86/boot/bzImage" "$build/.config" "$out/"
el=$(( $(date +%s) - start ))
echo "rig: $variant kernel built in $((el / 60))m$((el % 60))s -> $out" >&2
echo "$out/bzImage"
