"""The order of versions: which is newest (a recipe's default version, the default compiler, a module's
default). One implementation, used everywhere versions are compared.

The rules are Spack's (spack.version.StandardVersion), which fit the versions HPC software uses
(``1.2.13.dfsg``, ``2.10``, ``1.0.8``, ``2024.05``, ``3.4.4-rc2``, ``5.4.1a``), where PEP 440
(``packaging``) refuses most of them and Debian's order puts ``2.0rc1`` above ``2.0``:

- A version is a sequence of numbers and words; ``.``, ``-``, ``_``, ``+`` and ``~`` separate them, and
  a change between digits and letters does too (``2.0rc1`` is 2, 0, rc, 1). Numbers compare as
  numbers (``2.10 > 2.9``, ``2024.05 < 2024.10``).
- A trailing ``alpha``/``a``, ``beta``/``b``, ``rc``/``pre`` or ``dev``, with or without a number, marks a
  pre-release of what precedes it: ``1.0.dev1 < 1.0a1 < 1.0alpha2 < 1.0b1 < 1.0rc1 < 1.0`` and
  ``1.14.0-beta < 1.14.0``. A bare ``a``/``b`` without a number is a letter release instead
  (``5.4.1a > 5.4.1``, like OpenSSL's ``1.1.1w``).
- Any other word sorts below a number in the same place and above the end of the version: post-releases
  and distribution suffixes come after their release and before the next one
  (``1.0 < 1.0.post1 < 1.0.1``, ``1.0 < 1.0-p2 < 1.0.1``, ``1.2.13 < 1.2.13.dfsg < 1.2.14``). Words compare
  alphabetically, ignoring case.
- ``develop``, ``main``, ``master``, ``head``, ``trunk`` and ``stable`` sort above every number, as in
  Spack.
- Versions that differ only in their separators or case keep a fixed order (by their text).

The default (:func:`newest`) is the newest release: a pre-release or a branch is chosen only when a
package has nothing else, so adding ``2.1-rc1`` to a recipe does not make it every site's build.
"""

import re

_PRERELEASE = {"dev": 0, "a": 1, "alpha": 1, "b": 2, "beta": 2, "pre": 3, "rc": 3}
_FINAL = 9
_INFINITY = ("stable", "trunk", "head", "master", "main", "develop")  # in increasing order
_PART = re.compile(r"[0-9]+|[A-Za-z]+")


def _component(part):
    if part.isdigit():
        return (1, int(part), "")
    word = part.lower()
    if word in _INFINITY:
        return (2, _INFINITY.index(word), "")
    return (0, 0, word)


def version_key(version):
    """A sort key: ``max(versions, key=version_key)`` is the newest."""
    parts = _PART.findall(str(version))
    prerelease = (_FINAL, 0)
    if len(parts) >= 3 and parts[-1].isdigit() and parts[-2].lower() in _PRERELEASE:
        prerelease = (_PRERELEASE[parts[-2].lower()], int(parts[-1]))
        parts = parts[:-2]
    elif len(parts) >= 2 and parts[-1].lower() in _PRERELEASE and parts[-1].lower() not in ("a", "b"):
        prerelease = (_PRERELEASE[parts[-1].lower()], 0)
        parts = parts[:-1]
    return (tuple(_component(p) for p in parts), prerelease, str(version))


def is_prerelease(version):
    return version_key(version)[1][0] != _FINAL


def is_branch(version):
    return any(c[0] == 2 for c in version_key(version)[0])


def newest(versions, key=None):
    """The version to use by default: the newest release, not a pre-release or branch (``develop``)
    unless there is nothing else. ``key`` gives the version of each item (default: the item)."""
    items = list(versions)
    key = key or (lambda item: item)
    releases = [i for i in items if not (is_prerelease(key(i)) or is_branch(key(i)))]
    return max(releases or items, key=lambda i: version_key(key(i)))


def version_matches(pin, version):
    """'4.1' matches '4.1.4' and '4.1.0' but not '4.10.1'; '4.1.4' matches only '4.1.4'."""
    want, have = re.split(r"[.-]", str(pin).strip()), re.split(r"[.-]", version)
    return bool(want[0]) and have[:len(want)] == want
