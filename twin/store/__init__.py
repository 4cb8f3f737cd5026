"""Opening a twin's store: the GeoPackage file in the data directory, or PostGIS by URL.

`TWIN_STORE=postgresql://...` selects PostGIS; the data directory still holds the assets.
"""

from __future__ import annotations

import os
from pathlib import Path

from twin.store.base import QueryResult, Store, WriteMode

__all__ = ["QueryResult", "Store", "WriteMode", "default_data_dir", "init_store", "open_store"]


def default_data_dir() -> Path:
    return Path(os.environ.get("TWIN_DATA", "./twin-data"))


def _store_url(url: str | None) -> str | None:
    url = url if url is not None else os.environ.get("TWIN_STORE")
    return url or None


def open_store(data_dir: Path | None = None, url: str | None = None) -> Store:
    """The existing twin at `data_dir` (or at the PostGIS URL)."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    url = _store_url(url)
    if url and url.startswith(("postgresql://", "postgres://")):
        from twin.store.postgis import PostGISStore

        return PostGISStore(url, data_dir)
    from twin.store.gpkg import GeoPackageStore

    return GeoPackageStore(data_dir)


def init_store(data_dir: Path, crs: str, url: str | None = None) -> Store:
    """Create a new twin with its project CRS."""
    data_dir = Path(data_dir)
    url = _store_url(url)
    if url and url.startswith(("postgresql://", "postgres://")):
        from twin.store.postgis import PostGISStore

        return PostGISStore(url, data_dir, crs=crs)
    from twin.store.gpkg import GeoPackageStore

    return GeoPackageStore(data_dir, crs=crs)
