"""Pipe networks: segmentation against WNTR, burst latency, ingestion and topology time.

Two networks:

- EPANET Net6 (3,892 links) with WNTR's strategic N-1 valve layer (a valve at every pipe end
  but one per node, about 4,400 valves: the density of the demo's water network);
- the generated city (`python -m sample_data OUT --size 12 --parts basemap,networks`: about
  111,000 water pipes and 22,000 valves), ingested through `twin ingest pipes`.

Baselines, measured in the same run: WNTR `valve_segments` on the same graph and valve layer
(in a subprocess with a time cap on the city, printed as '> N s' when it does not finish;
the partitions are compared when it does), and the reference `burst_isolation` on the same
bursts. Burst latency is the whole request through the HTTP API (FastAPI TestClient) after
the network model is cached, for bursts on pipes drawn at random, and the same answers built
without the web stack (analysis, customers, outage area, GeoJSON text).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd

from bench.report import heading, latencies_ms, line, percentiles, timed
from ingestion.basemap import ingest_basemap
from ingestion.network_ingest import ingest_network
from twin.analysis import burst_isolation, segment
from twin.store import init_store

CITY_KM = 12
CITY_SEED = 20240601
WNTR_CAP = float(os.environ.get("BENCH_WNTR_CAP", "60"))
BURSTS = 300
REFERENCE_BURSTS = 100
NET6_WNTR_CAP = float(os.environ.get("BENCH_NET6_WNTR_CAP", "120"))
EPANET = Path(os.environ.get("TWIN_TESTDATA", Path(__file__).resolve().parents[2] / "shared" / "testdata")) / "pipes"


def _same_partition(left: np.ndarray, right: np.ndarray) -> bool:
    pairs = set(zip(left.tolist(), right.tolist(), strict=True))
    return len(pairs) == len(set(left.tolist())) == len(set(right.tolist()))


def _wntr_segments(graph: nx.MultiDiGraph, layer: pd.DataFrame, cap: float) -> tuple[float | None, object]:
    """WNTR valve_segments in a subprocess: (seconds, (node_labels, link_labels)) or (None, None)."""
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "in.pkl", Path(tmp) / "out.pkl"
        source.write_bytes(pickle.dumps((graph, layer)))
        code = (
            "import pickle, sys, time, warnings; warnings.simplefilter('ignore'); import wntr\n"
            "graph, layer = pickle.loads(open(sys.argv[1], 'rb').read())\n"
            "start = time.perf_counter()\n"
            "nodes, links, _ = wntr.metrics.topographic.valve_segments(graph, layer)\n"
            "open(sys.argv[2], 'wb').write(pickle.dumps((time.perf_counter() - start, nodes, links)))\n"
        )
        try:
            subprocess.run([sys.executable, "-c", code, str(source), str(target)], check=True, timeout=cap)
        except subprocess.TimeoutExpired:
            return None, None
        seconds, nodes, links = pickle.loads(target.read_bytes())
        return seconds, (nodes, links)


def _compare_segments(name: str, network, graph: nx.MultiDiGraph, layer: pd.DataFrame, cap: float) -> None:
    ours, seg = min((timed(lambda: segment(network)) for _ in range(5)), key=lambda pair: pair[0])
    line(f"{name}: our segmentation ({seg.n_segments:,} segments, best of 5)", f"{ours * 1000:.1f} ms")
    seconds, labels = _wntr_segments(graph, layer, cap)
    if seconds is None:
        line(f"{name}: WNTR valve_segments (baseline)", f"> {cap:.0f} s (stopped)")
        line(f"{name}: speed-up over WNTR", f"> {cap / ours:,.0f}x")
        return
    nodes, links = labels
    joint_ours = np.concatenate(
        (seg.node_segment[network.node_index(nodes.index)], seg.link_segment[network.link_index(links.index)])
    )
    same = _same_partition(joint_ours, np.concatenate((nodes.to_numpy(), links.to_numpy())))
    line(f"{name}: WNTR valve_segments (baseline)", f"{seconds:.2f} s")
    line(f"{name}: speed-up over WNTR, same partition: {same}", f"{seconds / ours:,.0f}x")


def _graph(network) -> nx.MultiDiGraph:
    graph = nx.MultiDiGraph()
    graph.add_nodes_from(network.node_ids.tolist())
    graph.add_edges_from(
        zip(
            network.node_ids[network.link_start].tolist(),
            network.node_ids[network.link_end].tolist(),
            network.link_ids.tolist(),
            strict=True,
        )
    )
    return graph


def _valve_frame(network) -> pd.DataFrame:
    valves = network.valves
    return pd.DataFrame({"link": network.link_ids[valves.link], "node": network.node_ids[valves.node]})


def _measure(name: str, store, pipes: list[str], graph_of, layer_of, cap: float) -> None:
    """Model build (first request), segmentation vs WNTR, HTTP burst latency vs the reference."""
    from fastapi.testclient import TestClient

    from twin.analysis import service
    from twin.api.analysis import answer_text
    from twin.api.app import create_app
    from twin.api.params import crs_choice
    from twin.crs import CRS84

    with TestClient(create_app(store)) as client:

        def post(pipe: str):
            return client.post("/analysis/burst", json={"network": "water", "pipe_id": pipe})

        first, response = timed(lambda: post(pipes[0]))
        assert response.status_code == 200, response.text
        line(f"{name}: first burst (reads the layers, builds model and index)", f"{first:.2f} s")
        http = latencies_ms(post, pipes)
        context = client.app.state.pipe_analysis
        model = context.model("water", None)
        crs84 = crs_choice(CRS84)
        answers = latencies_ms(
            lambda p: answer_text(service.burst(context, "water", pipe_id=p), store.crs, crs84), pipes
        )
    _compare_segments(name, model.network, graph_of(model.network), layer_of(model.network), cap)
    line(f"{name}: burst over HTTP, {len(pipes)} random pipes, model cached", percentiles(http))
    line(f"{name}: the same answers without the web stack (JSON text)", percentiles(answers))
    network, seg, index = model.network, model.segmentation, model.burst_index
    fast = latencies_ms(lambda p: index.burst(p), pipes)
    reference = latencies_ms(lambda p: burst_isolation(network, p, segmentation=seg), pipes[:REFERENCE_BURSTS])
    line(f"{name}: burst analysis alone (prepared index)", percentiles(fast))
    line(f"{name}: reference burst_isolation (baseline, {len(reference)} pipes)", percentiles(reference))
    line(f"{name}: analysis speed-up at p50", f"{np.percentile(reference, 50) / np.percentile(fast, 50):.1f}x")


def _net6(root: Path) -> None:
    import wntr

    heading("pipe network: EPANET Net6 with WNTR's strategic N-1 valve layer")
    inp = EPANET / "epanet_wntr" / "Net6.inp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wn = wntr.network.WaterNetworkModel(str(inp))
    layer = wntr.network.generate_valve_layer(wn, "strategic", 1, seed=123)
    layer.to_csv(root / "net6_valves.csv")
    with init_store(root / "net6", "EPSG:4549") as store:
        seconds, result = timed(
            lambda: ingest_network(
                store, "epanet", inp, network="water", valves=root / "net6_valves.csv", origin="385000,3547000,1"
            )
        )
        [written] = result.networks
        line(f"Net6: ingestion + topology ({written.topology.pipes:,} links)", f"{seconds:.2f} s")
        rng = np.random.default_rng(3)
        pipes = [str(p) for p in rng.choice(wn.link_name_list, BURSTS)]
        _measure("Net6", store, pipes, lambda _: wn.to_graph(), lambda _: layer.copy(), NET6_WNTR_CAP)


def _city_sources() -> Path:
    """The generated city, kept between runs (the generator is deterministic)."""
    folder = Path(tempfile.gettempdir()) / f"cim-twin-bench-city-{CITY_KM}km-{CITY_SEED}"
    if not (folder / "manifest.json").exists():
        seconds, _ = timed(
            lambda: subprocess.run(
                [sys.executable, "-m", "sample_data", str(folder), "--size", str(CITY_KM), "--seed", str(CITY_SEED)]
                + ["--parts", "basemap,networks"],
                check=True,
                capture_output=True,
            )
        )
        line(f"city: generated {CITY_KM} km x {CITY_KM} km (basemap, networks)", f"{seconds:.1f} s")
    return folder


def _city(root: Path) -> None:
    heading(f"pipe network: generated city, {CITY_KM} km x {CITY_KM} km")
    sources = _city_sources()
    with init_store(root / "city", "EPSG:4549") as store:
        seconds, result = timed(lambda: ingest_network(store, "pipes", sources / "water_network.gpkg"))
        [written] = result.networks
        topology = written.topology
        line(f"city: ingestion + topology ({topology.pipes:,} pipes, {topology.nodes:,} points)", f"{seconds:.1f} s")
        line("city: of which the topology report", f"{written.topology_seconds:.2f} s")
        buildings, _ = timed(
            lambda: ingest_basemap(
                store, sources / "basemap_2000.gpkg", layer_id="buildings_2000", source_layer="buildings"
            )
        )
        line("city: buildings_2000 ingestion (for the burst answers' names)", f"{buildings:.1f} s")
        links = [f.fid for f in store.query("water_pipes", limit=None).features]
        pipes = [str(p) for p in np.random.default_rng(5).choice(links, BURSTS)]
        _measure("city", store, pipes, _graph, _valve_frame, WNTR_CAP)


def run() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        _net6(Path(tmp))
        _city(Path(tmp))
    line("network benchmark total", f"{time.perf_counter() - started:.0f} s")
