"""The twin's MapLibre styles, built from one table of paint per feature class.

`styles/*.json` are written from here (`python -m twin.api.stylebook`), so that the combined
basemap, the three scale-band basemaps, the pipes and the orthophoto styles draw each feature
class the same way; a test checks the files are what this module builds. Source URLs are
server-relative (`/tiles/...`, `/raster/...`): `GET /styles/{name}.json` makes them absolute
and resolves `{orthophoto}` to the twin's own raster layer. No `glyphs`: MapLibre draws labels
with the browser's fonts, so nothing is fetched from outside.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

STYLES_DIR = Path(__file__).resolve().parents[2] / "styles"
BANDS = ("500", "2000", "10000")
BAND_CLASSES = {
    "500": ("landuse", "green", "water", "parcels", "roads", "road_centrelines", "buildings"),
    "2000": ("landuse", "green", "water", "roads", "buildings"),
    "10000": ("landuse", "green", "water", "roads", "buildings"),
}
CLASS_ORDER = ("landuse", "green", "water", "parcels", "roads", "road_centrelines", "buildings")
FONT = ["Noto Sans Regular"]
FONT_BOLD = ["Noto Sans Bold"]
INK = "#4a4238"
HALO = "rgba(255,255,255,0.9)"

# Land use in the hues of GB 50137 (R yellow, B red, A pink, M brown, U blue, G green), lightened.
LANDUSE_COLOURS = {
    "residential": "#f6e7a8",
    "village": "#efdfa8",
    "commercial": "#f3b1a6",
    "business": "#efb9c6",
    "office": "#efb9c6",
    "education": "#f1c6df",
    "school": "#f1c6df",
    "medical": "#f0bfd8",
    "hospital": "#f0bfd8",
    "industrial": "#dcc2a5",
    "utility": "#b9d3e0",
    "park": "#c3e0ad",
    "forest": "#b5d59c",
    "orchard": "#d2e6b3",
    "farmland": "#eaf0cf",
    "paddy": "#dcecc4",
    "pond": "#b6d6ec",
    "vacant": "#ece6da",
    "construction": "#e6dac6",
}
GREEN = {"park": "#b6dba0", "riverside_park": "#b6dba0", "sports_ground": "#a6d29a", "forest": "#a9cf91"}
WATER, WATER_EDGE = "#a9cfe9", "#83b4d8"
ROAD_FILL = {"expressway": "#f7c77e", "primary": "#fbe2a0", "secondary": "#ffffff", "branch": "#ffffff"}
ROAD_WIDTH = {"expressway": 1.6, "primary": 1.35, "secondary": 1.1, "branch": 0.8}
ROAD_CASING = "#c8bca9"

# CJJ 61 class colours of underground pipelines, by class code.
PIPE_CLASS_COLOURS = {
    "JS": "rgb(0,255,255)",  # water supply
    "PS": "rgb(76,57,38)",  # drainage
    "YS": "rgb(76,57,38)",  # storm water
    "WS": "rgb(76,57,38)",  # sewage
    "RQ": "rgb(255,0,255)",  # gas
    "RL": "rgb(255,128,0)",  # heat
    "DL": "rgb(255,0,0)",  # power
    "TX": "rgb(0,255,0)",  # telecom
}
# Networks as the twin names them (`{network}_pipes`, `{network}_nodes`), with their class code.
NETWORKS = {"drainage": "PS", "telecom": "TX", "power": "DL", "heat": "RL", "gas": "RQ", "water": "JS"}
NETWORK_TITLES = {
    "water": "Water supply pipes (JS)",
    "gas": "Gas pipes (RQ)",
    "drainage": "Drainage pipes (PS/YS/WS)",
    "heat": "Heat pipes (RL)",
    "power": "Power cables (DL)",
    "telecom": "Telecom cables (TX)",
}
GROUP_TITLES = {"basemap": "Basemap", "orthophoto": "Orthophoto", **NETWORK_TITLES}


def _match(key: str, colours: dict[str, str], default: str) -> list[Any]:
    """A `match` expression from property values to colours, values of one colour grouped."""
    groups: dict[str, list[str]] = {}
    for value, colour in colours.items():
        groups.setdefault(colour, []).append(value)
    expression: list[Any] = ["match", ["get", key]]
    for colour, values in groups.items():
        expression += [values if len(values) > 1 else values[0], colour]
    return [*expression, default]


def _by_zoom(*stops: Any) -> list[Any]:
    return ["interpolate", ["exponential", 1.6], ["zoom"], *stops]


def _road_width(extra: float) -> list[Any]:
    """Road line width by class and zoom; `extra` pixels are added for the casing."""
    factor = _match_number("class", ROAD_WIDTH, 0.8)
    stops = ((12, 1.2), (14, 2.6), (16, 6.0), (18, 16.0), (20, 44.0))
    return _by_zoom(*(item for z, px in stops for item in (z, ["+", ["*", px, factor], extra])))


def _match_number(key: str, values: dict[str, float], default: float) -> list[Any]:
    expression: list[Any] = ["match", ["get", key]]
    for value, number in values.items():
        expression += [value, number]
    return [*expression, default]


def _layer(layer_id: str, kind: str, source: str, source_layer: str, group: str, **members: Any) -> dict[str, Any]:
    metadata = {"twin:group": group, "twin:group-title": GROUP_TITLES[group], **members.pop("metadata", {})}
    return {
        "id": layer_id,
        "type": kind,
        "source": source,
        "source-layer": source_layer,
        **members,
        "metadata": metadata,
    }


POLYGON = ["==", ["geometry-type"], "Polygon"]
LINE = ["==", ["geometry-type"], "LineString"]


def class_layers(feature_class: str, source: str, source_layer: str, prefix: str) -> list[dict[str, Any]]:
    """The drawing (not the labels) of one basemap feature class, in drawing order."""
    name = f"{prefix}{feature_class}"

    def layer(suffix: str, kind: str, **members: Any) -> dict[str, Any]:
        return _layer(f"{name}{suffix}", kind, source, source_layer, "basemap", **members)

    if feature_class == "landuse":
        colour = _match("landuse", LANDUSE_COLOURS, "#ece6da")
        return [layer("", "fill", paint={"fill-color": colour, "fill-opacity": 0.7})]
    if feature_class == "green":
        return [layer("", "fill", paint={"fill-color": _match("kind", GREEN, GREEN["park"]), "fill-opacity": 0.85})]
    if feature_class == "water":
        return [
            layer("", "fill", paint={"fill-color": WATER}),
            layer("-edge", "line", paint={"line-color": WATER_EDGE, "line-width": 0.8}),
        ]
    if feature_class == "parcels":
        line = {"line-color": "#a89a84", "line-width": 0.7, "line-dasharray": [3, 2]}
        return [layer("", "line", minzoom=16, paint=line)]
    if feature_class == "roads":
        return [
            layer("-area", "fill", filter=POLYGON, paint={"fill-color": "#ffffff", "fill-outline-color": ROAD_CASING}),
            layer(
                "-casing",
                "line",
                filter=LINE,
                layout={"line-cap": "round", "line-join": "round"},
                paint={"line-color": ROAD_CASING, "line-width": _road_width(1.6)},
            ),
            layer(
                "",
                "line",
                filter=LINE,
                layout={"line-cap": "round", "line-join": "round"},
                paint={"line-color": _match("class", ROAD_FILL, "#ffffff"), "line-width": _road_width(0.0)},
            ),
        ]
    if feature_class == "road_centrelines":
        line = {"line-color": "#d9cfbf", "line-width": 0.8, "line-dasharray": [6, 4]}
        return [layer("", "line", minzoom=17, paint=line)]
    if feature_class == "buildings":
        return [
            layer(
                "",
                "fill",
                paint={
                    "fill-color": _match("use", {"industrial": "#d6c8b8", "ancillary": "#e2dbd3"}, "#dcd2c8"),
                    "fill-outline-color": "#b3a495",
                    # 1:10000 buildings are built-up blocks (with a coverage ratio): let land use show
                    "fill-opacity": ["case", ["has", "coverage"], 0.5, 1],
                },
            )
        ]
    raise ValueError(f"no paint for feature class {feature_class!r}")


def label_layers(sources: dict[str, tuple[str, str]], prefix: str) -> list[dict[str, Any]]:
    """Names of water, parks and roads; `sources` maps a feature class to (source, source-layer)."""
    text = {"text-color": INK, "text-halo-color": HALO, "text-halo-width": 1.4}
    layers = []
    if "water" in sources:
        source, source_layer = sources["water"]
        layers.append(
            _layer(
                f"{prefix}water-label",
                "symbol",
                source,
                source_layer,
                "basemap",
                minzoom=13,
                layout={"text-field": ["get", "name"], "text-font": FONT, "text-size": 12, "text-max-width": 8},
                paint={**text, "text-color": "#3a6e96"},
            )
        )
    if "green" in sources:
        source, source_layer = sources["green"]
        layers.append(
            _layer(
                f"{prefix}green-label",
                "symbol",
                source,
                source_layer,
                "basemap",
                minzoom=15,
                layout={"text-field": ["get", "name"], "text-font": FONT, "text-size": 11, "text-max-width": 7},
                paint={**text, "text-color": "#3f6b35"},
            )
        )
    for feature_class in ("roads", "road_centrelines"):
        if feature_class in sources:
            source, source_layer = sources[feature_class]
            layers.append(
                _layer(
                    f"{prefix}{feature_class}-label",
                    "symbol",
                    source,
                    source_layer,
                    "basemap",
                    minzoom=14,
                    filter=LINE,
                    layout={
                        "symbol-placement": "line",
                        "text-field": ["get", "name"],
                        "text-font": FONT_BOLD if feature_class == "roads" else FONT,
                        "text-size": _by_zoom(14, 10, 18, 13),
                        "symbol-spacing": 300,
                    },
                    paint=text,
                )
            )
    return layers


def _style(name: str, description: str, sources: dict[str, Any], layers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": 8,
        "name": name,
        "metadata": {"twin:description": description},
        "sources": sources,
        "layers": layers,
    }


def _background() -> dict[str, Any]:
    return {"id": "background", "type": "background", "paint": {"background-color": "#f4f1ea"}}


def basemap_style() -> dict[str, Any]:
    """Every feature class from the composite `basemap` tileset (its band follows the zoom)."""
    source = {"type": "vector", "url": "/tiles/basemap/tilejson.json"}
    layers = [_background()]
    for feature_class in CLASS_ORDER:
        layers += class_layers(feature_class, "basemap", feature_class, "")
    layers += label_layers({c: ("basemap", c) for c in CLASS_ORDER}, "")
    return _style(
        "CIM Twin basemap",
        "All scale bands from the composite basemap tileset: 1:10000 up to z15, 1:2000 at z16-17, 1:500 from z18.",
        {"basemap": source},
        layers,
    )


def band_style(band: str) -> dict[str, Any]:
    """One scale band's layers, each from its own tileset (`{class}_{band}`), at every zoom."""
    sources, layers = {}, [_background()]
    for feature_class in BAND_CLASSES[band]:
        layer_id = f"{feature_class}_{band}"
        sources[layer_id] = {"type": "vector", "url": f"/tiles/{layer_id}/tilejson.json"}
        layers += class_layers(feature_class, layer_id, layer_id, f"{band}-")
    label_sources = {c: (f"{c}_{band}", f"{c}_{band}") for c in BAND_CLASSES[band]}
    layers += label_layers(label_sources, f"{band}-")
    return _style(f"CIM Twin basemap 1:{band}", f"The 1:{band} basemap layers only.", sources, layers)


