"""The CUDA toolkit as a host package: probed, part of a gcc+CUDA toolchain, a real CUDA C++ library and
program built for two GPU architectures (checked in the binaries with cuobjdump), the architectures in the
hash, and modules that give users nvcc and the library. Running the program needs a GPU:
tests/gpu/run_on_device.sh does that on a GPU machine."""

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import run_cli, site_config, write
from modtools import ModuleShell

HERE = os.path.dirname(os.path.abspath(__file__))
CUDAVEC = os.path.join(HERE, "gpu", "cudavec")


def probe_json():
    return json.loads(run_cli("probe", "--json").stdout)


@pytest.fixture(scope="module")
def toolkit():
    found = probe_json()["cuda"]
    if not found:
        pytest.skip("no CUDA toolkit on this machine (no nvcc on PATH or in /usr/local/cuda*/bin)")
    return found[0]


def cuobjdump(toolkit):
    candidates = [os.path.join(toolkit["prefix"], "bin", "cuobjdump"), shutil.which("cuobjdump") or ""]
    candidates += glob.glob(os.path.join(os.path.dirname(sys.executable), "..", "lib", "python3*",
                                         "site-packages", "nvidia", "cu*", "bin", "cuobjdump"))
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    pytest.skip("no cuobjdump (pip install nvidia-cuda-cuobjdump; .ci/setup.sh does)")


def test_probe_lists_toolkit_driver_and_gpus(toolkit):
    assert toolkit["name"] == "cuda" and toolkit["identity"] == {"name": "cuda", "version": toolkit["version"]}
    version = subprocess.run([toolkit["nvcc"], "--version"], capture_output=True, text=True).stdout
    assert f"V{toolkit['version']}" in version
    assert "80" in toolkit["archs"] and "90" in toolkit["archs"]
    text = run_cli("probe").stdout
    assert "CUDA toolkits" in text and toolkit["version"] in text and "GPUs" in text
    if shutil.which("nvidia-smi") is None and not os.path.exists("/usr/bin/nvidia-smi"):
        assert probe_json()["gpus"] == [] and "(none: nvidia-smi is absent" in text


def cuda_config(tmp_path, archs="[80, 90]", name="site.yml", extra=""):
    return site_config(tmp_path, {"cudavec": "{toolchains: [gcc-cuda]}", "zlib": None}, recipes=[CUDAVEC],
                       name=name, extra=f"""\
toolchains:
  gcc-cuda: {{compiler: gcc, cuda: cuda}}
cuda_arch: {archs}
modules: {{root: {tmp_path / 'modules'}, layout: hierarchical, formats: [lua]}}
{extra}""")


def test_cuda_library_and_program_for_two_architectures(tmp_path, toolkit):
    config = cuda_config(tmp_path)
    run_cli("sync", "-j", "2", config)
    arts = {a["name"]: a for a in json.loads(run_cli("sync", "--dry-run", "--json", config).stdout)["artifacts"]}
    prefix, cuda = arts["cudavec"]["prefix"], arts["cuda"]
    assert cuda["kind"] == "cuda" and cuda["version"] == toolkit["version"]
    lib, exe = os.path.join(prefix, "lib", "libcudavec.so"), os.path.join(prefix, "bin", "vecdemo")
    dump = cuobjdump(toolkit)
    for binary in (lib, exe):
        elves = subprocess.run([dump, "--list-elf", binary], capture_output=True, text=True, check=True).stdout
        assert ".sm_80." in elves and ".sm_90." in elves, elves
    # The build saw the toolkit: CUDA_HOME, CUDAToolkit_ROOT, nvcc on PATH, the architectures.
    seen = dict(line.split("=", 1) for line in open(os.path.join(prefix, "share", "cudavec", "build-env")).read().split("\n") if "=" in line)
    assert seen["CUDA_HOME"] == seen["CUDAToolkit_ROOT"] == toolkit["prefix"]
    assert seen["nvcc"] == os.path.join(cuda["prefix"], "bin", "nvcc") and seen["CUDAARCHS"] == "80;90"
    out = run_cli("show", config, "cudavec").stdout
    doc = json.loads(out[out.index("{"):out.rindex("}") + 1])
    assert doc["cuda_arch"] == ["80", "90"] and doc["toolchain"]["cuda"] == {"name": "cuda", "version": toolkit["version"]}

    # Users: the CUDA module is in Core; the library sits at its compiler's level and loads CUDA with it.
    sh = ModuleShell.lmod(tmp_path / "modules" / "lmod" / "Core", tmp_path)
    r = sh.run("module load gcc cudavec; snap loaded; command -v nvcc; command -v vecdemo; nvcc --version;"
               "module list 2>&1")
    env = r.snaps["loaded"]
    assert f"{cuda['prefix']}/bin/nvcc" in r.stdout and f"{prefix}/bin/vecdemo" in r.stdout, r.stdout
    assert f"V{toolkit['version']}" in r.stdout
    assert env["CUDA_HOME"] == toolkit["prefix"] and env["CUDAVEC_ROOT"] == prefix
    assert "cuda/" in r.stdout and "cudavec/" in r.stdout
    assert glob.glob(str(tmp_path / "modules" / "lmod" / "Core" / "cuda" / "*.lua"))
    assert glob.glob(str(tmp_path / "modules" / "lmod" / "Compiler" / "gcc" / "*" / "cudavec" / "*.lua"))
    # A user compiles against the library with the module's nvcc (and the gcc module's compiler).
    write(tmp_path / "user.cu", '#include <cstdio>\n#include <cudavec.h>\n'
          'int main() { float v[2] = {1, 2}; std::printf("%d\\n", cudavec_scale(v, 2)); return 0; }\n')
    sh.run(f"module load gcc cudavec; cd {tmp_path}; nvcc -arch=sm_80 -o user user.cu "
           f"-I$CUDAVEC_ROOT/include -L$CUDAVEC_ROOT/lib -lcudavec -Xlinker -rpath=$CUDAVEC_ROOT/lib")
    assert os.access(tmp_path / "user", os.X_OK)

    # The GPU architectures enter the hash of CUDA builds, and only of those.
    other = cuda_config(tmp_path, archs="[80]", name="site80.yml")
    arts80 = {a["name"]: a for a in json.loads(run_cli("sync", "--dry-run", "--json", other).stdout)["artifacts"]}
    assert arts80["cudavec"]["id"] != arts["cudavec"]["id"] and arts80["zlib"]["id"] == arts["zlib"]["id"]


def test_cuda_config_errors(tmp_path, toolkit):
    proc = run_cli("sync", "--dry-run", cuda_config(tmp_path, archs="[80, 35]"), check=False)
    assert proc.returncode == 2 and "cannot build for 35" in proc.stderr and "this nvcc builds for" in proc.stderr
    text = open(cuda_config(tmp_path, name="noarch.yml")).read().replace("cuda_arch: [80, 90]\n", "")
    write(tmp_path / "noarch.yml", text)
    proc = run_cli("sync", "--dry-run", tmp_path / "noarch.yml", check=False)
    assert proc.returncode == 2 and "lists no GPU architectures" in proc.stderr and "cuda_arch: [80, 90]" in proc.stderr
    proc = run_cli("sync", "--dry-run", cuda_config(tmp_path, archs="[eighty]", name="bad.yml"), check=False)
    assert proc.returncode == 2 and "bad.yml:" in proc.stderr and "compute capability" in proc.stderr, proc.stderr
