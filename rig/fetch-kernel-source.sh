#!/usr/bin/env bash
# Downloads Debian's linux-source-7.3 (trixie-backports) into $1 without
# touching the host's apt state: a private sources list and lists dir.
# Prints the path of the source tarball.
set -euo pipefail
dest=${1:?usage: fetch-kernel-source.sh DIR}
pkg=${PINION_KERNEL_PKG:-linux-source-7.3}
mkdir -p "$dest"
existing=$(ls "$dest"/${pkg}_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$existing" ]; then
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
  apt_dir="$dest/apt"
  mkdir -p "$apt_dir/lists/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie-backports main" > "$apt_dir/sources.list"
  opts=(-o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State::Lists="$apt_dir/lists" -o Debug::NoLocking=1 -o APT::Get::List-Cleanup=0)
  apt-get "${opts[@]}" update -qq >&2
  (cd "$dest" && apt-get "${opts[@]}" download "$pkg" >&2)
  existing=$(ls "$dest"/${pkg}_*.deb | head -n1)
fi
tarball=$(ls "$dest"/usr/src/${pkg}.tar.* 2>/dev/null | head -n1 || true)
if [ -z "$tarball" ]; then
  dpkg-deb -x "$existing" "$dest"
  tarball=$(ls "$dest"/usr/src/${pkg}.tar.* | head -n1)
fi
echo "$tarball"
