"""The software catalog page, published with every module tree: opened in real headless Chromium, its load
lines followed in real Lmod and Environment Modules 5, compared with Lmod's own spider, rolled back with
its tree, and fed hostile text that must show as text and never run."""

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from browser import artifact_dir, chromium
from conftest import RECIPES, run_cli, site_config
from modtools import LMOD_INIT, ModuleShell, em5_init, make_prefix  # noqa: F401 (em5_init is a fixture)
from test_modules_hierarchy import GCC, aid, build_stack

from sitedist.modules import ModuleEntry, publish, rollback
from sitedist.modules.catalog import json_for_html
from sitedist.spec.schema import root_var

SITE = {"site_name": "Example HPC", "logo_text": "EX", "help_url": "https://example.org/help"}
LINES = {"module load gcc/12.2.0 openmpi/4.1.4 mpihello/1.0", "module load gcc/12.2.0 mpich/4.0.2 mpihello/1.0"}


def package(store, name, version, **kw):
    a = aid(name, version, kw.get("toolchain", ""), kw.get("description", ""))
    prefix, subdirs = make_prefix(store, name, version, a)
    return ModuleEntry(name=name, version=version, prefix=prefix, artifact_id=a, subdirs=subdirs, **kw)


def example_entries(tmp):
    """The hierarchical example stack (gcc; openmpi and mpich; mpihello with each MPI; fftw; zlib hidden as
    an implicit dependency), plus an older fftw and a release candidate of a newer one, and a Core library
    with a homepage."""
    stack = build_stack(tmp)
    store = tmp / "store"
    extra = [package(store, "fftw", "3.3.9", compiler=GCC, toolchain="gcc"),
             package(store, "fftw", "3.4rc1", compiler=GCC, toolchain="gcc"),
             package(store, "libdemo", "2.1", description="Demo library for PNG images",
                     homepage="https://example.org/libdemo", keywords=("graphics",),
                     link_depends=(("zlib", "1.3", stack["zlib"].artifact_id),))]
    return stack, list(stack.values()) + extra


def tree_config(tmp, **kw):
    return {"root": str(tmp / "modules"), "layout": "hierarchical", "formats": ["lua", "tcl"],
            "defaults": {"mpihello": "1.0"}, "catalog": dict(SITE), **kw}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("catalog")
    stack, entries = example_entries(tmp)
    result = publish(entries, tree_config(tmp))
    data = json.loads((tmp / "modules" / "catalog" / "catalog.json").read_text())
    return tmp, stack, result, data


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as d:
        yield d


def open_page(driver, path):
    driver.get(Path(path).as_uri())
    assert driver.execute_script("return document.documentElement.getAttribute('data-ready')") == "1"


def shown(driver):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#list > li')).map(li => li.getAttribute('data-name'))")


def search(driver, text):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, "q")
    box.send_keys(Keys.ESCAPE)   # the page's own clearing key
    box.send_keys(text)
    return shown(driver)


