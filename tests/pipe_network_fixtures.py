"""A hand-built pipe network with known depths and sizes, for section, profile and API tests.

Pipes along y at known depths and sizes:

    x = X0      water DN200, nodes ground 10.0 / 10.4, cover 1.0 / 1.4 (crown)
    x = X0 + 2  gas DN100, ground 10.0 / 10.0, cover 0.8 / 0.8
    x = X0 + 5  storm sewer DN400, ground 10.1 / 10.3, inverts 8.0 / 7.6
    x = X0 + 9  storm box culvert 2000 x 1500, inverts 6.0 / 6.0, no nodes (ground unknown)

each from y = Y0 - 20 to Y0 + 20, so a section along y = Y0 (`SECTION`) cuts them all half-way.
At the cut: water ground 10.2, crown 10.2 - 1.2 = 9.0, centre 8.9, bottom 8.8; gas crown 9.2,
bottom 9.1; sewer invert 7.8, crown 8.2, centre 8.0, ground 10.2; culvert bottom 6.0, top 7.5.

A sewer run A-B-C-D (S1, S2, S3; S2 digitised against the flow) lies along y = Y0 + 100 with
30 m pipes, a branch S4 joins it at B, and water pipe W2 (DN100, crown 9.8) crosses S2 half-way.
"""

from __future__ import annotations

from shapely.geometry import LineString, Point

from twin.model import FeatureInput, Layer

X0, Y0 = 386_000.0, 3_546_000.0
SECTION = LineString([(X0 - 5, Y0), (X0 + 15, Y0)])


def network_layers(net: str) -> tuple[Layer, Layer]:
    nodes = Layer(id=f"{net}_nodes", kind="pipe_network", metadata={"network": net, "role": "nodes"})
    pipes = Layer(
        id=f"{net}_pipes",
        kind="pipe_network",
        metadata={"network": net, "role": "pipes", "nodes_layer": f"{net}_nodes"},
    )
    return nodes, pipes


def node(fid: str, x: float, y: float, ground: float) -> FeatureInput:
    return FeatureInput(fid, Point(x, y), {"node_id": fid, "ground_elev": ground})


def link(fid: str, a: FeatureInput, b: FeatureInput, **props) -> FeatureInput:
    line = LineString([a.geometry.coords[0], b.geometry.coords[0]])
    return FeatureInput(fid, line, {"start_id": a.fid, "end_id": b.fid, **props})


def build(store) -> None:
    water_nodes, water_pipes = network_layers("water")
    n1, n2 = node("N1", X0, Y0 - 20, 10.0), node("N2", X0, Y0 + 20, 10.4)
    store.write_features(water_nodes, [n1, n2])
    store.write_features(
        water_pipes,
        [
            link(
                "W1", n1, n2, **{"class": "JS", "diameter": 200, "material": "DI", "start_depth": 1.0, "end_depth": 1.4}
            )
        ],
    )
    gas_nodes, gas_pipes = network_layers("gas")
    g1, g2 = node("GN1", X0 + 2, Y0 - 20, 10.0), node("GN2", X0 + 2, Y0 + 20, 10.0)
    store.write_features(gas_nodes, [g1, g2])
    store.write_features(
        gas_pipes, [link("G1", g1, g2, **{"class": "RQ", "diameter": 100, "start_depth": 0.8, "end_depth": 0.8})]
    )
    drain_nodes, drain_pipes = network_layers("drainage")
    d1, d2 = node("DN1", X0 + 5, Y0 - 20, 10.1), node("DN2", X0 + 5, Y0 + 20, 10.3)
    # a sewer run A-B-C-D along y = Y0 + 100, its middle pipe digitised backwards, a branch E-B
    a, b, c, d = (
        node(k, X0 + 30 * i, Y0 + 100, g) for i, (k, g) in enumerate(zip("ABCD", (11, 11, 10.8, 10.6), strict=True))
    )
    e = node("E", X0 + 30, Y0 + 130, 11.2)
    store.write_features(drain_nodes, [d1, d2, a, b, c, d, e])
    sewer = {"class": "YS", "diameter": 400}
    store.write_features(
        drain_pipes,
        [
            link("D1", d1, d2, **sewer, start_invert=8.0, end_invert=7.6),
            FeatureInput(
                "D2",
                LineString([(X0 + 9, Y0 - 20), (X0 + 9, Y0 + 20)]),
                {"class": "YS", "shape": "box", "width": 2000, "height": 1500, "start_invert": 6.0, "end_invert": 6.0},
            ),
            link("S1", a, b, **sewer, start_invert=9.0, end_invert=8.8),
            link("S2", c, b, **sewer, start_invert=8.5, end_invert=8.8),  # digitised against the flow
            link("S3", c, d, **sewer, start_invert=8.5, end_invert=8.3),
            link("S4", e, b, **sewer, start_invert=9.2, end_invert=8.8),
        ],
    )
    # a water pipe crossing S2 half-way (x = X0 + 45), crown at 9.8
    x1, x2 = node("N3", X0 + 45, Y0 + 80, 11.0), node("N4", X0 + 45, Y0 + 120, 11.0)
    store.write_features(water_nodes, [x1, x2])
    store.write_features(
        water_pipes, [link("W2", x1, x2, **{"class": "JS", "diameter": 100, "start_elev": 9.8, "end_elev": 9.8})]
    )
