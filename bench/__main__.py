"""`make bench`: run every benchmark and print its figures."""

from __future__ import annotations

import sys

from bench import (
    buildings_3d,
    flood_bench,
    load_bench,
    network_bench,
    oblique,
    pipes_3d,
    pointcloud,
    report,
    store_bench,
    terrain_bench,
    threed_bench,
    tiles_bench,
    viewer_bench,
)

BENCHMARKS = {"store": store_bench.run}
BENCHMARKS["threed"] = threed_bench.run
BENCHMARKS["terrain"] = terrain_bench.run
BENCHMARKS["flood"] = flood_bench.run
BENCHMARKS["network"] = network_bench.run
BENCHMARKS["load"] = load_bench.run
BENCHMARKS["viewer"] = viewer_bench.run
BENCHMARKS["tiles"] = tiles_bench.run
BENCHMARKS["buildings_3d"] = buildings_3d.run
BENCHMARKS["pipes_3d"] = pipes_3d.run
BENCHMARKS["oblique"] = oblique.run
BENCHMARKS["pointcloud"] = pointcloud.run


def main(names: list[str]) -> None:
    print(f"machine: {report.machine()}")
    for name in names or list(BENCHMARKS):
        BENCHMARKS[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
