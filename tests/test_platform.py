"""The Python sitedist runs on, and the quick start's sources: the start-up check refuses an old Python
with one clear line, setup.py agrees with it, and scripts/fetch_sources.py fills a mirror only with files
that match the committed SHA256SUMS."""

import glob
import importlib.util
import os
import re
import subprocess

import pytest

import sitedist
from conftest import REPO, SOURCES


def test_old_python_is_refused_with_the_fix():
    message = sitedist.unsupported_python((3, 9, 18, "final", 0), "/usr/bin/python3")
    assert message.startswith("error: sitedist needs Python 3.11 or newer, and /usr/bin/python3 is Python 3.9.18.")
    assert "python3.11 -m venv" in message and "admin_docs" in message
    assert sitedist.unsupported_python((3, 11, 2, "final", 0)) is None
    assert sitedist.unsupported_python((3, 12, 1, "final", 0)) is None


def test_setup_py_requires_what_the_command_checks():
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        required = re.search(r'python_requires=">=(\d+)\.(\d+)"', f.read())
    assert tuple(map(int, required.groups())) == sitedist.MIN_PYTHON


OLD_PYTHONS = sorted(p for p in glob.glob("/root/.pyenv/versions/3.*/bin/python3") + glob.glob("/usr/bin/python3.*")
                     if re.search(r"/3\.(?:[6-9]|10)\.|python3\.(?:[6-9]|10)$", p))


@pytest.mark.skipif(not OLD_PYTHONS, reason="no Python older than 3.11 on this machine")
@pytest.mark.parametrize("python", OLD_PYTHONS)
def test_the_command_on_an_old_python_says_so_without_traceback(python):
    proc = subprocess.run([python, "-m", "sitedist.cli.main", "sync", "site.yml"], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: sitedist needs Python 3.11 or newer, and {python} is Python 3."), proc.stderr
    assert "Traceback" not in proc.stderr


def fetch_sources():
    spec = importlib.util.spec_from_file_location("fetch_sources", os.path.join(REPO, "scripts", "fetch_sources.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fetch_sources_takes_only_files_matching_the_committed_sums(tmp_path):
    mirror, shared = tmp_path / "mirror", tmp_path / "shared"
    mirror.mkdir()
    shared.mkdir()
    sums = open(os.path.join(REPO, "sources", "SHA256SUMS")).read()
    (mirror / "SHA256SUMS").write_text(sums)
    (shared / "SHA256SUMS").write_text(sums)
    names = [line.split()[1] for line in sums.splitlines()]
    good, bad = names[0], names[1]
    os.link(os.path.join(SOURCES, good), shared / good)
    (shared / bad).write_bytes(b"not the release\n")
    proc = subprocess.run(["/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3",
                           os.path.join(REPO, "scripts", "fetch_sources.py"), "--mirror", str(mirror), "--from",
                           str(shared), "--no-debian", "--no-pypi"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"{good}: from {shared}" in proc.stdout
    assert f"{shared / bad}: sha256 differs from SHA256SUMS, not used" in proc.stderr
    assert f"missing from {mirror}" in proc.stderr and bad in proc.stderr.split("missing from")[1]
    assert sorted(os.listdir(mirror)) == sorted(["SHA256SUMS", good])  # no partial or unverified file
    assert open(mirror / good, "rb").read() == open(os.path.join(SOURCES, good), "rb").read()


def test_fetch_sources_takes_sdists_from_a_package_index_only_when_they_match(tmp_path):
    """A PEP 691 index (a local HTTP server) lists two sdists; the one whose bytes differ from the committed
    SHA256SUMS is refused and leaves nothing in the mirror, the other enters it."""
    import hashlib
    import http.server
    import json
    import threading

    good, bad = b"the real sdist\n", b"a tampered sdist\n"
    files = {"/files/good_pkg-1.0.tar.gz": good, "/files/bad-2.0.tar.gz": bad}
    pages = {"/simple/good-pkg/": "good_pkg-1.0.tar.gz", "/simple/bad/": "bad-2.0.tar.gz"}

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path in pages:
                body = json.dumps({"meta": {"api-version": "1.0"}, "files": [
                    {"filename": pages[self.path], "url": f"../../files/{pages[self.path]}", "hashes": {}}]}).encode()
            elif self.path in files:
                body = files[self.path]
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mirror = tmp_path / "mirror"
        mirror.mkdir()
        (mirror / "SHA256SUMS").write_text(f"{hashlib.sha256(good).hexdigest()}  good_pkg-1.0.tar.gz\n"
                                           f"{hashlib.sha256(b'the release').hexdigest()}  bad-2.0.tar.gz\n")
        proc = subprocess.run(["/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3",
                               os.path.join(REPO, "scripts", "fetch_sources.py"), "--mirror", str(mirror), "--from",
                               str(tmp_path / "none"), "--no-debian", "--index",
                               f"http://127.0.0.1:{server.server_port}/simple/"], capture_output=True, text=True)
    finally:
        server.shutdown()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "good_pkg-1.0.tar.gz: from http://127.0.0.1" in proc.stdout
    assert "bad-2.0.tar.gz: sha256 differs from SHA256SUMS, not used" in proc.stderr
    assert sorted(os.listdir(mirror)) == ["SHA256SUMS", "good_pkg-1.0.tar.gz"]  # nothing partial or unverified
    assert (mirror / "good_pkg-1.0.tar.gz").read_bytes() == good


def test_the_committed_sums_name_every_source_the_example_uses():
    """Every url source of the example's recipes is in sources/SHA256SUMS, so the mirror serves them all."""
    import yaml

    sums = {line.split()[0] for line in open(os.path.join(REPO, "sources", "SHA256SUMS"))}
    config = yaml.safe_load(open(os.path.join(REPO, "site_configs", "example", "site.yml")))
    for name in config["packages"]:
        recipe = yaml.safe_load(open(os.path.join(REPO, "site_configs", "recipes", f"{name}.yml")))
        pinned = {v["sha256"] for v in recipe["versions"].values() if "sha256" in v}
        assert pinned & sums, f"no source of {name} is in sources/SHA256SUMS"

