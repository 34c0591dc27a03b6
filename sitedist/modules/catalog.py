"""The software catalog: ``catalog.json`` and a self-contained ``index.html`` describing a module tree.

Written into every module-tree generation (``generations/<N>/catalog/``, reached as ``<root>/catalog``), so
the page switches and rolls back with the tree it describes. Built from the tree's plan: one package per
module name, every visible version (hidden and implicit modules are left out, as ``module avail`` leaves
them out), one build per place in the tree, each with the commands that load it from a fresh login,
hierarchy prerequisites included. The page's template is ``catalog.html.j2``, which a site overrides like
the modulefile templates (``modules.templates``).

The page trusts nothing in the data: the JSON is embedded with every ``<``, ``>`` and ``&`` escaped, the
page builds its DOM with ``textContent`` and links only http(s) homepages.
"""

import base64
import hashlib
import json
import os
import re
import time
from collections import defaultdict

from markupsafe import Markup

from sitedist.core.durable import write_atomic
from sitedist.core.store import META, MARKER
from sitedist.core.versions import version_key
from sitedist.errors import ModulesError
from sitedist.modules.render import FORMATS, Renderer
from sitedist.spec.schema import HELP_URL

CATALOG = "catalog"          # the directory in a generation, and the stable link <root>/catalog
JSON_NAME = "catalog.json"
HTML_NAME = "index.html"
INDEX_NAME = ".index.json"   # where each package's text is in catalog.json, for the next publish to reuse
TEMPLATE = "catalog.html.j2"
FORMAT_VERSION = 1
# tool -> the formats it reads, preferred first (Lmod reads Tcl modulefiles too; Environment Modules only Tcl)
TOOLS = {"lmod": ("lua", "tcl"), "environment-modules": ("tcl",)}
TOOL_LABELS = {"lmod": "Lmod", "environment-modules": "Environment Modules"}
_URL = re.compile(r"\Ahttps?://[^\s<>\"']+\Z", re.I)
# The inline scripts of a rendered page (its JSON data element, which never runs, is not one; nothing in the
# data can open or close a <script> element: json_for_html escapes every '<').
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\b(?:type=\"application/json\"|src=))[^>]*>(.*?)</script>", re.S | re.I)
_HASHES_TOKEN = "'sitedist-script-hashes'"
_DATA_TOKEN = "sitedist-catalog-data-b7f3c1"   # where the data goes in the page, for hashing its scripts first
# What JSON text must not hold inside a <script> element ('<' could close it or open a comment).
_JSON_ESCAPES = (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                 ("\u2029", "\\u2029"))


def enabled(config):
    return bool((config.get("catalog") or {}).get("enabled", True))


def built_time(prefix):
    """When the artifact was completed: its store marker's time (written once, by rename, as the last step
    of a build), or None (a host compiler or MPI, which is not built)."""
    try:
        return os.stat(f"{prefix}/{META}/{MARKER}").st_mtime
    except OSError:
        return None


def _iso(stamp):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp)) if stamp is not None else None


def _prerequisites(plan):
    """PlannedModule -> the full names a user loads before it (compiler, then MPI), from a fresh login."""
    openers = defaultdict(list)
    for m in plan.modules:
        if m.opens:
            openers[m.opens].append(m)

    def parent(m):
        if plan.layout != "hierarchical" or m.level in plan.roots:
            return None
        candidates = openers.get(m.level, [])
        want = m.entry.mpi if m.level.startswith("MPI/") else m.entry.compiler
        exact = [c for c in candidates if (c.entry.name, c.entry.version) == want]
        return (exact or candidates or [None])[0]

    out, chains = {}, {}
    for m in plan.modules:
        key = (m.level, m.entry.compiler, m.entry.mpi)   # what the chain depends on
        if key not in chains:
            chain, p, seen = [], parent(m), set()
            while p is not None and id(p) not in seen:
                seen.add(id(p))
                chain.append(p.fullname)
                p = parent(p)
            chains[key] = tuple(reversed(chain))
        out[id(m)] = chains[key]
    return out


def tools(config):
    """tool -> the MODULEPATH entry it reads, for the formats the tree is published in."""
    formats = list(config.get("formats", ["lua", "tcl"]))
    root = os.path.abspath(config["root"])
    sub = "/Core" if config.get("layout", "flat") == "hierarchical" else ""
    out = {}
    for tool, reads in TOOLS.items():
        fmt = next((f for f in reads if f in formats), None)
        if fmt:
            out[tool] = {"label": TOOL_LABELS[tool], "format": fmt, "modulepath": f"{root}/{FORMATS[fmt][0]}{sub}"}
    return out


def site(config):
    cat = dict(config.get("catalog") or {})
    help_url = str(cat.get("help_url") or "")
    if help_url and not re.fullmatch(HELP_URL, help_url):
        raise ModulesError(f"modules.catalog.help_url {help_url!r} is not an http(s) or mailto: URL or a path "
                           "on the web server ('/...' or './...'); fix it in the site config")
    return {"name": str(cat.get("site_name") or ""), "logo": str(cat.get("logo_text") or ""), "help_url": help_url}


