"""Request limits the operator sets (see `twin.config`), checked for every route in one place.

`limit` query parameters above `max_items`, tile zooms (`z` path parameter) outside
`min_zoom..max_zoom` and analysis regions (`bbox` on /analysis/ routes) larger than
`max_bbox_km2` get a 4xx problem naming the setting, before any work is done. The flood job
reads `max_flood_cells` itself (its grid size is known only once the DEM is read).
"""

from __future__ import annotations

import math

from fastapi import Request

from twin.config import Settings
from twin.model import InvalidInput, NotFound

KM_PER_DEGREE = 111.32


def bbox_km2(text: str) -> float | None:
    """Area of a bbox query value: degrees when it looks like lon/lat, else project metres."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        return None  # the route's own parsing reports it
    if len(values) not in (4, 6) or not all(math.isfinite(v) for v in values):
        return None
    half = len(values) // 2
    minx, miny, maxx, maxy = values[0], values[1], values[half], values[half + 1]
    if max(abs(minx), abs(maxx)) <= 180 and max(abs(miny), abs(maxy)) <= 90:
        mid = math.radians((miny + maxy) / 2)
        return abs(maxx - minx) * KM_PER_DEGREE * math.cos(mid) * abs(maxy - miny) * KM_PER_DEGREE
    return abs(maxx - minx) * abs(maxy - miny) / 1e6


async def request_limits(request: Request) -> None:
    """App-wide dependency enforcing the settings' request limits."""
    settings: Settings = request.app.state.settings
    limit = request.query_params.get("limit")
    if limit is not None and limit.strip().isdigit() and int(limit) > settings.max_items:
        raise InvalidInput(
            f"invalid query parameter 'limit': {int(limit)} is above the largest page this server gives "
            f"({settings.max_items}, TWIN_MAX_ITEMS)"
        )
    z = request.path_params.get("z")
    if isinstance(z, int | str) and str(z).isdigit() and not settings.min_zoom <= int(z) <= settings.max_zoom:
        raise NotFound(
            f"zoom {z} is outside the zooms served ({settings.min_zoom}..{settings.max_zoom}, TWIN_MAX_ZOOM)"
        )
    bbox = request.query_params.get("bbox")
    if bbox and request.url.path.startswith("/analysis/"):
        area = bbox_km2(bbox)
        if area is not None and area > settings.max_bbox_km2:
            raise InvalidInput(
                f"the bbox covers {area:,.0f} km²; analyses take at most "
                f"{settings.max_bbox_km2:,.0f} km² (TWIN_MAX_BBOX_KM2)"
            )
