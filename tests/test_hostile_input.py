"""Hostile and broken input, one table: config, recipe, source, tarball and command line.

Every row runs the real CLI against one populated site (a store with artifacts, a published module tree
and a profile) and asserts the error message, that there is no traceback, and that the store, module
tree and profiles are unchanged (a checksum of the trees before and after). Rows whose error can only be
found while building (a checksum, an archive) compare the store without its build reports and source
cache (a failed sync writes its report; a verified download stays cached), and check that nothing was
written outside the build directory. tests/test_config_errors.py checks the line numbers and hints of
common config mistakes; this table covers every kind of input an attacker or a typo controls.
"""

import io
import os
import tarfile
import zipfile
from dataclasses import dataclass

import pytest

from conftest import SOURCES, run_cli, tree_digest, write
from storetools import synthetic

def table():
    """A table of hostile-input rows and its decorator: ``@row(build_time)`` registers a function
    ``(site, tmp) -> (argv, expected texts[, paths that must not exist])`` under its name."""
    rows = {}

    def row(build_time=False):
        def register(fn):
            rows[fn.__name__] = (fn, build_time)
            return fn
        return register
    return rows, row


def assert_refused_and_unchanged(site, argv, expected, build_time=False, absent=()):
    """Run ``sitedist argv``: it fails without a traceback, says each of ``expected``, leaves the store,
    module tree and profiles as they were and writes none of ``absent``. Returns the process."""
    before = site.digest(build_time)
    proc = run_cli(*argv, check=False)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    for text in expected:
        assert text in proc.stderr, f"{text!r} not in:\n{proc.stderr}"
    assert site.digest(build_time) == before, "the store, module tree or profiles changed"
    for path in absent:
        assert not os.path.lexists(path), f"{path} was written"
    return proc


ROWS, row = table()


@dataclass
class Site:
    base: object
    recipes: object
    store: object
    modules: object
    profiles: object

    def config(self, tmp, packages="alpha: {}", extra="", recipes=(), name="site.yml"):
        """The site's config (beta, and ``packages``), with more keys or recipe directories searched first."""
        dirs = ", ".join(str(d) for d in list(recipes) + [self.recipes])
        return write(tmp / name, f"""
            store: {{root: {self.store}, keep_failed: false}}
            recipes: [{dirs}]
            mirrors: [{SOURCES}]
            modules: {{root: {self.modules}}}
            profiles: {{default: {{packages: [alpha, beta], root: {self.profiles}/default}}}}
            packages: {{beta: {{}}, {packages}}}
            """ + extra)

    def digest(self, build_time):
        roots = [self.modules, self.profiles]
        for entry in sorted(os.listdir(self.store)):
            if entry != ".sitedist":
                roots.append(self.store / entry)
        for entry in sorted(os.listdir(self.store / ".sitedist")):
            if not (build_time and entry in ("reports", "src")):
                roots.append(self.store / ".sitedist" / entry)
        return tree_digest(*roots)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    recipes = base / "recipes"
    synthetic(recipes, "alpha", options={"msg": {"default": "hi", "description": "a word to print"}},
              commands=["printf '%s\\n' {{ options.msg }} > \"$PREFIX/share/alpha/msg\""])
    synthetic(recipes, "beta", deps=["alpha"])
    s = Site(base, recipes, base / "store", base / "modules", base / "profiles")
    run_cli("sync", s.config(base))
    assert os.path.islink(s.profiles / "default") and os.path.islink(s.modules / "current")
    return s


def recipe(tmp, name, text):
    return write(tmp / "r" / f"{name}.yml", text)


def tarball(tmp, members):
    """A .tar.gz of (name, kind, data or link target) members; its path and sha256."""
    import hashlib

    path = tmp / "evil-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = data
                tar.addfile(info)
            elif kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def archive_recipe(tmp, path, sha):
    recipe(tmp, "evil", f"""
        name: evil
        versions:
          "1.0": {{url: "file://{path}", sha256: "{sha}"}}
        build: commands
        commands: ['mkdir -p "$PREFIX/bin"']
        """)


