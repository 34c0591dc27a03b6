"""Build tools are inputs: a CMake package built with a CMake found only in a ``host.paths`` directory,
with Ninja and Meson built from their recipes, and (slow) with CMake built from its recipe; the tool's
version and not its path enters the hash; a missing tool, a too-old tool and an undeclared one fail
with a message that says what to do, before anything is built and changing nothing."""

import json
import os
import subprocess

import pytest

from conftest import run_cli, site_config, tree_digest, write

def fake_cmake(directory, version, log):
    """A CMake in ``directory`` that reports ``version`` and logs every other call before running the
    real one: where the build ran it from shows in ``log``."""
    write(os.path.join(directory, "cmake"), f"""\
        #!/bin/sh
        if [ "$1" = "--version" ]; then
          printf 'cmake version {version}\\n\\nCMake suite maintained and supported by Kitware (kitware.com/cmake).\\n'
          exit 0
        fi
        echo "$0 $*" >> {log}
        exec /usr/bin/cmake "$@"
        """)
    os.chmod(os.path.join(directory, "cmake"), 0o755)
    return str(directory)


def cmake_project(tmp_path, name="cmhello", tools="[{name: cmake, version: \">=3.20\"}]", cmake_args="[]"):
    src = tmp_path / f"{name}-src"
    write(src / "CMakeLists.txt", f"""\
        cmake_minimum_required(VERSION 3.13)
        project({name} C)
        add_executable({name} hello.c)
        install(TARGETS {name} DESTINATION bin)
        """)
    write(src / "hello.c", '#include <stdio.h>\nint main(void) { puts("hello from cmake"); return 0; }\n')
    recipes = tmp_path / "recipes"
    write(recipes / f"{name}.yml", f"""\
        name: {name}
        versions:
          "1.0": {{path: {src}}}
        build: cmake
        tools: {tools}
        cmake_args: {cmake_args}
        post_install:
          - command -v cmake > "$PREFIX/cmake-used"
          - command -v ninja > "$PREFIX/ninja-used" || true
        """)
    return recipes


def dry_run(config):
    return {a["name"]: a for a in json.loads(run_cli("sync", "--dry-run", "--json", config).stdout)["artifacts"]}


def show_doc(config, name):
    out = run_cli("show", config, name).stdout
    return json.loads(out[out.index("{"):out.rindex("}") + 1])


def test_cmake_from_host_paths_is_what_the_build_runs_and_its_version_is_in_the_hash(tmp_path):
    log = tmp_path / "cmake-calls.log"
    recipes = cmake_project(tmp_path)
    fake = fake_cmake(tmp_path / "opt-cmake-3.99" / "bin", "3.99.1", log)
    config = site_config(tmp_path, {"cmhello": None}, recipes=[recipes], extra=f"host: {{paths: [{fake}]}}\n")
    run_cli("sync", config)
    arts = dry_run(config)
    prefix = arts["cmhello"]["prefix"]
    assert subprocess.run([os.path.join(prefix, "bin", "cmhello")], capture_output=True, text=True,
                          check=True).stdout == "hello from cmake\n"
    # The build's `cmake` is the host tool's store prefix, which runs the host.paths CMake, never /usr/bin's.
    used = open(os.path.join(prefix, "cmake-used")).read().strip()
    assert used == os.path.join(arts["cmake"]["prefix"], "bin", "cmake"), used
    assert f"exec {fake}/cmake " in open(used).read()
    calls = open(log).read()
    assert "-S . -B _sitedist_build" in calls and "--install _sitedist_build" in calls, calls
    doc = show_doc(config, "cmhello")
    assert doc["tools"]["cmake"] == {"version": "3.99.1"} and doc["protocol"] == 2
    assert fake not in json.dumps(doc), "a tool's path must not enter the hash"

    # Another CMake version (a second fake in another directory) gives another id; its path alone would not.
    fake2 = fake_cmake(tmp_path / "opt-cmake-3.98" / "bin", "3.98.0", log)
    config2 = site_config(tmp_path, {"cmhello": None}, recipes=[recipes], name="site2.yml",
                          extra=f"host: {{paths: [{fake2}]}}\n")
    assert dry_run(config2)["cmhello"]["id"] != arts["cmhello"]["id"]
    moved = fake_cmake(tmp_path / "elsewhere" / "bin", "3.99.1", log)
    config3 = site_config(tmp_path, {"cmhello": None}, recipes=[recipes], name="site3.yml",
                          extra=f"host: {{paths: [{moved}]}}\n")
    assert dry_run(config3)["cmhello"]["id"] == arts["cmhello"]["id"]


