"""More hostile input (issue 11): names and versions with a trailing newline, build-script templates
that cannot keep a value literal, YAML that is too big or broken, and caches another user could write.

Same machinery as tests/test_hostile_input.py (its populated site and the same checks): every row runs
the real CLI, and asserts the message, no traceback, and that the store, module tree and profiles are
unchanged.
"""


import pytest

from conftest import write
from test_hostile_input import assert_refused_and_unchanged, recipe, site, table  # noqa: F401  (site: fixture)

ROWS, row = table()


def one_recipe(site, tmp, name, text):
    """A config over ``site`` with an extra recipe directory holding ``text`` as recipe ``name``."""
    recipe(tmp, name, text)
    return site.config(tmp, f"alpha: {{}}, {name}: {{}}", recipes=[tmp / "r"])


# --- names and versions: full matches only (item 6) -----------------------------------------------

@row()
def recipe_version_ending_in_newline(site, tmp):
    cfg = one_recipe(site, tmp, "nl", """
        name: nl
        versions: {"1.0\\n": {path: .}}
        build: commands
        commands: ['true']
        """)
    return ["sync", cfg], ["versions: '1.0\\n' is not an allowed name"]


@row()
def config_version_ending_in_newline(site, tmp):
    return ["sync", site.config(tmp, 'alpha: {version: "1.0\\n"}')], \
        ["packages.alpha.version: '1.0\\n' is not an allowed value", "versions are letters"]


@row()
def package_name_ending_in_newline(site, tmp):
    return ["sync", site.config(tmp, 'alpha: {}, "gamma\\n": {}')], ["'gamma\\n' is not an allowed name"]


@row()
def recipe_name_ending_in_newline(site, tmp):
    cfg = one_recipe(site, tmp, "nl", """
        name: "nl\\n"
        versions: {"1.0": {path: .}}
        build: commands
        commands: ['true']
        """)
    return ["sync", cfg], ["name: 'nl\\n' is not an allowed value"]


@row()
def dependency_name_ending_in_newline(site, tmp):
    cfg = one_recipe(site, tmp, "nl", """
        name: nl
        versions: {"1.0": {path: .}}
        depends: {link: ["alpha\\n"]}
        build: commands
        commands: ['true']
        """)
    return ["sync", cfg], ["depends.link.0: 'alpha\\n' is not an allowed value"]


@row()
def option_name_ending_in_newline(site, tmp):
    return ["sync", site.config(tmp, 'alpha: {options: {"msg\\n": x}}')], ["'msg\\n' is not an allowed name"]


@row()
def toolchain_name_ending_in_newline(site, tmp):
    cfg = site.config(tmp, extra='toolchains: {"tc\\n": {compiler: gcc}}\n')
    return ["sync", cfg], ["'tc\\n' is not an allowed name"]


@row()
def profile_name_ending_in_newline(site, tmp):
    cfg = write(tmp / "site2.yml", open(site.config(tmp)).read().replace("profiles: {default:",
                                                                          'profiles: {"default\\n":'))
    return ["sync", cfg], ["'default\\n' is not an allowed name"]


@row()
def module_variable_name_ending_in_newline(site, tmp):
    cfg = one_recipe(site, tmp, "nl", """
        name: nl
        versions: {"1.0": {path: .}}
        build: commands
        commands: ['true']
        env: {set: {"NL_HOME\\n": x}}
        """)
    return ["sync", cfg], ["env.set: 'NL_HOME\\n' is not an allowed name"]


@row()
def sha256_ending_in_newline(site, tmp):
    cfg = one_recipe(site, tmp, "nl", f"""
        name: nl
        versions: {{"1.0": {{url: "file:///nonexistent/nl.tar.gz", sha256: "{'0' * 64}\\n"}}}}
        build: commands
        commands: ['true']
        """)
    return ["sync", cfg], ["is not an allowed value", "a sha256 is 64 lower-case hex digits"]


@row()
def git_commit_ending_in_newline(site, tmp):
    cfg = one_recipe(site, tmp, "nl", f"""
        name: nl
        versions: {{"1.0": {{git: "file:///nonexistent", commit: "{'0' * 40}\\n"}}}}
        build: commands
        commands: ['true']
        """)
    return ["sync", cfg], ["is not an allowed value"]