# --- config --------------------------------------------------------------------------------------

@row()
def package_name_with_dotdot(site, tmp):
    return ["sync", site.config(tmp, 'alpha: {}, "../../escape": {}')], ["'../../escape' is not an allowed name"]


@row()
def package_name_absolute(site, tmp):
    return ["sync", site.config(tmp, 'alpha: {}, "/etc/passwd": {}')], ["'/etc/passwd' is not an allowed name"]


@row()
def package_name_with_nul(site, tmp):
    return ["sync", site.config(tmp, 'alpha: {}, "al\\0pha": {}')], ["'al\\x00pha' is not an allowed name"]


@row()
def package_name_with_newline(site, tmp):
    return ["sync", site.config(tmp, 'alpha: {}, "al\\npha": {}')], ["'al\\npha' is not an allowed name"]


@row()
def option_name_with_dotdot(site, tmp):
    return ["sync", site.config(tmp, 'alpha: {options: {"../msg": x}}')], ["'../msg' is not an allowed name"]


@row()
def option_value_with_newline(site, tmp):
    return ["sync", site.config(tmp, 'alpha: {options: {msg: "a\\nrm -rf /"}}')], \
        ["option msg contains a NUL or newline"]


@row()
def option_value_with_nul(site, tmp):
    return ["sync", site.config(tmp, 'alpha: {options: {msg: "a\\0b"}}')], ["option msg contains a NUL or newline"]


@row()
def option_value_of_wrong_type(site, tmp):
    return ["sync", site.config(tmp, "alpha: {options: {msg: 5}}")], ["option msg takes a str, got 5"]


@row()
def version_with_dotdot(site, tmp):
    return ["sync", site.config(tmp, 'alpha: {version: "../../../x"}')], ["../../../x"]


@row()
def version_absolute(site, tmp):
    return ["sync", site.config(tmp, 'alpha: {version: "/etc"}')], ["/etc"]


@row()
def recipe_override_escaping(site, tmp):
    return ["sync", site.config(tmp, 'alpha: {recipe: "../../etc/passwd"}')], \
        ["packages.alpha.recipe: '../../etc/passwd' is not an allowed value"]


@row()
def toolchain_with_unknown_compiler(site, tmp):
    cfg = site.config(tmp, "alpha: {toolchains: [odd]}", extra="toolchains: {odd: {compiler: nosuchcc}}\n")
    return ["sync", cfg], ["nosuchcc"]


@row()
def target_of_wrong_type(site, tmp):
    cfg = site.config(tmp, extra="target: [generic, 3]\n")
    return ["sync", cfg], ["target: ['generic', 3]", "is not of type 'string'"]


@row()
def store_path_is_a_file(site, tmp):
    write(tmp / "file", "not a directory\n")
    cfg = write(tmp / "site.yml", f"store: {tmp}/file/store\nrecipes: [{site.recipes}]\npackages: {{alpha: {{}}}}\n")
    return ["sync", cfg], [f"{tmp}/file is not a directory", "Nothing was changed"]


@row()
def yaml_python_tag_in_config(site, tmp):
    cfg = site.config(tmp, extra=f"jobs: !!python/object/apply:os.system ['touch {tmp}/pwned']\n")
    return ["sync", cfg], ["YAML tags are not allowed"], [tmp / "pwned"]


@row()
def extends_a_device(site, tmp):
    cfg = write(tmp / "site.yml", "extends: [/dev/zero]\n")
    return ["sync", cfg], ["/dev/zero"]


@row()
def config_top_level_is_a_list(site, tmp):
    return ["sync", write(tmp / "site.yml", "- store: /tmp\n- packages: {}\n")], ["must be a YAML mapping"]


@row()
def config_not_utf8(site, tmp):
    path = tmp / "site.yml"
    path.write_bytes(b"store: \xff\xfe\x00garbage\n")
    return ["sync", path], ["cannot read", "site.yml"]


