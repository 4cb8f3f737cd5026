"""Load on loopback: `wrk` against `twin serve --workers 2` over the demo district.

A mix of vector tiles, feature pages and burst analyses at 64 connections for 60 s, against the
same server's `/health` (no store, no work) as the baseline. Prints throughput, latency
percentiles, the error count (non-2xx/3xx answers and socket errors) and the resident memory of
the server's processes, sampled through the run after a warm-up with the same mix, with its
least-squares trend (target: zero errors, no growth: a leak shows as a steady positive trend,
while caches filling show during the warm-up).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench import report

CONNECTIONS = 64
THREADS = 2
DURATION_S = 60
BASELINE_S = 10
WARMUP_S = 60  # the mix runs this long first, so caches, pools and allocator arenas reach their size
SAMPLE_S = 5.0  # resident memory is sampled this often during the measured run
TIMEOUT_S = 30  # a request slower than this counts as an error (wrk's default is 2 s)
LUA = """
local paths = {PATHS}
local bodies = {BODIES}
local i = 0
request = function()
  i = i %% #paths + 1
  if bodies[i] ~= "" then
    return wrk.format("POST", paths[i], {["Content-Type"] = "application/json"}, bodies[i])
  end
  return wrk.format("GET", paths[i])
end
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            status = (Path("/proc") / str(current) / "status").read_text()
        except OSError:
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        total += int(match.group(1)) / 1024 if match else 0
    return total


class _MemorySampler:
    """Samples the server's resident memory in the background while a run lasts."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        start = time.monotonic()
        while True:
            self.samples.append((time.monotonic() - start, _tree_rss_mb(self.pid)))
            if self._stop.wait(SAMPLE_S):
                return

    def __enter__(self) -> _MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _trend_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of resident memory over the run: near zero when memory does not grow."""
    seconds = [t for t, _ in samples]
    megabytes = [m for _, m in samples]
    mean_t, mean_m = sum(seconds) / len(seconds), sum(megabytes) / len(megabytes)
    spread = sum((t - mean_t) ** 2 for t in seconds)
    slope = sum((t - mean_t) * (m - mean_m) for t, m in zip(seconds, megabytes, strict=True)) / spread
    return slope * 60


