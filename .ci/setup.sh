#!/usr/bin/env bash
# Installs what sitedist and its tests need on a fresh Debian machine (run as root), then sitedist
# itself. Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(build-essential gfortran cmake patch git xz-utils bzip2 file pkg-config man-db lmod tcl8.6
          openmpi-bin libopenmpi-dev mpich libmpich-dev chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