@row()
def host_package_version_ending_in_newline(site, tmp):
    cfg = site.config(tmp, extra='host: {packages: {gcc: {version: "12\\n"}}}\n')
    return ["sync", cfg], ["host.packages.gcc.version: '12\\n' is not an allowed value"]


@row()
def module_name_part_ending_in_newline(site, tmp):
    text = open(site.config(tmp)).read().replace(f"modules: {{root: {site.modules}}}",
                                                  f'modules: {{root: {site.modules}, naming: "{{{{name}}}}\\n/{{{{version}}}}"}}')
    return ["sync", write(tmp / "site2.yml", text)], ["gives 'alpha\\n/1.0'", "a module name must be NAME/VERSION"]


@row()
def gc_root_name_ending_in_newline(site, tmp):
    prefix = next(site.store.glob("alpha/*"))
    return ["gc", site.config(tmp), "--add-root", "mine\n", prefix], ["root name 'mine\n'"]


# --- build-script templates (item 4) --------------------------------------------------------------

@row()
def option_in_a_quoted_here_document(site, tmp):
    cfg = one_recipe(site, tmp, "hd", """
        name: hd
        versions: {"1.0": {path: .}}
        options: {v: {default: x}}
        build: commands
        commands: ["cat > f <<'EOF'", "{{ options.v }}", "EOF"]
        """)
    return ["sync", cfg], ["hd.yml:", "quoted here-document (<<'EOF')", "hint: write the here-document as <<EOF"]


@row()
def option_string_in_arithmetic(site, tmp):
    cfg = one_recipe(site, tmp, "ar", """
        name: ar
        versions: {"1.0": {path: .}}
        options: {v: {default: "1"}}
        build: commands
        commands: ["echo $(( {{ options.v }} + 1 ))"]
        """)
    cfg = write(tmp / "site.yml", open(cfg).read().replace("ar: {}", "ar: {options: {v: 'a[$(touch x)]'}}"))
    return ["sync", cfg], ["ar.yml:", "must be an integer"]


@row()
def private_use_character_in_a_command(site, tmp):
    cfg = one_recipe(site, tmp, "pu", """
        name: pu
        versions: {"1.0": {path: .}}
        build: commands
        commands: ["echo \\ue000x\\ue001"]
        """)
    return ["sync", cfg], ["pu.yml:", "private-use character"]


# --- YAML and config values (item 11) --------------------------------------------------------------

@row()
def unclosed_brace_in_a_config(site, tmp):
    text = open(site.config(tmp)).read().replace("packages: {beta: {}, alpha: {}}",
                                                 "packages:\n  beta: {}\n  alpha: {options: {msg: x}\n  gamma: {}")
    cfg = write(tmp / "site2.yml", text)
    opened = next(i for i, line in enumerate(text.splitlines(), 1) if "alpha: {options" in line)
    return ["sync", cfg], [f"site2.yml:{opened}: YAML syntax error: the '{{' opened at line {opened} is not closed",
                           "hint: add '}'"]


@row()
def module_format_named_as_in_spack(site, tmp):
    text = open(site.config(tmp)).read().replace(f"modules: {{root: {site.modules}}}",
                                                  f"modules: {{root: {site.modules}, formats: [lmod]}}")
    return ["sync", write(tmp / "site2.yml", text)], \
        ["modules.formats.0: 'lmod' is not one of lua, tcl", "hint: did you mean 'lua'?"]


@row()
def recipe_option_value_not_allowed(site, tmp):
    cfg = one_recipe(site, tmp, "ov", """
        name: ov
        versions: {"1.0": {path: .}}
        options: {mode: {default: fast, values: [fast, safe]}}
        build: commands
        commands: ['true']
        """)
    cfg = write(tmp / "site.yml", open(cfg).read().replace("ov: {}", "ov: {options: {mode: sfae}}"))
    return ["sync", cfg], ["option mode='sfae' is not one of ['fast', 'safe']", "did you mean 'safe'?"]


@pytest.mark.parametrize("name", sorted(ROWS))
def test_bad_input_is_refused_and_changes_nothing(site, tmp_path, name):  # noqa: F811
    fn, build_time = ROWS[name]
    argv, expected, *absent = fn(site, tmp_path)
    assert_refused_and_unchanged(site, argv, expected, build_time, absent[0] if absent else ())
