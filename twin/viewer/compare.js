// Swipe comparison of current and planned: the current twin on both sides of a draggable divider,
// what only the planned scenario has (its tilesets, its buildings) on the right of it only.

export function setUpCompare(ctx) {
  const { scene, state, $ } = ctx;
  const divider = $("divider");

  function place(fraction) {
    const clamped = Math.min(Math.max(fraction, 0), 1);
    scene.splitPosition = clamped;
    divider.style.left = `${clamped * 100}%`;
    state.splitPosition = clamped;
    scene.requestRender();
  }

  async function setCompare(on) {
    $("compare").checked = on;
    state.compare = on;
    divider.hidden = !on;
    place(scene.splitPosition || 0.5);
    await ctx.reload();
  }

  let dragging = false;
  divider.addEventListener("pointerdown", (event) => {
    dragging = true;
    divider.setPointerCapture(event.pointerId);
  });
  divider.addEventListener("pointermove", (event) => {
    if (dragging) place(event.clientX / scene.canvas.clientWidth);
  });
  divider.addEventListener("pointerup", () => { dragging = false; });
  $("compare").addEventListener("change", (event) => setCompare(event.target.checked).catch(ctx.fail));
  state.setCompare = setCompare;
  state.setSplit = place;
}
