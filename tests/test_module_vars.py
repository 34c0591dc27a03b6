"""The variables modules set: after loading a toolchain's modules, the compilers and MPI they provide still
work (issue 11, item 0: GCC_ROOT broke Debian's gcc); every package name gets a valid ``<NAME>_ROOT``
variable, the same in its module and in the builds that depend on it (item 8); ``man`` still finds the
system's pages with modules loaded (item 10). With real Lmod and Environment Modules 5, flat and
hierarchical trees, real compilers and MPI."""

import os
import re

import pytest

from conftest import REPO, run_cli, site_config
from modtools import LMOD_INIT, ModuleShell, em5_init  # noqa: F401 (em5_init is a fixture)
from storetools import synthetic

FIXTURES = os.path.join(REPO, "tests", "fixtures")
TOOLCHAINS = """
toolchains:
  gcc-openmpi: {compiler: gcc, mpi: openmpi}
  gcc-mpich: {compiler: gcc, mpi: mpich}
"""


@pytest.mark.parametrize("name, kind, var", [
    ("zlib", "package", "ZLIB_ROOT"), ("py-numpy", "package", "PY_NUMPY_ROOT"), ("gtk+", "package", "GTK__ROOT"),
    ("7zip", "package", "SITEDIST_7ZIP_ROOT"), ("gcc", "package", "SITEDIST_GCC_ROOT"),
    ("lmod", "package", "SITEDIST_LMOD_ROOT"), ("ompi-mca-btl", "package", "SITEDIST_OMPI_MCA_BTL_ROOT"),
    ("gcc", "compiler", "SITEDIST_GCC_ROOT"), ("openmpi", "mpi", "SITEDIST_OPENMPI_ROOT"),
    ("nvhpc", "compiler", "SITEDIST_NVHPC_ROOT"), ("intel-mpi", "mpi", "SITEDIST_INTEL_MPI_ROOT"),
])
def test_root_var_names(name, kind, var):
    from sitedist.spec.schema import root_var

    assert root_var(name, kind) == var
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var)


@pytest.fixture(scope="module")
def trees(shared_store, tmp_path_factory):
    """One store, the gcc, gcc-openmpi and gcc-mpich toolchains, published flat and hierarchical."""
    tmp = tmp_path_factory.mktemp("toolchains")
    out = {}
    for layout in ("flat", "hierarchical"):
        config = site_config(tmp, {"mpihello": "{toolchains: [gcc-openmpi, gcc-mpich]}"}, store=shared_store,
                             recipes=[FIXTURES], name=f"{layout}.yml", extra=TOOLCHAINS + f"""
modules: {{root: {tmp}/{layout}, layout: {layout}, formats: [lua, tcl], disambiguate: [toolchain]}}
""")
        run_cli("sync", config)
        out[layout] = f"{tmp}/{layout}"
    (tmp / "src").mkdir()
    (tmp / "src" / "hello.c").write_text('#include <stddef.h>\n#include <stdio.h>\n'
                                         'int main(void) { printf("c %zu\\n", sizeof(size_t)); return 0; }\n')
    (tmp / "src" / "hello.cpp").write_text('#include <iostream>\n#include <vector>\n'
                                           'int main() { std::vector<int> v{1, 2}; std::cout << "cxx " << v.size() '
                                           '<< std::endl; }\n')
    (tmp / "src" / "hello.f90").write_text('program hello\n  print "(a)", "fortran ok"\nend program hello\n')
    return tmp, out


def _shell(tool, root, layout, tmp_path, request):
    sub = "/Core" if layout == "hierarchical" else ""
    if tool == "lmod":
        return ModuleShell.lmod(f"{root}/lmod{sub}", tmp_path)
    return ModuleShell(request.getfixturevalue("em5_init"), f"{root}/tcl{sub}", tmp_path)


@pytest.mark.parametrize("layout", ["flat", "hierarchical"])
@pytest.mark.parametrize("tool", ["lmod", "em5"])
def test_toolchain_modules_leave_their_compilers_working(trees, tool, layout, tmp_path, request):
    """After `module load gcc` (and openmpi or mpich), C, C++ and Fortran hello worlds and an MPI hello world
    compile and run."""
    tmp, roots = trees
    src = tmp / "src"
    mpi = os.path.join(FIXTURES, "mpihello")
    sh = _shell(tool, roots[layout], layout, tmp_path, request)
    script = ""
    for modules, launcher in (("gcc", None),
                              ("gcc openmpi", "mpirun --allow-run-as-root --oversubscribe -np 3"),
                              ("gcc mpich", "mpirun -np 3")):
        tag = modules.replace(" ", "+")
        script += (f"module purge; module load {modules}\n"
                   f"echo \"{tag} GCC_ROOT=${{GCC_ROOT-unset}} cc=$(command -v gcc)\"\n"
                   f"gcc {src}/hello.c -o c && echo \"{tag} $(./c)\"\n"
                   f"g++ {src}/hello.cpp -o cxx && echo \"{tag} $(./cxx)\"\n"
                   f"gfortran {src}/hello.f90 -o f && echo \"{tag} $(./f)\"\n")
        if launcher:
            script += (f"mpicc {mpi}/hello.c -o mc && echo \"{tag} $({launcher} ./mc)\"\n"
                       f"mpifort {mpi}/hello.f90 -o mf && echo \"{tag} $({launcher} ./mf)\"\n")
    r = sh.run(script, timeout=300)
    for tag, lib in (("gcc", None), ("gcc+openmpi", "Open MPI"), ("gcc+mpich", "MPICH")):
        lines = [line[len(tag) + 1:] for line in r.stdout.splitlines() if line.startswith(tag + " ")]
        assert lines[0].startswith("GCC_ROOT=unset cc="), lines
        assert "/gcc/" in lines[0], f"gcc is not the module's driver: {lines[0]}"
        assert lines[1:4] == ["c 8", "cxx 2", "fortran ok"], r.stdout
        if lib:
            assert lines[4].startswith(f"c ranks=3 sum=3 lib={lib}"), lines
            assert lines[5].startswith("fortran ranks=3 sum=3"), lines


