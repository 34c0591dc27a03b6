#!/usr/bin/env bash
# Installs what sitedist and its tests need on a fresh Debian 12 machine (run as root): Debian packages,
# the example's sources (scripts/fetch_sources.py), and sitedist with its Python dependencies in a
# virtual environment .venv made from Debian's own /usr/bin/python3 (it is externally managed: nothing is
# pip-installed into it). Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(build-essential gfortran cmake ninja-build patch git xz-utils bzip2 file pkg-config man-db lmod lua5.3 tcl8.6
          openmpi-bin libopenmpi-dev mpich libmpich-dev chromium chromium-driver
          python3 python3-venv python3-dev ca-certificates libssl-dev
          slurmctld slurmd slurm-client munge)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
/usr/bin/python3 scripts/fetch_sources.py
# A venv left half-made (setup killed while creating it) has a python but no pip: make it again.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv
  /usr/bin/python3 -m venv .venv
fi
# Editable: .venv/bin/sitedist runs this checkout's code. setuptools leaves sitedist.egg-info here (git
# ignores it); other users run sitedist from .venv or from an install of their own (admin_docs/install.md).
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# cuobjdump (NVIDIA's wheel; not in every CUDA install, e.g. not in /usr/local/cuda-13.0 here): the CUDA
# test lists the GPU architectures in the binaries it builds with it.
.venv/bin/python -m pip install -q --disable-pip-version-check 'nvidia-cuda-cuobjdump==13.2.51'
