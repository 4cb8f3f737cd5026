"""What a tileset name means: which store layers go into which MVT layer at which zooms.

- a layer id: one MVT layer named after the layer, at every zoom;
- `basemap`: every vector layer with a scale band, one MVT layer per feature class (the layer id
  without its `_500`/`_2000`/`_10000` suffix), each class taken from the band whose zoom range
  holds z (see `zooms.py`);
- `pipes`: every `pipe_network` layer, MVT layers named after the layers.

The composites take the layers of the requested scenario: `current`, or with `planned` the
planned layers on top of the current ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from tiles.vector.tms import MAX_ZOOM
from twin.model import Layer, LayerKind, NotFound, Scenario

BASEMAP = "basemap"
PIPES = "pipes"
COMPOSITES = (BASEMAP, PIPES)
BAND_SUFFIXES = {"1:500": "_500", "1:2000": "_2000", "1:10000": "_10000"}
FEATURE_KINDS = (LayerKind.vector, LayerKind.pipe_network, LayerKind.sensor)
FIELD_TYPES = (("bool", "Boolean"), ("int", "Number"), ("float", "Number"), ("uint", "Number"))


@dataclass(frozen=True)
class MvtLayer:
    """One layer of the tile: its name, the store layers feeding it, and its zoom range."""

    name: str
    layer_ids: tuple[str, ...]
    minzoom: int
    maxzoom: int
    fields: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Tileset:
    id: str
    layers: tuple[MvtLayer, ...]
    minzoom: int = 0
    maxzoom: int = MAX_ZOOM

    def at_zoom(self, z: int) -> list[MvtLayer]:
        return [layer for layer in self.layers if layer.minzoom <= z <= layer.maxzoom]

    @property
    def layer_ids(self) -> tuple[str, ...]:
        return tuple(sorted({lid for layer in self.layers for lid in layer.layer_ids}))


def feature_class(layer: Layer) -> str:
    """The class a basemap layer belongs to: its id without the scale-band suffix."""
    suffix = BAND_SUFFIXES.get(layer.scale_band or "", "")
    if suffix and layer.id.endswith(suffix) and len(layer.id) > len(suffix):
        return layer.id[: -len(suffix)]
    return layer.id


def field_type(dtype: str) -> str:
    """A schema dtype ('int32', 'float64', 'str', 'bool') as TileJSON describes a field."""
    for prefix, name in FIELD_TYPES:
        if dtype.startswith(prefix):
            return name
    return "String"


def _fields(layers: list[Layer]) -> tuple[tuple[str, str], ...]:
    fields: dict[str, str] = {}
    for layer in layers:
        for name, dtype in layer.schema.items():
            fields.setdefault(name, field_type(str(dtype)))
    fields["fid"] = "String"
    return tuple(sorted(fields.items()))


def _in_scenario(layer: Layer, scenario: Scenario) -> bool:
    return layer.scenario == Scenario.current or scenario == Scenario.planned


def basemap(layers: list[Layer], scenario: Scenario, band_zooms: dict[str, tuple[int, int]]) -> Tileset:
    """The scale-aware composite; classes with one layer per band (several are merged)."""
    by_class: dict[tuple[str, str], list[Layer]] = {}
    for layer in layers:
        if layer.kind == LayerKind.vector and layer.scale_band in band_zooms and _in_scenario(layer, scenario):
            by_class.setdefault((feature_class(layer), layer.scale_band), []).append(layer)
    mvt_layers = []
    for (name, band), members in sorted(by_class.items(), key=lambda item: (band_zooms[item[0][1]], item[0][0])):
        low, high = band_zooms[band]
        mvt_layers.append(MvtLayer(name, tuple(sorted(m.id for m in members)), low, high, _fields(members)))
    zooms = [z for layer in mvt_layers for z in (layer.minzoom, layer.maxzoom)]
    return Tileset(BASEMAP, tuple(mvt_layers), min(zooms, default=0), max(zooms, default=MAX_ZOOM))


def pipes(layers: list[Layer], scenario: Scenario) -> Tileset:
    members = [la for la in layers if la.kind == LayerKind.pipe_network and _in_scenario(la, scenario)]
    return Tileset(PIPES, tuple(MvtLayer(la.id, (la.id,), 0, MAX_ZOOM, _fields([la])) for la in members))


def single(layer: Layer) -> Tileset:
    if layer.kind not in FEATURE_KINDS:
        raise NotFound(f"layer {layer.id!r} is a {layer.kind.value} layer and has no vector tiles")
    return Tileset(layer.id, (MvtLayer(layer.id, (layer.id,), 0, MAX_ZOOM, _fields([layer])),))


def resolve(name: str, layers: list[Layer], scenario: Scenario, band_zooms: dict[str, tuple[int, int]]) -> Tileset:
    """The tileset called `name`; NotFound naming the choices when there is none."""
    if name == BASEMAP:
        return basemap(layers, scenario, band_zooms)
    if name == PIPES:
        return pipes(layers, scenario)
    for layer in layers:
        if layer.id == name:
            return single(layer)
    raise NotFound(f"no tileset {name!r}: use a layer id (see /collections), {BASEMAP!r} or {PIPES!r}")
