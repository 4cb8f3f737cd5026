// Search by feature id or by name/address: OGC API Features items queries with property filters
// (`/collections/{layer}/items?name=…`), on the properties each layer really has (read once from its
// vector tileset's TileJSON, so no query is refused). The first match is flown to and highlighted.

const SEARCH_KINDS = ["vector", "pipe_network", "sensor"];
const TEXT_FIELDS = ["name", "address"];
// "fid" is the tiles' own copy of the feature id; *_id fields naming other features are not the feature's id
const NOT_OWN_ID = new Set(["fid", "parcel_id", "building_id", "start_id", "end_id", "block_id", "street_id", "road_id", "low_section_id"]);
const isIdField = (field) => !NOT_OWN_ID.has(field) && /(^|_)id$|^[a-z]id$/.test(field);

export function setUpSearch(ctx) {
  const { Cesium, viewer, scene, state, api, getJson, $ } = ctx;
  const source = new Cesium.CustomDataSource("search");
  viewer.dataSources.add(source);
  const fieldsOf = new Map();

  /** The property names (among names, addresses and ids) a layer can be searched on. */
  async function searchFields(collection) {
    if (!fieldsOf.has(collection.id)) {
      const params = collection.scenario === "planned" ? "?scenario=planned" : "";
      const tilejson = await getJson(api(`tiles/${collection.id}/tilejson.json${params}`));
      const fields = Object.keys(tilejson.vector_layers?.[0]?.fields || {});
      fieldsOf.set(collection.id, fields.filter((f) => TEXT_FIELDS.includes(f) || isIdField(f)));
    }
    return fieldsOf.get(collection.id);
  }

  async function search(text) {
    const query = text.trim();
    state.search = { query, results: null };
    if (!query) return [];
    const collections = ctx.collections().filter((c) => SEARCH_KINDS.includes(c.kind) && (c.scenario !== "planned" || state.scenario === "planned" || state.compare));
    const looksLikeId = /^[A-Za-z]{0,4}\d+$/.test(query);
    const queries = [];
    for (const collection of collections) {
      for (const field of await searchFields(collection)) {
        if (looksLikeId !== isIdField(field)) continue;
        const params = new URLSearchParams({ [field]: query, limit: "5" });
        if (state.datetime) params.set("datetime", state.datetime);
        queries.push(getJson(api(`collections/${collection.id}/items?${params}`)).then((page) => page.features.map((f) => ({ layer: collection.id, feature: f }))));
      }
    }
    const found = (await Promise.all(queries)).flat();
    const unique = [...new Map(found.map((r) => [`${r.layer}/${r.feature.id}`, r])).values()];
    state.search.results = unique.map((r) => ({ layer: r.layer, id: String(r.feature.id), name: r.feature.properties.name ?? null }));
    listResults(unique);
    if (unique.length) await show(unique[0]);
    return state.search.results;
  }

  function listResults(results) {
    $("search-results").replaceChildren(...results.map((r) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `${r.feature.properties.name || r.feature.id} · ${r.layer}`;
      button.addEventListener("click", () => show(r).catch(ctx.fail));
      li.append(button);
      return li;
    }));
    $("search-status").textContent = results.length ? `${results.length} found` : "nothing found";
  }

  /** Fly to a result, outline it in yellow and show its record. */
  async function show({ layer, feature }) {
    source.entities.removeAll();
    const geometry = feature.geometry;
    const colour = Cesium.Color.fromCssColorString("#ffea00");
    const lonlats = geometry.type === "Point" ? [geometry.coordinates] : geometry.type === "LineString" ? geometry.coordinates : geometry.coordinates.flat(geometry.type === "Polygon" ? 1 : 2);
    const heights = await ctx.groundHeights(lonlats);
    const positions = lonlats.map(([lon, lat], i) => Cesium.Cartesian3.fromDegrees(lon, lat, heights[i] + 1.5));
    if (geometry.type === "Point") {
      source.entities.add({ position: positions[0], point: { pixelSize: 18, color: colour.withAlpha(0.6), outlineColor: colour, outlineWidth: 3, disableDepthTestDistance: Number.POSITIVE_INFINITY } });
    } else {
      const ring = geometry.type.endsWith("Polygon") ? [...positions, positions[0]] : positions;
      source.entities.add({ polyline: { positions: ring, width: 5, material: colour, depthFailMaterial: colour, arcType: Cesium.ArcType.NONE } });
    }
    const sphere = Cesium.BoundingSphere.fromPoints(positions);
    const range = Math.max(sphere.radius * 4, 250);
    const target = Cesium.Cartographic.fromCartesian(sphere.center);
    ctx.lookAt(target, range);
    state.search.shown = { layer, id: String(feature.id), centre: [Cesium.Math.toDegrees(target.longitude), Cesium.Math.toDegrees(target.latitude)] };
    await ctx.showRecord({ layer, fid: String(feature.id) });
    scene.requestRender();
  }

  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search($("search").value).catch(ctx.fail);
  });
  state.search = null;
  state.runSearch = search;
}