# --- recipes -------------------------------------------------------------------------------------

@row()
def yaml_python_tag_in_recipe(site, tmp):
    recipe(tmp, "alpha", f"""
        name: alpha
        description: !!python/object/apply:os.system ["touch {tmp}/pwned"]
        versions: {{"1.0": {{path: src}}}}
        build: commands
        commands: ["true"]
        """)
    return ["sync", site.config(tmp, recipes=[tmp / "r"])], ["YAML tags are not allowed", "alpha.yml:2"], \
        [tmp / "pwned"]


@row()
def recipe_unknown_key(site, tmp):
    recipe(tmp, "alpha", """
        name: alpha
        versions: {"1.0": {path: src}}
        homepge: https://example.org
        build: commands
        commands: ["true"]
        """)
    return ["sync", site.config(tmp, recipes=[tmp / "r"])], ["alpha.yml:3", "unknown key 'homepge'", "'homepage'"]


@row()
def recipe_name_does_not_match_file(site, tmp):
    recipe(tmp, "alpha", 'name: gamma\nversions: {"1.0": {path: src}}\nbuild: commands\ncommands: ["true"]\n')
    return ["sync", site.config(tmp, recipes=[tmp / "r"])], ["recipe file is named alpha.yml but says name: gamma"]


@row()
def recipe_version_escaping(site, tmp):
    recipe(tmp, "gamma", 'name: gamma\nversions: {"../../x": {path: src}}\nbuild: commands\ncommands: ["true"]\n')
    return ["sync", site.config(tmp, "alpha: {}, gamma: {}", recipes=[tmp / "r"])], ["gamma.yml:2", "../../x"]


@row()
def dependency_without_recipe(site, tmp):
    synthetic(tmp / "r", "gamma", deps=["ghost"])
    return ["sync", site.config(tmp, "alpha: {}, gamma: {}", recipes=[tmp / "r"])], ["no recipe for package 'ghost'"]


@row()
def package_depends_on_itself(site, tmp):
    synthetic(tmp / "r", "gamma", deps=["gamma"])
    return ["sync", site.config(tmp, "alpha: {}, gamma: {}", recipes=[tmp / "r"])], \
        ["gamma.yml:", "package gamma depends on itself"]


@row()
def patch_file_missing(site, tmp):
    recipe(tmp, "gamma", 'name: gamma\nversions: {"1.0": {path: src}}\nbuild: commands\ncommands: ["true"]\n'
                         'patches: [{file: fix.patch}]\n')
    return ["sync", site.config(tmp, "alpha: {}, gamma: {}", recipes=[tmp / "r"])], \
        ["gamma.yml:5", "patch file not found"]


@row()
def source_directory_missing(site, tmp):
    recipe(tmp, "gamma", 'name: gamma\nversions: {"1.0": {path: nothere}}\nbuild: commands\ncommands: ["true"]\n')
    return ["sync", site.config(tmp, "alpha: {}, gamma: {}", recipes=[tmp / "r"])], ["source directory not found"]


@row()
def source_filename_with_path(site, tmp):
    recipe(tmp, "gamma", f"""
        name: gamma
        versions: {{"1.0": {{filename: ../../../etc/evil.tar.gz, sha256: "{'0' * 64}"}}}}
        build: commands
        commands: ["true"]
        """)
    return ["sync", site.config(tmp, "alpha: {}, gamma: {}", recipes=[tmp / "r"])], \
        ["gamma.yml:2", "filename '../../../etc/evil.tar.gz' must be a plain file name"]


@row()
def source_url_scheme(site, tmp):
    recipe(tmp, "gamma", f"""
        name: gamma
        versions: {{"1.0": {{url: "ftp://example.org/g.tar.gz", sha256: "{'0' * 64}"}}}}
        build: commands
        commands: ["true"]
        """)
    return ["sync", site.config(tmp, "alpha: {}, gamma: {}", recipes=[tmp / "r"])], ["unsupported URL scheme 'ftp'"]