def catalog_data(plan, config, generation=None, built=built_time):
    """The catalog of a planned tree as a JSON-ready dict (see admin_docs/catalog.md)."""
    packages = _Packages(plan, config, built)
    return {**packages.head(generation), "packages": [packages.package(name) for name in packages.names]}


class _Packages:
    """The catalog's packages of a planned tree, one at a time: what catalog_data and catalog_text share."""

    def __init__(self, plan, config, built=built_time):
        self.plan, self.config, self.built = plan, config, built
        self.prereqs = _prerequisites(plan)
        self.tools = tools(config)
        self.by_name = defaultdict(list)
        for m in plan.modules:
            if not m.hidden:
                self.by_name[m.name].append(m)
        self.names = sorted(self.by_name, key=str.lower)
        self.marked = defaultdict(set)
        for (_, name), version in plan.defaults.items():
            self.marked[name].add(version)
        self.dates = {}
        self.keys = {}
        self.salted = None

    def head(self, generation):
        return {"format": FORMAT_VERSION, "generation": generation, "generated": _iso(time.time()),
                "layout": self.plan.layout, "site": site(self.config), "tools": self.tools}

    def date(self, prefix):
        if prefix not in self.dates:
            self.dates[prefix] = _iso(self.built(prefix))
        return self.dates[prefix]

    def vkey(self, version):
        key = self.keys.get(version)
        if key is None:
            key = self.keys[version] = version_key(version)
        return key

    def package(self, name):
        mods, vkey = self.by_name[name], self.vkey
        marked = self.marked.get(name, ())
        versions = sorted({m.version for m in mods}, key=vkey, reverse=True)
        default = next((v for v in versions if v in marked), versions[0])
        first = max(mods, key=lambda m: vkey(m.version))
        keywords = set()
        vlist = []
        target = str(self.config.get("target") or "")
        for version in versions:
            builds = []
            for m in (m for m in mods if m.version == version):
                e = m.entry
                prereqs = self.prereqs[id(m)]
                line = " ".join(("module", "load") + prereqs + (m.fullname,))
                builds.append({
                    "module": m.fullname, "package": e.name, "package_version": e.version, "kind": e.kind,
                    "level": m.level, "toolchain": e.toolchain,
                    "compiler": " ".join(e.compiler) if e.compiler else "",
                    "mpi": " ".join(e.mpi) if e.mpi else "",
                    "options": [f"{k}={v}" for k, v in e.options],
                    "target": target,
                    "id": e.artifact_id, "prefix": e.prefix, "built": self.date(e.prefix),
                    "depends": [{"name": n, "version": v, "id": a, "kind": kind}
                                for kind, deps in (("link", e.link_depends), ("run", e.run_depends))
                                for n, v, a in deps],
                    "prerequisites": list(prereqs),
                    "load": {tool: line for tool in self.tools},
                })
                keywords.update(e.keywords)
                keywords.update(x for x in (e.name, e.toolchain, e.compiler and e.compiler[0],
                                             e.mpi and e.mpi[0], e.kind if e.kind != "package" else "") if x)
            builds.sort(key=lambda b: (b["prerequisites"], b["id"]))
            vlist.append({"version": version, "default": version == default, "marked_default": version in marked,
                          "builds": builds})
        homepage = first.entry.homepage if _URL.match(first.entry.homepage or "") else ""
        return {"name": name, "description": first.entry.description, "homepage": first.entry.homepage or "",
                "link": homepage, "keywords": sorted(keywords - {name}), "default": default, "versions": vlist}

    def key(self, name, salt, reprs, groups):
        """A digest of everything package ``name``'s JSON is made from (``reprs``: id(entry) -> repr;
        ``groups``: (level, name) -> a digest of the planned modules there, made by the publish)."""
        if self.salted is None:
            self.salted = repr((salt, FORMAT_VERSION, self.tools, str(self.config.get("target") or "")))
        parts = [self.salted, repr(sorted(self.marked.get(name, ())))]
        for m in self.by_name[name]:   # reprs hold no newline
            group = groups.get((m.level, m.name))
            parts += (group.hex() if group else reprs.get(id(m.entry)) or repr(m.entry),
                      repr((m.level, m.name, m.version, self.prereqs[id(m)], self.date(m.entry.prefix))))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def catalog_text(plan, config, generation=None, previous=None, salt="", reprs=None, groups=None, built=built_time):
    """(head, catalog.json's text, index) for a planned tree: ``catalog_data`` as JSON, where each package
    whose inputs equal those of a package in ``previous`` (a catalog directory written before) is that
    one's text, taken from its catalog.json as it is, not made again. ``salt``: a digest of the code and
    templates; ``index``: what a next publish reuses (name -> [key, start, end] in the text)."""
    packages = _Packages(plan, config, built)
    head = packages.head(generation)
    old_index, old_text = _read_index(previous)
    reprs = reprs or {}
    text = to_json(head)[:-1] + ',"packages":['
    parts, index, pos = [], {}, len(text)
    for name in packages.names:
        key = packages.key(name, salt, reprs, groups or {})
        was = old_index.get(name)
        part = old_text[was[1]:was[2]] if was and was[0] == key else to_json(packages.package(name))
        if parts:
            pos += 1   # the comma before it
        index[name] = [key, pos, pos + len(part)]
        pos += len(part)
        parts.append(part)
    return {**head, "packages": len(parts)}, text + ",".join(parts) + "]}", index


