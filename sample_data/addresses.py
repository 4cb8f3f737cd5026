"""Door-plate addresses for buildings: the nearest named street and a number along it.

Numbers run along the street from its west or south end, odd on one side and even on the
other, as on Chinese door plates ("Longjiang Road No. 12"), so a planner can search for them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

from .layout import RoadGraph


def street_addresses(roads: RoadGraph, footprints: np.ndarray) -> np.ndarray:
    """One address per footprint (object array), from the nearest street segment with a name."""
    named = np.nonzero(roads.name != "")[0]
    centres = shapely.centroid(footprints)
    segment = named[shapely.STRtree(roads.geometry[named]).nearest(centres)]
    start, end = roads.node_xy[roads.u[segment]], roads.node_xy[roads.v[segment]]
    xy = shapely.get_coordinates(centres)
    along_axis = np.where(roads.orient[segment] == "v", 1, 0)  # north-south streets count northwards
    position = xy[np.arange(len(xy)), along_axis]
    direction = np.where((end - start)[np.arange(len(xy)), along_axis][:, None] < 0, start - end, end - start)
    offset = xy - start
    left = direction[:, 0] * offset[:, 1] - direction[:, 1] * offset[:, 0] > 0
    street = roads.name[segment]
    order = pd.DataFrame({"street": street, "left": left, "position": position})
    rank = order.groupby(["street", "left"])["position"].rank(method="first").to_numpy().astype(np.int64) - 1
    numbers = 2 * rank + np.where(left, 1, 2)
    return np.array([f"{s} No. {n}" for s, n in zip(street, numbers, strict=True)], dtype=object)
