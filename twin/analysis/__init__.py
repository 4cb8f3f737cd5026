"""Analyses on plain arrays: pipe-network valve segments, burst isolation and supply loss.

Nothing here imports the store, the web layer or the readers: they build a `PipeNetwork` and
hand it over, and they cache its `Segmentation` per network version.
"""

from twin.analysis.burst import BurstIsolation, Impact, SupplyLoss, burst_isolation, isolation
from twin.analysis.network import NODE_KINDS, SOURCE_KINDS, PipeNetwork, Valves
from twin.analysis.segments import Segmentation, ValveCriticality, segment, valve_criticality

__all__ = [
    "NODE_KINDS",
    "SOURCE_KINDS",
    "BurstIsolation",
    "Impact",
    "PipeNetwork",
    "Segmentation",
    "SupplyLoss",
    "ValveCriticality",
    "Valves",
    "burst_isolation",
    "isolation",
    "segment",
    "valve_criticality",
]
