#!/usr/bin/env bash
# Run on a machine with an NVIDIA GPU, from the repository root:  bash tests/gpu/run_on_device.sh
# Builds the CUDA fixture (tests/gpu/cudavec: libcudavec + vecdemo) with sitedist and a gcc+CUDA
# toolchain for cuda_arch [80, 90] (A100, H100/H200), publishes its modules, then, as a user would, loads
# the module and runs vecdemo on the GPU. Prints the probe (toolkit, driver, GPUs) first.
# Where sitedist cannot run (its Python dependencies missing and no network), it builds the same
# sources with nvcc directly for the same architectures, so the program still runs on the GPU.
# Exit status: vecdemo's (0: every element right on the GPU).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d /tmp/sitedist-gpu.XXXXXX)
recipes=$PWD/tests/gpu/cudavec
echo "== nvidia-smi"; nvidia-smi --query-gpu=index,name,compute_cap,driver_version --format=csv,noheader || true
if python3 -c 'import click, jsonschema, archspec, jinja2, yaml, psutil' 2>/dev/null; then
  cat > "$work/site.yml" <<YML
store: $work/store
recipes: [$recipes]
toolchains:
  gcc-cuda: {compiler: gcc, cuda: cuda}
cuda_arch: [80, 90]
packages:
  cudavec: {toolchains: [gcc-cuda]}
modules: {root: $work/modules, layout: hierarchical, formats: [lua, tcl]}
YML
  echo "== sitedist probe"; python3 -m sitedist.cli.main probe | sed -n '/Build tools/,$p'
  echo "== sitedist sync"; python3 -m sitedist.cli.main sync -j 8 "$work/site.yml"
  prefix=$(python3 -m sitedist.cli.main show "$work/site.yml" cudavec | awk '/prefix:/ {print $2; exit}')
  if [[ -f /usr/share/lmod/lmod/init/bash ]]; then
    echo "== module load gcc cudavec; vecdemo"
    set +u  # Lmod's shell functions use unset variables
    source /usr/share/lmod/lmod/init/bash
    export MODULEPATH=$work/modules/lmod/Core
    module load gcc cudavec
    command -v nvcc vecdemo
    exec vecdemo
  fi
  echo "== $prefix/bin/vecdemo (no Lmod here)"
  exec "$prefix/bin/vecdemo"
fi
echo "== sitedist's dependencies are missing: building with nvcc directly"
nvcc=$(command -v nvcc || ls -d /usr/local/cuda*/bin/nvcc | sort -r | head -1)
gencode=(-gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90)
src=$recipes/src
"$nvcc" "${gencode[@]}" -shared -Xcompiler -fPIC -o "$work/libcudavec.so" "$src/cudavec.cu"
"$nvcc" "${gencode[@]}" -I"$src" -o "$work/vecdemo" "$src/vecdemo.cu" -L"$work" -lcudavec -Xlinker -rpath="$work"
exec "$work/vecdemo"
