"""GC roots of syncs on other hosts are kept alive by a heartbeat, not trusted for a fixed time
(issue 11 item 11): a long rebuild elsewhere keeps its root, a crashed host's root stops counting."""

import json
import os
import socket
import threading
import time

from sitedist.core.gcroots import InUse, live_roots
from sitedist.core.store import Store


def _remote_root(store, name, started, beat_at):
    """The root file of a sync running on another host, started at ``started``, last beat at ``beat_at``."""
    path = os.path.join(store.gcroots_dir, name)
    store.write_json_atomic(path, {"prefixes": ["/store/a/1-x"], "pid": 4242, "host": f"not-{socket.gethostname()}",
                                   "started": started, "created": started, "what": "sync elsewhere", "beat": 60})
    os.utime(path, (beat_at, beat_at))
    return path


def test_a_long_sync_on_another_host_keeps_its_root_while_it_beats(tmp_path):
    store = Store(str(tmp_path / "store"))
    store.init()
    now = time.time()
    _remote_root(store, "inuse-long.json", started=now - 3 * 86400, beat_at=now - 30)
    assert live_roots(store) == {"inuse-long.json": {"/store/a/1-x"}}


def test_a_root_whose_host_stopped_beating_no_longer_counts(tmp_path):
    store = Store(str(tmp_path / "store"))
    store.init()
    now = time.time()
    _remote_root(store, "inuse-crashed.json", started=now - 3600, beat_at=now - 3600)
    assert live_roots(store) == {}


def test_a_running_sync_touches_its_root(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "store"))
    store.init()
    real_utime = os.utime
    beaten = threading.Event()

    def utime(path, *args, **kwargs):
        real_utime(path, *args, **kwargs)
        if path == root.path and not args and not kwargs:
            beaten.set()

    monkeypatch.setattr(os, "utime", utime)
    with InUse(store, ["/store/a/1-x"], heartbeat=0.05) as root:
        real_utime(root.path, (1, 1))   # as if the last beat was long ago
        assert beaten.wait(10), "no heartbeat within 10 s"
        assert os.stat(root.path).st_mtime > 1
        with open(root.path) as f:
            assert json.load(f)["beat"] == 0.05
    assert not os.path.exists(root.path)
