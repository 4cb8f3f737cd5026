// Measuring on terrain and tiles: distance (geodesic, along the clicked points), area (of the clicked
// polygon, on the local tangent plane) and height (between two clicked points). Points are picked
// from the depth buffer, so they land on whatever is drawn there: terrain, buildings, the mesh.

const TITLES = { distance: "Distance", area: "Area", height: "Height" };

/** The picked surface point under a window position (CSS pixels), or undefined. */
export function surfaceAt(Cesium, scene, x, y) {
  const xy = new Cesium.Cartesian2(x, y);
  let position = scene.pickPositionSupported ? scene.pickPosition(xy) : undefined;
  if (!Cesium.defined(position)) position = scene.globe.pick(scene.camera.getPickRay(xy), scene);
  return position;
}

/** Geodesic length of a path of cartographics, on the WGS 84 ellipsoid (metres). */
function pathLength(Cesium, cartos) {
  let total = 0;
  for (let i = 1; i < cartos.length; i += 1) total += new Cesium.EllipsoidGeodesic(cartos[i - 1], cartos[i]).surfaceDistance;
  return total;
}

/** Area of the polygon the cartographics make, on the tangent plane at their first point (m²). */
function planeArea(Cesium, cartos) {
  const origin = Cesium.Cartographic.toCartesian(new Cesium.Cartographic(cartos[0].longitude, cartos[0].latitude, 0));
  const toLocal = Cesium.Matrix4.inverseTransformation(Cesium.Transforms.eastNorthUpToFixedFrame(origin), new Cesium.Matrix4());
  const xy = cartos.map((c) => Cesium.Matrix4.multiplyByPoint(toLocal, Cesium.Cartographic.toCartesian(new Cesium.Cartographic(c.longitude, c.latitude, 0)), new Cesium.Cartesian3()));
  let twice = 0;
  xy.forEach((p, i) => {
    const q = xy[(i + 1) % xy.length];
    twice += p.x * q.y - q.x * p.y;
  });
  return Math.abs(twice) / 2;
}

export function setUpMeasure(ctx) {
  const { Cesium, viewer, scene, state, $ } = ctx;
  const source = new Cesium.CustomDataSource("measure");
  viewer.dataSources.add(source);
  const measure = { mode: null, points: [], value: null, horizontal: null };
  state.measure = measure;

  function compute() {
    const cartos = measure.points.map(([lon, lat, h]) => Cesium.Cartographic.fromDegrees(lon, lat, h));
    measure.value = null;
    measure.horizontal = null;
    if (measure.mode === "distance" && cartos.length >= 2) measure.value = pathLength(Cesium, cartos);
    if (measure.mode === "area" && cartos.length >= 3) measure.value = planeArea(Cesium, cartos);
    if (measure.mode === "height" && cartos.length === 2) {
      measure.value = cartos[1].height - cartos[0].height;
      measure.horizontal = pathLength(Cesium, cartos);
    }
  }

  function describe() {
    if (!measure.mode) return "";
    if (measure.value == null) return `${TITLES[measure.mode]}: click points on the ground or on buildings`;
    if (measure.mode === "distance") return `Distance: ${measure.value.toFixed(2)} m`;
    if (measure.mode === "area") return `Area: ${measure.value.toFixed(2)} m²`;
    return `Height: ${measure.value.toFixed(2)} m (horizontal ${measure.horizontal.toFixed(2)} m)`;
  }

  function draw() {
    source.entities.removeAll();
    const positions = measure.points.map(([lon, lat, h]) => Cesium.Cartesian3.fromDegrees(lon, lat, h));
    const colour = Cesium.Color.fromCssColorString("#ffea00");
    for (const position of positions) {
      source.entities.add({ position, point: { pixelSize: 8, color: colour, outlineColor: Cesium.Color.BLACK, outlineWidth: 1, disableDepthTestDistance: Number.POSITIVE_INFINITY } });
    }
    if (positions.length >= 2) {
      const path = measure.mode === "area" ? [...positions, positions[0]] : positions;
      source.entities.add({ polyline: { positions: path, width: 3, material: colour, depthFailMaterial: colour.withAlpha(0.6), arcType: Cesium.ArcType.NONE } });
    }
    if (measure.mode === "area" && positions.length >= 3) {
      source.entities.add({ polygon: { hierarchy: positions, perPositionHeight: true, material: colour.withAlpha(0.3) } });
    }
    if (measure.value != null) {
      source.entities.add({
        position: positions[positions.length - 1],
        label: {
          text: describe(), font: "bold 14px sans-serif", fillColor: Cesium.Color.WHITE, outlineColor: Cesium.Color.BLACK, outlineWidth: 3,
          style: Cesium.LabelStyle.FILL_AND_OUTLINE, pixelOffset: new Cesium.Cartesian2(0, -18), disableDepthTestDistance: Number.POSITIVE_INFINITY,
        },
      });
    }
    $("measure-value").textContent = describe();
    scene.requestRender();
  }

  const tool = {
    click(x, y) {
      const position = surfaceAt(Cesium, scene, x, y);
      if (!position) return;
      const carto = Cesium.Cartographic.fromCartesian(position);
      if (measure.mode === "height" && measure.points.length === 2) measure.points = [];
      measure.points.push([Cesium.Math.toDegrees(carto.longitude), Cesium.Math.toDegrees(carto.latitude), carto.height]);
      compute();
      draw();
    },
  };

  function start(mode) {
    measure.mode = mode;
    measure.points = [];
    compute();
    ctx.tool = mode ? tool : null;
    for (const button of document.querySelectorAll("[data-measure]")) button.classList.toggle("active", button.dataset.measure === mode);
    draw();
  }

  for (const button of document.querySelectorAll("[data-measure]")) {
    button.addEventListener("click", () => start(measure.mode === button.dataset.measure ? null : button.dataset.measure));
  }
  $("measure-clear").addEventListener("click", () => start(null));
  state.startMeasure = start;
}
