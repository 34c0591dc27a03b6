"""Planning module trees (pure): names, clashes and the disambiguation rules, hierarchy placement, defaults."""

import hashlib

import pytest

from sitedist.errors import ModulesError
from sitedist.modules import ModuleEntry, plan_tree
from sitedist.spec.schema import root_var

GCC = ("gcc", "12.2.0")
OMPI = ("openmpi", "4.1.4")
MPICH = ("mpich", "4.0.2")


def E(name, version, aid=None, **kw):
    aid = aid or hashlib.sha256(repr((name, version, kw.get("toolchain"), kw.get("options"))).encode()).hexdigest()[:32]
    return ModuleEntry(name=name, version=version, prefix=f"/store/{name}/{version}-{aid}", artifact_id=aid, **kw)


def names(plan):
    return sorted((m.level, m.fullname) for m in plan.modules)


def test_default_names_and_custom_naming_template():
    entries = [E("zlib", "1.3"), E("hdf5", "1.14.0", toolchain="gcc-openmpi", compiler=GCC, mpi=OMPI)]
    assert names(plan_tree(entries, {})) == [("", "hdf5/1.14.0"), ("", "zlib/1.3")]
    naming = "{{ name }}/{{ version }}{% if toolchain %}-{{ toolchain }}{% endif %}"
    assert names(plan_tree(entries, {"naming": naming})) == [("", "hdf5/1.14.0-gcc-openmpi"), ("", "zlib/1.3")]
    assert names(plan_tree(entries, {"naming": "libs/{{name}}/{{version}}"})) == [
        ("", "libs/hdf5/1.14.0"), ("", "libs/zlib/1.3")]


@pytest.mark.parametrize("naming", ["{{ name }}", "../{{name}}/{{version}}", "{{name}}/{{ version }} x",
                                    "{{ nme }}/{{ version }}", "{{ name }/{{ version }}"])
def test_bad_naming_templates_are_errors(naming):
    with pytest.raises(ModulesError, match="modules.naming"):
        plan_tree([E("zlib", "1.3")], {"naming": naming})


def test_toolchain_rule_keeps_the_default_toolchain_name_plain():
    a, b = E("zlib", "1.3"), E("zlib", "1.3", toolchain="intel")
    plan = plan_tree([a, b], {"disambiguate": ["toolchain"]})
    assert names(plan) == [("", "zlib/1.3"), ("", "zlib/1.3-intel")]
    assert len(plan.notes) == 1 and a.artifact_id in plan.notes[0] and b.artifact_id in plan.notes[0]


def test_options_rule_uses_the_differing_values():
    entries = [E("hdf5", "1.14.0"), E("hdf5", "1.14.0", options=(("fortran", "True"),)),
               E("hdf5", "1.14.0", options=(("fortran", "False"), ("precision", "double")))]
    plan = plan_tree(entries, {"disambiguate": ["options"]})
    assert names(plan) == [("", "hdf5/1.14.0"), ("", "hdf5/1.14.0-fortran"), ("", "hdf5/1.14.0-nofortran-double")]


def test_rules_apply_in_order_and_only_where_they_tell_entries_apart():
    same_tc = [E("fftw", "3.3", toolchain="gcc", options=(("mpi", "True"),)),
               E("fftw", "3.3", toolchain="gcc", options=(("mpi", "False"),)),
               E("fftw", "3.3", toolchain="intel", options=(("mpi", "True"),))]
    plan = plan_tree(same_tc, {"disambiguate": ["toolchain", "options"]})
    assert names(plan) == [("", "fftw/3.3-gcc-mpi"), ("", "fftw/3.3-gcc-nompi"), ("", "fftw/3.3-intel")]
    plan = plan_tree(same_tc, {"disambiguate": ["hash", "toolchain"]})
    assert names(plan) == sorted(("", f"fftw/3.3-{e.artifact_id[:7]}") for e in same_tc)
    with pytest.raises(ModulesError) as err:
        plan_tree(same_tc, {"disambiguate": ["toolchain"]})
    assert "fftw/3.3-gcc" in str(err.value) and "does not tell them apart" in str(err.value)
    assert "add 'options' or 'hash'" in str(err.value)