def click(driver, element):
    """Click like a user who scrolled the element to the middle of the screen (the search bar is sticky)."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def wait_rendered(driver, names):
    """Wait until the opened packages ``names`` show their builds (the page renders them on 'toggle', which
    the browser fires after the click returns)."""
    from selenium.webdriver.support.ui import WebDriverWait

    css = ", ".join(f"li[data-name='{n}'] .build" for n in names)
    WebDriverWait(driver, 10).until(
        lambda d: len({e.find_element("xpath", "ancestor::li").get_attribute("data-name")
                       for e in d.find_elements("css selector", css)}) == len(names))


def builds(data):
    return [(p, v, b) for p in data["packages"] for v in p["versions"] for b in v["builds"]]


def test_page_search_load_lines_keyboard_and_phone(tree, driver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    tmp, stack, result, data = tree
    open_page(driver, tmp / "modules" / "catalog" / "index.html")   # the stable link, from file://
    everything = ["fftw", "gcc", "libdemo", "mpich", "mpihello", "openmpi"]
    assert shown(driver) == everything            # zlib is an implicit dependency: hidden, as in avail
    assert driver.find_element(By.ID, "count").text == "6 of 6 packages"
    assert driver.find_element(By.CSS_SELECTOR, ".logo").text == "EX"
    assert driver.find_element(By.CSS_SELECTOR, ".site").text == "Example HPC"
    assert driver.find_element(By.ID, "help").get_attribute("href") == "https://example.org/help"
    # search as you type: name anywhere, description and keyword words from their start
    assert search(driver, "hello") == ["mpihello"]
    assert search(driver, "png") == ["libdemo"]              # a word of the description
    assert search(driver, "graph") == ["libdemo"]            # the start of a keyword of its recipe
    assert search(driver, "mpi") == ["mpich", "mpihello", "openmpi"]
    assert search(driver, "mpich") == ["mpich", "mpihello"]  # mpihello has an mpich build (keyword)
    assert search(driver, "gcc 3.3") == [] and driver.find_element(By.ID, "none").is_displayed()
    assert search(driver, "FFT") == ["fftw"]
    assert driver.find_element(By.ID, "count").text == "1 of 6 packages"
    # versions and toolchains at a glance, the default marked
    chips = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "li[data-name=fftw] summary .chip")]
    assert chips == ["3.4rc1", "3.3.10 (default)", "3.3.9", "gcc 12.2.0"]
    # keyboard: '/' focuses the search box, Tab reaches a package, Enter opens it
    body = driver.find_element(By.TAG_NAME, "body")
    search(driver, "")
    body.click()
    body.send_keys("/")
    assert driver.switch_to.active_element.get_attribute("id") == "q"
    driver.switch_to.active_element.send_keys("mpihello", Keys.TAB)
    focused = driver.switch_to.active_element
    assert focused.tag_name == "summary" and "mpihello" in focused.text
    focused.send_keys(Keys.ENTER)
    wait_rendered(driver, ["mpihello"])
    item = driver.find_element(By.CSS_SELECTOR, "li[data-name=mpihello] details")
    assert item.get_attribute("open") is not None
    lines = {}
    for code in item.find_elements(By.CSS_SELECTOR, "code.cmd"):
        lines.setdefault(code.get_attribute("data-tool"), set()).add(code.text)
    assert lines == {"lmod": LINES, "environment-modules": LINES}
    assert "Depends on\nzlib 1.3" in item.text and "compiler gcc 12.2.0, MPI openmpi 4.1.4" in item.text
    assert "(library)" not in item.text
    # the copy button puts the exact line on the clipboard
    driver.execute_cdp_cmd("Browser.grantPermissions", {"permissions": ["clipboardReadWrite",
                                                                        "clipboardSanitizedWrite"]})
    button = item.find_element(By.CSS_SELECTOR, ".build .copy")
    line = button.find_element(By.XPATH, "preceding-sibling::code").text
    button.click()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: button.get_attribute("data-copied"))   # the copy has finished
    assert button.get_attribute("data-copied") == "yes"
    copied = driver.execute_async_script(
        "const done = arguments[0]; navigator.clipboard.readText().then(done, e => done('ERROR ' + e))")
    assert copied == line
    driver.save_screenshot(str(artifact_dir() / "catalog-desktop.png"))
    search(driver, "libdemo")
    click(driver, driver.find_element(By.CSS_SELECTOR, "li[data-name=libdemo] summary"))
    wait_rendered(driver, ["libdemo"])
    assert "Depends on\nzlib 1.3 (library)" in driver.find_element(By.CSS_SELECTOR, "li[data-name=libdemo]").text
    # readable on a phone: nothing wider than the screen
    driver.set_window_size(390, 844)
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    driver.save_screenshot(str(artifact_dir() / "catalog-phone.png"))
    driver.set_window_size(1100, 900)
    # following each load line from the page in a fresh Lmod shell loads that build
    sh = ModuleShell.lmod(data["tools"]["lmod"]["modulepath"], tmp_path)
    prefixes = {stack["hello_ompi"].prefix, stack["hello_mpich"].prefix}
    for line in lines["lmod"]:
        env = sh.run(f"{line}; snap s").snaps["s"]
        assert env["MPIHELLO_ROOT"] in prefixes and env["ZLIB_ROOT"] == stack["zlib"].prefix
        prefixes.remove(env["MPIHELLO_ROOT"])
        assert ("openmpi" in line) == (env["LMOD_FAMILY_MPI"] == "openmpi")
    assert not prefixes


def test_page_works_from_a_static_web_server_and_fetches_nothing(tree, driver):
    import functools
    import http.server
    import threading

    tmp, stack, result, data = tree
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp / "modules" / "catalog")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        driver.get(f"http://127.0.0.1:{server.server_port}/#q=fftw")   # a shared search link
        assert shown(driver) == ["fftw"]
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
        assert search(driver, "gcc") == ["fftw", "gcc", "mpihello"]   # built with gcc (keyword)
        assert driver.current_url.endswith("/#q=gcc")
    finally:
        server.shutdown()
        server.server_close()
    assert requests == ["/"]   # the page alone: no script, style, font, icon or data fetched


@pytest.mark.parametrize("tool", ["lmod", "em5"])
def test_every_load_line_loads_its_build(tree, tool, tmp_path, request):
    tmp, stack, result, data = tree
    key = "lmod" if tool == "lmod" else "environment-modules"
    init = LMOD_INIT if tool == "lmod" else request.getfixturevalue("em5_init")
    sh = ModuleShell(init, data["tools"][key]["modulepath"], tmp_path)
    script = []
    rows = builds(data)
    for i, (p, v, b) in enumerate(rows):
        script.append(f"{b['load'][key]}; snap b{i}; module purge")
    r = sh.run("\n".join(script))
    assert len(rows) == 9    # gcc, openmpi, mpich (under gcc), mpihello x2, fftw x3, libdemo; no zlib
    for i, (p, v, b) in enumerate(rows):
        assert r.snaps[f"b{i}"][root_var(b["package"], b["kind"])] == b["prefix"], b["load"][key]


def _spider(modulepath, tmp_path):
    sh = ModuleShell.lmod(modulepath, tmp_path)
    out = sh.run("$LMOD_DIR/spider -o jsonSoftwarePage $MODULEPATH 2>/dev/null").stdout
    return json.loads(out)


def test_catalog_agrees_with_lmod_spider(tree, tmp_path):
    tmp, stack, result, data = tree
    for fmt in ("lua", "tcl"):
        spider = {p["package"]: p for p in _spider(result.modulepath[fmt], tmp_path) if p["versions"]}
        ours = {p["name"]: p for p in data["packages"]}
        assert sorted(spider) == sorted(ours)
        for name, sp in spider.items():
            mine = ours[name]
            assert sp["defaultVersionName"] == mine["default"], name
            assert sorted({v["versionName"] for v in sp["versions"]}) == sorted(v["version"] for v in mine["versions"])
            theirs = sorted((v["full"], v["markedDefault"], tuple(v.get("parent", [[]])[0]))
                            for v in sp["versions"])
            assert theirs == sorted((b["module"], v["marked_default"], tuple(b["prerequisites"]))
                                    for v in mine["versions"] for b in v["builds"]), name
            for v in sp["versions"]:   # every place spider found a module, our load line goes through
                assert any(list(parents) in [b["prerequisites"] for _, _, b in builds({"packages": [mine]})]
                           for parents in v.get("parent", [[]]))
    assert ours["mpihello"]["versions"][0]["marked_default"] and not ours["fftw"]["versions"][0]["marked_default"]
    # numeric order, as Lmod's (3.3.10 is newer than 3.3.9), and the release over a newer release candidate
    assert ours["fftw"]["default"] == "3.3.10" and ours["fftw"]["versions"][1]["marked_default"]


def test_rollback_rolls_the_catalog_back_and_a_change_shows(driver, tmp_path):
    from selenium.webdriver.common.by import By

    stack, entries = example_entries(tmp_path)
    cfg = tree_config(tmp_path)
    first = publish(entries, cfg)
    page = tmp_path / "modules" / "catalog" / "index.html"
    newer = package(tmp_path / "store", "fftw", "3.3.11", compiler=GCC, toolchain="gcc",
                    description="Fastest Fourier Transform in the West")
    changed = [replace(e, description="Fastest Fourier Transform in the West")
               if e.name == "fftw" else e for e in entries] + [newer]
    second = publish(changed, cfg)
    assert second.generation == first.generation + 1
    open_page(driver, page)
    assert search(driver, "fourier") == ["fftw"]
    chips = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "li[data-name=fftw] summary .chip")]
    assert chips == ["3.4rc1", "3.3.11 (default)", "3.3.10", "3.3.9", "gcc 12.2.0"]
    assert driver.find_element(By.CSS_SELECTOR, "li[data-name=fftw] .desc").text == \
        "Fastest Fourier Transform in the West"
    rollback(cfg["root"])
    data = json.loads((tmp_path / "modules" / "catalog" / "catalog.json").read_text())
    assert data["generation"] == first.generation
    fftw = next(p for p in data["packages"] if p["name"] == "fftw")
    assert [v["version"] for v in fftw["versions"]] == ["3.4rc1", "3.3.10", "3.3.9"] and fftw["description"] == ""
    open_page(driver, page)
    assert search(driver, "fourier") == []
    assert search(driver, "fftw") == ["fftw"]
    assert driver.find_element(By.CSS_SELECTOR, "li[data-name=fftw] .chip.def").text == "3.3.10 (default)"


def test_a_long_catalog_shows_a_page_of_rows_then_more_and_search_reaches_every_package(driver, tmp_path):
    from selenium.webdriver.common.by import By

    store = tmp_path / "store"
    entries = [package(store, f"pkg{i:03d}", "1.0", description=f"number {i}") for i in range(250)]
    publish(entries, {"root": str(tmp_path / "modules"), "formats": ["lua"]})
    open_page(driver, tmp_path / "modules" / "catalog" / "index.html")
    assert len(shown(driver)) == 100 and driver.find_element(By.ID, "count").text == "250 of 250 packages"
    more = driver.find_element(By.CSS_SELECTOR, "button.more")
    assert more.text == "Show more (150 not shown)"
    from selenium.webdriver.support.ui import WebDriverWait

    for rows in (200, 250):   # the reader scrolls to the end of the list: the next rows come
        driver.execute_script("arguments[0].scrollIntoView()", more)
        WebDriverWait(driver, 10).until(lambda d: len(shown(d)) == rows)
    assert shown(driver)[:3] == ["pkg000", "pkg001", "pkg002"]
    assert search(driver, "pkg249") == ["pkg249"] and not more.is_displayed()
    assert search(driver, "number") == [f"pkg{i:03d}" for i in range(100)]


HOSTILE = ("</script><script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\">"
           "<!-- ' \" &amp; \u2028 ${x} {{ 7*7 }}")


def test_hostile_text_is_shown_as_text_and_never_runs(driver, tmp_path):
    from selenium.webdriver.common.by import By

    store = tmp_path / "store"
    entries = [package(store, "evil", "1.0", description=HOSTILE, homepage="javascript:window.pwned=3"),
               package(store, "evil2", "1.0", description="two", homepage="JaVaScRiPt:window.pwned=4"),
               package(store, "evil3", "1.0", description="three",
                       homepage="https://example.org/\"><script>window.pwned=5</script>"),
               package(store, "good", "1.0", description="fine", homepage="https://example.org/good?a=1&b=2")]
    cfg = {"root": str(tmp_path / "modules"), "layout": "flat", "formats": ["lua"],
           "catalog": {"site_name": "</title><script>window.pwned=6</script>", "logo_text": "<b>EX</b>"}}
    publish(entries, cfg)
    page = tmp_path / "modules" / "catalog" / "index.html"
    html = page.read_text()
    assert "window.pwned" in html and "<script>window.pwned" not in html and "<img" not in html
    open_page(driver, page)
    for summary in driver.find_elements(By.CSS_SELECTOR, "#list summary"):
        click(driver, summary)
    wait_rendered(driver, ["evil", "evil2", "evil3", "good"])
    desc = driver.find_element(By.CSS_SELECTOR, "li[data-name=evil] .desc")
    assert driver.execute_script("return arguments[0].textContent", desc) == HOSTILE
    assert driver.title == "</title><script>window.pwned=6</script> Software catalog"
    assert driver.find_element(By.CSS_SELECTOR, ".logo").text == "<b>EX</b>"
    links = {a.text: a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#list a")}
    assert links == {"https://example.org/good?a=1&b=2": "https://example.org/good?a=1&b=2"}
    home_elements = driver.find_elements(By.CSS_SELECTOR, "#list .home")
    homes = [e.text for e in home_elements]
    assert "Homepage: javascript:window.pwned=3" in homes and "Homepage: JaVaScRiPt:window.pwned=4" in homes
    assert any("<script>window.pwned=5</script>" in h for h in homes)
    assert not driver.find_elements(By.CSS_SELECTOR, "#list img, #list script")
    for element in home_elements:   # clicking the shown text of a javascript: homepage does nothing either
        if "example.org/good" not in element.text:
            click(driver, element)
    assert driver.execute_script("return typeof window.pwned") == "undefined"
    search(driver, "onerror")
    assert driver.execute_script("return typeof window.pwned") == "undefined"
    driver.save_screenshot(str(artifact_dir() / "catalog-hostile.png"))
    # defence in depth: a script that got into the page anyway would not run (the policy names the
    # page's own script by its hash), while the page's own script still does
    injected = tmp_path / "injected.html"
    injected.write_text(html.replace("<main>", "<main><script>window.pwned=7</script>"
                                               "<img src=x onerror=\"window.pwned=8\">", 1))
    open_page(driver, injected)
    assert driver.find_element(By.ID, "count").text == "4 of 4 packages"
    assert driver.execute_script("return typeof window.pwned") == "undefined"


def test_embedded_json_cannot_close_its_script_element():
    text = json_for_html(json.dumps({"d": "</script><!--<script>&\u2028\u2029"}, ensure_ascii=False))
    assert not set(text) & set("<>&\u2028\u2029")
    assert json.loads(text) == {"d": "</script><!--<script>&\u2028\u2029"}


def test_site_template_overrides_the_page(tmp_path):
    site = tmp_path / "site-templates"
    site.mkdir()
    (site / "catalog.html.j2").write_text('{% extends "builtin/catalog.html.j2" %}\n'
                                          '{% block intro %}<p id="intro">Ask {{ site.name }} support.</p>'
                                          '{% endblock %}\n')
    store = tmp_path / "store"
    cfg = {"root": str(tmp_path / "modules"), "formats": ["tcl"], "templates": str(site),
           "catalog": {"site_name": "Ex & Co"}}
    publish([package(store, "tool", "1.0")], cfg)
    html = (tmp_path / "modules" / "catalog" / "index.html").read_text()
    assert '<p id="intro">Ask Ex &amp; Co support.</p>' in html
    data = json.loads((tmp_path / "modules" / "catalog" / "catalog.json").read_text())
    assert list(data["tools"]) == ["lmod", "environment-modules"]   # Lmod reads the Tcl tree too
    assert data["tools"]["lmod"]["modulepath"] == str(tmp_path / "modules" / "tcl")
    # turning the catalog off publishes a generation without one
    other = tmp_path / "other"
    publish([package(store, "tool", "1.0")], {**cfg, "root": str(other), "catalog": {"enabled": False}})
    assert not os.path.lexists(other / "catalog") and not os.path.lexists(other / "current" / "catalog")
    # and disabling it later leaves the stable link pointing at nothing, not at an old catalog
    publish([package(store, "tool", "1.0")], {**cfg, "catalog": {"enabled": False}})
    assert not (tmp_path / "modules" / "catalog").exists()


def test_sync_publishes_the_catalog_and_the_command_copies_it(shared_store, tmp_path):
    www = tmp_path / "www"
    config = site_config(tmp_path, {"hello": None, "libpng": None}, store=shared_store, extra=(
        f"modules: {{root: {tmp_path}/modules, catalog: {{site_name: Example HPC, help_url: /help/}}}}\n"))
    run_cli("sync", "-j", "2", config)
    out = run_cli("catalog", config).stdout
    assert out.startswith(f"{os.path.realpath(tmp_path / 'modules' / 'generations' / '1' / 'catalog')}/index.html:")
    out = run_cli("catalog", config, "--output", www).stdout
    assert out == f"{www}/index.html: generation 1, 3 packages\n"   # hello, libpng and the host compiler
    for name in ("catalog.json", "index.html"):
        assert (www / name).read_bytes() == (tmp_path / "modules" / "catalog" / name).read_bytes()
    data = json.loads((www / "catalog.json").read_text())
    p = next(p for p in data["packages"] if p["name"] == "hello")
    (b,) = p["versions"][0]["builds"]
    assert p["name"] == "hello" and p["link"] == "https://www.gnu.org/software/hello/"
    assert b["load"] == {"lmod": "module load hello/2.10", "environment-modules": "module load hello/2.10"}
    assert b["built"] and b["target"] and b["id"] in b["prefix"]
    assert data["site"] == {"name": "Example HPC", "logo": "", "help_url": "/help/"}
    assert {"greeting", "example"} <= set(p["keywords"])                 # the recipe's keywords
    png = next(p for p in data["packages"] if p["name"] == "libpng")["versions"][0]["builds"][0]
    assert [(d["name"], d["kind"]) for d in png["depends"]] == [("zlib", "link")]
    assert "zlib" not in [p["name"] for p in data["packages"]]           # implicit: hidden, as in avail


def test_a_hostile_keyword_is_a_recipe_error(tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    text = (Path(RECIPES) / "hello.yml").read_text().replace("keywords: [greeting, example]",
                                                               "keywords: [greeting, '<script>']")
    (recipes / "hello.yml").write_text(text)
    config = site_config(tmp_path, {"hello": None}, recipes=[recipes])
    proc = run_cli("sync", "--dry-run", config, check=False)
    line = text.splitlines().index("keywords: [greeting, '<script>']") + 1
    assert proc.returncode == 2 and f"hello.yml:{line}:" in proc.stderr and "keywords.1" in proc.stderr
    assert "no spaces, control characters, < or >" in proc.stderr


def test_a_javascript_help_url_is_a_config_error(tmp_path):
    config = site_config(tmp_path, {"hello": None}, extra=(
        f"modules: {{root: {tmp_path}/modules, catalog: {{help_url: 'javascript:alert(1)'}}}}\n"))
    proc = run_cli("sync", "--dry-run", config, check=False)
    assert proc.returncode == 2
    line = Path(config).read_text().splitlines().index(next(
        t for t in Path(config).read_text().splitlines() if "help_url:" in t)) + 1
    assert f"site.yml:{line}:" in proc.stderr and "modules.catalog.help_url" in proc.stderr
    assert "an http(s):// or mailto: URL, or a path on the web server" in proc.stderr
    assert not (tmp_path / "modules").exists()
