// The twin's 2D map: the basemap style, the orthophoto and the pipes from this server's
// /styles, centred on the twin's extent, with a layer switcher and a feature popup.
// Every URL is relative to this page, so the map works behind any host or path prefix.
import * as maplibregl from '../static/maplibre-gl/maplibre-gl.mjs';

const ROOT = new URL('..', window.location.href);
const COMPOSITE_BANDS = [[15, '10000'], [17, '2000'], [Infinity, '500']]; // zoom up to -> band
const status = document.getElementById('status');
window.mapReady = false;

async function getJSON(path) {
  const response = await fetch(new URL(path, ROOT));
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function unionExtent(collections) {
  let box = null;
  for (const collection of collections) {
    const bbox = collection.extent?.spatial?.bbox?.[0];
    if (!bbox) continue;
    const [minx, miny, maxx, maxy] = bbox.length === 6 ? [bbox[0], bbox[1], bbox[3], bbox[4]] : bbox;
    box = box ? [Math.min(box[0], minx), Math.min(box[1], miny), Math.max(box[2], maxx), Math.max(box[3], maxy)]
      : [minx, miny, maxx, maxy];
  }
  return box;
}

// The basemap with the orthophoto and the pipes slotted in under the basemap's labels.
function composeStyle(basemap, orthophoto, pipes, layerIds) {
  const style = structuredClone(basemap);
  const ortho = orthophoto.layers.map((layer) => ({...layer, layout: {...layer.layout, visibility: 'none'}}));
  const pipeLayers = pipes.layers.filter((layer) => layerIds.has(layer['source-layer']));
  Object.assign(style.sources, orthophoto.sources, pipes.sources);
  const firstLabel = style.layers.findIndex((layer) => layer.type === 'symbol');
  const at = firstLabel < 0 ? style.layers.length : firstLabel;
  style.layers.splice(at, 0, ...ortho, ...pipeLayers);
  return style;
}

function groupsOf(style) {
  const groups = new Map();
  for (const layer of style.layers) {
    const meta = layer.metadata || {};
    const id = meta['twin:group'];
    if (!id) continue;
    if (!groups.has(id)) groups.set(id, {id, title: meta['twin:group-title'] || id, colour: meta['twin:colour'], layers: []});
    groups.get(id).layers.push(layer);
  }
  return [...groups.values()];
}

function buildSwitcher(map, groups) {
  const fieldset = document.getElementById('layers');
  for (const group of groups) {
    const label = document.createElement('label');
    label.className = 'layer';
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.name = group.id;
    box.dataset.group = group.id;
    box.checked = group.layers.some((layer) => layer.layout?.visibility !== 'none');
    box.addEventListener('change', () => {
      for (const layer of group.layers) map.setLayoutProperty(layer.id, 'visibility', box.checked ? 'visible' : 'none');
    });
    const swatch = document.createElement('span');
    swatch.className = group.colour ? 'swatch' : 'swatch area';
    swatch.style.background = group.colour || (group.id === 'orthophoto' ? '#7d8a63' : '#f6e7a8');
    label.append(box, swatch, document.createTextNode(group.title));
    fieldset.append(label);
  }
}

// The layer a rendered feature belongs to: its source-layer is the layer id, except in the
// composite basemap, whose source-layers are feature classes in the band chosen by zoom.
function layerIdOf(feature, map, layerIds) {
  if (typeof feature.properties.layer === 'string' && layerIds.has(feature.properties.layer)) return feature.properties.layer;
  const sourceLayer = feature.sourceLayer;
  if (layerIds.has(sourceLayer)) return sourceLayer;
  const maxzoom = map.getSource(feature.source)?.maxzoom ?? 22;
  const zoom = Math.min(Math.floor(map.getZoom()), maxzoom);
  const band = COMPOSITE_BANDS.find(([upTo]) => zoom <= upTo)[1];
  const candidate = `${sourceLayer}_${band}`;
  return layerIds.has(candidate) ? candidate : null;
}

function propertyTable(properties) {
  const table = document.createElement('table');
  for (const [key, value] of Object.entries(properties)) {
    if (value === null || value === undefined || value === '') continue;
    const row = table.insertRow();
    row.insertCell().textContent = key;
    row.insertCell().textContent = typeof value === 'object' ? JSON.stringify(value) : String(value);
  }
  return table;
}

async function showFeature(map, feature, lngLat, titles, layerIds) {
  const layerId = layerIdOf(feature, map, layerIds);
  const fid = feature.properties.fid ?? feature.id;
  const content = document.createElement('div');
  const heading = document.createElement('h2');
  heading.textContent = `${titles.get(layerId) || layerId || feature.sourceLayer} · ${fid}`;
  const note = document.createElement('p');
  note.className = 'note';
  note.textContent = 'Loading the full record…';
  content.append(heading, propertyTable(feature.properties), note);
  const popup = new maplibregl.Popup({maxWidth: '340px'}).setLngLat(lngLat).setDOMContent(content).addTo(map);
  if (!layerId || fid === undefined) {
    note.textContent = 'Attributes from the tile.';
    return popup;
  }
  try {
    const record = await getJSON(`collections/${encodeURIComponent(layerId)}/items/${encodeURIComponent(fid)}`);
    content.replaceChildren(heading, propertyTable({id: record.id, ...record.properties}));
    popup.setDOMContent(content);
    window.lastRecord = record;
  } catch (error) {
    note.textContent = `Full record unavailable (${error.message}).`;
  }
  return popup;
}

async function main() {
  const [collections, basemap, orthophoto, pipes] = await Promise.all([
    getJSON('collections').then((body) => body.collections),
    getJSON('styles/basemap.json'),
    getJSON('styles/orthophoto.json'),
    getJSON('styles/pipes.json'),
  ]);
  const layerIds = new Set(collections.map((c) => c.id));
  const titles = new Map(collections.map((c) => [c.id, c.title]));
  const style = composeStyle(basemap, orthophoto, pipes, layerIds);
  const extent = unionExtent(collections) || [-180, -85, 180, 85];
  const map = new maplibregl.Map({
    container: 'map',
    style,
    bounds: [[extent[0], extent[1]], [extent[2], extent[3]]],
    fitBoundsOptions: {padding: 24},
    hash: true, // #zoom/lat/lon in the address, to share a view or open one

    canvasContextAttributes: {preserveDrawingBuffer: true, antialias: false},
    fadeDuration: 0,
    attributionControl: false,
  });
  window.twinMap = map;
  map.addControl(new maplibregl.NavigationControl({visualizePitch: false}), 'top-right');
  map.addControl(new maplibregl.ScaleControl({unit: 'metric'}), 'bottom-right');
  map.on('error', (event) => {
    console.error('map error:', event.error?.message || event.error);
    status.textContent = `Error: ${event.error?.message || 'see the console'}`;
    status.className = 'error';
  });
  buildSwitcher(map, groupsOf(style));
  const interactive = style.layers.filter((l) => l.source && l.type !== 'symbol' && l.type !== 'raster').map((l) => l.id);
  map.on('click', (event) => {
    const visible = interactive.filter((id) => map.getLayoutProperty(id, 'visibility') !== 'none');
    const [feature] = map.queryRenderedFeatures(event.point, {layers: visible});
    if (feature) showFeature(map, feature, event.lngLat, titles, layerIds);
  });
  for (const id of interactive) {
    map.on('mouseenter', id, () => { map.getCanvas().style.cursor = 'pointer'; });
    map.on('mouseleave', id, () => { map.getCanvas().style.cursor = ''; });
  }
  map.once('load', () => {
    status.textContent = `${collections.length} layers · project data from this server`;
    map.once('idle', () => { window.mapReady = true; });
  });
}

main().catch((error) => {
  console.error('map failed to start:', error.message);
  status.textContent = `The map could not start: ${error.message}`;
  status.className = 'error';
});
