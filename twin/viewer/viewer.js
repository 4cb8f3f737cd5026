// The planners' 3D viewer: our terrain and orthophoto, the twin's 3D Tiles, a layer tree, picking,
// the underground view, scenario and time, and the burst analysis. Everything comes from this server.
// Tools (measure, search, swipe comparison, cross-section, sensors, flood) live in their own modules
// and get the shared pieces through `ctx`.
import { setUpCompare } from "./compare.js";
import { setUpFlood } from "./flood.js";
import { setUpMeasure } from "./measure.js";
import { setUpSearch } from "./search.js";
import { setUpSection } from "./section.js";
import { setUpSensors } from "./sensors.js";

const Cesium = window.Cesium;
Cesium.Ion.defaultAccessToken = "";

const ROOT = new URL("../", window.location.href);
const api = (path) => new URL(path, ROOT).href;
const GROUPS = [
  ["basemap", "Basemap by scale"],
  ["reality", "Reality mesh"],
  ["buildings", "Buildings and BIM"],
  ["pipes", "Underground pipes"],
  ["sensors", "Sensors"],
  ["analysis", "Analysis results"],
];
const GROUP_OF_KIND = { mesh: "reality", pointcloud: "reality", bim: "buildings", vector: "buildings", pipe_network: "pipes", sensor: "sensors" };
// CJJ 61 colours of pipe classes (water supply, gas, storm and foul sewers, heat, power, telecom)
const CLASS_COLOURS = { JS: "#1e88e5", RQ: "#e91e8c", YS: "#8d6e3f", WS: "#6d8b2f", RL: "#ff8f00", DL: "#e53935", TX: "#43a047" };
const BUILDING_COLOUR = "#e8e2d6";
const PLANNED_COLOUR = "#7fb2f0";
const WINDOW_HALF_SIZE_M = 90;

// State the page exposes, so tests and benchmarks can wait on it and drive it.
const state = {
  firstFrame: false, firstFrameMs: null, ready: false, tilesLoaded: false, tilesLoadedMs: null, loading: 0,
  globeLoaded: false, globeLoadedMs: null, error: null, frames: 0, scenario: "current", datetime: null, layers: {}, burst: null, burstDrawn: 0,
  picked: null, underground: false, compare: false, frameMs: [], layerLoadedMs: {}, fullFrameMs: null,
};
window.twinViewer = state;

const viewer = new Cesium.Viewer("view", {
  baseLayer: false, baseLayerPicker: false, geocoder: false, homeButton: false, sceneModePicker: false,
  navigationHelpButton: false, animation: false, timeline: false, fullscreenButton: false, infoBox: false,
  selectionIndicator: false, msaaSamples: 1, requestRenderMode: true, maximumRenderTimeChange: Infinity,
  skyBox: false, skyAtmosphere: false, // the oblique views show ground only: no sky textures to fetch and draw
  orderIndependentTranslucency: false, // two extra full-screen passes a frame in software rendering
  terrainProvider: new Cesium.EllipsoidTerrainProvider(), contextOptions: { webgl: { preserveDrawingBuffer: true } },
});
const scene = viewer.scene;
const globe = scene.globe;
// Light mode for software rendering: no MSAA, FXAA or fog; a head light so models read at any hour.
scene.fog.enabled = false;
// Software rendering pays per pixel: the first view loads at half resolution, then is drawn in full.
viewer.resolutionScale = 0.5;
scene.sun = undefined;
scene.moon = undefined;
scene.backgroundColor = Cesium.Color.fromCssColorString("#dfe6ec");
scene.postProcessStages.fxaa.enabled = false;
globe.showGroundAtmosphere = false;
globe.baseColor = Cesium.Color.fromCssColorString("#c9d1c0");
globe.depthTestAgainstTerrain = true;
globe.maximumScreenSpaceError = 3;
scene.light = new Cesium.DirectionalLight({ direction: new Cesium.Cartesian3(1, 0, 0), intensity: 2.2 });
scene.preRender.addEventListener(() => {
  const light = Cesium.Cartesian3.add(scene.camera.directionWC, Cesium.Cartesian3.multiplyByScalar(scene.camera.upWC, -0.6, new Cesium.Cartesian3()), new Cesium.Cartesian3());
  scene.light.direction = Cesium.Cartesian3.normalize(light, scene.light.direction);
});
scene.postRender.addEventListener(() => {
  state.frames += 1;
  if (state.frameMs.length < 500) state.frameMs.push(Math.round(performance.now()));
  if (state.tilesLoaded && !state.fullFrameMs) state.fullFrameMs = performance.now(); // the loaded view at full resolution
  if (!state.firstFrame) {
    state.firstFrame = true;
    state.firstFrameMs = performance.now();
  }
});

const $ = (id) => document.getElementById(id);
const status = (text) => { $("status").textContent = text; };
const fail = (error) => {
  state.error = String(error);
  status(`Error: ${error}`);
  console.error(error);
};

async function getJson(path, init) {
  const response = await fetch(path, init);
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || `${response.status} ${path}`);
  return body;
}

