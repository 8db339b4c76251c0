#!/usr/bin/env bash
# Installs what the rig needs on the host, from Debian's packages only:
# QEMU >= 8 (igb) from bookworm-backports, the kernel build tools, and what
# the Linux guest image carries (iperf3, lspci), and clang-format for the
# guest C's lint (scripts/lint.mjs).
# The mirror is taken from the host's own apt sources, never hard-coded.
set -euo pipefail

need_pkgs=(flex bison bc libelf-dev libssl-dev rsync cpio busybox-static gcc make xz-utils iperf3 pciutils clang-format)
sources=/etc/apt/sources.list.d/debian.sources

mirror_uri() {
  if [ -f "$sources" ]; then
    awk '/^URIs:/ {print $2; exit}' "$sources"
  else
    awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list
  fi
}

qemu_ok() {
  command -v qemu-system-x86_64 >/dev/null || return 1
  local v; v=$(qemu-system-x86_64 --version | awk 'NR==1{print $4}')
  [ "${v%%.*}" -ge 8 ] 2>/dev/null || return 1
  qemu-system-x86_64 -device help 2>/dev/null | grep -q '"igb"'
}

missing=()
for p in "${need_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ] && qemu_ok; then exit 0; fi

[ "$(id -u)" = 0 ] || { echo "rig: installing ${missing[*]:-qemu} needs root: sudo bash rig/install-host.sh" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
uri=$(mirror_uri)
[ -n "$uri" ] || { echo "rig: no Debian mirror found in $sources or /etc/apt/sources.list; add one and retry" >&2; exit 1; }
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
bp=/etc/apt/sources.list.d/pinion-backports.list
if ! qemu_ok && [ ! -f "$bp" ]; then
  echo "deb $uri ${codename}-backports main" > "$bp"
fi
apt-get update -qq
[ ${#missing[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if ! qemu_ok; then
  apt-get install -y -qq --no-install-recommends -t "${codename}-backports" qemu-system-x86 >/dev/null
fi
qemu_ok || { echo "rig: QEMU >= 8 with the igb device is not installable from ${codename}-backports; install it by hand" >&2; exit 1; }
