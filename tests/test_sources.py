"""Fetching (http on 127.0.0.1, file://, mirrors by checksum), verification, cache, safe unpacking, git
sources fetched concurrently by threads and processes, git errors as plain text."""

import hashlib
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading

import pytest

from sitedist.core.hashing import tree_sha256
from sitedist.core.sources import Fetcher, source_identity, unpack
from sitedist.errors import ChecksumError, SourceError

from conftest import SOURCES


@pytest.fixture
def http_dir(tmp_path):
    """Serve a directory on 127.0.0.1; yields (dir, base url, list of requested paths)."""
    root = tmp_path / "www"
    root.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()


def make_tar(path, members):
    """members: list of (TarInfo-kwargs, data or None)."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            ti = tarfile.TarInfo(info.pop("name"))
            for k, v in info.items():
                setattr(ti, k, v)
            if data is not None:
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
            else:
                tar.addfile(ti)
    return str(path)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_http_download_verified_cached_once(tmp_path, http_dir):
    root, url, requests = http_dir
    tarball = make_tar(root / "pkg-1.0.tar.gz", [({"name": "pkg-1.0/README"}, b"hello\n")])
    source = {"url": f"{url}/pkg-1.0.tar.gz", "sha256": sha(tarball)}
    fetcher = Fetcher(str(tmp_path / "cache"))
    path = fetcher.fetch(source)
    assert sha(path) == source["sha256"] and path.startswith(str(tmp_path / "cache" / source["sha256"]))
    assert Fetcher(str(tmp_path / "cache")).fetch(source) == path
    assert requests.count("/pkg-1.0.tar.gz") == 1, requests


def test_checksum_mismatch_names_url_expected_actual_and_caches_nothing(tmp_path, http_dir):
    root, url, _ = http_dir
    tarball = make_tar(root / "pkg.tar.gz", [({"name": "pkg/x"}, b"x")])
    wrong = "0" * 64
    fetcher = Fetcher(str(tmp_path / "cache"))
    with pytest.raises(ChecksumError) as err:
        fetcher.fetch({"url": f"{url}/pkg.tar.gz", "sha256": wrong})
    msg = str(err.value)
    assert f"{url}/pkg.tar.gz" in msg and wrong in msg and sha(tarball) in msg
    leftovers = [f for _, _, files in os.walk(tmp_path / "cache") for f in files]
    assert leftovers == []


def test_mirror_found_by_checksum_not_by_name(tmp_path):
    expected = None
    for line in open(os.path.join(SOURCES, "SHA256SUMS")):
        digest, name = line.split()
        if name.startswith("hello_"):
            expected = digest
    source = {"url": "https://example.invalid/gnu/hello-2.10.tar.gz", "sha256": expected}
    path = Fetcher(str(tmp_path / "cache"), mirrors=[SOURCES]).fetch(source)
    assert os.path.basename(path) == "hello-2.10.tar.gz" and sha(path) == expected


def test_http_mirror_with_index(tmp_path, http_dir):
    root, url, requests = http_dir
    tarball = make_tar(root / "renamed.tar.gz", [({"name": "a/b"}, b"b")])
    (root / "SHA256SUMS").write_text(f"{sha(tarball)}  renamed.tar.gz\n")
    source = {"url": "https://example.invalid/original.tar.gz", "sha256": sha(tarball)}
    path = Fetcher(str(tmp_path / "cache"), mirrors=[url]).fetch(source)
    assert sha(path) == source["sha256"]
    assert "/renamed.tar.gz" in requests


def test_unreachable_everywhere_lists_what_was_tried(tmp_path):
    source = {"url": "http://127.0.0.1:9/nothing.tar.gz", "sha256": "1" * 64}
    with pytest.raises(SourceError) as err:
        Fetcher(str(tmp_path / "cache"), mirrors=[str(tmp_path)]).fetch(source)
    assert "127.0.0.1:9/nothing.tar.gz" in str(err.value) and "mirrors" in str(err.value)


@pytest.mark.parametrize("member, text", [
    ({"name": "../escape"}, "outside"),
    ({"name": "/abs/path"}, ""),
    ({"name": "pkg/link", "type": tarfile.SYMTYPE, "linkname": "../../../../etc/passwd"}, "outside"),
    ({"name": "pkg/hard", "type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}, ""),
    ({"name": "pkg/dev", "type": tarfile.CHRTYPE}, "device"),
])
def test_unpack_rejects_members_escaping_the_target(tmp_path, member, text):
    data = b"x" if member.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else None
    archive = make_tar(tmp_path / "evil.tar.gz", [({"name": "pkg/ok"}, b"ok"), (dict(member), data)])
    dest = tmp_path / "out"
    with pytest.raises(SourceError) as err:
        unpack(archive, str(dest))
    assert "refusing to unpack" in str(err.value) and text in str(err.value)
    assert not (tmp_path / "escape").exists() and not os.path.exists("/abs/path")


def test_git_source_pinned_to_commit(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True, text=True).stdout
    git("init", "-q")
    (repo / "file.txt").write_text("one\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    first = git("rev-parse", "HEAD").strip()
    (repo / "file.txt").write_text("two\n")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two")
    fetcher = Fetcher(str(tmp_path / "cache"))
    dest = tmp_path / "src"
    fetcher.fetch_git({"git": str(repo), "commit": first}, str(dest))
    assert (dest / "file.txt").read_text() == "one\n"
    assert source_identity({"git": str(repo), "commit": first}) == {"git_commit": first}
    with pytest.raises(SourceError, match="not found"):
        fetcher.fetch_git({"git": str(repo), "commit": "f" * 40}, str(tmp_path / "src2"))


def test_directory_source_hashed_by_content(tmp_path):
    src = tmp_path / "code"
    src.mkdir()
    (src / "main.c").write_text("int main(){return 0;}\n")
    first = source_identity({"path": str(src)})
    os.utime(src / "main.c", (0, 0))
    assert source_identity({"path": str(src)}) == first, "timestamps must not count"
    (src / "main.c").write_text("int main(){return 1;}\n")
    assert source_identity({"path": str(src)}) != first
    assert tree_sha256(str(src)) == source_identity({"path": str(src)})["tree_sha256"]


def test_upstream_source_cache_is_used_read_only(tmp_path):
    site = Fetcher(str(tmp_path / "site-cache"), mirrors=[SOURCES])
    expected = next(line.split()[0] for line in open(os.path.join(SOURCES, "SHA256SUMS")) if "lz4" in line)
    source = {"url": "https://example.invalid/lz4-1.9.4.tar.gz", "sha256": expected}
    site_copy = site.fetch(source)
    user = Fetcher(str(tmp_path / "user-cache"), mirrors=[], upstream_caches=[str(tmp_path / "site-cache")])
    assert user.fetch(source) == site_copy, "a user without the mirror finds the site's cached copy"
    assert not (tmp_path / "user-cache").exists()


# --- git sources fetched concurrently -------------------------------------------------------------

def _git_repo(path, *contents):
    """A git repository with one commit per text of file.txt; the commit ids, oldest first."""
    path.mkdir()
    git = lambda *a: subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t", *a],
                                    check=True, capture_output=True, text=True).stdout
    git("init", "-q")
    commits = []
    for text in contents:
        (path / "file.txt").write_text(text)
        git("add", ".")
        git("commit", "-qm", text)
        commits.append(git("rev-parse", "HEAD").strip())
    return commits


_FETCH = ("import sys; from sitedist.core.sources import Fetcher; Fetcher(sys.argv[1], lock_dir=sys.argv[2])"
          ".fetch_git({'git': sys.argv[3], 'commit': sys.argv[4]}, sys.argv[5])")


def test_concurrent_fetches_of_one_git_source(tmp_path):
    repo = tmp_path / "repo"
    first, second = _git_repo(repo, "one\n", "two\n")
    for round_, commit in enumerate([first, second, first]):
        cache, locks = tmp_path / f"cache{round_}", tmp_path / f"locks{round_}"
        source = {"git": str(repo), "commit": commit}
        dests = [tmp_path / f"r{round_}" / f"t{i}" / "src" for i in range(6)]
        procs = [subprocess.Popen([sys.executable, "-c", _FETCH, str(cache), str(locks), str(repo), commit,
                                   str(tmp_path / f"r{round_}" / f"p{i}" / "src")], stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
        errors = []

        def fetch(dest):
            try:
                Fetcher(str(cache), lock_dir=str(locks)).fetch_git(source, str(dest))
            except Exception as exc:   # noqa: BLE001 - collected and reported below
                errors.append(repr(exc))

        threads = [threading.Thread(target=fetch, args=(d,)) for d in dests]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for p in procs:
            assert p.wait() == 0, p.stderr.read()
        assert errors == []
        want = "one\n" if commit == first else "two\n"
        for dest in dests + [tmp_path / f"r{round_}" / f"p{i}" / "src" for i in range(2)]:
            assert (dest / "file.txt").read_text() == want
        assert len(os.listdir(cache)) == 1 and os.listdir(cache)[0].startswith("git-"), os.listdir(cache)
        assert os.listdir(locks) == [], "the mirror's lock is released"


def test_git_errors_are_plain_text(tmp_path):
    with pytest.raises(SourceError) as err:
        Fetcher(str(tmp_path / "cache")).fetch_git({"git": str(tmp_path / "no-such-repo"), "commit": "f" * 40},
                                                   str(tmp_path / "src"))
    message = str(err.value)
    assert message.startswith(f"git clone --quiet failed for {tmp_path / 'no-such-repo'}: ")
    assert "['" not in message and "does not exist" in message
