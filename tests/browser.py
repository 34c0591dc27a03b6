"""Real headless Chromium for tests and benchmarks, driven by Selenium through Debian's chromedriver.

    with chromium(tmp_path) as driver:
        driver.get("file:///.../index.html")

Screenshots go to ``artifact_dir()``: $SITEDIST_TEST_ARTIFACTS, else <repo>/_work/test-artifacts.
"""

import contextlib
import os
import shutil
from pathlib import Path

CHROMIUM = os.environ.get("SITEDIST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SITEDIST_CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--disable-extensions", "--disable-default-apps")


def artifact_dir():
    path = Path(os.environ.get("SITEDIST_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "_work"
                / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def chromium(profile_dir, width=1100, height=900):
    """A fresh headless Chromium (its own user data dir) with a WebDriver session; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"{path} is missing: install Debian's chromium and chromium-driver "
                               "(bash .ci/setup.sh does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + (f"--user-data-dir={profile_dir}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
