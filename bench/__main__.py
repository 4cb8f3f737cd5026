"""`make bench`: run every benchmark and print its figures."""

from __future__ import annotations

import sys

from bench import report, store_bench

BENCHMARKS = {"store": store_bench.run}


def main(names: list[str]) -> None:
    print(f"machine: {report.machine()}")
    for name in names or list(BENCHMARKS):
        BENCHMARKS[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
