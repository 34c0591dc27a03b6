"""Profiles with real builds: symlink forests switched in generations, rollback and switch, the conflict
report and the 'prefer' rule; develop environments a user installs their own compiled code into, and
their activate script under a hostile directory name."""

import json
import os
import re
import subprocess

from conftest import run_cli, site_config, tree_digest, write
from storetools import config as synthetic_config, synthetic


def profile_config(tmp_path, store, packages, profile, recipes=(), name="site.yml"):
    """A config whose only profile 'main' lives in tmp_path (never beside the shared store)."""
    body = json.dumps({"packages": profile["packages"], "root": str(tmp_path / "profiles" / "main"),
                       **{k: v for k, v in profile.items() if k != "packages"}})
    return site_config(tmp_path, packages, store=store, recipes=list(recipes), name=name,
                       extra=f"profiles:\n  main: {body}\n")


def generations(config):
    out = run_cli("profile", config, "list").stdout
    return [(line[0] == "*", int(line[1:].split()[0])) for line in out.splitlines()[1:]]


def run(path, *args):
    return subprocess.run([str(path), *args], capture_output=True, text=True, check=True).stdout


def test_generations_rollback_switch_and_keep(shared_store, tmp_path, sources):
    root = tmp_path / "profiles" / "main"
    one = profile_config(tmp_path, shared_store, {"hello": None}, {"packages": ["hello"], "keep": 2}, name="one.yml")
    two = profile_config(tmp_path, shared_store, {"hello": None, "lz4": None},
                         {"packages": ["hello", "lz4"], "keep": 2}, name="two.yml")
    out = run_cli("sync", one).stdout
    assert re.search(rf"profile: main: generation 1 at {re.escape(str(root))} \(1 artifacts\)", out), out
    assert os.readlink(root) == ".main-generations/1"
    assert run(root / "bin" / "hello") == "Hello, world!\n"
    assert os.path.islink(root / "bin" / "hello") and not os.path.islink(root / "bin")
    assert os.path.realpath(root / "bin" / "hello").startswith(str(shared_store) + "/hello/")

    assert "generation 2" in run_cli("sync", two).stdout
    assert "LZ4 command line" in run(root / "bin" / "lz4", "-V")
    record = json.load(open(root / ".sitedist" / "profile.json"))
    assert [os.path.basename(os.path.dirname(p)) for p in record["prefixes"]] == ["hello", "lz4"]
    assert "unchanged" in run_cli("sync", two).stdout   # same inputs: no new generation
    assert generations(two) == [(False, 1), (True, 2)]

    assert "now generation 1" in run_cli("profile", two, "rollback").stdout
    assert not os.path.exists(root / "bin" / "lz4") and run(root / "bin" / "hello") == "Hello, world!\n"
    assert generations(two) == [(True, 1), (False, 2)]
    assert "now generation 2" in run_cli("profile", two, "switch", "2").stdout
    assert os.path.exists(root / "bin" / "lz4")
    bad = run_cli("profile", two, "switch", "7", check=False)
    assert bad.returncode != 0 and "has no generation 7; kept: 1, 2" in bad.stderr

    # A sync after a rollback publishes the config again; keep: 2 prunes the oldest.
    run_cli("profile", two, "rollback")
    assert "generation 3" in run_cli("sync", two).stdout
    assert generations(two) == [(False, 2), (True, 3)]
    assert not (tmp_path / "profiles" / ".main-generations" / "1").exists()


def tool_recipes(tmp_path):
    recipes = tmp_path / "recipes"
    write(recipes / "src" / "README", "a local source\n")
    for name in ("toola", "toolb"):
        write(recipes / f"{name}.yml", f"""
            name: {name}
            versions:
              "1.0": {{path: src}}
            build: commands
            commands:
              - mkdir -p "$PREFIX/bin" "$PREFIX/share/doc"
              - printf '#!/bin/sh\\necho {name}\\n' > "$PREFIX/bin/tool"
              - printf '#!/bin/sh\\necho only {name}\\n' > "$PREFIX/bin/{name}"
              - chmod +x "$PREFIX/bin/tool" "$PREFIX/bin/{name}"
              - echo "the same text in both" > "$PREFIX/share/doc/common.txt"
            """)
    return recipes