def test_a_build_sees_the_variable_its_dependency_module_sets(tmp_path, request, em5_init):
    """A package named 7zip: builds of its dependents and its module both get SITEDIST_7ZIP_ROOT (7ZIP_ROOT
    is no shell variable), and the module loads in Lmod and Environment Modules."""
    recipes = tmp_path / "recipes"
    synthetic(recipes, "7zip")
    synthetic(recipes, "unpack", deps=["7zip"], commands=[
        'echo "seen=$SITEDIST_7ZIP_ROOT" > "$PREFIX/share/unpack/seen"',
        'echo "gcc=$SITEDIST_GCC_ROOT GCC_ROOT=${GCC_ROOT-unset}" > "$PREFIX/share/unpack/gcc"'])
    config = site_config(tmp_path, {"unpack": None, "7zip": None}, store=tmp_path / "store", recipes=[recipes],
                         extra=f"modules: {{root: {tmp_path}/modules}}\n")
    run_cli("sync", config)
    [prefix] = [os.path.join(tmp_path, "store", "7zip", d) for d in os.listdir(tmp_path / "store" / "7zip")]
    [unpack] = [os.path.join(tmp_path, "store", "unpack", d) for d in os.listdir(tmp_path / "store" / "unpack")]
    assert open(os.path.join(unpack, "share", "unpack", "seen")).read() == f"seen={prefix}\n"
    for sh in (ModuleShell.lmod(f"{tmp_path}/modules/lmod", tmp_path),
               ModuleShell(em5_init, f"{tmp_path}/modules/tcl", tmp_path)):
        r = sh.run("module load 7zip 2>&1; snap s; 7zip; module load gcc; snap gcc")
        assert r.snaps["s"]["SITEDIST_7ZIP_ROOT"] == prefix, r.stdout + r.stderr
        gcc = r.snaps["gcc"]["SITEDIST_GCC_ROOT"]
        assert open(os.path.join(unpack, "share", "unpack", "gcc")).read() == f"gcc={gcc} GCC_ROOT=unset\n"
        assert "error" not in (r.stdout + r.stderr).lower() and "invalid" not in r.stderr, r.stdout + r.stderr


@pytest.fixture(scope="module")
def man_tree(tmp_path_factory):
    """Two packages with manual pages, published as Lua and Tcl modules."""
    tmp = tmp_path_factory.mktemp("man")
    recipes = tmp / "recipes"
    for name in ("ma", "mb"):
        synthetic(recipes, name, commands=[
            f'mkdir -p "$PREFIX/share/man/man1" && printf \'.TH {name.upper()} 1\\n\' > "$PREFIX/share/man/man1/{name}.1"'])
    config = site_config(tmp, {"ma": None, "mb": None}, store=tmp / "store", recipes=[recipes],
                         extra=f"modules: {{root: {tmp}/modules}}\n")
    run_cli("sync", config)
    return tmp


@pytest.mark.parametrize("tool_fmt", [("lmod", "lmod"), ("lmod", "tcl"), ("em5", "tcl")], ids="-".join)
def test_man_finds_the_system_pages_with_modules_loaded(man_tree, tool_fmt, tmp_path, request):
    tool, tree = tool_fmt
    init = LMOD_INIT if tool == "lmod" else request.getfixturevalue("em5_init")
    sh = ModuleShell(init, f"{man_tree}/modules/{tree}", tmp_path)
    man = 'echo "$1 ls=$(man -w ls 2>&1) ma=$(man -w ma 2>&1) mb=$(man -w mb 2>&1)"'
    r = sh.run(f"m() {{ {man}; }}\n"
               "unset MANPATH; snap before; module load ma; m ma; module load mb; m ab; module unload ma; m b\n"
               "module unload mb; snap after\n"
               "export MANPATH=/usr/share/man; snap before2; module load ma; m set; snap loaded2\n"
               "module unload ma; snap after2")
    lines = {line.split()[0]: line for line in r.stdout.splitlines()}
    system = "ls=/usr/share/man/man1/ls.1"
    assert system in lines["ma"] and "/share/man/man1/ma.1" in lines["ma"], lines["ma"]
    assert system in lines["ab"] and "/share/man/man1/mb.1" in lines["ab"], lines["ab"]
    if (tool, tree) != ("lmod", "tcl"):   # Lmod reading Tcl modulefiles: the first one unloaded takes it
        assert system in lines["b"] and "/share/man/man1/mb.1" in lines["b"], lines["b"]
    assert "MANPATH" not in r.snaps["after"], "unloading left MANPATH set"
    # A MANPATH the user set is theirs: used as it is, and restored.
    assert system in lines["set"] and "/share/man/man1/ma.1" in lines["set"], lines["set"]
    assert r.snaps["loaded2"]["MANPATH"].split(":")[1:] == ["/usr/share/man"], r.snaps["loaded2"]["MANPATH"]
    assert r.snaps["after2"]["MANPATH"] == "/usr/share/man"
