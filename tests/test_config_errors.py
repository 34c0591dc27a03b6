"""Bad site configs and recipes: each is an error naming file, line and fix, and writes nothing."""

import os

from conftest import RECIPES, run_cli, site_config, tree_digest, write


def sync_fails(tmp_path, config, *expected):
    store = tmp_path / "store"
    before = tree_digest(store, tmp_path / "modules")
    proc = run_cli("sync", config, check=False)
    assert proc.returncode != 0, proc.stdout
    for text in expected:
        assert text in proc.stderr, f"{text!r} not in:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    assert tree_digest(store, tmp_path / "modules") == before
    assert not os.path.exists(store), "a failed config check must not create the store"
    return proc.stderr


def test_unknown_key_suggests_the_right_one(tmp_path):
    config = write(tmp_path / "site.yml", f"""
        store: {tmp_path}/store
        recipes: [{RECIPES}]
        packagse:
          zlib: {{}}
        """)
    sync_fails(tmp_path, config, f"{config}:3", "unknown key 'packagse'", "did you mean 'packages'")


def test_unknown_package_key_names_its_line(tmp_path):
    config = site_config(tmp_path, {"zlib": "{verison: '1.2.13'}"})
    sync_fails(tmp_path, config, f"{config}:5", "unknown key 'verison'", "did you mean 'version'")


def test_yaml_syntax_error_names_line(tmp_path):
    config = write(tmp_path / "site.yml", f"""
        store: {tmp_path}/store
        packages:
          zlib: {{version: "1.2.13"
          libpng:
        """)
    sync_fails(tmp_path, config, f"{config}:", "YAML syntax error")


def test_wrong_type(tmp_path):
    config = site_config(tmp_path, {"zlib": None}, extra="jobs: many\n")
    sync_fails(tmp_path, config, f"{config}:6", "jobs", "expected integer")


def test_duplicate_key(tmp_path):
    config = write(tmp_path / "site.yml", f"""
        store: {tmp_path}/store
        recipes: [{RECIPES}]
        packages:
          zlib: {{}}
          zlib: {{version: "1.2.13"}}
        """)
    sync_fails(tmp_path, config, f"{config}:5", "duplicate key 'zlib'", "first at line 4")


def test_missing_recipe_suggests_close_name(tmp_path):
    config = site_config(tmp_path, {"zlibb": None})
    sync_fails(tmp_path, config, f"{config}:5", "no recipe for package 'zlibb'", "did you mean 'zlib'")


def test_path_traversal_in_package_name(tmp_path):
    config = site_config(tmp_path, {"../evil": None})
    sync_fails(tmp_path, config, f"{config}:5", "'../evil' is not an allowed name")


def test_unknown_version(tmp_path):
    config = site_config(tmp_path, {"zlib": '{version: "9.9"}'})
    sync_fails(tmp_path, config, f"{config}:5", "has no version 9.9", "1.2.13")


def test_unknown_option_and_wrong_option_type(tmp_path):
    config = site_config(tmp_path, {"libyaml": "{options: {static: true}}"})
    sync_fails(tmp_path, config, f"{config}:5", "unknown option 'static'", "shared")
    config = site_config(tmp_path, {"libyaml": "{options: {shared: 'yes'}}"})
    sync_fails(tmp_path, config, "option shared takes a bool")


def test_unknown_toolchain(tmp_path):
    config = site_config(tmp_path, {"zlib": "{toolchains: [gcc-opnempi]}"},
                         extra="toolchains:\n  gcc-openmpi: {compiler: gcc, mpi: openmpi}\n")
    sync_fails(tmp_path, config, f"{config}:5", "unknown toolchain 'gcc-opnempi'", "did you mean 'gcc-openmpi'")


def test_extends_cycle_and_missing_file(tmp_path):
    a = write(tmp_path / "a.yml", "extends: [b.yml]\n")
    write(tmp_path / "b.yml", "extends: [a.yml]\n")
    sync_fails(tmp_path, a, "'extends' forms a cycle", "a.yml -> ", "b.yml")
    c = write(tmp_path / "c.yml", "extends: [nothere.yml]\n")
    sync_fails(tmp_path, c, f"{c}:1", "no such config file", "nothere.yml")


