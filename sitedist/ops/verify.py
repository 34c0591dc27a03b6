"""``sitedist verify``: check a store against its manifests and find what crashes left; ``--repair``.

Only the config's own store is checked, never an upstream (that is another admin's store). Findings:

errors (the exit status is 1 while any is left)
  broken             a complete artifact differs from ``.sitedist/manifest.json``: a file changed, added
                     or removed, a file or link became the other, a link points elsewhere, a file is no
                     longer (or newly) executable, is writable again or set-id; or its spec, manifest or
                     marker is unreadable, or the marker names another id than the directory
  incomplete         a prefix without the completion marker whose lock is free: an interrupted build
  interrupted-build  a build directory whose lock is free, beside an incomplete prefix
  bad-source         a cached source whose sha256 is not the one it is filed under

notes (nothing is wrong; ``--repair`` removes the leftovers)
  building           an incomplete prefix or build directory whose lock a live process holds
  kept-failed-build  the build directory of a failed build, kept for inspection (``store.keep_failed``)
  leftover           a partial download or temporary file not touched for ``LEFTOVER_AGE`` seconds
  stale-lock         a lock whose holder is dead
  dead-root          the GC root of a sync that died
  trash              what a killed ``gc`` or repair left in ``<store>/.sitedist/trash``

``--repair`` removes incomplete prefixes and build directories of interrupted builds (each under the
artifact's lock, after killing any process that build left running), corrupt cached sources and the
leftovers; it moves each broken artifact of the config's plan into the trash (under its lock; one
rename, so readers see it whole or not at all) and rebuilds it through the normal sync flow. A broken
artifact the config does not plan cannot be rebuilt (its recipe and inputs are not known): it is
reported and left alone. Failed builds' directories are left for the admin.
"""

import json
import os
import re
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from sitedist.build.builder import stop_strays
from sitedist.core.gcroots import live_roots
from sitedist.core.hashing import file_sha256
from sitedist.core.locks import StoreLock, describe_holder, is_stale, read_holder
from sitedist.core.processes import pid_alive
from sitedist.core.store import MARKER, META, iter_files, remove_tree
from sitedist.errors import LockError

LEFTOVER_AGE = 600.0  # seconds: no live process leaves its temporary file untouched this long
STALE_AFTER = 600.0   # the builder's locks use StoreLock's default stale_after
ERRORS = ("broken", "incomplete", "interrupted-build", "bad-source")
_TEMP = re.compile(r"\.(part|tmp)-?\d+(-\d+)?\Z|\.info\.[0-9a-f]+\.tmp\Z|\.stale\.[0-9a-f]+\Z|\.takeover\Z")


@dataclass
class Finding:
    kind: str                 # see the module docstring
    path: str
    message: str
    artifact: str = None      # name/version-id, for artifacts and build directories
    changes: list = field(default_factory=list)   # broken: [what, relative path, detail]

    @property
    def error(self):
        return self.kind in ERRORS


@dataclass
class Report:
    store: str
    artifacts: int = 0        # complete artifacts checked
    findings: list = field(default_factory=list)

    @property
    def errors(self):
        return [f for f in self.findings if f.error]

    @property
    def notes(self):
        return [f for f in self.findings if not f.error]

    @property
    def ok(self):
        return not self.errors

    def to_json(self):
        return {"store": self.store, "ok": self.ok, "artifacts": self.artifacts,
                "errors": [dict(asdict(f), error=True) for f in self.errors],
                "notes": [dict(asdict(f), error=False) for f in self.notes]}


# --- checking ------------------------------------------------------------------------------------

