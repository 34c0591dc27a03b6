"""Generations: what module trees and profiles share, in one class with one durable protocol.

A published view is ``<directory>/<N>/`` (generation N); what users see is a symlink to one of them,
replaced atomically (a new link under a temporary name, then a rename over the old one), so a reader only
ever sees the old generation or the new one. Each generation has a record (a JSON file at a fixed path
in it) naming the artifact prefixes it references: every kept generation is a GC root.

The protocol (:class:`Generations`), the same for every view:

1. ``stage()``: ``<directory>/.staging-<N>-<pid>/``; ``write_record()`` writes the record first (a GC
   running meanwhile keeps its prefixes), then the view writes its content;
2. ``commit()``: flush every file and directory of the staging directory to disk, rename it to ``<N>``,
   flush ``<directory>``;
3. ``switch()``: point the link at ``<N>`` (a temporary link renamed over it) and flush the link's
   directory;
4. ``prune()``: rename a generation to ``.trash-<N>-<pid>`` (one step: a reader sees it whole or not at
   all), then delete it; or, for a view that asks (``spare=True``), rename the newest pruned one to
   ``.spare`` and remove its record: no longer a generation nor a GC root, its directory is what the next
   ``stage(reuse=True)`` starts from (renamed to the staging name), so that a view of thousands of entries
   that mostly stay the same changes the few that differ instead of deleting and making them all again.

So after a power cut the link points at a complete generation, the old one or the new one.
"""

import json
import os
import shutil
import stat
import time

from sitedist.core.durable import current_umask, flush_tree, fsync_dir, write_atomic
from sitedist.core.processes import pid_alive


SPARE = ".spare"   # a pruned generation's directory, kept for the next stage(reuse=True)


class Generations:
    """The numbered generations in ``directory`` of one view, selected by the symlink ``link``.

    ``record``: the record's path inside a generation. ``read(generation dir)`` gives a generation's
    record or None (no record); it raises the view's own error for an unreadable one."""

    def __init__(self, directory, link, record, read=None):
        self.directory = os.path.abspath(directory)
        self.link = os.path.abspath(link)
        self.record = record
        self.read = read or self._read

    def _read(self, path):
        try:
            with open(os.path.join(path, self.record), encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    # --- what there is ---------------------------------------------------------------------------

    def path(self, number):
        return os.path.join(self.directory, str(number))

    def numbers(self):
        """The generation numbers present, ascending."""
        return numbers(self.directory)

    def current(self):
        """The number of the generation the link points at, or None."""
        return generation_of(self.link)

    def previous(self, current=None):
        """The newest generation older than ``current`` (default: the current one), or None."""
        current = self.current() if current is None else current
        earlier = [n for n in self.numbers() if current is not None and n < current]
        return earlier[-1] if earlier else None

    def records(self):
        """[(number, directory, record)] of the generations, oldest first (``{}`` for no record)."""
        return [(n, self.path(n), self.read(self.path(n)) or {}) for n in self.numbers()]

    def referenced(self, skip=()):
        """What the generations (and one being written) reference, except the numbers in ``skip``:
        (artifact prefixes, [numbered generations without a record]). A generation pruned since the
        listing is skipped."""
        live, unknown = set(), []
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return live, unknown
        for name in names:
            path = os.path.join(self.directory, name)
            if name.startswith(".trash-") or (name.isdigit() and int(name) in skip) or not os.path.isdir(path):
                continue
            record = self.read(path)
            if record is not None:
                live.update(record["prefixes"])
            elif name.isdigit() and os.path.isdir(path):
                unknown.append(name)   # a staging directory before its record references nothing yet
        return live, unknown

    # --- writing a generation --------------------------------------------------------------------

    def stage(self, reuse=False):
        """(number, staging directory) of a new generation, the directory created empty; with ``reuse``,
        the spare a prune kept, if this process made it (see :func:`_own_tree`: another admin's is left
        alone), renamed to it as it is (the view makes it what it must be: nothing in it is trusted)."""
        number = max(self.numbers(), default=0) + 1
        stage = os.path.join(self.directory, f".staging-{number}-{os.getpid()}")
        spare = os.path.join(self.directory, SPARE)
        umask = current_umask() if reuse else None
        if reuse and _own_tree(spare, umask):
            try:
                os.rename(spare, stage)
            except OSError:   # another publisher took it; a sticky directory refuses it: a new stage
                pass
            else:
                if _own_tree(stage, umask, below=False):   # still what was checked, not a swapped-in link
                    return number, stage
                if os.path.islink(stage):
                    os.unlink(stage)
                else:   # removed by the next remove_leftovers
                    os.rename(stage, os.path.join(self.directory, f".trash-spare-{os.getpid()}"))
        os.makedirs(stage)
        return number, stage

    def write_record(self, stage, record):
        """Write the record of the generation being staged in ``stage``: from now on a GC root."""
        path = os.path.join(stage, self.record)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # a key per line, each value on one (indent= takes json's pure-Python encoder: 10 ms for a
        # module tree's 10,000 prefixes, against 1 ms)
        text = ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in record.items())
        write_atomic(path, "{\n" + text + "\n}\n")

    def commit(self, stage, number):
        """Make the staged generation ``number`` durable and give it its number; return its path."""
        flush_tree(stage)
        final = self.path(number)
        os.rename(stage, final)
        fsync_dir(self.directory)
        return final

    def switch(self, number):
        """Point the link at generation ``number`` (OSError if the link's path is not a symlink)."""
        point(self.link, os.path.relpath(self.path(number), os.path.dirname(self.link)))

    # --- removing generations --------------------------------------------------------------------

    def select_pruned(self, keep=None, older_than=None, now=None):
        """Generation numbers a retention rule removes: not the current one, not among the newest
        ``keep``, and (with ``older_than``, in seconds) created longer ago than that (the record's
        ``created``). No rule: none."""
        if keep is None and older_than is None:
            return []
        current = self.current()
        present = self.records()
        newest = {n for n, _, _ in present[::-1][:keep]} if keep else set()
        cutoff = (now or time.time()) - older_than if older_than is not None else None
        return [n for n, _, record in present if n != current and n not in newest
                and (cutoff is None or record.get("created", 0.0) < cutoff)]

    def prune(self, selected, spare=False):
        """Remove the generations ``selected`` (never the current one); return those removed. ``spare``:
        the newest of them becomes the spare (see the module docstring) unless there is one already."""
        current = self.current()
        removed = [n for n in selected if n != current]
        deleted = removed
        spare_dir = os.path.join(self.directory, SPARE)
        if spare and removed and not os.path.lexists(spare_dir):
            os.rename(self.path(removed[-1]), spare_dir)   # one step: a generation, then not one
            try:
                os.unlink(os.path.join(spare_dir, self.record))   # nor a GC root (until then: one too many)
            except FileNotFoundError:
                pass
            deleted = removed[:-1]
        remove_generations(self.directory, deleted)
        return removed

    def remove_leftovers(self, all_staging=False):
        remove_leftovers(self.directory, all_staging)


