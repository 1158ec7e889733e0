"""The portal's browser tests: Selenium drives Debian's chromium (`/usr/bin/chromium`
through `/usr/bin/chromedriver`, or GEOPERA_CHROMIUM / GEOPERA_CHROMEDRIVER) against a
real `geopera serve --demo` (the demo project, its items, token and local worker: what
`make serve` starts). Nothing is downloaded at test time: Selenium Manager is never asked.

Each test gets a fresh browser (`portal`, 1280x800 unless the test parametrizes
`viewport` with "phone": 390x844). Screenshots go to test-results/screenshots/; the
browser's console must stay free of errors (a test names the ones it expects, say the
401 of a revoked token, with `portal.allow_console(...)`).

Where no browser is installed every test here is skipped with one line saying so.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import TEST_SERVER_ENV
from tests.support.db import DatabaseFactory
from tests.support.server import ServerProcess

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-results" / "screenshots"
CHROMIUM = os.environ.get("GEOPERA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("GEOPERA_CHROMEDRIVER", "/usr/bin/chromedriver")
VIEWPORTS = {"desktop": (1280, 800), "phone": (390, 844)}
DEMO_PROJECT = "demo"
T = TypeVar("T")


def _missing_browser() -> str:
    """Why the browser tests cannot run here ("" when they can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (make install)"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (shutil.which(path) or os.access(path, os.X_OK)):
            return f"no {path} (apt-get install -y chromium chromium-driver; Debian package {package})"
    return ""


MISSING_BROWSER = _missing_browser()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not MISSING_BROWSER:
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason=f"browser tests skipped: {MISSING_BROWSER}")
    skipped = [item for item in items if here in Path(str(item.fspath)).parents]
    for item in skipped:
        item.add_marker(skip)
    config.stash[_SKIPPED_BROWSER_TESTS] = len(skipped)


