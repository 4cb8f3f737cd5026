// Flood screen: choose a design storm, run `POST /analysis/flood` (a job; writing needs an editor
// key), follow its progress, then drape the depth frames over the terrain as an animation and list
// the flooded road sections, deepest first, each with a fly-to.

const POLL_MS = 1000;

export function setUpFlood(ctx) {
  const { Cesium, viewer, scene, state, api, getJson, $ } = ctx;
  state.flood = null;
  let frameLayers = [];
  let timer = null;

  function showFrame(index) {
    frameLayers.forEach((layer, i) => { layer.show = i === index; });
    state.flood.frame = index;
    $("flood-frame").value = String(index);
    $("flood-time").textContent = `${Math.round(state.flood.frames[index].time_s / 60)} min`;
    scene.requestRender();
  }

  function clearFrames() {
    clearInterval(timer);
    timer = null;
    for (const layer of frameLayers) viewer.imageryLayers.remove(layer, true);
    frameLayers = [];
  }

  /** The job until it ends, the progress bar following it. */
  async function follow(jobUrl) {
    for (;;) {
      const job = await getJson(jobUrl);
      $("flood-progress").value = job.progress;
      $("flood-status").textContent = `${job.state}: ${job.message}`;
      state.flood.progress.push(job.progress);
      if (job.state === "succeeded") return job;
      if (["failed", "cancelled"].includes(job.state)) throw new Error(`flood ${job.state}: ${job.message}`);
      await new Promise((done) => setTimeout(done, POLL_MS));
    }
  }

  async function drape(job) {
    const frames = await getJson(api(job.result.links.frames.replace(/^\//, "")));
    const rectangle = Cesium.Rectangle.fromDegrees(...frames.bounds_crs84);
    clearFrames();
    for (const frame of frames.frames) {
      const provider = await Cesium.SingleTileImageryProvider.fromUrl(frame.href, { rectangle });
      const layer = viewer.imageryLayers.addImageryProvider(provider);
      layer.alpha = 0.85;
      layer.show = false;
      frameLayers.push(layer);
    }
    state.flood.frames = frames.frames.map((f) => ({ index: f.index, time_s: f.time_s }));
    $("flood-frame").max = String(frames.frames.length - 1);
    $("flood-player").hidden = false;
    showFrame(frames.frames.length - 1);
  }

  function listSections(sections, items) {
    const byId = new Map(items.map((f) => [String(f.id), f]));
    $("flood-sections").replaceChildren(...sections.map((section) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.section = section.id;
      button.textContent = `${section.road_name || section.road_id}: ${section.max_depth_m.toFixed(2)} m over ${Math.round(section.length_m)} m`;
      button.addEventListener("click", () => {
        const feature = byId.get(String(section.id)) || [...byId.values()].find((f) => f.properties.id === section.id);
        if (!feature) return;
        const coords = feature.geometry.coordinates;
        const [lon, lat] = coords[Math.floor(coords.length / 2)];
        ctx.lookAt(Cesium.Cartographic.fromDegrees(lon, lat, 0), 350);
        state.flood.flownTo = section.id;
      });
      li.append(button);
      return li;
    }));
  }

  async function run() {
    const storm = { return_period: Number($("flood-period").value), duration_min: Number($("flood-duration").value) };
    const body = { storm, cell_m: Number($("flood-cell").value), simulate_min: storm.duration_min + 10, frame_every_min: 5 };
    state.flood = { storm, progress: [], frames: [], frame: null, sections: null, job: null };
    $("flood-status").textContent = "submitting…";
    const response = await fetch(api("analysis/flood"), {
      method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${$("flood-key").value.trim()}` },
    });
    const submitted = await response.json();
    if (response.status !== 202) {
      $("flood-status").textContent = submitted.detail || `${response.status}`;
      state.flood.refused = response.status;
      return null;
    }
    const job = await follow(response.headers.get("Location") || api(`jobs/${submitted.id}`));
    state.flood.job = job.id;
    await drape(job);
    const items = await getJson(api(`${job.result.links.road_sections_items.replace(/^\//, "")}?limit=1000`));
    listSections(job.result.road_sections, items.features);
    state.flood.sections = job.result.road_sections.map((s) => s.id);
    $("flood-status").textContent = `done: ${job.result.road_sections.length} road section(s) flooded`;
    return job;
  }

  $("flood-run").addEventListener("click", () => run().catch(ctx.fail));
  $("flood-frame").addEventListener("input", (event) => showFrame(Number(event.target.value)));
  $("flood-play").addEventListener("click", () => {
    if (timer) {
      clearInterval(timer);
      timer = null;
      return;
    }
    timer = setInterval(() => showFrame((state.flood.frame + 1) % frameLayers.length), 700);
  });
  state.runFlood = run;
  state.showFloodFrame = showFrame;
}