def test_unresolved_clash_names_every_entry_and_the_rules_that_would_fix_it():
    a = E("hdf5", "1.14.0", options=(("fortran", "True"),))
    b = E("hdf5", "1.14.0", options=(("fortran", "False"),))
    with pytest.raises(ModulesError) as err:
        plan_tree([a, b, E("zlib", "1.3")], {})
    text = str(err.value)
    assert "module name clash: 2 artifacts would all be module hdf5/1.14.0" in text
    assert f"hdf5 1.14.0, options fortran=True, artifact {a.artifact_id}" in text
    assert f"hdf5 1.14.0, options fortran=False, artifact {b.artifact_id}" in text
    assert "add 'options' or 'hash' to modules.disambiguate" in text
    assert "'toolchain'" not in text


def test_the_same_artifact_twice_is_one_module():
    assert names(plan_tree([E("zlib", "1.3"), E("zlib", "1.3")], {})) == [("", "zlib/1.3")]
    plan = plan_tree([E("zlib", "1.3", explicit=False), E("zlib", "1.3")], {})
    assert [m.hidden for m in plan.modules] == [False]
    with pytest.raises(ModulesError, match="given twice"):
        plan_tree([E("zlib", "1.3", aid="x"), E("zlib", "1.3", aid="x", description="other")], {})


def test_a_module_name_inside_another_is_an_error():
    with pytest.raises(ModulesError, match="inside module"):
        plan_tree([E("a", "1"), E("b", "2")], {"naming": "{{ 'a/1/x' if name == 'b' else 'a' }}/{{ version }}"})


def test_plan_does_not_depend_on_entry_order():
    entries = [E("zlib", "1.3"), E("zlib", "1.3", toolchain="intel"), E("tool", "1.0"), E("tool", "2.0")]
    config = {"disambiguate": ["toolchain"], "defaults": {"tool": "1.0"}}
    assert plan_tree(entries, config) == plan_tree(list(reversed(entries)), config)


def hierarchy():
    gcc = E("gcc", "12.2.0", kind="compiler")
    intel = E("intel", "2023.1.0", kind="compiler")
    ompi, mpich = E("openmpi", "4.1.4", kind="mpi"), E("mpich", "4.0.2", kind="mpi")
    zlib = E("zlib", "1.3", explicit=False)
    fftw = E("fftw", "3.3.10", compiler=GCC, toolchain="gcc")
    hdf5 = [E("hdf5", "1.14.0", compiler=GCC, mpi=m, toolchain=f"gcc-{m[0]}",
              run_depends=(("zlib", "1.3", zlib.artifact_id), ("fftw", "3.3.10", fftw.artifact_id)))
            for m in (OMPI, MPICH)]
    return [gcc, intel, ompi, mpich, zlib, fftw, *hdf5]


def test_hierarchical_levels_and_what_each_module_opens_and_requires():
    plan = plan_tree(hierarchy(), {"layout": "hierarchical"})
    by = {(m.level, m.fullname): m for m in plan.modules}
    assert sorted(by) == [
        ("Compiler/gcc/12.2", "fftw/3.3.10"), ("Compiler/gcc/12.2", "mpich/4.0.2"),
        ("Compiler/gcc/12.2", "openmpi/4.1.4"),
        ("Core", "gcc/12.2.0"), ("Core", "intel/2023.1.0"), ("Core", "zlib/1.3"),
        ("MPI/gcc/12.2/mpich/4.0", "hdf5/1.14.0"), ("MPI/gcc/12.2/openmpi/4.1", "hdf5/1.14.0")]
    # MPIs appear only under the compiler packages were built with together with them
    assert by[("Core", "gcc/12.2.0")].opens == "Compiler/gcc/12.2" and by[("Core", "gcc/12.2.0")].family == "compiler"
    assert by[("Core", "intel/2023.1.0")].opens == "Compiler/intel/2023.1"
    ompi = by[("Compiler/gcc/12.2", "openmpi/4.1.4")]
    assert (ompi.opens, ompi.family, ompi.requires) == ("MPI/gcc/12.2/openmpi/4.1", "mpi", ("gcc",))
    hdf5 = by[("MPI/gcc/12.2/openmpi/4.1", "hdf5/1.14.0")]
    assert hdf5.requires == ("gcc", "openmpi") and hdf5.depends == ("zlib/1.3", "fftw/3.3.10")
    assert by[("Core", "zlib/1.3")].hidden and not hdf5.hidden
    assert plan.roots == ("Core",)
    assert "Compiler/intel/2023.1" in plan.levels   # opened even though empty