# --- sources and archives (found while building) ---------------------------------------------------

@row(build_time=True)
def checksum_mismatch(site, tmp):
    path = write(tmp / "evil-1.0.tar.gz", "not what the recipe pinned\n")
    archive_recipe(tmp, path, "1" * 64)
    return ["sync", site.config(tmp, "alpha: {}, evil: {}", recipes=[tmp / "r"])], \
        ["checksum mismatch", f"expected sha256 {'1' * 64}", "actual"]


@row(build_time=True)
def tarball_member_with_dotdot(site, tmp):
    path, sha = tarball(tmp, [("pkg/ok", tarfile.REGTYPE, b"ok"), ("pkg/../../../escaped", tarfile.REGTYPE, b"x")])
    archive_recipe(tmp, path, sha)
    return ["sync", site.config(tmp, "alpha: {}, evil: {}", recipes=[tmp / "r"])], ["refusing to unpack", "outside"], \
        [site.store / ".sitedist" / "escaped", site.store / "escaped"]


@row(build_time=True)
def tarball_member_absolute(site, tmp):
    path, sha = tarball(tmp, [("pkg/ok", tarfile.REGTYPE, b"ok"), (f"{tmp}/abs-escaped", tarfile.REGTYPE, b"x")])
    archive_recipe(tmp, path, sha)
    return ["sync", site.config(tmp, "alpha: {}, evil: {}", recipes=[tmp / "r"])], ["refusing to unpack", "absolute"], \
        [tmp / "abs-escaped"]


@row(build_time=True)
def tarball_symlink_escape(site, tmp):
    path, sha = tarball(tmp, [("pkg/link", tarfile.SYMTYPE, str(tmp)),
                              ("pkg/link/through-link", tarfile.REGTYPE, b"x")])
    archive_recipe(tmp, path, sha)
    return ["sync", site.config(tmp, "alpha: {}, evil: {}", recipes=[tmp / "r"])], ["refusing to unpack"], \
        [tmp / "through-link"]


@row(build_time=True)
def tarball_hardlink_to_system_file(site, tmp):
    path, sha = tarball(tmp, [("pkg/passwd", tarfile.LNKTYPE, "/etc/passwd")])
    archive_recipe(tmp, path, sha)
    return ["sync", site.config(tmp, "alpha: {}, evil: {}", recipes=[tmp / "r"])], \
        ["refusing to unpack", "'pkg/passwd' is a hard link to '/etc/passwd'"]


@row(build_time=True)
def tarball_device_node(site, tmp):
    path, sha = tarball(tmp, [("pkg/null", tarfile.CHRTYPE, None)])
    archive_recipe(tmp, path, sha)
    return ["sync", site.config(tmp, "alpha: {}, evil: {}", recipes=[tmp / "r"])], \
        ["refusing to unpack", "'pkg/null' is a device or FIFO"]


@row(build_time=True)
def zip_member_escaping(site, tmp):
    import hashlib

    path = tmp / "evil-1.0.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("pkg/ok", "ok")
        z.writestr("../../zip-escaped", "x")
    archive_recipe(tmp, path, hashlib.sha256(path.read_bytes()).hexdigest())
    return ["sync", site.config(tmp, "alpha: {}, evil: {}", recipes=[tmp / "r"])], ["refusing to unpack", "outside"], \
        [site.store / ".sitedist" / "zip-escaped"]


@row(build_time=True)
def archive_that_is_garbage(site, tmp):
    import hashlib

    path = tmp / "evil-1.0.tar.gz"
    path.write_bytes(os.urandom(4096))
    archive_recipe(tmp, path, hashlib.sha256(path.read_bytes()).hexdigest())
    return ["sync", site.config(tmp, "alpha: {}, evil: {}", recipes=[tmp / "r"])], ["evil-1.0.tar.gz: cannot unpack"]