def pipe_colour() -> list[Any]:
    return _match("class", PIPE_CLASS_COLOURS, "#808080")


def _pipe_width(extra: float) -> list[Any]:
    """Line width growing with zoom and with the pipe's size (diameter or box width, in mm)."""
    size = ["coalesce", ["get", "diameter"], ["get", "width"], 200]

    def by_size(small: float, large: float) -> list[Any]:
        return ["interpolate", ["linear"], size, 100, small + extra, 1000, large + extra]

    return _by_zoom(13, 0.5 + extra, 16, by_size(1.2, 3), 19, by_size(3, 9))


def pipes_style() -> dict[str, Any]:
    """Pipes and nodes of every network in CJJ 61 class colours, from the `pipes` tileset."""
    layers = []
    width, casing = _pipe_width(0.0), _pipe_width(1.2)
    for network, code in NETWORKS.items():
        pipes, nodes = f"{network}_pipes", f"{network}_nodes"
        colour = ["case", ["has", "class"], pipe_colour(), PIPE_CLASS_COLOURS[code]]
        swatch = {"twin:colour": PIPE_CLASS_COLOURS[code]}
        layers += [
            _layer(
                f"{pipes}-casing",
                "line",
                "pipes",
                pipes,
                network,
                layout={"line-cap": "round"},
                minzoom=15,
                paint={"line-color": "rgba(40,40,40,0.45)", "line-width": casing},
                metadata=swatch,
            ),
            _layer(
                f"{pipes}",
                "line",
                "pipes",
                pipes,
                network,
                layout={"line-cap": "round"},
                paint={"line-color": colour, "line-width": width},
                metadata=swatch,
            ),
            _layer(
                nodes,
                "circle",
                "pipes",
                nodes,
                network,
                minzoom=16,
                metadata=swatch,
                paint={
                    "circle-color": ["match", ["get", "type"], "valve", "#202020", PIPE_CLASS_COLOURS[code]],
                    "circle-radius": _by_zoom(16, 1.5, 19, 4),
                    "circle-stroke-color": "#303030",
                    "circle-stroke-width": 0.6,
                },
            ),
        ]
    style = _style(
        "CIM Twin pipes",
        "Underground pipelines in CJJ 61 class colours: water supply JS cyan, drainage PS/YS/WS brown, "
        "gas RQ magenta, heat RL orange, power DL red, telecom TX green.",
        {"pipes": {"type": "vector", "url": "/tiles/pipes/tilejson.json"}},
        layers,
    )
    style["metadata"]["twin:class-colours"] = PIPE_CLASS_COLOURS
    return style


