"""The modulefile templates are package data: a built sitedist (setup.py build, what an install copies)
carries them and renders modulefiles from them with no source tree in reach."""

import os
import subprocess
import sys

from conftest import REPO

RENDER = """
import sys
from sitedist.modules.render import BUILTIN_TEMPLATES, Renderer
print(BUILTIN_TEMPLATES)
print(Renderer().render("modulerc.lua.j2", {"name": "app", "default": "1.0", "hidden": ()}))
"""


def test_an_installed_sitedist_reads_its_templates_as_package_data(tmp_path):
    build = subprocess.run([sys.executable, "setup.py", "-q", "build", "--build-base", str(tmp_path / "build")],
                           cwd=REPO, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    lib = tmp_path / "build" / "lib"
    shipped = sorted(os.listdir(lib / "sitedist" / "templates"))
    assert shipped == sorted(os.listdir(os.path.join(REPO, "modulefiles_templates")))
    assert not os.path.islink(lib / "sitedist" / "templates"), "the build copies the templates themselves"
    run = subprocess.run([sys.executable, "-c", RENDER], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(lib)))
    assert run.returncode == 0, run.stderr
    where, text = run.stdout.split("\n", 1)
    assert where == str(lib / "sitedist" / "templates")
    assert "app" in text and "1.0" in text