_SKIPPED_BROWSER_TESTS = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The one line that says why (the skips themselves show only with -rs)."""
    count = config.stash.get(_SKIPPED_BROWSER_TESTS, 0)
    if count:
        terminalreporter.write_line(f"{count} browser tests skipped: {MISSING_BROWSER}", yellow=True)


# ---- the server ---------------------------------------------------------------------


@dataclass
class PortalServer:
    server: ServerProcess
    token: str

    @property
    def url(self) -> str:
        """The portal's address: the HTTP projection's root (what `make serve` prints)."""
        return self.server.http_url + "/"

    @property
    def address(self) -> str:
        return self.server.address

    def sdk(self, token: str | None = None) -> Any:
        from geopera_sdk import Client

        return Client(self.address, token or self.token)

    def make_token(self, scopes: list[str], projects: tuple[str, ...] = (DEMO_PROJECT,)) -> tuple[str, str]:
        """A user token (id, secret) with these scopes, made with `geopera admin`."""
        created = self.admin("token", "create", "--name", "browser-test", "--kind", "user",
                             *[arg for s in scopes for arg in ("--scope", s)],
                             *[arg for p in projects for arg in ("--project", p)])  # fmt: skip
        return created["token_id"], created["token"]

    def revoke(self, token_id: str) -> None:
        self.admin("token", "revoke", token_id)

    def admin(self, *args: str) -> Any:
        import subprocess
        import sys

        env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPERA_")}
        env.update({"GEOPERA_HOME": str(self.server.home), "GEOPERA_DATABASE_URL": self.server.database_url or ""})
        done = subprocess.run(
            [sys.executable, "-m", "geopera_kernel.server.cli", "admin", *args],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        return json.loads(done.stdout)


@pytest.fixture(scope="session")
def portal_server(
    database_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PortalServer]:
    if MISSING_BROWSER:
        pytest.skip(f"browser tests skipped: {MISSING_BROWSER}")
    home = tmp_path_factory.mktemp("portal")
    # A revoked token stops working within the token cache's time: half a second here.
    env = {**TEST_SERVER_ENV, "GEOPERA_TOKEN_CACHE_SECONDS": "0.5"}
    server = ServerProcess(
        database_url=database_factory.create(), home=home, extra_env=env, extra_args=["--demo"]
    ).start()
    try:
        deadline = time.monotonic() + 90
        # The demo token is written before the worker starts; both are part of "ready".
        while "connected as" not in server.log() or not (home / "demo-token").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the demo server's worker did not connect:\n{server.log()[-4000:]}")
            time.sleep(0.1)
        yield PortalServer(server, (home / "demo-token").read_text().strip())
    finally:
        server.stop()


# ---- the browser --------------------------------------------------------------------


@dataclass
class Portal:
    """One chromium window on the portal, with the waits and checks the tests share."""

    driver: Any
    base_url: str
    name: str
    viewport: str
    downloads: Path | None = None  # where the browser saves what it downloads
    allowed_console: list[re.Pattern[str]] = field(default_factory=list)
    console: list[dict[str, Any]] = field(default_factory=list)
    shots: int = 0

    def open(self, route: str = "") -> None:
        self.driver.get(self.base_url + route)

    def go(self, route: str) -> None:
        """Moves to a hash route in the loaded page (as a link would)."""
        self.driver.execute_script("location.hash = arguments[0]", route)

    def wait(self, condition: Callable[[], T], timeout: float = 30, what: str = "") -> T:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = condition()
                if value:
                    return value
            except Exception as exc:  # the page is still changing under us
                last = exc
            time.sleep(0.1)
        self.screenshot("timeout")
        raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}: {last}")

    def wait_ready(self, page: str, timeout: float = 30) -> None:
        """Until the router says `page` has drawn (body[data-ready])."""
        self.wait(lambda: self.driver.execute_script("return document.body.dataset.ready") == page, timeout,
                  f"page {page!r} to be ready (now {self.driver.execute_script('return location.hash')})")  # fmt: skip

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def visible(self, css: str) -> Any:
        return self.wait(lambda: next((e for e in self.find_all(css) if e.is_displayed()), None), what=css)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def js_async(self, script: str, *args: Any) -> Any:
        """Runs `script` with the page's `done` callback as its last argument."""
        return self.driver.execute_async_script(script, *args)

    def session_token(self) -> str | None:
        return self.js("return sessionStorage.getItem('geopera.token')")

    def sign_in(self, token: str, *, expect: str = "catalog") -> None:
        self.open("#/signin")
        self.wait_ready("signin")
        field = self.find("#token")
        field.clear()
        field.send_keys(token)
        self.find("#signin-submit").click()
        if expect:
            self.wait_ready(expect, timeout=60)

    def screenshot(self, label: str, *, full_page: bool = False, path: Path | None = None) -> Path:
        """The viewport (or the whole page) as a PNG in test-results/screenshots/ (or `path`)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.shots += 1
        path = path or SCREENSHOTS / f"{self.name}-{self.viewport}-{self.shots:02d}-{label}.png"
        if not full_page:
            self.driver.save_screenshot(str(path))
            return path
        width, height = VIEWPORTS[self.viewport]
        page_height = self.js("return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)")
        metrics = {"width": width, "height": max(height, page_height), "deviceScaleFactor": 1, "mobile": False}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        try:
            shot = self.driver.execute_cdp_cmd(
                "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
            )
            path.write_bytes(base64.b64decode(shot["data"]))
        finally:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        return path

    def allow_console(self, pattern: str) -> None:
        """A console error this test provokes on purpose (matched with re.search)."""
        self.allowed_console.append(re.compile(pattern))

    def collect_console(self) -> list[dict[str, Any]]:
        self.console += self.driver.get_log("browser")
        return self.console

    def console_errors(self) -> list[str]:
        return [
            entry["message"]
            for entry in self.collect_console()
            if entry["level"] == "SEVERE" and not any(p.search(entry["message"]) for p in self.allowed_console)
        ]


@pytest.fixture
def viewport() -> str:
    """1280x800; a test parametrizes it (`@pytest.mark.parametrize("viewport", ["desktop", "phone"])`)."""
    return "desktop"


def start_chromium(viewport: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    width, height = VIEWPORTS[viewport]
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--disable-extensions", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A given driver path means Selenium Manager is never run (it would download a browser).
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    # --window-size sets the window; the tests mean the viewport (the page's own size).
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    outer = driver.get_window_size()
    driver.set_window_size(outer["width"] + width - inner[0], outer["height"] + height - inner[1])
    driver.set_script_timeout(60)
    return driver


@pytest.fixture
def portal(
    portal_server: PortalServer, viewport: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Portal]:
    """A fresh chromium on the portal. After the test: a last screenshot, and no console
    error the test did not expect."""
    driver = start_chromium(viewport)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.originalname or request.node.name)
    page = Portal(driver, portal_server.url, name, viewport, downloads)
    try:
        yield page
        page.screenshot("end")
        errors = page.console_errors()
        assert not errors, "browser console errors:\n" + "\n".join(errors)
    finally:
        driver.quit()