/** Every feature of a collection valid at the chosen time, following `next` links. */
async function allFeatures(layerId) {
  const params = new URLSearchParams({ limit: "5000" });
  if (state.datetime) params.set("datetime", state.datetime);
  let next = api(`collections/${layerId}/items?${params}`);
  const features = [];
  while (next) {
    const page = await getJson(next);
    features.push(...page.features);
    next = (page.links || []).find((link) => link.rel === "next")?.href;
  }
  return features;
}

// ---------------------------------------------------------------- heights on our terrain
const groundCache = new Map();

/** Terrain heights at [lon, lat] pairs (ellipsoidal), fetched from our terrain at full detail. */
async function groundHeights(points) {
  const keys = points.map(([lon, lat]) => `${lon.toFixed(6)},${lat.toFixed(6)}`);
  const missing = [...new Set(keys.filter((key) => !groundCache.has(key)))];
  if (missing.length && viewer.terrainProvider.availability) {
    const cartos = missing.map((key) => Cesium.Cartographic.fromDegrees(...key.split(",").map(Number)));
    const sampled = await Cesium.sampleTerrainMostDetailed(viewer.terrainProvider, cartos);
    missing.forEach((key, i) => groundCache.set(key, sampled[i].height || 0));
  }
  return keys.map((key) => groundCache.get(key) ?? 0);
}

// ---------------------------------------------------------------- layers and the layer tree
class Layer {
  constructor(id, group, title) {
    Object.assign(this, { id, group, title, show: true, opacity: 1, appliedOpacity: 1, object: null, count: 0, source: null });
  }

  apply() {
    const object = this.object;
    if (!object) return;
    object.show = this.show;
    if (object instanceof Cesium.Cesium3DTileset) {
      // a style is evaluated per feature of every tile: only set one when it changes something
      if (this.opacity < 1) object.style = new Cesium.Cesium3DTileStyle({ color: `color('white', ${this.opacity})` });
      else if (object.style) object.style = undefined;
    } else if (object instanceof Cesium.ImageryLayer) {
      object.alpha = this.opacity;
    } else if (object instanceof Cesium.Primitive && object.ready && this.appliedOpacity !== this.opacity) {
      this.appliedOpacity = this.opacity;
      for (const id of this.ids || []) {
        const attributes = object.getGeometryInstanceAttributes(id);
        const colour = Cesium.Color.fromBytes(...attributes.color);
        attributes.color = Cesium.ColorGeometryInstanceAttribute.toValue(colour.withAlpha(this.opacity));
      }
    } else if (object instanceof Cesium.CustomDataSource) {
      object.show = this.show;
    }
    scene.requestRender();
  }

  get loaded() {
    const object = this.object;
    if (!object) return false;
    if (object instanceof Cesium.Cesium3DTileset) return !this.show || this.initialLoaded || object.tilesLoaded;
    if (object instanceof Cesium.Primitive) return object.ready;
    return true;
  }
}

const layers = new Map();
const settings = new Map(); // visibility and opacity chosen by the user, kept across reloads

function addLayer(layer, object) {
  const saved = settings.get(layer.id);
  if (saved) Object.assign(layer, saved);
  layer.object = object;
  layers.set(layer.id, layer);
  state.layers[layer.id] = { group: layer.group, source: layer.source, count: layer.count };
  layer.apply();
  renderTree();
}

function removeLayers(predicate) {
  for (const [id, layer] of [...layers]) {
    if (!predicate(layer)) continue;
    const object = layer.object;
    if (object instanceof Cesium.ImageryLayer) viewer.imageryLayers.remove(object, true);
    else if (object instanceof Cesium.CustomDataSource) viewer.dataSources.remove(object, true);
    else if (object) scene.primitives.remove(object);
    layers.delete(id);
    delete state.layers[id];
  }
  renderTree();
}

function renderTree() {
  const tree = $("layers");
  tree.replaceChildren();
  for (const [group, title] of GROUPS) {
    const members = [...layers.values()].filter((layer) => layer.group === group);
    if (!members.length) continue;
    const details = document.createElement("details");
    details.className = "group";
    details.open = true;
    details.dataset.group = group;
    const summary = document.createElement("summary");
    summary.textContent = title;
    details.append(summary);
    for (const layer of members) {
      const row = document.createElement("div");
      row.className = "layer";
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = layer.show;
      box.dataset.layer = layer.id;
      box.addEventListener("change", () => {
        layer.show = box.checked;
        settings.set(layer.id, { show: layer.show, opacity: layer.opacity });
        layer.apply();
      });
      label.append(box, ` ${layer.title}`);
      const slider = document.createElement("input");
      Object.assign(slider, { type: "range", min: "0", max: "1", step: "0.05", value: String(layer.opacity) });
      slider.setAttribute("aria-label", `Opacity of ${layer.title}`);
      slider.dataset.opacity = layer.id;
      slider.addEventListener("input", () => {
        layer.opacity = Number(slider.value);
        settings.set(layer.id, { show: layer.show, opacity: layer.opacity });
        layer.apply();
      });
      row.append(label, slider);
      details.append(row);
    }
    tree.append(details);
  }
}

// ---------------------------------------------------------------- scene set-up
let collections = [];