def check_artifact(prefix, aid):
    """How a complete artifact differs from its manifest: [[what, relative path, detail]], empty if
    it does not. ``what`` is changed, added, removed, type, link, mode or meta."""
    meta = os.path.join(prefix, META)
    try:
        with open(os.path.join(meta, "manifest.json"), encoding="utf-8") as f:
            expected = json.load(f)["files"]
        with open(os.path.join(meta, "spec.json"), encoding="utf-8") as f:
            json.load(f)
        with open(os.path.join(meta, MARKER), encoding="utf-8") as f:
            marker_id = json.load(f).get("id")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [["meta", META, f"unreadable metadata: {exc}"]]
    changes = []
    if marker_id != aid:
        changes.append(["meta", f"{META}/{MARKER}", f"the marker is for id {marker_id}, the directory for {aid}"])
    seen = set()
    for rel, path, st in iter_files(prefix):
        seen.add(rel)
        want = expected.get(rel)
        if want is None:
            changes.append(["added", rel, "not in the manifest"])
        elif ("link" in want) != stat.S_ISLNK(st.st_mode):
            was = ("a symlink", "a file") if "link" in want else ("a file", "a symlink")
            changes.append(["type", rel, f"was {was[0]}, now {was[1]}"])
        elif "link" in want:
            target = os.readlink(path)
            if target != want["link"]:
                changes.append(["link", rel, f"points to {target}, was {want['link']}"])
        else:
            changes += _file_changes(rel, path, st, want)
    changes += [["removed", rel, "missing"] for rel in sorted(set(expected) - seen)]
    return changes


def _file_changes(rel, path, st, want):
    out = []
    mode = stat.S_IMODE(st.st_mode)
    was_exec = bool(int(want["mode"], 8) & 0o111)
    if bool(mode & 0o111) != was_exec:
        out.append(["mode", rel, f"{'no longer' if was_exec else 'now'} executable ({oct(mode)})"])
    if mode & (0o222 | stat.S_ISUID | stat.S_ISGID):
        out.append(["mode", rel, f"writable or set-id ({oct(mode)}); artifacts are sealed read-only"])
    try:
        same = st.st_size == want["size"] and file_sha256(path) == want["sha256"]
    except OSError as exc:
        out.append(["changed", rel, f"unreadable: {exc.strerror}"])
        return out
    if not same:
        out.append(["changed", rel, f"content differs (size {st.st_size}, was {want['size']})"])
    return out


def _lock_holder(store, entry):
    """The live holder of the lock named ``entry`` (``<name>-<version>-<id>``), or None."""
    info = read_holder(os.path.join(store.lock_dir, entry + ".lock"))
    return info if info is not None and not is_stale(info, STALE_AFTER) else None


def _artifact_findings(store, name, version, aid, prefix, complete):
    label = f"{name}/{version}-{aid}"
    if complete:
        changes = check_artifact(prefix, aid)
        if not changes:
            return []
        return [Finding("broken", prefix, f"{len(changes)} difference(s) from its manifest", label, changes)]
    holder = _lock_holder(store, f"{name}-{version}-{aid}")
    if holder is not None:
        return [Finding("building", prefix, f"being built by {describe_holder(holder)}", label)]
    if store.is_complete(prefix):  # its build finished between the two looks
        return _artifact_findings(store, name, version, aid, prefix, True)
    if not os.path.lexists(prefix):
        return []
    return [Finding("incomplete", prefix, "no completion marker and nobody builds it: an interrupted build; "
                                          "the next sync that needs it removes it", label)]


def _build_dir_findings(store, by_id):
    out = []
    for entry in _listdir(store.build_root):
        path = os.path.join(store.build_root, entry)
        artifact = by_id.get(entry.rpartition("-")[2])  # (name, version, id, prefix, complete)
        label = f"{artifact[0]}/{artifact[1]}-{artifact[2]}" if artifact else None
        holder = _lock_holder(store, entry)
        if holder is not None:
            out.append(Finding("building", path, f"build running: {describe_holder(holder)}", label))
        elif not os.path.isdir(path):
            continue
        elif artifact is None:
            out.append(Finding("kept-failed-build", path, "kept after a failed build (its build.log says why); "
                                                          "remove it when done"))
        elif artifact[4] and store.is_complete(artifact[3]):
            out.append(Finding("leftover", path, "the build directory of a finished build"))
        else:
            out.append(Finding("interrupted-build", path, "the build directory of an interrupted build", label))
    return out


def _source_findings(store):
    out = []
    for sha in _listdir(store.src_dir):
        folder = os.path.join(store.src_dir, sha)
        if not re.fullmatch(r"[0-9a-f]{64}", sha) or not os.path.isdir(folder):
            continue
        for name in _listdir(folder):
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not _TEMP.search(name) and file_sha256(path) != sha:
                out.append(Finding("bad-source", path, f"sha256 is no longer {sha}: the cached source is corrupt"))
    return out