def test_dependency_cycle(tmp_path):
    recipes = tmp_path / "recipes"
    for name, dep in (("alpha", "beta"), ("beta", "gamma"), ("gamma", "alpha")):
        write(recipes / f"{name}.yml", f"""
            name: {name}
            versions:
              "1.0": {{url: "file:///nonexistent/{name}.tar.gz", sha256: "{'0' * 64}"}}
            depends:
              link: [{dep}]
            build: autotools
            """)
    config = site_config(tmp_path, {"alpha": None}, recipes=[recipes])
    sync_fails(tmp_path, config, "dependency cycle: alpha -> beta -> gamma -> alpha", "gamma.yml:5")


def test_bad_recipe_names_recipe_file_and_line(tmp_path):
    recipes = tmp_path / "recipes"
    recipe = write(recipes / "thing.yml", """
        name: thing
        versions:
          "1.0": {url: "file:///x/thing.tar.gz", sha256: "not-a-checksum"}
        build: autotools
        """)
    config = site_config(tmp_path, {"thing": None}, recipes=[recipes])
    sync_fails(tmp_path, config, f"{recipe}:3", "sha256")
    write(recipes / "thing.yml", """
        name: thing
        versions:
          "1.0": {url: "file:///x/thing.tar.gz", sha256: "%s"}
        build: autotols
        """ % ("0" * 64))
    sync_fails(tmp_path, config, f"{recipe}:4", "autotols")


def test_yaml_cannot_execute_code(tmp_path):
    config = write(tmp_path / "site.yml", f"""
        store: !!python/object/apply:os.system ["touch {tmp_path}/pwned"]
        """)
    sync_fails(tmp_path, config, f"{config}:1", "YAML")
    assert not os.path.exists(tmp_path / "pwned")


def test_dry_run_writes_nothing(tmp_path):
    config = site_config(tmp_path, {"libpng": None, "zlib": None})
    proc = run_cli("sync", "--dry-run", config)
    assert "[build]" in proc.stdout and "libpng 1.6.39" in proc.stdout and "zlib 1.2.13" in proc.stdout
    assert "(new)" in proc.stdout
    assert not os.path.exists(tmp_path / "store")


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    lines = [f"store: {tmp_path}/store", "mirrors: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 6):
        lines.append(f"upstreams{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    config = write(tmp_path / "site.yml", "\n".join(lines).replace("upstreams", "x_upstreams") + "\n")
    sync_fails(tmp_path, config, f"{config}", "expands to more than 100000 values")


def test_module_root_inside_the_store_is_refused(tmp_path):
    config = site_config(tmp_path, {"zlib": None}, extra=f"modules: {{root: {tmp_path}/store/modules}}\n")
    sync_fails(tmp_path, config, f"{config}:6", "overlaps the store", "outside the store")


def test_float_option_value_is_a_config_error(tmp_path):
    config = site_config(tmp_path, {"libyaml": "{options: {shared: 1.5}}"})
    sync_fails(tmp_path, config, f"{config}:5", "expected a string, integer or boolean", 'write it as a string: "1.5"')


def test_the_same_target_twice(tmp_path):
    config = site_config(tmp_path, {"zlib": None}, extra="target: [generic, x86_64]\n")
    sync_fails(tmp_path, config, f"{config}:6", "generic and x86_64 are the same target")


def test_module_name_clash_stops_the_sync_before_building(tmp_path):
    config = site_config(tmp_path, {"zlib": None, "lz4": None},
                         extra=f"modules: {{root: {tmp_path}/modules, naming: 'x/1'}}\n")
    dry = run_cli("sync", "--dry-run", config, check=False)
    assert dry.returncode != 0 and "x/1" in dry.stderr, dry.stderr
    sync_fails(tmp_path, config, "x/1", "zlib", "lz4", "disambiguate")


def test_declared_host_package_error_names_the_config_line(tmp_path):
    config = site_config(tmp_path, {"zlib": None}, extra="host:\n  packages:\n    vendor:\n"
                         "      {kind: compiler, implementation: bogus, prefix: /usr}\n")
    sync_fails(tmp_path, config, f"{config}:8", "bogus")