def _wrk(base: str, paths: list[str], bodies: list[str], seconds: int, script_dir: Path) -> dict[str, float]:
    lua = LUA.replace("{PATHS}", "{" + ", ".join(json.dumps(p) for p in paths) + "}")
    lua = lua.replace("{BODIES}", "{" + ", ".join(json.dumps(b) for b in bodies) + "}").replace("%%", "%")
    script = script_dir / f"mix{len(paths)}.lua"
    script.write_text(lua)
    command = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", f"--timeout={TIMEOUT_S}s", "--latency"]
    command += ["-s", str(script), base]
    text = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, check=True).stdout
    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    for name in ("50", "90", "99"):
        value, unit = re.search(rf"\s{name}%\s+([\d.]+)(us|ms|s)", text).groups()
        figures[f"p{name}"] = float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    figures["requests"] = float(re.search(r"(\d+) requests in", text).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    figures["non_2xx"] = float(non_2xx.group(1) if non_2xx else 0)
    figures["socket_errors"] = float(sum(map(int, sockets.groups())) if sockets else 0)
    figures["errors"] = figures["non_2xx"] + figures["socket_errors"]
    return figures


def _tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    """The Web Mercator tile holding a point."""
    n = 2**z
    y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    return int((lon + 180) / 360 * n), int(y)


def _mix(base: str, openapi: dict) -> tuple[list[str], list[str], list[str]]:
    """The requests of the mix, and what of it is absent from this server (said, then skipped)."""
    paths, bodies, skipped = [], [], []
    for limit in (10, 100):
        paths.append(f"/collections/buildings_500/items?limit={limit}")
        bodies.append("")
    if "/tiles/{tileset}/{z}/{x}/{y}.mvt" in openapi["paths"]:
        extent = json.loads(_get(f"{base}/collections/buildings_500")[1])["extent"]["spatial"]["bbox"][0]
        lon, lat = (extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2
        for z in (14, 15, 16, 17, 18):
            x, y = _tile(lon, lat, z)
            for dx in (0, 1):
                paths.append(f"/tiles/basemap/{z}/{x + dx}/{y}.mvt")
                bodies.append("")
    else:
        skipped.append("vector tiles (no /tiles router in this build)")
    if "/analysis/burst" in openapi["paths"]:
        status, body = _get(f"{base}/collections/water_pipes/items?limit=3")
        pipes = [f["id"] for f in json.loads(body)["features"]] if status == 200 else []
        for pipe in pipes:
            paths.append("/analysis/burst")
            bodies.append(json.dumps({"network": "water", "pipe_id": pipe}))
    else:
        skipped.append("burst analyses (no /analysis/burst in this build)")
    return paths, bodies, skipped


def run() -> None:
    report.heading("load: wrk on loopback against twin serve --workers 2 (demo district)")
    if shutil.which("wrk") is None:
        report.line("skipped", "wrk is not installed (apt-get install wrk)")
        return
    work = Path(tempfile.mkdtemp(prefix="twin-load-"))
    data = work / "data"
    twin = [sys.executable, "-c", "from twin.cli import main; main()"]
    seconds, _ = report.timed(
        lambda: subprocess.run([*twin, "demo", "--no-serve", "--data", str(data)], check=True, capture_output=True)
    )
    report.line("demo district built", f"{seconds:.1f} s")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TWIN_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen(
        [*twin, "serve", "--data", str(data), "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if _get(f"{base}/ready")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        openapi = json.loads(_get(f"{base}/openapi.json")[1])
        paths, bodies, skipped = _mix(base, openapi)
        for reason in skipped:
            report.line("not in the mix", reason)
        for path, body in zip(paths, bodies, strict=True):  # warm caches; each must answer 2xx
            request = urllib.request.Request(base + path, data=body.encode() or None, method="POST" if body else "GET")
            if body:
                request.add_header("Content-Type", "application/json")
            with urllib.request.urlopen(request, timeout=120) as answer:
                assert answer.status < 300, (path, answer.status)
        baseline = _wrk(base, ["/health"], [""], BASELINE_S, work)
        rss_cold = _tree_rss_mb(server.pid)
        _wrk(base, paths, bodies, WARMUP_S, work)
        with _MemorySampler(server.pid) as memory:
            mixed = _wrk(base, paths, bodies, DURATION_S, work)
        kinds = sorted({p.split("/")[1] for p in paths})
        report.line(f"baseline /health ({BASELINE_S} s, {CONNECTIONS} connections)", f"{baseline['rps']:.0f} req/s")
        report.line(f"mix of {len(paths)} requests: {', '.join(kinds)} ({DURATION_S} s)", f"{mixed['rps']:.0f} req/s")
        report.line("mix / baseline throughput", f"{mixed['rps'] / baseline['rps']:.2f}x")
        report.line("mix latency p50 / p90 / p99", f"{mixed['p50']:.1f} / {mixed['p90']:.1f} / {mixed['p99']:.1f} ms")
        report.line("baseline latency p99", f"{baseline['p99']:.1f} ms")
        report.line("mix requests answered", f"{mixed['requests']:.0f}")
        report.line(
            "errors, target 0: non-2xx/3xx + socket errors",
            f"{mixed['errors']:.0f} ({mixed['non_2xx']:.0f} + {mixed['socket_errors']:.0f})",
        )
        rss = [m for _, m in memory.samples]
        growth = (rss[-1] - rss[0]) / rss[0] * 100
        report.line(f"server RSS before the {WARMUP_S} s warm-up", f"{rss_cold:.0f} MB")
        report.line(
            f"server RSS over the measured run (every {SAMPLE_S:.0f} s)",
            f"{rss[0]:.0f} -> {rss[-1]:.0f} MB ({growth:+.1f}%), min {min(rss):.0f}, max {max(rss):.0f}",
        )
        report.line("server RSS trend (least squares), target ~0", f"{_trend_mb_per_min(memory.samples):+.2f} MB/min")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)