def _leftover_findings(store, by_id, now):
    out = []
    places = [store.meta, store.lock_dir, store.gcroots_dir, store.reports_dir, store.src_dir]
    places += [os.path.join(store.src_dir, d) for d in _listdir(store.src_dir) if re.fullmatch(r"[0-9a-f]{64}", d)]
    for place in places + [store.tmp_dir]:
        for name in _listdir(place):
            path = os.path.join(place, name)
            try:
                age = now - os.lstat(path).st_mtime
            except FileNotFoundError:
                continue
            if (_TEMP.search(name) or place == store.tmp_dir) and age > LEFTOVER_AGE:
                out.append(Finding("leftover", path, f"left by a killed process {age / 3600:.1f} h ago"))
    for name in _listdir(store.lock_dir):
        artifact = by_id.get(name[:-len(".lock")].rpartition("-")[2])
        if not name.endswith(".lock") or os.path.lexists(os.path.join(store.build_root, name[:-len(".lock")])) \
                or (artifact and not artifact[4]):
            continue  # an interrupted build's lock is taken over when its leftovers are removed
        path = os.path.join(store.lock_dir, name)
        info = read_holder(path)
        if info is not None and is_stale(info, STALE_AFTER):
            out.append(Finding("stale-lock", path, f"held by a dead process: {describe_holder(info)}"))
    live = live_roots(store)
    for name in _listdir(store.gcroots_dir):
        if name.startswith("inuse-") and name.endswith(".json") and name not in live:
            out.append(Finding("dead-root", os.path.join(store.gcroots_dir, name), "the GC root of a sync that died"))
    trash = store.trash_dir
    for name in _listdir(trash):   # gc-<pid>-..., repair-<pid>-...: in use while that process runs
        path = os.path.join(trash, name)
        pid = name.split("-")[1] if name.count("-") else ""
        if not (pid.isdigit() and pid_alive(int(pid))) or now - os.lstat(path).st_mtime > LEFTOVER_AGE:
            out.append(Finding("trash", path, "left in the trash by a killed gc or repair"))
    return out


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def verify_store(store, jobs=None):
    """Check every artifact, build directory, cached source and leftover of ``store``."""
    report = Report(store=store.root)
    if not os.path.isdir(store.root):
        return report
    store.check_is_store()
    artifacts = list(store.artifacts())
    by_id = {a[2]: a for a in artifacts}
    report.artifacts = sum(1 for a in artifacts if a[4])
    with ThreadPoolExecutor(max_workers=jobs or min(8, os.cpu_count() or 1)) as pool:
        for found in pool.map(lambda a: _artifact_findings(store, *a), artifacts):
            report.findings += found
    report.findings += (_build_dir_findings(store, by_id) + _source_findings(store)
                        + _leftover_findings(store, by_id, time.time()))
    return report


# --- repairing -----------------------------------------------------------------------------------

@dataclass
class RepairResult:
    done: list = field(default_factory=list)      # what was repaired or removed, for people
    left: list = field(default_factory=list)      # errors that could not be repaired, and why
    sync: object = None                           # the SyncResult of the rebuild, if one ran


def _locked(store, label, action):
    """Run ``action`` under the lock of artifact ``label``; False if a live process holds it."""
    name, _, rest = label.partition("/")
    version, _, aid = rest.rpartition("-")
    lock = StoreLock(store.lock_path(name, version, aid), what=f"verify --repair {label}", timeout=0)
    try:
        lock.acquire()
    except LockError:
        return False
    try:
        action()
    finally:
        lock.release()
    return True


def _to_trash(store, prefix):
    aside = os.path.join(store.trash_dir, f"repair-{os.getpid()}-{time.monotonic_ns()}-"
                                f"{os.path.basename(os.path.dirname(prefix))}-{os.path.basename(prefix)}")
    mode = stat.S_IMODE(os.lstat(prefix).st_mode)
    # A directory moves to another parent only if it is writable itself (sealed artifacts are not).
    os.chmod(prefix, mode | stat.S_IWUSR)
    os.rename(prefix, aside)
    os.chmod(aside, mode)
    return aside


