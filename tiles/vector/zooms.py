"""Which zoom levels show which basemap scale band in the `basemap` composite.

Defaults follow DESIGN §3 (256-px tiles at about 31°N): the 1:10000 map up to z15, 1:2000 at
z16–17 and 1:500 from z18. A deployment changes them with the environment variable
`TWIN_BASEMAP_ZOOMS` or the twin's meta key `basemap_zooms` (the variable wins), both written
as `1:10000=0-15,1:2000=16-17,1:500=18-22`. Bands may leave gaps but must not overlap, so that
each zoom shows one map of each feature class.
"""

from __future__ import annotations

import os
import re

from tiles.vector.tms import MAX_ZOOM
from twin.model import SCALE_BANDS, InvalidInput
from twin.store import Store

ENV_VAR = "TWIN_BASEMAP_ZOOMS"
META_KEY = "basemap_zooms"
DEFAULT_BAND_ZOOMS: dict[str, tuple[int, int]] = {"1:10000": (0, 15), "1:2000": (16, 17), "1:500": (18, MAX_ZOOM)}
ITEM = re.compile(r"^\s*(1:\d+)\s*=\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_band_zooms(text: str, where: str = ENV_VAR) -> dict[str, tuple[int, int]]:
    """'1:10000=0-15,1:2000=16-17,1:500=18-22' as {band: (minzoom, maxzoom)}; bands left out
    keep their default range."""
    ranges = dict(DEFAULT_BAND_ZOOMS)
    for item in filter(str.strip, text.split(",")):
        match = ITEM.match(item)
        if match is None:
            raise InvalidInput(f"{where}: cannot read {item.strip()!r}; expected e.g. '1:2000=16-17'")
        band, low, high = match.group(1), int(match.group(2)), int(match.group(3))
        if band not in SCALE_BANDS:
            raise InvalidInput(f"{where}: unknown scale band {band!r}; expected one of {', '.join(SCALE_BANDS)}")
        if not 0 <= low <= high <= MAX_ZOOM:
            raise InvalidInput(f"{where}: zoom range {low}-{high} of {band} must lie in 0..{MAX_ZOOM}, low first")
        ranges[band] = (low, high)
    ordered = sorted(ranges.items(), key=lambda item: item[1])
    for (band_a, (_, high_a)), (band_b, (low_b, _)) in zip(ordered, ordered[1:], strict=False):
        if low_b <= high_a:
            raise InvalidInput(f"{where}: the zoom ranges of {band_a} and {band_b} overlap")
    return ranges


def band_zooms(store: Store) -> dict[str, tuple[int, int]]:
    """The configured ranges: the environment variable, else the meta key, else the defaults."""
    text = os.environ.get(ENV_VAR)
    if text:
        return parse_band_zooms(text, ENV_VAR)
    stored = store.get_meta(META_KEY)
    if stored:
        return parse_band_zooms(stored, f"meta key {META_KEY!r}")
    return dict(DEFAULT_BAND_ZOOMS)