async function setUpGround() {
  try {
    viewer.terrainProvider = await Cesium.CesiumTerrainProvider.fromUrl(api("terrain/"), { requestVertexNormals: false });
  } catch (error) {
    console.warn(`no terrain from this server, using the ellipsoid: ${error}`);
  }
  const ortho = collections.find((c) => c.kind === "raster" && c.id === "ortho");
  if (!ortho) return;
  const tilejson = await getJson(api("raster/ortho/WebMercatorQuad/tilejson.json"));
  const provider = new Cesium.UrlTemplateImageryProvider({
    url: api("raster/ortho/tiles/WebMercatorQuad/{z}/{x}/{y}.png"),
    tilingScheme: new Cesium.WebMercatorTilingScheme(),
    rectangle: Cesium.Rectangle.fromDegrees(...tilejson.bounds),
    minimumLevel: tilejson.minzoom,
    maximumLevel: tilejson.maxzoom,
    credit: "Orthophoto: CIM Twin",
  });
  const layer = new Layer("ortho", "basemap", "Orthophoto");
  layer.source = "raster tiles";
  addLayer(layer, viewer.imageryLayers.addImageryProvider(provider));
}

/**
 * The topographic basemap of each scale band as images the server draws from its vector tiles
 * (`/tiles/basemap/{z}/{x}/{y}.png`), over the orthophoto, off at first. Each band's zoom range
 * comes from the server's TileJSON; the band shows only at the globe's levels matching it: a
 * 256-pixel Web Mercator imagery level sits one above the geographic terrain level it drapes.
 */
async function addBasemapBands() {
  if (!collections.some((c) => c.kind === "vector" && c.scale_band)) return;
  const tilejson = await getJson(api("tiles/basemap/png/tilejson.json"));
  const rectangle = Cesium.Rectangle.fromDegrees(...tilejson.bounds);
  for (const band of tilejson.scale_bands || []) {
    const provider = new Cesium.UrlTemplateImageryProvider({
      url: tilejson.tiles[0], tilingScheme: new Cesium.WebMercatorTilingScheme(), rectangle,
      minimumLevel: band.minzoom, maximumLevel: band.maxzoom, credit: `Basemap ${band.band}: CIM Twin`,
    });
    const imagery = new Cesium.ImageryLayer(provider, {
      minimumTerrainLevel: Math.max(0, band.minzoom - 1), maximumTerrainLevel: band.maxzoom - 1, show: false,
    });
    viewer.imageryLayers.add(imagery);
    const layer = new Layer(`basemap_${band.band.replace("1:", "")}`, "basemap", `Basemap ${band.band} (z${band.minzoom}–${band.maxzoom})`);
    layer.source = "PNG tiles";
    layer.show = false;
    layer.band = band;
    addLayer(layer, imagery);
  }
}

/** The district: the union of the 3D-relevant collections' extents, framed obliquely. */
function districtRectangle() {
  const boxes = collections
    .filter((c) => ["pipe_network", "raster", "terrain"].includes(c.kind))
    .map((c) => c.extent?.spatial?.bbox?.[0])
    .filter(Boolean);
  const [west, south, east, north] = boxes.reduce(
    (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[2], b[2]), Math.max(a[3], b[3])],
    [180, 90, -180, -90],
  );
  return Cesium.Rectangle.fromDegrees(west, south, east, north);
}

function lookAt(cartographic, range, heading = 25, pitch = -38) {
  const target = Cesium.Cartographic.toCartesian(cartographic);
  scene.camera.lookAt(target, new Cesium.HeadingPitchRange(Cesium.Math.toRadians(heading), Cesium.Math.toRadians(pitch), range));
  scene.camera.lookAtTransform(Cesium.Matrix4.IDENTITY);
  scene.requestRender();
}

async function flyToDistrict() {
  const rectangle = districtRectangle();
  const centre = Cesium.Rectangle.center(rectangle);
  centre.height = (await groundHeights([[Cesium.Math.toDegrees(centre.longitude), Cesium.Math.toDegrees(centre.latitude)]]))[0];
  const width = Cesium.Rectangle.computeWidth(rectangle) * 6378137 * Math.cos(centre.latitude);
  const height = Cesium.Rectangle.computeHeight(rectangle) * 6378137;
  // aim a little west of the centre so the district sits clear of the panel on the left
  centre.longitude -= Cesium.Rectangle.computeWidth(rectangle) * 0.12;
  lookAt(centre, Math.hypot(width, height) * 0.95);
}

// ---------------------------------------------------------------- 3D Tiles and feature layers
let generation = 0;