def _read_index(directory):
    """(index, catalog.json's text) of the catalog in ``directory``, or ({}, "") if it has none."""
    if not directory:
        return {}, ""
    try:
        with open(os.path.join(directory, INDEX_NAME), encoding="utf-8") as f:
            index = json.load(f)
        with open(os.path.join(directory, JSON_NAME), encoding="utf-8") as f:
            text = f.read()
    except (OSError, ValueError):
        return {}, ""
    if not isinstance(index, dict) or index.get("format") != FORMAT_VERSION:
        return {}, ""
    return index.get("packages") or {}, text


def to_json(data):
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def json_for_html(text):
    """JSON ``text`` made safe inside a <script type="application/json"> element: no '<', '>' or '&'
    (each becomes its \\u escape, which JSON.parse reads back as the same character)."""
    for char, escape in _JSON_ESCAPES:
        if char in text:
            text = text.replace(char, escape)
    return text


def render_page(data, renderer, text=None):
    """index.html for catalog ``data`` (``text``: its JSON, if made already; then ``data["packages"]`` may
    be their number), from the site's or the built-in catalog.html.j2. Its Content-Security-Policy lets
    only the template's own inline scripts run, named by their sha256: even text that got into the page as
    HTML could not run a script."""
    env = renderer.env.overlay(autoescape=True)
    packages = data["packages"] if isinstance(data["packages"], int) else len(data["packages"])
    json_text = json_for_html(text or to_json(data))

    def render(payload):
        try:
            template = env.get_template(TEMPLATE)
            return template.render(site=data["site"], data=Markup(payload), packages=packages,
                                   generated=data["generated"], script_src=Markup(_HASHES_TOKEN))
        except Exception as err:  # a site's template: jinja2 errors, or a bad filter use
            import jinja2

            if isinstance(err, jinja2.TemplateError):
                raise ModulesError(f"catalog template {TEMPLATE}: {err}; fix it in modules.templates") from None
            raise

    # The page is rendered with a placeholder for the data (megabytes) and its scripts hashed before the
    # data goes in, unless the placeholder is inside an inline script (a site's template): then whole.
    page = render(_DATA_TOKEN)
    scripts = _INLINE_SCRIPT.findall(page)
    if any(_DATA_TOKEN in script for script in scripts):
        page = render(json_text)
        scripts = _INLINE_SCRIPT.findall(page)
    else:
        page = page.replace(_DATA_TOKEN, json_text)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(m.encode()).digest()).decode()}'"
                      for m in scripts) or "'none'"
    return page.replace(_HASHES_TOKEN, hashes, 1)   # the first: the policy in <head>, before any data


def write_catalog(plan, config, directory, renderer=None, generation=None, previous=None, salt="", reprs=None,
                  groups=None):
    """Write ``catalog.json`` and ``index.html`` for ``plan`` into ``directory`` (made if missing), each by
    rename, readable by everyone, reusing the text of packages unchanged since the catalog in ``previous``
    (see :func:`catalog_text`). Returns the catalog's head (its ``packages``: how many)."""
    renderer = renderer or Renderer(config.get("templates"))
    head, text, index = catalog_text(plan, config, generation, previous, salt, reprs, groups)
    _write_files(directory, ((JSON_NAME, text), (HTML_NAME, render_page(head, renderer, text)),
                             (INDEX_NAME, to_json({"format": FORMAT_VERSION, "packages": index}))))
    return head


def _write_files(directory, files):
    """Write (name, text) files into ``directory``, each by rename, readable by everyone."""
    os.makedirs(directory, exist_ok=True)
    os.chmod(directory, 0o755)
    for name, text in files:
        write_atomic(os.path.join(directory, name), text, mode=0o644)


def copy_published(root, dest=None):
    """The current generation's catalog directory under module tree ``root`` and its data; with ``dest``,
    copy catalog.json and index.html there (each by rename: a web server never serves half a file)."""
    source = os.path.realpath(os.path.join(os.path.abspath(root), CATALOG))
    try:
        with open(os.path.join(source, JSON_NAME), encoding="utf-8") as f:
            text = f.read()
        data = json.loads(text)
        with open(os.path.join(source, HTML_NAME), encoding="utf-8") as f:
            page = f.read()
    except FileNotFoundError:
        raise ModulesError(f"no catalog is published in {root}: publish the module tree with 'sitedist modules "
                           "CONFIG' (every generation gets one unless modules.catalog.enabled is false)") from None
    except (OSError, ValueError) as err:
        raise ModulesError(f"the catalog in {source} is unreadable ({err}); publish the module tree again") \
            from None
    if dest:
        _write_files(dest, ((JSON_NAME, text), (HTML_NAME, page)))
    return source, data