def test_an_mpi_nothing_was_built_with_goes_under_every_compiler():
    entries = [E("gcc", "12.2.0", kind="compiler"), E("intel", "2023.1.0", kind="compiler"),
               E("openmpi", "4.1.4", kind="mpi")]
    plan = plan_tree(entries, {"layout": "hierarchical"})
    assert [m.level for m in plan.modules if m.name == "openmpi"] == ["Compiler/gcc/12.2", "Compiler/intel/2023.1"]


def test_hierarchy_errors_for_what_users_could_not_reach():
    with pytest.raises(ModulesError, match="compiler gcc 12.2.0, which has no module"):
        plan_tree([E("fftw", "3.3", compiler=GCC)], {"layout": "hierarchical"})
    fftw = E("fftw", "3.3", compiler=GCC)
    core_app = E("app", "1", run_depends=(("fftw", "3.3", fftw.artifact_id),))
    with pytest.raises(ModulesError, match="users could not load it"):
        plan_tree([E("gcc", "12.2.0", kind="compiler"), fftw, core_app], {"layout": "hierarchical"})
    with pytest.raises(ModulesError, match="not among the modules to publish"):
        plan_tree([E("app", "1", run_depends=(("zlib", "1.3", "nope"),))], {})


def test_defaults_and_hiding():
    entries = [E("tool", "1.0"), E("tool", "2.0"), E("lib", "1.0", explicit=False),
               E("hdf5", "1.14.0", toolchain="intel"), E("hdf5", "1.14.0")]
    config = {"defaults": {"tool": "1.0", "hdf5": "1.14.0"}, "disambiguate": ["toolchain"]}
    plan = plan_tree(entries, config)
    assert plan.defaults == {("", "tool"): "1.0", ("", "hdf5"): "1.14.0"}
    assert plan.rc_dirs() == {("", "hdf5"): ("hdf5/1.14.0", []), ("", "lib"): (None, ["lib/1.0"]),
                              ("", "tool"): ("tool/1.0", [])}
    assert ("", "lib") not in plan_tree(entries, {**config, "hide_implicit": False}).rc_dirs()
    # an entry version matching one suffixed module picks it
    plan = plan_tree([E("fftw", "3.3", toolchain="intel")], {"defaults": {"fftw": "3.3"},
                                                             "naming": "{{name}}/{{version}}-{{toolchain}}"})
    assert plan.defaults == {("", "fftw"): "3.3-intel"}
    with pytest.raises(ModulesError, match="matches hdf5/1.14.0-a, hdf5/1.14.0-b"):
        plan_tree([E("hdf5", "1.14.0", toolchain="a"), E("hdf5", "1.14.0", toolchain="b")],
                  {"defaults": {"hdf5": "1.14.0"}, "disambiguate": ["toolchain"], "naming": "{{name}}/{{version}}"})
    with pytest.raises(ModulesError, match="versions are: 1.0, 2.0"):
        plan_tree(entries, {"defaults": {"tool": "3.0"}, "disambiguate": ["toolchain"]})
    with pytest.raises(ModulesError, match="'tol', which is not a module"):
        plan_tree(entries, {"defaults": {"tol": "1.0"}, "disambiguate": ["toolchain"]})


def test_env_entries_are_checked():
    with pytest.raises(ModulesError, match="LD_LIBRARY_PATH"):
        plan_tree([E("bad", "1", env=(("prepend", "LD_LIBRARY_PATH", "{prefix}/lib"),))], {})
    with pytest.raises(ModulesError, match="bad env entry"):
        plan_tree([E("bad", "1", env=(("unset", "X", ""),))], {})


def test_root_variable_names():
    assert [root_var(n) for n in ("zlib", "py-numpy", "gtk+", "libxml2.9")] == [
        "ZLIB_ROOT", "PY_NUMPY_ROOT", "GTK__ROOT", "LIBXML2_9_ROOT"]