/** Reload everything that depends on scenario and time: the root tileset and the feature layers. */
async function loadScene() {
  const mine = ++generation;
  state.ready = false;
  state.tilesLoaded = false;
  state.loadStartMs = performance.now();
  status("Loading the twin…");
  removeLayers((layer) => layer.group !== "basemap" && layer.group !== "analysis");
  // Comparing: the current root everywhere, and what only the planned root has on the right of the divider.
  const scenarios = state.compare ? ["current", "planned"] : [state.scenario];
  const roots = await Promise.all(scenarios.map((scenario) => rootTileset(scenario)));
  if (mine !== generation) return;
  state.rootUrl = roots[0].url;
  const children = [];
  for (const { url, root } of roots) {
    for (const child of root.root.children) {
      if (!children.some((c) => c.child.extras.layer === child.extras.layer)) children.push({ child, url, planned: roots.length > 1 && url === roots[1].url });
    }
  }
  state.root = children.map(({ child }) => child.extras);
  const tiled = new Set();
  const jobs = children.map(async ({ child, url: rootUrl, planned }) => {
    const { layer: id, kind } = child.extras;
    tiled.add(id);
    // pipes lie under the ground: coarser levels until the camera comes close
    const sse = kind === "pipe_network" ? 16 : 8;
    const tileset = await Cesium.Cesium3DTileset.fromUrl(new URL(child.content.uri, rootUrl).href, { maximumScreenSpaceError: sse });
    if (mine !== generation) return;
    const layer = new Layer(id, GROUP_OF_KIND[kind] || "buildings", titleOf(id));
    layer.source = "3D Tiles";
    layer.kind = kind;
    if (planned) tileset.splitDirection = Cesium.SplitDirection.RIGHT;
    const collection = collections.find((c) => c.id === id);
    layer.count = collection?.feature_count ?? 0;
    // one map scale of extruded buildings at a time (1:2000 at first), like the feature-drawn ones
    if (collection?.kind === "vector" && collection.scale_band && collection.scenario !== "planned") layer.show = collection.scale_band === "1:2000";
    tileset.initialTilesLoaded.addEventListener(() => { layer.initialLoaded = true; });
    tileset.tileFailed.addEventListener((event) => fail(`tile failed: ${event.url} ${event.message}`));
    addLayer(layer, scene.primitives.add(tileset));
    applyUnderground();
  });
  // Layers the root tileset does not carry yet are drawn from OGC API Features.
  const wanted = collections.filter((c) => !tiled.has(c.id) && fallbackKind(c) && inScenario(c));
  jobs.push(...wanted.map((c) => loadFeatureLayer(c, mine)));
  const results = await Promise.allSettled(jobs);
  const failure = results.find((result) => result.status === "rejected");
  if (failure) fail(failure.reason);
  if (mine !== generation) return;
  state.ready = true;
  status(`${layers.size} layers · ${state.scenario}${state.datetime ? ` at ${state.datetime.slice(0, 10)}` : ""}`);
}

/** The twin root tileset of a scenario at the chosen time; 404 means no 3D layer there (an empty root). */
async function rootTileset(scenario) {
  const params = new URLSearchParams({ scenario });
  if (state.datetime) params.set("datetime", state.datetime);
  const url = api(`3dtiles/twin/tileset.json?${params}`);
  const response = await fetch(url);
  const root = response.status === 404 ? { root: { children: [] } } : await response.json();
  if (!response.ok && response.status !== 404) throw new Error(root.detail || `${response.status} ${url}`);
  return { url, root };
}

const titleOf = (id) => id.replaceAll("_", " ").replace(/^./, (c) => c.toUpperCase());
const inScenario = (c) => c.scenario !== "planned" || state.scenario === "planned" || state.compare;

function fallbackKind(collection) {
  if (collection.kind === "pipe_network" && collection.id.endsWith("_pipes")) return "pipes";
  if (collection.kind === "vector" && collection.id.startsWith("buildings_") && collection.scale_band !== "1:10000") return "buildings";
  if (collection.kind === "sensor") return "sensors";
  return null;
}

async function loadFeatureLayer(collection, mine) {
  const features = await allFeatures(collection.id);
  if (mine !== generation) return;
  const kind = fallbackKind(collection);
  const layer = new Layer(collection.id, kind, titleOf(collection.id));
  layer.source = "OGC API Features";
  layer.kind = collection.kind;
  layer.count = features.length;
  layer.show = kind !== "buildings" || collection.scale_band === "1:2000" || collection.scenario === "planned";
  let object;
  if (kind === "pipes") object = await pipePrimitive(collection.id, features);
  else if (kind === "buildings") object = await buildingPrimitive(collection, features);
  else object = await sensorSource(collection.id, features);
  if (mine !== generation) return;
  layer.ids = object.ids;
  addLayer(layer, object.primitive);
  if (object.primitive instanceof Cesium.CustomDataSource) await viewer.dataSources.add(object.primitive);
  else scene.primitives.add(object.primitive);
}

const pipeGeometry = new Map(); // "layer/fid" -> 3D positions of the pipe's centreline

/** A pipe's 3D centreline from its inverts, else its depths below the ground heights given. */
function centreline(feature, ground) {
  const p = feature.properties;
  const coords = feature.geometry.coordinates;
  return coords.map(([lon, lat], i) => {
    const t = coords.length > 1 ? i / (coords.length - 1) : 0;
    const invert = p.start_invert != null && p.end_invert != null ? p.start_invert + t * (p.end_invert - p.start_invert) : null;
    const depth = p.start_depth != null ? p.start_depth + t * ((p.end_depth ?? p.start_depth) - p.start_depth) : 1.2;
    const z = invert != null ? invert + (p.diameter || 300) / 2000 : ground[i] - depth;
    return Cesium.Cartesian3.fromDegrees(lon, lat, z);
  });
}

