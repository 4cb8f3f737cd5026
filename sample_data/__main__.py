"""python -m sample_data OUT [--size KM] [--seed N] [--parts basemap,networks,...]"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .district import PARTS, generate, parse_parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sample_data", description="Generate the CIM Twin demo district.")
    parser.add_argument("out", type=Path, help="output directory (created if missing)")
    parser.add_argument("--size", type=float, default=2.0, help="side of the square district in km (default 2)")
    parser.add_argument("--seed", type=int, default=20240601, help="random seed (default 20240601)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of: {','.join(PARTS)}")
    args = parser.parse_args(argv)
    try:
        parts = parse_parts(args.parts)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.size <= 0:
        print("error: --size must be positive", file=sys.stderr)
        return 2
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    manifest = generate(args.out, size_km=args.size, seed=args.seed, parts=parts, timings=timings)
    total = time.perf_counter() - t0
    counts = {layer["id"]: layer["feature_count"] for layer in manifest["layers"]}
    print(
        json.dumps(
            {"out": str(args.out), "seconds": round(total, 2), "timings": timings, "feature_counts": counts}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
