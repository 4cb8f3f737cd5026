"""Headless Chromium for the page tests: one launch recipe, one request guard, one recorder.

Every browser test opens its pages through `open_page`, which aborts (and records) any request
that would leave this machine, and collects console errors, failed requests and error responses
so a test ends with `recorder.assert_clean()`. `serve_twin` runs a real `twin serve` on a loopback
port. Chromium is Debian's (`apt-get install chromium`), driven by Python playwright, rendering
WebGL with SwiftShader.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
IMG = REPO / "docs" / "img"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
READY_MS = 240_000


def is_local(url: str) -> bool:
    """True for URLs that stay on this machine (data:, blob: and loopback http)."""
    parsed = urlparse(url)
    return parsed.scheme not in ("http", "https", "ws", "wss") or parsed.hostname in LOCAL_HOSTS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_twin(data: Path, log_path: Path, timeout_s: float = 60) -> Iterator[str]:
    """`twin serve` over `data` on a free loopback port; yields its base URL until the block ends."""
    port = free_port()
    with log_path.open("w") as log:
        command = [sys.executable, "-c", "from twin.cli import main; main()", "serve", "--data", str(data)]
        process = subprocess.Popen([*command, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert process.poll() is None, f"the server exited: see {log_path}"
                assert time.monotonic() < deadline, f"the server did not answer /health within {timeout_s:.0f} s"
                time.sleep(0.3)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=30)


def require(*files: Path, hint: str = "run make install") -> None:
    """Skip unless playwright, Debian chromium and the page's npm files are installed."""
    pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install chromium")
    for file in files:
        if not file.exists():
            pytest.skip(f"{file} is missing: {hint}")


@contextlib.contextmanager
def chromium(*needs: Path) -> Iterator:
    """A headless Chromium on SwiftShader (skips when it or the files `needs` are absent)."""
    require(*needs)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Recorder:
    """Everything the page asked for and said, to check that it stayed local and error-free."""

    def __init__(self, page) -> None:
        self.responses: list[tuple[int, str]] = []
        self.failed: list[str] = []
        self.foreign: list[str] = []
        self.errors: list[str] = []
        page.on("response", lambda r: self.responses.append((r.status, r.url)))
        page.on("requestfailed", self._failed)
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        # the guard: anything not local is aborted before it leaves, and remembered
        page.route(lambda url: not is_local(url), self._abort)

    def _abort(self, route) -> None:
        self.foreign.append(route.request.url)
        route.abort()

    def _failed(self, request) -> None:
        if is_local(request.url):
            self.failed.append(f"{request.url}: {request.failure}")

    def statuses(self, fragment: str) -> list[int]:
        return [status for status, url in self.responses if fragment in url]

    def assert_clean(self) -> None:
        assert not self.foreign, f"requests left this machine: {self.foreign[:5]}"
        assert not self.failed, f"failed requests: {self.failed[:5]}"
        assert not self.errors, f"console errors: {self.errors[:5]}"
        bad = [(s, u) for s, u in self.responses if s >= 400]
        assert not bad, f"error responses: {bad[:5]}"


def open_page(browser, viewport: dict[str, int]) -> tuple:
    """A new page guarded by a `Recorder`: (page, recorder)."""
    page = browser.new_page(viewport=viewport)
    return page, Recorder(page)


def wait_for(page, condition: str, error: str | None = None, timeout_ms: int = READY_MS) -> None:
    """Wait until the JavaScript expression `condition` holds; fail at once if `error` becomes truthy."""
    expression = f"({condition}) || !!({error})" if error else condition
    page.wait_for_function(expression, timeout=timeout_ms, polling=100)
    if error:
        assert not page.evaluate(error), page.evaluate(error)


def screenshot(page, name: str) -> Path:
    """Save the page in docs/img/NAME.png (kept for the README) and return the path."""
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / f"{name}.png"
    page.screenshot(path=str(path))
    return path