@pytest.mark.parametrize("case", ["missing", "too-old", "undeclared-pin"])
def test_missing_or_too_old_tool_fails_before_building_and_changes_nothing(tmp_path, case):
    recipes = cmake_project(tmp_path)
    store, modules = tmp_path / "store", tmp_path / "modules"
    old = fake_cmake(tmp_path / "cmake-3.10" / "bin", "3.10.2", tmp_path / "log")
    if case == "missing":
        write(recipes / "needsit.yml", """\
            name: needsit
            versions:
              "1.0": {path: .}
            build: commands
            tools: [cmake, sitedist-nonexistent-tool]
            commands: ["true"]
            """)
        packages, extra = {"needsit": None, "zlib": None}, f"host: {{paths: [{old}]}}\n"
    elif case == "too-old":
        # declared by prefix: the only CMake sitedist may use
        packages = {"cmhello": None, "zlib": None}
        extra = f"host:\n  packages:\n    cmake: {{kind: tool, prefix: {os.path.dirname(old)}}}\n"
    else:
        # a pin selects the old CMake among those found (/usr/bin's and host.paths')
        packages = {"cmhello": None, "zlib": None}
        extra = f"host:\n  paths: [{old}]\n  packages:\n    cmake: {{version: \"3.10\"}}\n"
    config = site_config(tmp_path, packages, recipes=[recipes], store=store,
                         extra=extra + f"modules: {{root: {modules}}}\n")
    before = tree_digest(store, modules)
    proc = run_cli("sync", config, check=False)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    if case == "missing":
        assert "needsit.yml:5: package needsit: build tool sitedist-nonexistent-tool is not on this machine" in err
        assert old in err and "host: paths:" in err and "kind: tool, prefix: DIR" in err, err
    else:
        assert "cmhello.yml:5: package cmhello: recipe" in err, err
        assert "needs cmake >=3.20, but the cmake found is: cmake 3.10.2" in err, err
        assert f"{old}/cmake" in err, err
    assert tree_digest(store, modules) == before, "a failed plan must change nothing"
    assert not os.path.exists(store / "zlib"), "nothing is built"


def test_an_undeclared_guarded_tool_is_not_run(tmp_path):
    recipes = tmp_path / "recipes"
    write(recipes / "sneaky.yml", """\
        name: sneaky
        versions:
          "1.0": {path: .}
        build: commands
        commands: ["cmake --version"]
        """)
    config = site_config(tmp_path, {"sneaky": None}, recipes=[recipes])
    proc = run_cli("sync", config, check=False)
    assert proc.returncode != 0
    assert "cmake is not an input of this build: name 'cmake' in the recipe's 'tools:'" in proc.stderr, proc.stderr


def test_bad_tool_declarations_name_the_line(tmp_path):
    recipes = cmake_project(tmp_path, tools="[{name: cmake, version: \"at least 3.20\"}]")
    config = site_config(tmp_path, {"cmhello": None}, recipes=[recipes])
    proc = run_cli("sync", "--dry-run", config, check=False)
    assert proc.returncode == 2 and "cmhello.yml:5" in proc.stderr and ">=3.20" in proc.stderr, proc.stderr
    config = site_config(tmp_path, {"zlib": None}, name="bad.yml", extra="tools: {cmake: hots}\n")
    proc = run_cli("sync", "--dry-run", config, check=False)
    assert proc.returncode == 2 and "bad.yml:" in proc.stderr and "'host', 'recipe'" in proc.stderr, proc.stderr


def test_ninja_and_meson_built_from_their_recipes(tmp_path, shared_store, sources):
    recipes = cmake_project(tmp_path, name="ninjahello", tools="[ninja]", cmake_args="[-G, Ninja]")
    msrc = tmp_path / "mhello-src"
    write(msrc / "meson.build", "project('mhello', 'c')\nexecutable('mhello', 'hello.c', install: true)\n")
    write(msrc / "hello.c", '#include <stdio.h>\nint main(void) { puts("hello from meson"); return 0; }\n')
    write(recipes / "mhello.yml", f"""\
        name: mhello
        versions:
          "1.0": {{path: {msrc}}}
        build: meson
        post_install: ['command -v meson ninja > "$PREFIX/tools-used"']
        """)
    config = site_config(tmp_path, {"ninjahello": None, "mhello": None}, recipes=[recipes], store=shared_store,
                         extra="tools: {ninja: recipe, meson: recipe}\n")
    run_cli("sync", "-j", "2", config)
    arts = dry_run(config)
    ninja = os.path.join(arts["ninja"]["prefix"], "bin", "ninja")
    assert arts["ninja"]["kind"] == "package" and arts["ninja"]["version"] == "1.11.1"
    assert subprocess.run([ninja, "--version"], capture_output=True, text=True, check=True).stdout.strip() == "1.11.1"
    assert open(os.path.join(arts["ninjahello"]["prefix"], "ninja-used")).read().strip() == ninja
    used = open(os.path.join(arts["mhello"]["prefix"], "tools-used")).read().split()
    assert used == [os.path.join(arts["meson"]["prefix"], "bin", "meson"), ninja], used
    for name, text in (("ninjahello", "hello from cmake"), ("mhello", "hello from meson")):
        exe = os.path.join(arts[name]["prefix"], "bin", name)
        assert subprocess.run([exe], capture_output=True, text=True, check=True).stdout.strip() == text
    doc = show_doc(config, "ninjahello")
    assert doc["tools"]["ninja"] == {"version": "1.11.1", "id": arts["ninja"]["id"]}


@pytest.mark.bootstrap
def test_cmake_built_from_its_recipe(tmp_path, shared_store, sources):
    """CMake's own bootstrap: about 12 minutes on 2 cores (see admin_docs/build-tools.md)."""
    recipes = cmake_project(tmp_path)
    config = site_config(tmp_path, {"cmhello": None}, recipes=[recipes], store=shared_store,
                         extra="tools: {cmake: recipe}\n")
    run_cli("sync", "-j", "2", config)
    arts = dry_run(config)
    cmake = os.path.join(arts["cmake"]["prefix"], "bin", "cmake")
    assert arts["cmake"]["kind"] == "package"
    assert "cmake version 3.25.1" in subprocess.run([cmake, "--version"], capture_output=True, text=True).stdout
    assert open(os.path.join(arts["cmhello"]["prefix"], "cmake-used")).read().strip() == cmake
    assert show_doc(config, "cmhello")["tools"]["cmake"] == {"version": "3.25.1", "id": arts["cmake"]["id"]}
