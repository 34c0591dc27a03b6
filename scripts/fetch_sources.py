#!/usr/bin/env python3
"""Fill the example's source mirror (``sources/`` at the top of the repository) with the tarballs its
committed ``sources/SHA256SUMS`` names, so that the quick start and the tests need nothing outside the
repository.

Each missing file is taken, in order, from a neighbouring ``../shared/sources/`` (the offline mirror of
this project's build machines) when one exists, else from where its name says it comes from:

- a Debian ``<package>_<version>.orig.tar.*`` (the upstream release as Debian ships it) from Debian's
  source archive, with ``apt-get source --download-only`` through a private apt configuration (a
  ``deb-src`` entry for the mirror the machine's own apt sources use; the system's apt configuration is
  not changed);
- any other name is a Python sdist ``<project>-<version>.tar.gz`` from a Python package index (PyPI by
  default): the index's JSON simple API (PEP 691, ``/simple/<project>/``, which every index and mirror
  serves; PyPI's ``/pypi/<project>/<version>/json`` is not answered by every proxy) gives the file's URL,
  and the file is downloaded with urllib. Not ``pip download --no-binary :all:``: pip prepares each
  sdist it downloads, running its build backend to get the metadata, which is slow, needs the backend
  installed and runs the archive's code.

Every file is checked against the committed ``SHA256SUMS`` (the only trust anchor: neither Debian's
nor the index's own checksums are trusted instead) before it enters the mirror, and written by rename,
so the mirror never holds a partial or unverified file. Standard library only: runs with Debian's
/usr/bin/python3.

    python3 scripts/fetch_sources.py [--mirror DIR] [--from DIR] [--no-debian] [--no-pypi] [--index URL]

Exit status 0 when every file is present and verified.
"""

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIRROR = os.path.join(REPO, "sources")
SHARED = os.path.normpath(os.path.join(REPO, "..", "shared", "sources"))
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
INDEX = "https://pypi.org/simple/"
SDIST = re.compile(r"^(?P<project>[A-Za-z0-9][A-Za-z0-9._]*?)-(?P<version>[0-9][A-Za-z0-9.+!]*)\.tar\.gz$")


def is_debian(name):
    return ".orig." in name or ".orig-" in name


def read_sums(mirror):
    sums = {}
    with open(os.path.join(mirror, "SHA256SUMS"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                digest, name = line.split(None, 1)
                sums[name.strip().lstrip("*")] = digest.lower()
    return sums


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def missing(mirror, sums):
    return sorted(name for name, digest in sums.items()
                  if not (os.path.isfile(os.path.join(mirror, name)) and sha256(os.path.join(mirror, name)) == digest))


def install(path, name, digest, mirror):
    """Copy ``path`` into the mirror as ``name`` if its sha256 is ``digest``; True when it was."""
    if sha256(path) != digest:
        print(f"  {path}: sha256 differs from SHA256SUMS, not used", file=sys.stderr)
        return False
    fd, tmp = tempfile.mkstemp(dir=mirror, prefix=f".{name}.part-")
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
            shutil.copyfileobj(src, out)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(mirror, name))
    except BaseException:
        os.unlink(tmp)
        raise
    return True


def debian_mirror():
    """The Debian archive URI and release codename this machine's apt uses (deb822 or one-line lists)."""
    codename = "bookworm"
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            codename = re.search(r"^VERSION_CODENAME=\"?(\w+)", f.read(), re.M).group(1)
    except (OSError, AttributeError):
        pass
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path, encoding="utf-8") as f:
            for stanza in f.read().split("\n\n"):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
                if "deb" in fields.get("Types", "").split() and codename in fields.get("Suites", "").split() \
                        and "main" in fields.get("Components", "").split():
                    return fields["URIs"].split()[0], codename
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)", line)
                    if m and m.group(2) == codename and "main" in m.group(3).split():
                        return m.group(1), codename
        except OSError:
            pass
    return "http://deb.debian.org/debian", codename