def repair(ctx, report, rebuild):
    """Repair what ``report`` (of ``ctx.store``) found; broken artifacts of ``ctx``'s plan are moved
    to the trash and ``rebuild(ctx)`` (the caller's sync flow, which returns its result) builds them
    again."""
    store, result = ctx.store, RepairResult()
    store.init()
    planned = {n.key: n for n in ctx.plan.nodes}
    trashed = {}  # plan key -> (prefix, trash path)

    def attempt(finding, action, done):
        try:
            if finding.artifact and finding.kind != "stale-lock":
                if not _locked(store, finding.artifact, action):
                    return result.left.append(f"{finding.path}: a live process took its lock; left alone")
            else:
                action()
        except OSError as exc:
            return result.left.append(f"{finding.path}: {exc.strerror or exc}; run verify --repair as its "
                                      f"owner or root")
        result.done.append(done)

    def remove_if_incomplete(prefix):
        if not store.is_complete(prefix):
            remove_tree(prefix)

    def trash_if_complete(finding):
        if store.is_complete(finding.path):
            trashed[finding.artifact] = (finding.path, _to_trash(store, finding.path))

    for f in report.findings:
        if f.kind == "broken" and f.artifact in planned:
            attempt(f, lambda f=f: trash_if_complete(f), f"moved broken {f.artifact} to the trash, to rebuild")
        elif f.kind == "broken":
            result.left.append(f"{f.artifact} is broken but not in {ctx.config.path}'s plan, so it cannot be "
                               f"rebuilt: repair with the config that built it, or remove it with sitedist gc")
        elif f.kind == "incomplete":
            attempt(f, lambda p=f.path: remove_if_incomplete(p), f"removed incomplete prefix {f.path}")
        elif f.kind == "interrupted-build":
            attempt(f, lambda p=f.path: (stop_strays(p), remove_tree(p)), f"removed build directory {f.path}")
        elif f.kind == "stale-lock":
            attempt(f, lambda p=f.path: StoreLock(p, what="verify --repair", timeout=0).acquire().release(),
                    f"removed stale lock {f.path}")
        elif f.kind in ("bad-source", "leftover", "dead-root", "trash"):
            attempt(f, lambda p=f.path: remove_tree(p), f"removed {f.kind} {f.path}")
    if trashed:
        result.sync = rebuild(ctx)
        for key, (prefix, aside) in trashed.items():
            if store.is_complete(prefix):
                remove_tree(aside)
                result.done.append(f"rebuilt {key}")
            else:
                attempt(Finding("broken", prefix, "", key), lambda p=prefix, a=aside: _restore(p, a),
                        f"rebuilding {key} failed; the broken artifact was put back")
                result.left.append(f"{key}: rebuilding failed (see the sync's error); it is still broken")
    return result


def _restore(prefix, aside):
    if not os.path.lexists(prefix) and os.path.lexists(aside):
        mode = stat.S_IMODE(os.lstat(aside).st_mode)
        os.chmod(aside, mode | stat.S_IWUSR)
        os.rename(aside, prefix)
        os.chmod(prefix, mode)


# --- text ----------------------------------------------------------------------------------------

def report_lines(report):
    """The report for people: errors with their differences, then notes, then a summary."""
    lines = []
    for f in report.errors + report.notes:
        lines.append(f"{f.kind.upper():<18} {f.artifact or f.path}: {f.message}")
        if f.artifact:
            lines.append(f"{'':<19}{f.path}")
        for what, rel, detail in f.changes[:50]:
            lines.append(f"{'':<19}{what:<8} {rel}: {detail}")
        if len(f.changes) > 50:
            lines.append(f"{'':<19}... and {len(f.changes) - 50} more")
    counts = {}
    for f in report.findings:
        counts[f.kind] = counts.get(f.kind, 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    lines.append(f"{report.store}: {report.artifacts} complete artifacts checked"
                 + (f"; {summary}" if summary else "; all match their manifests"))
    return lines
