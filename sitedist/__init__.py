"""sitedist: hash-addressed software stacks and environment modules for HPC sites."""

__version__ = "0.1.0"

# The oldest Python sitedist runs on (setup.py's python_requires says the same; admin_docs/security.md
# lists the platforms). Checked by the command before it imports anything that needs it.
MIN_PYTHON = (3, 11)


def unsupported_python(version=None, executable=None):
    """A message saying why this Python cannot run sitedist, or None."""
    import platform
    import sys

    version = tuple(version or sys.version_info)
    if version[:2] >= MIN_PYTHON:
        return None
    this = ".".join(map(str, version[:3])) if version else platform.python_version()
    return (f"error: sitedist needs Python {'.'.join(map(str, MIN_PYTHON))} or newer, and "
            f"{executable or sys.executable} is Python {this}.\n"
            f"  fix: make sitedist's virtual environment with a supported Python: Debian 12's /usr/bin/python3, "
            f"or on RHEL/Rocky 8 and 9 python3.11 or python3.12 from AppStream (dnf install python3.11), e.g. "
            f"python3.11 -m venv /opt/sitedist/venv (see admin_docs/security.md).")
