"""Sync history: the lock of every successful sync, kept in the store (admin_docs/reproducible-stacks.md).

``<store>/.sitedist/history/<config digest>/`` holds, per recorded sync ``N`` (1, 2, ...):

- ``N.json``: ``{"n", "time", "user", "host", "config", "git": {"commit", "dirty"} or null, "digest",
  "artifacts"}``: small, what ``sitedist history`` lists (``artifacts`` counts the lock's artifacts);
- ``N.lock.json.gz``: the lock itself (an opaque document here: this module does not read locks).

The directory is named by the config's absolute path, so every config using a store has its own
numbering. A record is created with O_EXCL (two syncs at once get different numbers) and its lock is
written before its meta file, so a listed record always has its lock. A sync whose lock and git state
equal the newest record's records nothing new (a nightly no-op sync does not flood the history).
"""

import gzip
import hashlib
import json
import os
import socket
import subprocess
import time

from sitedist.errors import StoreError


def history_dir(store, config_path):
    key = hashlib.sha256(os.path.abspath(config_path).encode()).hexdigest()[:16]
    return os.path.join(store.meta, "history", key)


def _user():
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return str(os.getuid())


def git_state(path):
    """``{"commit", "dirty", "root"}`` of the git work tree holding ``path``, or None (not in one, or no git)."""
    directory = os.path.dirname(os.path.abspath(path))
    probe = directory
    while not os.path.exists(os.path.join(probe, ".git")):   # no git to run outside a work tree
        if os.path.dirname(probe) == probe:
            return None
        probe = os.path.dirname(probe)
    try:
        head = subprocess.run(["git", "-C", directory, "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                              text=True, timeout=30)
        if head.returncode != 0:
            return None
        root, commit = head.stdout.split()[:2]
        status = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return {"commit": commit, "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None, "root": root}


def records(store, config_path):
    """The recorded syncs of a config, oldest first: [meta dict]."""
    directory = history_dir(store, config_path)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        stem = name[:-5] if name.endswith(".json") else ""
        if not stem.isdigit():
            continue
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                out.append(json.load(f))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda r: r.get("n", 0))


def all_records(store):
    """{history directory: [meta dict]} for every config that recorded syncs in ``store``."""
    base = os.path.join(store.meta, "history")
    try:
        keys = sorted(os.listdir(base))
    except FileNotFoundError:
        return {}
    out = {}
    for key in keys:
        metas = []
        directory = os.path.join(base, key)
        for name in os.listdir(directory) if os.path.isdir(directory) else []:
            if name.endswith(".json") and name[:-5].isdigit():
                try:
                    with open(os.path.join(directory, name), encoding="utf-8") as f:
                        metas.append(json.load(f))
                except (OSError, ValueError):
                    continue
        out[directory] = sorted(metas, key=lambda r: r.get("n", 0))
    return out


def read_lock(store, config_path, n, directory=None):
    """The lock recorded by sync ``n``; StoreError when there is none."""
    path = os.path.join(directory or history_dir(store, config_path), f"{n}.lock.json.gz")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        known = ", ".join(str(r["n"]) for r in records(store, config_path)) or "none"
        raise StoreError(f"no sync {n} in the history of {config_path} in {store.root} (recorded: {known}); "
                         f"see 'sitedist history {config_path}'") from None
    except (OSError, ValueError, EOFError) as exc:
        raise StoreError(f"{path} is unreadable ({exc}); pick another entry of 'sitedist history'") from None


def record(store, config_path, lock, digest, now=None):
    """Record a successful sync of ``config_path`` that resolved to ``lock`` (whose digest the caller
    computes: this module does not read locks); returns its meta dict, with
    ``new`` True (or the newest record's, when that one says the same). ``lock`` may be a function
    giving the document, called only when a new record is written."""
    directory = history_dir(store, config_path)
    store._mkdir(directory, shared=True)   # in a group store, every admin of the group records syncs
    git = git_state(config_path)
    past = records(store, config_path)
    if past and past[-1].get("digest") == digest and past[-1].get("git") == git:
        return past[-1]
    n = past[-1]["n"] + 1 if past else 1
    while True:
        lock_path = os.path.join(directory, f"{n}.lock.json.gz")
        try:
            fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            n += 1
        except OSError as exc:
            raise StoreError(f"cannot record the sync in {directory}: {exc.strerror}") from None
    if callable(lock):
        lock = lock()
    with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(json.dumps(lock, sort_keys=True).encode())
    meta = {"n": n, "time": now or time.time(), "user": _user(), "host": socket.gethostname(),
            "config": os.path.abspath(config_path), "git": git, "digest": digest,
            "artifacts": len(lock.get("artifacts", {}))}
    store.write_json_atomic(os.path.join(directory, f"{n}.json"), meta)
    return dict(meta, new=True)


def kept_prefixes(store, keep):
    """The artifact prefixes (in ``store``) of the last ``keep`` recorded syncs of every config: GC roots."""
    out = set()
    if keep <= 0:
        return out
    for directory, metas in all_records(store).items():
        for meta in metas[-keep:]:
            try:
                lock = read_lock(store, meta.get("config", ""), meta["n"], directory=directory)
            except StoreError:
                continue
            for entry in lock.get("artifacts", {}).values():
                out.add(store.prefix(entry["name"], entry["version"], entry["id"]))
    return out