/** The centreline of a pipe: from the feature-drawn layer, else from its record (pipes drawn as 3D Tiles). */
async function pipeCentreline(layerId, fid, feature = null) {
  const key = `${layerId}/${fid}`;
  if (!pipeGeometry.has(key)) {
    const record = feature?.properties?.start_depth !== undefined ? feature : await getJson(api(`collections/${layerId}/items/${encodeURIComponent(fid)}`));
    pipeGeometry.set(key, centreline(record, await groundHeights(record.geometry.coordinates)));
  }
  return pipeGeometry.get(key);
}

async function pipePrimitive(layerId, features) {
  const lines = features.filter((f) => f.geometry?.type === "LineString");
  const points = lines.flatMap((f) => f.geometry.coordinates);
  const ground = await groundHeights(points);
  let k = 0;
  const instances = lines.map((f) => {
    const p = f.properties;
    const coords = f.geometry.coordinates;
    const positions = centreline(f, ground.slice(k, k + coords.length));
    k += coords.length;
    const id = { layer: layerId, fid: String(f.id), kind: "pipe", gravity: p.start_invert != null };
    pipeGeometry.set(`${layerId}/${f.id}`, positions);
    const colour = Cesium.Color.fromCssColorString(CLASS_COLOURS[p.class] || "#9e9e9e");
    return new Cesium.GeometryInstance({
      geometry: new Cesium.PolylineGeometry({ positions, width: 4, arcType: Cesium.ArcType.NONE, vertexFormat: Cesium.PolylineColorAppearance.VERTEX_FORMAT }),
      attributes: { color: Cesium.ColorGeometryInstanceAttribute.fromColor(colour) },
      id,
    });
  });
  const primitive = new Cesium.Primitive({ geometryInstances: instances, appearance: new Cesium.PolylineColorAppearance({ translucent: true }), asynchronous: true });
  return { primitive, ids: instances.map((i) => i.id) };
}

async function buildingPrimitive(collection, features) {
  const polygons = features.filter((f) => f.geometry?.type === "Polygon");
  const ground = await groundHeights(polygons.map((f) => f.geometry.coordinates[0][0]));
  const planned = collection.scenario === "planned";
  const colour = Cesium.Color.fromCssColorString(planned ? PLANNED_COLOUR : BUILDING_COLOUR);
  const instances = polygons.map((f, i) => {
    const ring = f.geometry.coordinates[0].slice(0, -1).flat();
    const storeys = f.properties.floors || 3;
    const height = f.properties.height || storeys * 3;
    return new Cesium.GeometryInstance({
      geometry: new Cesium.PolygonGeometry({
        polygonHierarchy: new Cesium.PolygonHierarchy(Cesium.Cartesian3.fromDegreesArray(ring)),
        height: ground[i] - 1, extrudedHeight: ground[i] + height, vertexFormat: Cesium.PerInstanceColorAppearance.VERTEX_FORMAT,
      }),
      attributes: { color: Cesium.ColorGeometryInstanceAttribute.fromColor(colour) },
      id: { layer: collection.id, fid: String(f.id), kind: "building" },
    });
  });
  // compared with the current scenario, planned buildings show only right of the divider
  const right = planned && state.compare;
  const appearance = new Cesium.PerInstanceColorAppearance({ translucent: true, closed: true, ...(right ? { fragmentShaderSource: rightOfSplit(PLAIN_FS) } : {}) });
  const primitive = new Cesium.Primitive({ geometryInstances: instances, appearance, asynchronous: true });
  return { primitive, ids: instances.map((i) => i.id) };
}

const PLAIN_FS = new Cesium.PerInstanceColorAppearance({ translucent: true, closed: true }).fragmentShaderSource;

