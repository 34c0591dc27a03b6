#!/usr/bin/env bash
# Puts the upstream release tarballs of the build-tool recipes (site_configs/recipes/cmake.yml, ninja.yml,
# meson.yml) into a local source mirror with a SHA256SUMS index, for the tests and CI, offline from
# anything but Debian's archive: Debian's .orig tarballs are the upstream releases, byte for byte (the
# recipes carry the upstream URL and the same sha256). Run as root (it adds a deb-src entry for the
# configured Debian mirror). Idempotent.
#   usage: .ci/fetch-tool-sources.sh [DIR]   (default: $SITEDIST_TOOL_SOURCES or /var/cache/sitedist-tool-sources)
set -euo pipefail
dest=${1:-${SITEDIST_TOOL_SOURCES:-/var/cache/sitedist-tool-sources}}
# file  sha256  Debian source package=version
want=(
  "cmake_3.25.1.orig.tar.gz 1c511d09516af493694ed9baf13c55947a36389674d657a2d5e0ccedc6b291d8 cmake=3.25.1-1"
  "ninja-build_1.11.1.orig.tar.gz 31747ae633213f1eda3842686f83c2aa1412e0f5691d1c14dbbcc67fe7400cea ninja-build=1.11.1-2~deb12u1"
  "meson_1.0.1.orig.tar.gz d926b730de6f518728cc7c57bc5e701667bae0c3522f9e369427b2cc7839d3c1 meson=1.0.1-5"
)
mkdir -p "$dest"
cd "$dest"
missing=()
for entry in "${want[@]}"; do
  read -r file sum pkg <<<"$entry"
  if ! echo "$sum  $file" | sha256sum -c --status 2>/dev/null; then missing+=("$pkg"); fi
done
if ((${#missing[@]})); then
  if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
    uris=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    cat > /etc/apt/sources.list.d/sitedist-deb-src.sources <<SRC
Types: deb-src
URIs: ${uris:-http://deb.debian.org/debian}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  apt-get update -qq
  work=$(mktemp -d)
  # Only the .orig tarballs are wanted; a missing Debian packaging file does not matter.
  (cd "$work" && apt-get source --download-only -qq "${missing[@]}" >/dev/null 2>&1 || true)
  for entry in "${want[@]}"; do
    read -r file sum pkg <<<"$entry"
    [[ -f "$work/$file" ]] && mv -f "$work/$file" "$dest/$file"
  done
  rm -rf "$work"
fi
: > SHA256SUMS.new
for entry in "${want[@]}"; do
  read -r file sum pkg <<<"$entry"
  echo "$sum  $file" | sha256sum -c --quiet
  echo "$sum  $file" >> SHA256SUMS.new
done
mv -f SHA256SUMS.new SHA256SUMS