def from_debian(names, sums, mirror):
    """``apt-get source --download-only`` each package through a private apt configuration."""
    if not shutil.which("apt-get"):
        print("  no apt-get: cannot use Debian's source archive", file=sys.stderr)
        return
    uri, codename = debian_mirror()
    print(f"fetching from Debian's source archive ({uri} {codename}) with apt-get source --download-only")
    with tempfile.TemporaryDirectory(prefix="sitedist-apt-") as tmp:
        os.chmod(tmp, 0o755)  # apt downloads as the unprivileged _apt user when run as root
        for sub in ("lists/partial", "cache/archives/partial", "parts", "prefs", "work"):
            os.makedirs(os.path.join(tmp, sub), mode=0o755)
        signed = f" [signed-by={KEYRING}]" if os.path.exists(KEYRING) else ""
        with open(os.path.join(tmp, "sources.list"), "w", encoding="utf-8") as f:
            f.write(f"deb-src{signed} {uri} {codename} main\n")
        opts = ["-o", f"Dir::Etc::SourceList={tmp}/sources.list", "-o", f"Dir::Etc::SourceParts={tmp}/parts",
                "-o", f"Dir::Etc::PreferencesParts={tmp}/prefs", "-o", f"Dir::State::Lists={tmp}/lists",
                "-o", f"Dir::Cache={tmp}/cache", "-o", "Debug::NoLocking=1", "-q"]
        run = subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True)
        if run.returncode != 0:
            print(f"  apt-get update failed:\n{run.stderr}", file=sys.stderr)
            return
        for name in names:
            package = name.split("_", 1)[0]
            got = subprocess.run(["apt-get", *opts, "source", "--download-only", package], cwd=f"{tmp}/work",
                                 capture_output=True, text=True)
            path = os.path.join(tmp, "work", name)
            # Only the .orig tarball is wanted (and checked by sha256): apt-get failing on another file of
            # the source package (meson's .debian.tar.xz is missing from some mirrors) does not matter.
            if not os.path.isfile(path):
                print(f"  {name}: apt-get source --download-only {package} did not give it:\n"
                      f"{got.stderr.strip()}", file=sys.stderr)
                continue
            if install(path, name, sums[name], mirror):
                print(f"  {name}: from Debian ({package})")


def from_index(names, sums, mirror, index=INDEX):
    """Download each sdist ``names`` lists from the package index's JSON simple API (PEP 691)."""
    print(f"fetching Python sdists from {index}")
    for name in names:
        m = SDIST.match(name)
        if not m:
            print(f"  {name}: neither a Debian .orig tarball nor a Python sdist <project>-<version>.tar.gz",
                  file=sys.stderr)
            continue
        project = re.sub(r"[-_.]+", "-", m.group("project")).lower()  # PEP 503 normalised name
        page = urllib.parse.urljoin(index, f"{project}/")
        try:
            request = urllib.request.Request(page, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                files = json.load(response)["files"]
            url = next(urllib.parse.urljoin(page, f["url"]) for f in files if f.get("filename") == name)
        except StopIteration:
            print(f"  {name}: {page} does not list it", file=sys.stderr)
            continue
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"  {name}: cannot read {page}: {exc}", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory(prefix="sitedist-sdist-") as tmp:
            path = os.path.join(tmp, name)
            try:
                with urllib.request.urlopen(url, timeout=300) as response, open(path, "wb") as out:
                    shutil.copyfileobj(response, out)
            except OSError as exc:
                print(f"  {name}: cannot download {url}: {exc}", file=sys.stderr)
                continue
            if install(path, name, sums[name], mirror):
                print(f"  {name}: from {url}")


def fill(mirror=MIRROR, shared=SHARED, debian=True, pypi=True, index=INDEX):
    """Fill ``mirror``; returns the names still missing."""
    sums = read_sums(mirror)
    todo = missing(mirror, sums)
    if todo and shared and os.path.isfile(os.path.join(shared, "SHA256SUMS")):
        for name in todo:
            if os.path.isfile(os.path.join(shared, name)) and install(os.path.join(shared, name), name, sums[name],
                                                                       mirror):
                print(f"  {name}: from {shared}")
        todo = missing(mirror, sums)
    if debian and any(is_debian(name) for name in todo):
        from_debian([name for name in todo if is_debian(name)], sums, mirror)
        todo = missing(mirror, sums)
    if pypi and any(not is_debian(name) for name in todo):
        from_index([name for name in todo if not is_debian(name)], sums, mirror, index)
        todo = missing(mirror, sums)
    return todo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", default=MIRROR, help="the mirror to fill (holds SHA256SUMS); default: %(default)s")
    parser.add_argument("--from", dest="shared", default=SHARED,
                        help="a directory of the same files to copy from first, if it exists; default: %(default)s")
    parser.add_argument("--no-debian", action="store_true", help="do not use Debian's source archive")
    parser.add_argument("--no-pypi", action="store_true", help="do not use the Python package index")
    parser.add_argument("--index", default=INDEX,
                        help="the Python package index (PEP 691 JSON simple API); default: %(default)s")
    args = parser.parse_args(argv)
    todo = fill(args.mirror, args.shared, debian=not args.no_debian, pypi=not args.no_pypi, index=args.index)
    if todo:
        print(f"missing from {args.mirror} (not found, or not matching SHA256SUMS): {', '.join(todo)}",
              file=sys.stderr)
        return 1
    print(f"{args.mirror}: all {len(read_sums(args.mirror))} sources present and verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