@row(build_time=True)
def patch_that_does_not_apply(site, tmp):
    write(tmp / "r" / "src" / "gamma" / "file.txt", "one\n")
    write(tmp / "r" / "fix.patch", "--- a/file.txt\n+++ b/file.txt\n@@ -1 +1 @@\n-two\n+three\n")
    recipe(tmp, "gamma", 'name: gamma\nversions: {"1.0": {path: src/gamma}}\nbuild: commands\ncommands: ["true"]\n'
                         'patches: [{file: fix.patch}]\n')
    return ["sync", site.config(tmp, "alpha: {}, gamma: {}", recipes=[tmp / "r"])], ["patch fix.patch does not apply"]


# --- command line --------------------------------------------------------------------------------

@row()
def jobs_zero(site, tmp):
    return ["sync", "-j", "0", site.config(tmp)], ["Invalid value for '-j'"]


@row()
def progress_unknown(site, tmp):
    return ["sync", "--progress", "fancy", site.config(tmp)], ["Invalid value for '--progress'"]


@row()
def unknown_command(site, tmp):
    return ["frobnicate", site.config(tmp)], ["No such command 'frobnicate'"]


@row()
def verify_without_config(site, tmp):
    return ["verify"], ["Missing argument 'CONFIG'"]


@row()
def config_file_missing(site, tmp):
    return ["sync", tmp / "nothere.yml"], [f"{tmp}/nothere.yml"]


@row()
def config_is_a_directory(site, tmp):
    return ["sync", tmp], ["is a directory"]


@row()
def show_a_name_with_dotdot(site, tmp):
    return ["show", site.config(tmp), "../../etc"], ["../../etc"]


@row()
def log_of_a_package_not_in_the_plan(site, tmp):
    return ["log", site.config(tmp), "zlib"], ["zlib"]


@pytest.mark.parametrize("name", sorted(ROWS))
def test_bad_input_is_refused_and_changes_nothing(site, tmp_path, name):
    fn, build_time = ROWS[name]
    argv, expected, *absent = fn(site, tmp_path)
    cached = set(os.listdir(site.store / ".sitedist" / "src"))
    assert_refused_and_unchanged(site, argv, expected, build_time, absent[0] if absent else ())
    if name == "checksum_mismatch":
        assert set(os.listdir(site.store / ".sitedist" / "src")) == cached, "a download that failed its check was kept"


def test_at_least_25_kinds():
    assert len(ROWS) >= 25


def test_option_values_reach_build_commands_literally(tmp_path):
    """An option value full of shell syntax is one literal word in the build script: the build writes
    it back byte for byte and nothing it names runs."""
    recipes = tmp_path / "recipes"
    synthetic(recipes, "alpha", options={"msg": {"default": "hi", "description": "a word to print"}},
              commands=["printf '%s\\n' {{ options.msg }} > \"$PREFIX/share/alpha/msg\""])
    value = (f"$(touch {tmp_path}/sub) `touch {tmp_path}/tick` ; touch {tmp_path}/semi && echo \"dq\" 'sq' "
             "\\ $HOME ${PATH} | > < * ? [a] {b,c} ~ # !x %% {{ '{{' }}")
    cfg = write(tmp_path / "site.yml", f"""
        store: {tmp_path}/store
        recipes: [{recipes}]
        packages:
          alpha:
            options:
              msg: {yaml_quote(value)}
        """)
    run_cli("sync", cfg)
    [prefix] = [os.path.join(tmp_path, "store", "alpha", d) for d in os.listdir(tmp_path / "store" / "alpha")]
    assert open(os.path.join(prefix, "share", "alpha", "msg")).read() == value + "\n"
    for name in ("sub", "tick", "semi"):
        assert not (tmp_path / name).exists(), f"the option value ran a command ({name})"


def yaml_quote(text):
    import json

    return json.dumps(text)   # a JSON string is a YAML double-quoted scalar