def test_conflict_is_reported_and_prefer_resolves_it(tmp_path, sources):
    recipes, store = tool_recipes(tmp_path), tmp_path / "store"
    root = tmp_path / "profiles" / "main"
    pkgs = {"toola": None, "toolb": None}
    run_cli("sync", profile_config(tmp_path, store, pkgs, {"packages": ["toola"]}, [recipes], name="a.yml"))
    before = tree_digest(tmp_path / "profiles")

    both = profile_config(tmp_path, store, pkgs, {"packages": ["toola", "toolb"]}, [recipes], name="both.yml")
    proc = run_cli("sync", both, check=False)
    assert proc.returncode != 0
    err = proc.stderr
    a = next((store / "toola").glob("1.0-*"))
    b = next((store / "toolb").glob("1.0-*"))
    assert re.search(rf"profile main: 1 path\(s\) are provided by more than one package:\n  bin/tool: "
                     rf"toola 1.0 \({re.escape(str(a))}\) and toolb 1.0 \({re.escape(str(b))}\)", err), err
    assert f"{both}:" in err and "conflicts: prefer, prefer: [toola, toolb]" in err and "Nothing was switched" in err
    assert "common.txt" not in err   # identical content is not a conflict
    assert tree_digest(tmp_path / "profiles") == before, "a conflict must leave the profile as it was"
    assert run(root / "bin" / "tool") == "toola\n"

    neither = profile_config(tmp_path, store, pkgs, {"packages": ["toola", "toolb"], "conflicts": "prefer",
                                                     "prefer": ["other"]}, [recipes], name="neither.yml")
    assert "bin/tool: toola 1.0" in run_cli("sync", neither, check=False).stderr

    prefer = profile_config(tmp_path, store, pkgs, {"packages": ["toola", "toolb"], "conflicts": "prefer",
                                                    "prefer": ["toolb", "toola"]}, [recipes], name="prefer.yml")
    out = run_cli("sync", prefer).stdout
    assert "main: generation 2" in out and "shadowed by 'prefer': bin/tool: toolb 1.0 over toola 1.0" in out, out
    assert run(root / "bin" / "tool") == "toolb\n"
    assert run(root / "bin" / "toola") == "only toola\n" and run(root / "bin" / "toolb") == "only toolb\n"
    assert open(root / "share" / "doc" / "common.txt").read() == "the same text in both\n"
    record = json.load(open(root / ".sitedist" / "profile.json"))
    assert record["shadowed"] == [["bin/tool", "toolb 1.0", "toola 1.0"]]