def point(link, target):
    """Make ``link`` a symlink to ``target`` in one rename; OSError if ``link`` is not a symlink."""
    if os.path.lexists(link) and not os.path.islink(link):
        raise IsADirectoryError(f"{link} exists and is not a symlink")
    _remove_stale_tmp(link)
    tmp = f"{link}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except OSError:
        os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(link)))


def _remove_stale_tmp(link):
    """Remove the temporary links of switches killed half-way (``<link>.tmp-<pid>`` of a dead pid)."""
    directory, base = os.path.split(os.path.abspath(link))
    for name in os.listdir(directory):
        pid = name[len(base) + 5:] if name.startswith(base + ".tmp-") else ""
        if pid.isdigit() and not pid_alive(int(pid)):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def _own_tree(path, umask, below=True):
    """Whether ``path`` and (``below``) every directory under it is a directory (not a link) this process
    owns, writable by nobody else beyond what the umask lets it give: what a stage of its own would be.
    Root owns what root made, like anyone: it never takes a directory another user could change."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022 & umask:
        return False
    if not below:
        return True
    try:
        with os.scandir(path) as entries:
            under = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return False
    return all(_own_tree(d, umask) for d in under)


def remove_generations(gens_dir, numbers_):
    """Remove the generations ``numbers_``: each renamed into the trash first, then deleted."""
    for n in numbers_:
        trash = os.path.join(gens_dir, f".trash-{n}-{os.getpid()}")
        os.rename(os.path.join(gens_dir, str(n)), trash)
        shutil.rmtree(trash, ignore_errors=True)


def remove_leftovers(gens_dir, all_staging=False):
    """Remove what killed publishers and prunes left: trash, and the staging directories of dead
    processes (``all_staging``: every one, for a caller holding the tree's lock)."""
    for name in os.listdir(gens_dir):
        if name.startswith(".trash-") or (name.startswith(".staging-") and (
                all_staging or not pid_alive(int(name.rsplit("-", 1)[1])))):
            shutil.rmtree(os.path.join(gens_dir, name), ignore_errors=True)


def generation_of(link):
    """The generation number a switch symlink points at, or None."""
    try:
        name = os.path.basename(os.readlink(link))
    except OSError:
        return None
    return int(name) if name.isdigit() else None


def numbers(gens_dir):
    """The generation numbers present in ``gens_dir``, ascending."""
    try:
        return sorted(int(n) for n in os.listdir(gens_dir) if n.isdigit())
    except FileNotFoundError:
        return []
