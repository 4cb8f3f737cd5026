"""Manning's n for overland flow by land use, for the model grid.

Typical values for shallow overland flow (Chow, Open-Channel Hydraulics, 1959, table 5-6, and
common practice in urban 2D flood models, where built-up blocks get a high n because the DEM
carries no buildings). They are defaults: a caller may pass its own table.
"""

from __future__ import annotations

MANNING_N: dict[str, float] = {
    "road": 0.016,
    "paved": 0.016,
    "parking": 0.016,
    "residential": 0.08,
    "village": 0.08,
    "business": 0.06,
    "commercial": 0.06,
    "industrial": 0.06,
    "education": 0.06,
    "medical": 0.06,
    "utility": 0.05,
    "construction": 0.03,
    "vacant": 0.035,
    "park": 0.05,
    "green": 0.05,
    "sports_ground": 0.035,
    "riverside_park": 0.05,
    "farmland": 0.04,
    "paddy": 0.04,
    "orchard": 0.07,
    "forest": 0.10,
    "water": 0.03,
    "river": 0.03,
    "pond": 0.03,
}
DEFAULT_N = 0.035


def manning_for(kind: str | None, table: dict[str, float] | None = None) -> float:
    """n for a land-use or surface kind; unknown kinds get the default."""
    values = MANNING_N if table is None else {**MANNING_N, **table}
    return values.get(str(kind or "").strip().lower(), DEFAULT_N)