def test_unknown_package_names_the_profile_line(tmp_path, sources):
    recipes, store = tool_recipes(tmp_path), tmp_path / "store"
    config = profile_config(tmp_path, store, {"toola": None}, {"packages": ["toola", "nosuch"]}, [recipes])
    line = next(i for i, text in enumerate(open(config), 1) if text.startswith("  main:"))
    proc = run_cli("sync", config, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"{config}:{line}: profile main: package 'nosuch' is not in the plan" in proc.stderr
    assert not os.path.lexists(tmp_path / "profiles" / "main")


PROGRAM = r"""
#include <png.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    unsigned char pixels[4] = {0, 255, 255, 0}, back[4];
    png_image out, in;
    memset(&out, 0, sizeof out);
    out.version = PNG_IMAGE_VERSION;
    out.width = out.height = 2;
    out.format = PNG_FORMAT_GRAY;
    if (!png_image_write_to_file(&out, argv[1], 0, pixels, 0, NULL)) return 1;
    memset(&in, 0, sizeof in);
    in.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&in, argv[1])) return 2;
    in.format = PNG_FORMAT_GRAY;
    if (!png_image_finish_read(&in, NULL, back, 0, NULL)) return 3;
    printf("libpng %s %ux%u %d %d %d %d\n", png_get_libpng_ver(NULL), in.width, in.height,
           back[0], back[1], back[2], back[3]);
    return 0;
}
"""


def test_develop_environment_builds_and_installs_user_code(shared_store, tmp_path, sources):
    config = profile_config(tmp_path, shared_store, {"libpng": None, "hello": None},
                            {"packages": ["libpng", "hello"]})
    run_cli("sync", config)
    env = tmp_path / "myenv"
    out = run_cli("develop", config, "main", env).stdout
    assert f"source {env}/activate" in out
    profile = tmp_path / "profiles" / "main"
    generation = os.path.realpath(profile)
    assert os.path.islink(env / "include" / "png.h") and not os.path.islink(env / "include")
    assert os.readlink(env / "include" / "png.h") == os.readlink(profile / "include" / "png.h")
    assert os.access(env / "bin", os.W_OK)

    project = tmp_path / "project"
    write(project / "pngrt.c", PROGRAM)
    write(project / "Makefile", """
        PREFIX ?= /usr/local
        pngrt: pngrt.c
        \t$(CC) -o $@ pngrt.c -lpng
        install: pngrt
        \tmkdir -p $(PREFIX)/bin && install -m 755 pngrt $(PREFIX)/bin/
        """.replace("\\t", "\t"))
    script = f"""
        set -e
        source {env}/activate
        test "$SITEDIST_ENV" = {env} && test "$(command -v hello)" = {env}/bin/hello
        test "${{PKG_CONFIG_PATH%%:*}}" = {env}/lib/pkgconfig
        libpng-config --version
        make -s CC=gcc
        make -s install PREFIX="$SITEDIST_ENV"
        deactivate
        test -z "${{SITEDIST_ENV:-}}" && test -z "${{CPATH:-}}" && ! command -v hello
        """
    proc = subprocess.run(["bash", "-c", script], cwd=project, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "1.6.39"
    # Installed into the environment, run outside it: libpng is found by the RUNPATH the environment set.
    program = env / "bin" / "pngrt"
    assert run(program, str(tmp_path / "t.png")) == "libpng 1.6.39 2x2 0 255 255 0\n"
    dynamic = subprocess.run(["readelf", "-d", program], capture_output=True, text=True, check=True).stdout
    assert f"{env}/lib" in re.search(r"\(RUNPATH\).*\[(.*)\]", dynamic).group(1)
    assert not os.path.exists(os.path.join(generation, "bin", "pngrt")), "the profile is not changed"
    again = run_cli("develop", config, "main", env, check=False)
    assert again.returncode != 0 and "exists and is not an empty directory" in again.stderr


def test_run_dependencies_join_the_profile_link_dependencies_do_not(tmp_path, sources):
    recipes, store = tool_recipes(tmp_path), tmp_path / "store"
    write(recipes / "toolc.yml", """
        name: toolc
        versions: {"1.0": {path: src}}
        depends: {run: [toola], link: [toolb]}
        build: commands
        commands: ['mkdir -p "$PREFIX/bin"', 'ln -s "$TOOLA_ROOT/bin/toola" "$PREFIX/bin/toolc"']
        """)
    config = profile_config(tmp_path, store, {"toolc": None}, {"packages": ["toolc"]}, [recipes])
    assert "main: generation 1" in run_cli("sync", config).stdout
    root = tmp_path / "profiles" / "main"
    assert run(root / "bin" / "toolc") == "only toola\n" and run(root / "bin" / "tool") == "toola\n"
    assert not os.path.exists(root / "bin" / "toolb")
    assert [p.split("/")[-2] for p in json.load(open(root / ".sitedist" / "profile.json"))["prefixes"]] \
        == ["toolc", "toola"]


# --- develop: a hostile directory name ------------------------------------------------------------

def test_activate_script_with_shell_syntax_and_a_newline_in_the_directory_name(tmp_path):
    synthetic(tmp_path / "recipes", "alpha")
    cfg = synthetic_config(tmp_path, ["alpha"], tmp_path / "recipes",
                 extra=f"profiles:\n  p: {{packages: [alpha], root: {tmp_path / 'prof' / 'p'}}}\n")
    run_cli("sync", cfg)
    work = tmp_path / "work"
    work.mkdir()
    name = "dev$(touch PWN1)`touch PWN2`\ntouch PWN3; #'\"x"
    env = work / name
    run_cli("develop", cfg, "p", env)
    text = (env / "activate").read_text()
    lines = text.splitlines()
    assert all(line.startswith("# ") for line in lines[:3]) and lines[3] == "", "the comments stay single lines"
    assert "touch PWN3" in lines[0]
    script = 'PS1="$ "; source "$1/activate"; printf "%s|%s|%s\\n" "$SITEDIST_ENV" "${PATH%%:*}" "${PS1@P}"; ' \
             'deactivate; printf "%s|%s" "${SITEDIST_ENV-unset}" "$PS1"'
    proc = subprocess.run(["bash", "-c", script, "bash", str(env)], cwd=work, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout == f"{env}|{env}/bin|({name}) $ \nunset|$ "
    assert sorted(os.listdir(work)) == [name], "nothing in the name was run, on activation or in the prompt"
