// Live sensor values with alert badges: `GET /sensors` (latest reading and alert state of each
// sensor) drawn as labels over the sensors and listed in the panel; the server-sent event stream
// `GET /alerts/stream` says when an alert is raised or cleared, and the values are read again.

const ALERT = "#d50000";

export function setUpSensors(ctx) {
  const { Cesium, viewer, scene, state, api, getJson, $ } = ctx;
  const source = new Cesium.CustomDataSource("sensor values");
  viewer.dataSources.add(source);
  state.sensors = { list: [], events: 0, streaming: false };

  const text = (p) => (p.latest_value == null ? "—" : `${p.latest_value} ${p.unit || ""}`.trim());

  async function refresh() {
    const body = await getJson(api("sensors"));
    const points = body.features.filter((f) => f.geometry?.type === "Point");
    const heights = await ctx.groundHeights(points.map((f) => f.geometry.coordinates));
    source.entities.removeAll();
    points.forEach((f, i) => {
      const p = f.properties;
      const alert = p.alert_state === "alert";
      source.entities.add({
        position: Cesium.Cartesian3.fromDegrees(f.geometry.coordinates[0], f.geometry.coordinates[1], heights[i] + 3),
        label: {
          text: alert ? `⚠ ${text(p)}` : text(p), font: "12px sans-serif", showBackground: true,
          backgroundColor: alert ? Cesium.Color.fromCssColorString(ALERT) : Cesium.Color.fromCssColorString("#263238").withAlpha(0.75),
          fillColor: Cesium.Color.WHITE, pixelOffset: new Cesium.Cartesian2(0, -16), disableDepthTestDistance: Number.POSITIVE_INFINITY,
          distanceDisplayCondition: new Cesium.DistanceDisplayCondition(0, 4000),
        },
        properties: { layer: "sensors", fid: String(f.id), kind: "sensor" },
      });
    });
    state.sensors.list = points.map((f) => ({ id: String(f.id), value: f.properties.latest_value, unit: f.properties.unit, alert: f.properties.alert_state === "alert", kinds: f.properties.alert_kinds ?? null }));
    listSensors(points);
    scene.requestRender();
  }

  function listSensors(points) {
    const alerts = points.filter((f) => f.properties.alert_state === "alert").length;
    $("sensor-summary").textContent = `${points.length} sensors, ${alerts} in alert`;
    $("sensor-list").replaceChildren(...points.map((f) => {
      const li = document.createElement("li");
      li.dataset.sensor = f.id;
      li.textContent = `${f.properties.name || f.id}: ${text(f.properties)} `;
      if (f.properties.alert_state === "alert") {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = f.properties.alert_kinds || "alert";
        li.append(badge);
      }
      return li;
    }));
  }

  /** Open the alert stream (after the scene is in: it holds one of the browser's connections). */
  function listen() {
    const stream = new EventSource(api("alerts/stream"));
    stream.addEventListener("open", () => { state.sensors.streaming = true; });
    stream.addEventListener("alert", () => {
      state.sensors.events += 1;
      refresh().catch(ctx.fail);
    });
  }

  state.refreshSensors = refresh;
  return { start: () => refresh().then(listen) };
}
