"""Analyses on plain arrays: pipe-network valve segments, burst isolation and supply loss.

The network core (`network`, `segments`, `burst`, `burst_index`) imports neither the store, the
web layer nor the readers: they build a `PipeNetwork` and hand it over. `store_network` builds
one from a twin's layers and caches it per layer version; `service` answers the API and the CLI.
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
