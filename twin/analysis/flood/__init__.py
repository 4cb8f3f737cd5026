"""Rainfall flooding: design storms, a 2D local-inertial surface model, drainage, ponding, roads.

Plain arrays in, plain results out: `run_flood(dem, transform, FloodParams(...), FloodInputs(...),
progress=..., cancel=...)`. Only `twin_adapter.run_on_twin` reads from and writes to a twin.
"""

from twin.analysis.flood.grid import Grid, prepare
from twin.analysis.flood.ponding import Ponding, fill_spill
from twin.analysis.flood.roads import LIMIT_M, Road, RoadSection, flooded_sections
from twin.analysis.flood.run import FloodInputs, FloodParams, FloodResult, run_flood, write_cog
from twin.analysis.flood.storms import Hyetograph, StormFormula, chicago, city_formula, design_storm, measured
from twin.analysis.flood.surface import Cancelled, Inlets, MassBalance, SurfaceResult, simulate

__all__ = [
    "LIMIT_M",
    "Cancelled",
    "FloodInputs",
    "FloodParams",
    "FloodResult",
    "Grid",
    "Hyetograph",
    "Inlets",
    "MassBalance",
    "Ponding",
    "Road",
    "RoadSection",
    "StormFormula",
    "SurfaceResult",
    "chicago",
    "city_formula",
    "design_storm",
    "fill_spill",
    "flooded_sections",
    "measured",
    "prepare",
    "run_flood",
    "simulate",
    "write_cog",
]
