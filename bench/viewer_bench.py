"""The 3D viewer loading the demo district: first frame, all visible tiles, bytes transferred.

A real `twin serve` over a fresh demo district (its IFC building, pipes and buildings as 3D
Tiles) and headless Chromium on SwiftShader, as in the viewer tests. Each page is opened in a
fresh browser context (empty HTTP cache); the first run also warms the server's caches, so the
viewer is timed cold and warm. The baseline, measured in the same run, is the minimal 3D Tiles
preview page of the same root tileset (`/3dtiles/preview/twin`: CesiumJS and the tileset only,
no terrain, imagery or feature layers). Targets: first frame under 3 s, all visible tiles under
10 s. "All visible tiles" counts until every layer's first view is in and the page has drawn it
once at full resolution (the page loads at half resolution). The page's own clock, the layer
that came last, the longest frame and the slowest request say where the time went.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import report
from tests.browser import CHROMIUM, CHROMIUM_ARGS, serve_twin

TIMEOUT_MS = 300_000
VIEWPORT = {"width": 1280, "height": 800}


def _demo(folder: Path) -> Path:
    """A fresh demo district (its IFC building included) in `folder`."""
    data = folder / "twin-data"
    subprocess.run(
        [sys.executable, "-c", "from twin.cli import main; main()", "demo", "--no-serve", "--data", str(data)],
        check=True,
        capture_output=True,
    )
    return data


def _open(browser, url: str, ready: str, first_frame: str | None) -> dict:
    """Open `url` in a fresh context; seconds to first frame and to `ready`, and bytes received."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    finished: list = []
    page.on("requestfinished", lambda request: finished.append(request))
    start = time.perf_counter()
    page.goto(url)
    if first_frame:
        page.wait_for_function(first_frame, timeout=TIMEOUT_MS, polling=100)
    frame = time.perf_counter() - start
    page.wait_for_function(ready, timeout=TIMEOUT_MS, polling=100)
    loaded = time.perf_counter() - start
    inside = page.evaluate(PAGE_FIGURES) if first_frame else {}
    sizes = [request.sizes() for request in finished]
    served = [r for r in finished if r.url.startswith("http")]
    slowest = max(served, key=lambda r: r.timing["responseEnd"] - r.timing["requestStart"], default=None)
    context.close()
    received = sum(s["responseBodySize"] + s["responseHeadersSize"] for s in sizes)
    figures = {"first_frame": frame, "loaded": loaded, "bytes": received, "requests": len(sizes), **inside}
    if slowest is not None:
        timing = slowest.timing
        path = slowest.url.split("?")[0].rsplit("/", 4)[-4:]
        figures["slowest"] = (path, timing["responseEnd"] - timing["requestStart"])
    return figures


# where the page's own time goes: its clock (ms from navigation), each layer's first view, the longest frame
PAGE_FIGURES = """(() => {
  const v = window.twinViewer, gaps = v.frameMs.slice(1).map((t, i) => t - v.frameMs[i]);
  const layers = Object.entries(v.layerLoadedMs).sort((a, b) => b[1] - a[1]);
  return { page_first_frame_ms: v.firstFrameMs, page_loaded_ms: v.tilesLoadedMs, frames: v.frames,
           longest_frame_ms: Math.max(0, ...gaps), last_layer: layers[0] };
})()"""


def run() -> None:
    report.heading("viewer: loading the demo district in headless Chromium (SwiftShader)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        data = _demo(Path(folder))
        with serve_twin(data, Path(folder) / "server.log") as base, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            viewer_ready = "window.twinViewer && twinViewer.tilesLoaded && twinViewer.fullFrameMs"
            cold = _open(browser, f"{base}/viewer/", viewer_ready, "window.twinViewer && twinViewer.firstFrame")
            warm = _open(browser, f"{base}/viewer/", viewer_ready, "window.twinViewer && twinViewer.firstFrame")
            preview = _open(browser, f"{base}/3dtiles/preview/twin", "window.previewState.ready", None)
            browser.close()
    for name, figures in (("viewer, cold server", cold), ("viewer, warm server", warm)):
        report.line(f"{name}: first frame", f"{figures['first_frame']:.2f} s (target < 3 s)")
        report.line(f"{name}: all visible tiles", f"{figures['loaded']:.2f} s (target < 10 s)")
        report.line(f"{name}: transferred", f"{figures['bytes'] / 1e6:.2f} MB in {figures['requests']} requests")
        report.line(
            f"{name}: page clock",
            f"first frame {figures['page_first_frame_ms'] / 1000:.2f} s, "
            f"loaded {figures['page_loaded_ms'] / 1000:.2f} s, {figures['frames']} frames, "
            f"longest {figures['longest_frame_ms'] / 1000:.2f} s",
        )
        layer, at = figures["last_layer"]
        report.line(f"{name}: last layer in", f"{layer} at {at / 1000:.2f} s")
        path, took = figures["slowest"]
        report.line(f"{name}: slowest request", f"{'/'.join(path)} {took / 1000:.2f} s")
    report.line("baseline preview page: tileset loaded", f"{preview['loaded']:.2f} s, {preview['bytes'] / 1e6:.2f} MB")
    report.line("viewer (warm) / preview: load time", f"{warm['loaded'] / preview['loaded']:.1f}x")
    report.line("viewer (warm) / preview: bytes", f"{warm['bytes'] / max(preview['bytes'], 1):.1f}x")