/** A fragment shader drawn only right of the swipe divider (czm_splitPosition is in drawing-buffer pixels). */
function rightOfSplit(source) {
  return source.replace(/void main\(\)\s*\{/, "void main()\n{\n    if (gl_FragCoord.x < czm_splitPosition) discard;");
}

async function sensorSource(layerId, features) {
  const points = features.filter((f) => f.geometry?.type === "Point");
  const ground = await groundHeights(points.map((f) => f.geometry.coordinates));
  const source = new Cesium.CustomDataSource(layerId);
  points.forEach((f, i) => {
    const [lon, lat] = f.geometry.coordinates;
    source.entities.add({
      id: `${layerId}/${f.id}`,
      position: Cesium.Cartesian3.fromDegrees(lon, lat, ground[i] + 3),
      point: { pixelSize: 9, color: Cesium.Color.fromCssColorString("#00bfa5"), outlineColor: Cesium.Color.WHITE, outlineWidth: 2, disableDepthTestDistance: Number.POSITIVE_INFINITY },
      properties: { layer: layerId, fid: String(f.id), kind: "sensor" },
    });
  });
  return { primitive: source, ids: [] };
}

// ---------------------------------------------------------------- picking
function pickedRecord(picked) {
  if (!picked) return null;
  if (picked instanceof Cesium.Cesium3DTileFeature) {
    const layer = [...layers.values()].find((l) => l.object === picked.tileset);
    const fid = picked.getProperty("id") ?? picked.getProperty("GlobalId");
    // sewers (CJJ 61 classes Y*/W*/H*: storm, foul, combined) flow by gravity: no valves to close
    const gravity = /^[YWH]S/.test(String(picked.getProperty("class") ?? ""));
    return layer && fid != null ? { layer: layer.id, fid: String(fid), kind: layer.kind, gravity } : null;
  }
  if (picked.id instanceof Cesium.Entity) {
    const properties = picked.id.properties?.getValue(Cesium.JulianDate.now());
    return properties?.layer ? properties : null;
  }
  return picked.id?.layer ? picked.id : null;
}

async function showRecord(record) {
  const params = state.datetime ? `?datetime=${encodeURIComponent(state.datetime)}` : "";
  const body = await getJson(api(`features/${record.layer}/${encodeURIComponent(record.fid)}${params}`));
  state.picked = body;
  const rows = [["layer", body.layer], ["id", body.id], ...Object.entries(body.properties), ["valid from", body.valid_from]];
  $("props").replaceChildren(...rows.map(([key, value]) => {
    const tr = document.createElement("tr");
    const name = document.createElement("td");
    const text = document.createElement("td");
    name.textContent = key;
    text.textContent = value == null ? "—" : typeof value === "object" ? JSON.stringify(value) : String(value);
    tr.append(name, text);
    return tr;
  }));
  $("picked").hidden = false;
  return body;
}

async function pickAt(x, y) {
  const record = pickedRecord(scene.pick(new Cesium.Cartesian2(x, y)));
  if (!record) return null;
  await showRecord(record);
  const isPipe = record.kind === "pipe" || (record.kind === "pipe_network" && /_pipes$/.test(record.layer));
  if (isPipe && !record.gravity) await runBurst(record.layer, record.fid, []);
  return record;
}

// A click goes to the active tool (measuring, drawing a section line) or else picks a feature.
viewer.screenSpaceEventHandler.setInputAction((click) => {
  const action = ctx.tool ? ctx.tool.click(click.position.x, click.position.y) : pickAt(click.position.x, click.position.y);
  Promise.resolve(action).catch(fail);
}, Cesium.ScreenSpaceEventType.LEFT_CLICK);

// ---------------------------------------------------------------- burst analysis
const burstSource = new Cesium.CustomDataSource("burst");
viewer.dataSources.add(burstSource);

async function runBurst(layerId, pipeId, failedValves) {
  status(`Burst analysis of ${pipeId}…`);
  const body = { network: layerId, pipe_id: pipeId, failed_valves: failedValves };
  if (state.datetime) body.datetime = state.datetime;
  const answer = await getJson(api("analysis/burst"), {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  await drawBurst(layerId, answer);
  listValves(layerId, pipeId, answer, failedValves);
  state.burst = { layer: layerId, pipe: pipeId, failed: failedValves, answer }; // drawn and listed
  status(`Burst of ${pipeId}: close ${answer.valves_to_close.length} valve(s), ${answer.isolated.pipes.count} pipes shut in`);
  return answer;
}

const ROLE_COLOURS = { burst_pipe: "#d50000", isolated_pipe: "#ff6d00", lost_supply_pipe: "#ffd600" };

async function drawBurst(layerId, answer) {
  burstSource.entities.removeAll();
  const lines = answer.features.features.filter((f) => f.geometry.type === "LineString");
  await groundHeights(lines.flatMap((f) => f.geometry.coordinates)); // one terrain query for them all
  for (const feature of answer.features.features) {
    const role = feature.properties.role;
    if (feature.geometry.type === "LineString") {
      const positions = pipeGeometry.get(`${layerId}/${feature.id}`)
        || centreline(feature, await groundHeights(feature.geometry.coordinates));
      const colour = Cesium.Color.fromCssColorString(ROLE_COLOURS[role] || "#ff6d00");
      burstSource.entities.add({
        polyline: { positions, width: role === "burst_pipe" ? 9 : 6, material: colour, depthFailMaterial: colour.withAlpha(0.8), arcType: Cesium.ArcType.NONE },
        properties: { layer: layerId, fid: String(feature.id), kind: "pipe", role },
      });
    }
  }
  const valves = answer.valves_to_close;
  const heights = await groundHeights(valves.map((v) => v.geometry.coordinates));
  valves.forEach((valve, i) => {
    const [lon, lat] = valve.geometry.coordinates;
    burstSource.entities.add({
      position: Cesium.Cartesian3.fromDegrees(lon, lat, heights[i] + 2),
      point: { pixelSize: 14, color: Cesium.Color.fromCssColorString(valve.secondary ? "#ffab00" : "#00c853"), outlineColor: Cesium.Color.BLACK, outlineWidth: 2, disableDepthTestDistance: Number.POSITIVE_INFINITY },
      label: {
        text: String(valve.order), font: "bold 14px sans-serif", fillColor: Cesium.Color.WHITE, outlineColor: Cesium.Color.BLACK,
        outlineWidth: 3, style: Cesium.LabelStyle.FILL_AND_OUTLINE, pixelOffset: new Cesium.Cartesian2(0, -16), disableDepthTestDistance: Number.POSITIVE_INFINITY,
      },
      properties: { layer: layerId.replace(/_pipes$/, "_nodes"), fid: valve.id, kind: "valve" },
    });
  });
  if (answer.outage_area) {
    const ring = answer.outage_area.type === "Polygon" ? answer.outage_area.coordinates[0] : answer.outage_area.coordinates[0][0];
    burstSource.entities.add({
      polygon: { hierarchy: Cesium.Cartesian3.fromDegreesArray(ring.flat()), material: Cesium.Color.RED.withAlpha(0.28), classificationType: Cesium.ClassificationType.TERRAIN },
      properties: { kind: "outage_area" },
    });
  }
  await drawAffectedBuildings(answer.buildings || []);
  state.burstDrawn = burstSource.entities.values.length;
  if (!layers.has("burst")) {
    const layer = new Layer("burst", "analysis", "Burst: valves, shut-in pipes, outage");
    layer.source = "POST /analysis/burst";
    addLayer(layer, burstSource);
  }
  scene.requestRender();
}

async function drawAffectedBuildings(buildings) {
  const records = await Promise.all(buildings.slice(0, 200).map((b) => getJson(api(`collections/${b.layer}/items/${encodeURIComponent(b.id)}`)).then((f) => [b, f])));
  const polygons = records.filter(([, f]) => f.geometry?.type === "Polygon");
  const heights = await groundHeights(polygons.map(([, f]) => f.geometry.coordinates[0][0]));
  polygons.forEach(([b, f], i) => {
    burstSource.entities.add({
      polygon: {
        hierarchy: Cesium.Cartesian3.fromDegreesArray(f.geometry.coordinates[0].slice(0, -1).flat()),
        height: heights[i], extrudedHeight: heights[i] + (f.properties.height || 10) + 0.6,
        material: Cesium.Color.fromCssColorString(b.critical ? "#d500f9" : "#ff9100").withAlpha(0.85),
      },
      properties: { layer: b.layer, fid: b.id, kind: "building" },
    });
  });
}

function listValves(layerId, pipeId, answer, failedValves) {
  $("burst").hidden = false;
  const lost = answer.lost_supply.pipes.count;
  $("burst-summary").textContent = `Pipe ${pipeId}: ${answer.isolated.pipes.count} pipes shut in, ${lost} lose supply, `
    + `${(answer.buildings || []).length} buildings affected. Tick valves that fail to close, then rerun.`;
  const failed = new Set(failedValves);
  const items = [...answer.valves_to_close, ...answer.passed_valves.map((v) => ({ ...v, failed: true }))].map((valve) => {
    const li = document.createElement("li");
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = valve.id;
    box.checked = failed.has(valve.id);
    box.title = "valve fails to close";
    label.append(box, ` ${valve.id}${valve.secondary ? " (secondary)" : ""}${valve.distance_m != null ? ` · ${Math.round(valve.distance_m)} m` : ""}`);
    li.append(label);
    if (failed.has(valve.id)) li.className = "failed";
    return li;
  });
  $("valves").replaceChildren(...items);
  $("rerun").onclick = () => {
    const chosen = [...$("valves").querySelectorAll("input:checked")].map((box) => box.value);
    runBurst(layerId, pipeId, chosen).catch(fail);
  };
}

$("clear-burst").addEventListener("click", () => {
  burstSource.entities.removeAll();
  state.burst = null;
  $("burst").hidden = true;
  scene.requestRender();
});

// ---------------------------------------------------------------- underground view
function windowPolygon() {
  const centre = scene.globe.pick(scene.camera.getPickRay(new Cesium.Cartesian2(scene.canvas.clientWidth / 2, scene.canvas.clientHeight / 2)), scene)
    || Cesium.Cartographic.toCartesian(Cesium.Rectangle.center(districtRectangle()));
  const frame = Cesium.Transforms.eastNorthUpToFixedFrame(centre);
  const corners = [[-1, -1], [1, -1], [1, 1], [-1, 1]].map(([e, n]) =>
    Cesium.Matrix4.multiplyByPoint(frame, new Cesium.Cartesian3(e * WINDOW_HALF_SIZE_M, n * WINDOW_HALF_SIZE_M, 0), new Cesium.Cartesian3()));
  return new Cesium.ClippingPolygon({ positions: corners });
}

function applyUnderground() {
  const on = state.underground;
  globe.translucency.enabled = on;
  globe.translucency.frontFaceAlpha = 0.35;
  scene.screenSpaceCameraController.enableCollisionDetection = !on;
  const polygon = on ? windowPolygon() : null;
  for (const layer of layers.values()) {
    if (layer.kind !== "mesh" || !(layer.object instanceof Cesium.Cesium3DTileset)) continue;
    layer.object.clippingPolygons = on ? new Cesium.ClippingPolygonCollection({ polygons: [polygon] }) : undefined;
  }
  globe.clippingPolygons = on ? new Cesium.ClippingPolygonCollection({ polygons: [polygon] }) : undefined;
  scene.requestRender();
}

$("underground").addEventListener("change", (event) => {
  state.underground = event.target.checked;
  applyUnderground();
});

// ---------------------------------------------------------------- scenario and time
let timeRange = [Date.parse("2015-01-01T00:00:00Z"), Date.now()];

function setUpTime() {
  const starts = collections.map((c) => c.extent?.temporal?.interval?.[0]?.[0]).filter(Boolean).map(Date.parse);
  if (starts.length) timeRange = [Math.min(...starts), Date.now()];
  const slider = $("time");
  slider.addEventListener("input", () => { $("time-label").textContent = sliderTime() || "now"; });
  slider.addEventListener("change", () => {
    state.datetime = sliderTime();
    loadScene().catch(fail);
  });
}

function sliderTime() {
  const value = Number($("time").value);
  if (value >= 100) return null;
  const t = timeRange[0] + (value / 100) * (timeRange[1] - timeRange[0]);
  return new Date(t).toISOString().replace(/\.\d+Z$/, "Z");
}

for (const radio of document.querySelectorAll("input[name=scenario]")) {
  radio.addEventListener("change", () => {
    state.scenario = radio.value;
    loadScene().catch(fail);
  });
}

// ---------------------------------------------------------------- helpers for tests and scripts
/** Window position (CSS pixels) of the midpoint of a pipe drawn from features, or null. */
state.pipeScreenPosition = async (layerId, fid) => {
  const positions = await pipeCentreline(layerId, fid);
  const middle = Cesium.Cartesian3.midpoint(positions[0], positions[positions.length - 1], new Cesium.Cartesian3());
  const xy = Cesium.SceneTransforms.worldToWindowCoordinates(scene, middle);
  return xy ? [xy.x, xy.y] : null;
};
/** Put the camera over a pipe (range in metres), e.g. before clicking it. */
state.lookAtPipe = async (layerId, fid, range = 160) => {
  const positions = await pipeCentreline(layerId, fid);
  const middle = Cesium.Cartesian3.midpoint(positions[0], positions[positions.length - 1], new Cesium.Cartesian3());
  lookAt(Cesium.Cartographic.fromCartesian(middle), range, 20, -50);
};
/** Window position (CSS pixels) of a place at a height above the ground, or null when off screen. */
state.screenPosition = async (lon, lat, above = 0) => {
  const [height] = await groundHeights([[lon, lat]]);
  const xy = Cesium.SceneTransforms.worldToWindowCoordinates(scene, Cesium.Cartesian3.fromDegrees(lon, lat, height + above));
  return xy ? [xy.x, xy.y] : null;
};
/** What a click at a window position would pick: {layer, fid, kind} or null (nothing is shown). */
state.pickRecordAt = (x, y) => {
  const record = pickedRecord(scene.pick(new Cesium.Cartesian2(x, y)));
  return record && { layer: record.layer, fid: record.fid, kind: record.kind };
};
/** Put the camera over a place, e.g. a planned building. */
state.lookAtLonLat = async (lon, lat, range = 400) => {
  const [height] = await groundHeights([[lon, lat]]);
  lookAt(Cesium.Cartographic.fromDegrees(lon, lat, height), range);
};
state.setUnderground = (on) => {
  $("underground").checked = on;
  state.underground = on;
  applyUnderground();
};
state.pickAt = pickAt;
state.runBurst = runBurst;
state.requestRender = () => scene.requestRender();
/** Resolve after `count` more frames are drawn (render on demand draws only when asked). */
state.renderFrames = (count) => new Promise((done) => {
  let left = count;
  const remove = scene.postRender.addEventListener(() => {
    left -= 1;
    if (left <= 0) {
      remove();
      done(state.frames);
    } else {
      scene.requestRender();
    }
  });
  scene.requestRender();
});
state.viewer = viewer;

// The shared pieces the tool modules build on.
const ctx = {
  Cesium, viewer, scene, state, api, getJson, status, fail, $, Layer, addLayer, layers, lookAt, groundHeights, showRecord,
  collections: () => collections, reload: () => loadScene(), tool: null,
};
setUpMeasure(ctx);
setUpSearch(ctx);
setUpCompare(ctx);
setUpSection(ctx);
setUpFlood(ctx);
const sensors = setUpSensors(ctx);
let sensorsStarted = false;

// Poll: the scene is loaded when every layer's first view is in; keep rendering while it loads.
setInterval(() => {
  const all = [...layers.values()];
  for (const layer of all) {
    if (!(layer.id in state.layerLoadedMs) && layer.loaded) state.layerLoadedMs[layer.id] = Math.round(performance.now());
  }
  const loaded = state.ready && all.every((layer) => layer.loaded);
  if (loaded && !state.tilesLoaded) {
    viewer.resolutionScale = 1;
    state.tilesLoaded = true;
    state.tilesLoadedMs = performance.now();
    for (const layer of all) layer.apply(); // primitives take their opacity once built
    if (!sensorsStarted && collections.some((c) => c.kind === "sensor")) {
      sensorsStarted = true; // live values once the first view is in
      sensors.start().catch(fail);
    }
  }
  state.globeLoaded = globe.tilesLoaded;
  if (state.globeLoaded && !state.globeLoadedMs) state.globeLoadedMs = performance.now();
  if (!loaded || !state.globeLoaded) scene.requestRender();
}, 100);

(async () => {
  collections = (await getJson(api("collections"))).collections;
  await setUpGround();
  setUpTime();
  // the camera, the basemap bands and the twin's layers load side by side
  await Promise.all([flyToDistrict(), addBasemapBands(), loadScene()]);
})().catch(fail);