def orthophoto_style() -> dict[str, Any]:
    """The twin's orthophoto (`{orthophoto}` is resolved by the server to its raster layer)."""
    source = {
        "type": "raster",
        "url": "/raster/{orthophoto}/WebMercatorQuad/tilejson.json?tilesize=512&minzoom=10",
        "tileSize": 512,
    }
    metadata = {"twin:group": "orthophoto", "twin:group-title": GROUP_TITLES["orthophoto"]}
    layer = {"id": "orthophoto", "type": "raster", "source": "orthophoto", "metadata": metadata}
    return _style(
        "CIM Twin orthophoto", "The orthophoto as raster tiles from /raster.", {"orthophoto": source}, [layer]
    )


def all_styles() -> dict[str, dict[str, Any]]:
    """Every style by name, as written to `styles/{name}.json`."""
    styles = {"basemap": basemap_style(), "pipes": pipes_style(), "orthophoto": orthophoto_style()}
    styles.update({f"basemap_{band}": band_style(band) for band in BANDS})
    return styles


def style_text(style: dict[str, Any]) -> str:
    return json.dumps(style, indent=2, ensure_ascii=False) + "\n"


def write_styles(directory: Path = STYLES_DIR) -> list[Path]:
    """(Re)write the style files; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, style in all_styles().items():
        path = directory / f"{name}.json"
        path.write_text(style_text(style), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_styles(Path(sys.argv[1]) if len(sys.argv) > 1 else STYLES_DIR):
        print(written_path)
