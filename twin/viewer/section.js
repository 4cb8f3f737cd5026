// Cross-section: click two points on the ground; the server cuts every pipe layer along that line
// (`POST /analysis/cross-section`) and its SVG drawing is shown in a panel, with the pipes crossed.

import { surfaceAt } from "./measure.js";

export function setUpSection(ctx) {
  const { Cesium, viewer, scene, state, api, getJson, $ } = ctx;
  const source = new Cesium.CustomDataSource("section");
  viewer.dataSources.add(source);
  let points = [];
  state.section = null;

  function drawLine() {
    source.entities.removeAll();
    const positions = points.map(([lon, lat, h]) => Cesium.Cartesian3.fromDegrees(lon, lat, h + 0.5));
    const colour = Cesium.Color.fromCssColorString("#ff1744");
    for (const position of positions) source.entities.add({ position, point: { pixelSize: 8, color: colour, disableDepthTestDistance: Number.POSITIVE_INFINITY } });
    if (positions.length === 2) source.entities.add({ polyline: { positions, width: 3, material: colour, depthFailMaterial: colour, arcType: Cesium.ArcType.NONE } });
    scene.requestRender();
  }

  /** Ask the server for the section along `line` ([[lon, lat], [lon, lat]]) and show its drawing. */
  async function cut(line) {
    const body = JSON.stringify({ line: { type: "LineString", coordinates: line }, vertical_exaggeration: 2, ...(state.datetime ? { datetime: state.datetime } : {}) });
    const init = { method: "POST", headers: { "Content-Type": "application/json" }, body };
    ctx.status("Cutting the cross-section…");
    const [section, svg] = await Promise.all([
      getJson(api("analysis/cross-section"), init),
      fetch(api("analysis/cross-section?f=svg"), init).then(async (response) => {
        if (!response.ok) throw new Error((await response.json()).detail || `${response.status} analysis/cross-section`);
        return response.text();
      }),
    ]);
    $("section-drawing").innerHTML = svg;
    $("section-summary").textContent = `${section.pipes.length} pipe(s) crossed along ${section.length.toFixed(1)} m`;
    $("section-panel").hidden = false;
    state.section = { line, pipes: section.pipes.map((p) => p.id ?? p.pipe_id), length: section.length, svg };
    ctx.status(`Cross-section: ${section.pipes.length} pipe(s) crossed`);
    return state.section;
  }

  const tool = {
    click(x, y) {
      const position = surfaceAt(Cesium, scene, x, y);
      if (!position) return null;
      const carto = Cesium.Cartographic.fromCartesian(position);
      if (points.length === 2) points = [];
      points.push([Cesium.Math.toDegrees(carto.longitude), Cesium.Math.toDegrees(carto.latitude), carto.height]);
      drawLine();
      if (points.length < 2) return null;
      ctx.tool = null;
      $("section-start").classList.remove("active");
      return cut(points.map(([lon, lat]) => [lon, lat]));
    },
  };

  $("section-start").addEventListener("click", () => {
    points = [];
    drawLine();
    ctx.tool = tool;
    $("section-start").classList.add("active");
    ctx.status("Click the two ends of the section line");
  });
  $("section-close").addEventListener("click", () => {
    $("section-panel").hidden = true;
    source.entities.removeAll();
    scene.requestRender();
  });
  state.cutSection = cut;
  state.startSection = () => $("section-start").click();
}
