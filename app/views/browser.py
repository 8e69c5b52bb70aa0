"""Browser-side helpers of the page (small ReactiveHTML components, no science).

- :class:`AtomHover` — the index of the atom under the mouse in the 3D view (a tooltip),
  from the atom positions the 3D view gives it and the browser's own camera;
- :class:`SceneKeeper` — keeps the 3D view's vtk.js render window across scene updates (Panel
  would delete it and build the view again on every change);
- :class:`DrawTracker` — the busy state of the page: on from the user's input until the
  browser has drawn the last view of the resulting change (the server bumps :attr:`seq` after
  it has sent every view; the browser answers with :attr:`drawn` once the 3D scene is
  synchronized and two frames are painted).
"""
from __future__ import annotations

import param
from panel.reactive import ReactiveHTML

__all__ = ["AtomHover", "DrawTracker", "SceneKeeper"]

# The 3D pane's browser render window: Panel's VTK view sets it as the model's ``renderer_el``.
_FIND_RENWIN = """
state.find = () => {
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
    for (const m of doc._all_models.values()) {
      if (m.renderer_el && m.renderer_el.getContainer) return m.renderer_el;
    }
  }
  return null;
};
"""


class AtomHover(ReactiveHTML):
    """Shows ``<symbol> atom <index>`` next to the mouse when it is over an atom of the 3D view.

    The atoms are projected with the browser camera's current state (perspective or parallel);
    the nearest atom within 14 px of the mouse, front-most first, is named.
    """

    positions = param.List(default=[], doc="Cartesian atom positions (Å), as drawn")
    symbols = param.List(default=[], doc="chemical symbol of each atom")
    # Switching the tooltip off is a flag, not an empty ``positions``: Panel (1.9) fails on a ReactiveHTML
    # list parameter set to [] after holding lists (it takes an empty list for a list of Parameterized).
    active = param.Boolean(default=True, doc="name the atom under the mouse (off while atoms are hidden)")

    _template = '<div id="anchor" style="display:none"></div>'

    _scripts = {
        "render": _FIND_RENWIN + """
state.tip = document.createElement('div');
state.tip.className = 'elf-atom-tip';
Object.assign(state.tip.style, {position: 'fixed', display: 'none', zIndex: 1000, pointerEvents: 'none',
  background: 'rgba(20,20,20,0.85)', color: 'white', padding: '2px 6px', borderRadius: '3px',
  font: '13px system-ui, sans-serif'});
document.body.appendChild(state.tip);
state.pick = (ev, rw) => {
  const pos = data.positions || [];
  if (ev.buttons || !pos.length || !data.active) { state.tip.style.display = 'none'; return; }
  const rect = rw.getContainer().getBoundingClientRect();
  const ren = rw.getRenderer();
  if (!ren || rect.width <= 0 || rect.height <= 0) return;
  const cam = ren.getActiveCamera();
  const eye = cam.getPosition(), fp = cam.getFocalPoint(), up0 = cam.getViewUp();
  const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
  const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  const unit = (a) => { const n = Math.hypot(a[0], a[1], a[2]) || 1; return [a[0] / n, a[1] / n, a[2] / n]; };
  const d = unit(sub(fp, eye)), right = unit(cross(d, up0)), up = cross(right, d);
  const aspect = rect.width / rect.height;
  const f = 1 / Math.tan((cam.getViewAngle() * Math.PI / 180) / 2);
  const scale = cam.getParallelScale();
  const mx = ev.clientX - rect.left, my = ev.clientY - rect.top;
  let best = -1, bestDepth = Infinity;
  for (let i = 0; i < pos.length; i++) {
    const v = sub(pos[i], eye), z = dot(v, d);
    if (z <= 0) continue;
    let nx, ny;
    if (cam.getParallelProjection()) { nx = dot(v, right) / (scale * aspect); ny = dot(v, up) / scale; }
    else { nx = dot(v, right) / z * f / aspect; ny = dot(v, up) / z * f; }
    const px = (nx + 1) / 2 * rect.width, py = (1 - ny) / 2 * rect.height;
    if (Math.hypot(px - mx, py - my) <= 14 && z < bestDepth) { best = i; bestDepth = z; }
  }
  if (best < 0) { state.tip.style.display = 'none'; return; }
  const sym = (data.symbols || [])[best] || 'H';
  state.tip.textContent = `${sym} atom ${best}`;
  state.tip.dataset.atom = String(best);
  state.tip.style.left = `${ev.clientX + 12}px`;
  state.tip.style.top = `${ev.clientY + 12}px`;
  state.tip.style.display = 'block';
};
state.attach = () => {
  const rw = state.find();
  if (!rw) return;
  const el = rw.getContainer();
  if (!el || state.el === el) return;
  state.el = el;
  el.addEventListener('mousemove', (ev) => state.pick(ev, rw));
  el.addEventListener('mouseleave', () => { state.tip.style.display = 'none'; });
};
state.attach();
state.timer = setInterval(state.attach, 1000);  // the 3D view may be rebuilt by Panel
""",
        "positions": "if (state.tip) state.tip.style.display = 'none';",
        "remove": "clearInterval(state.timer); if (state.tip) state.tip.remove();",
    }


class SceneKeeper(ReactiveHTML):
    """Updates the 3D scene in place instead of rebuilding the 3D view on every change.

    Panel's synchronized VTK view (1.9) answers each new ``scene``/``arrays`` by deleting its vtk.js
    render window and rendering the whole view again (a new WebGL context, the full scene
    synchronized and drawn from scratch: seconds per iso step on a CPU-rendered page). This
    component, placed beside the 3D pane, patches that view instance in the browser: the
    window Panel is about to delete for a scene change is kept, and the new scene is
    synchronized into it (vtk.js synchronizes incrementally: unchanged actors and arrays
    stay), and drawn once (vtk.js and Panel would render it three times). A relayout of the page that
    leaves the 3D view's size alone does not resize or render it (Panel renders twice on each), and
    render requests within 30 ms are drawn once, none while a new scene is on its way (a new case's
    camera would otherwise draw the old scene first).
    Removing the view still deletes the window. ``kept`` counts the in-place updates.
    It also draws the axis tick labels without depth occlusion: Panel's labels read the
    depth buffer back on every render (``gl.readPixels``), most of a 3D update's browser time.
    """

    kept = param.Integer(default=0, doc="browser: scene updates applied in place")

    _template = '<div id="keeper" style="display:none"></div>'

    _scripts = {
        "render": """
const RENDER_DELAY_MS = 30;
state.patch = () => {
  if (!window.Bokeh || !Bokeh.index) return;
  for (const doc of Bokeh.documents) {
    for (const m of doc._all_models.values()) {
      if (!m.renderer_el || !m.renderer_el.getRenderWindow) continue;
      const view = Bokeh.index.find_one(m);
      if (!view || view.__elfPatched || typeof view.plot !== 'function') continue;
      view.__elfPatched = true;
      // vtk.js objects are frozen, so the window's delete cannot be replaced on the window itself: the view's
      // _vtk_renwin is served through a stand-in whose delete is deferred; a scene change takes the window
      // back at once (invalidate_render below), a real removal deletes it a moment later
      const standIn = (real) => {
        if (real == null) return real;
        const later = () => {
          view.__elfKeep = real;
          queueMicrotask(() => { if (view.__elfKeep === real) { view.__elfKeep = null; real.delete(); } });
        };
        // an in-place update keeps the container, so Panel's resize (one more full render) is skipped
        const get = (p) => (p === 'delete' ? later : p === 'resize' && view.__elfInPlace ? () => {} : real[p]);
        return new Proxy({}, {get: (_, p) => get(p), has: (_, p) => p in real});
      };
      let current = view._vtk_renwin;
      let served = standIn(current);
      Object.defineProperty(view, '_vtk_renwin', {
        configurable: true, get: () => served, set: (v) => { current = v; served = standIn(v); },
      });
      // Panel's axes label their ticks through a pixel-space callback that reads the whole depth buffer
      // back (gl.readPixels) on every render to hide labels behind surfaces: ~0.2 s per render on a
      // software-rendered page, four renders per scene update. The labels are drawn unoccluded instead:
      // without the depth buffer every label gets the far-plane depth (NDC 1; Panel draws a label only
      // when its point lies in front of the depth it is given).
      const flatLabels = () => {
        const ps = view._axes && view._axes.psActor;
        const mapper = ps && ps.getMapper && ps.getMapper();
        if (!mapper || !mapper.setUseZValues) return;
        const draw = mapper.getCallback();
        if (draw && !draw.__elfFlat) {
          const flat = (coords, ...rest) => { for (const c of coords) c[3] = 1; return draw(coords, ...rest); };
          flat.__elfFlat = true;
          mapper.setCallback(flat);
        }
        mapper.setUseZValues(false);
      };
      const setAxes = view._set_axes.bind(view);
      view._set_axes = () => { setAxes(); flatLabels(); };
      flatLabels();
      // One render per in-place update. vtk.js renders once while it applies a new scene and once more
      // when the synchronization ends, and Panel a third time when the scene is ready: the renderers
      // draw nothing until then (the canvas keeps the last picture), and Panel's render draws the new one.
      const renderers = () => {
        const w = current && current.getRenderWindow && current.getRenderWindow();
        return w ? w.getRenderers() : [];
      };
      const drawOn = () => { for (const r of renderers()) r.setDraw(true); };
      let scenePending = false;  // a new scene or arrays arrived and is not synchronized yet
      // Scene synchronizations in flight are counted page-wide (window.__elfSceneSyncs; the total so far in
      // window.__elfSceneSyncsTotal) for the busy indicator: vtk.js objects are frozen, so the count cannot
      // live on the render window. One ends when its scene is ready, fails, or after 20 s at the latest.
      const syncStarted = () => {
        window.__elfSceneSyncs = (window.__elfSceneSyncs || 0) + 1;
        window.__elfSceneSyncsTotal = (window.__elfSceneSyncsTotal || 0) + 1;
        let open = true;
        const end = () => { if (open) { open = false; window.__elfSceneSyncs -= 1; } };
        setTimeout(end, 20000);
        return end;
      };
      const syncPlot = view._sync_plot.bind(view);
      view._sync_plot = (st, onReady) => {
        scenePending = false;
        const end = syncStarted();
        const inPlace = view.__elfInPlace;
        if (inPlace) for (const r of renderers()) r.setDraw(false);
        const ready = () => { if (inPlace) drawOn(); try { onReady(); } finally { end(); } };
        let out;
        try { out = syncPlot(st, ready); } catch (err) { end(); throw err; }
        return Promise.resolve(out).catch((err) => {
          end();
          if (inPlace) { drawOn(); view._vtk_render(); }
          throw err;
        });
      };
      // Render requests that come together are drawn once, and none while a new scene is on its way: a new
      // case sends the camera with the new scene, and the camera alone would first render the old scene
      // from the new viewpoint (up to a second here); the scene's synchronization renders when it is done.
      const renderNow = view._vtk_render.bind(view);
      let renderTimer = null;
      const pending = () => { scenePending = true; };
      view.connect(view.model.properties.scene.change, pending);
      view.connect(view.model.properties.arrays.change, pending);
      view._vtk_render = () => {
        if (renderTimer !== null) return;
        renderTimer = setTimeout(() => { renderTimer = null; if (!scenePending) renderNow(); },
                                 RENDER_DELAY_MS);
      };
      const ready = view._on_scene_ready.bind(view);
      view._on_scene_ready = () => { try { ready(); } finally { view.__elfInPlace = false; } };
      // Any change of the page's layout (a caption's text, the metrics table) reaches the 3D view's
      // after_layout, where Panel resizes the window and renders twice; with the view's size unchanged
      // neither is needed.
      let owner = Object.getPrototypeOf(view);
      while (owner && !Object.prototype.hasOwnProperty.call(owner, 'after_layout')) owner = Object.getPrototypeOf(owner);
      const baseAfterLayout = owner && Object.getPrototypeOf(owner).after_layout;
      const afterLayout = view.after_layout.bind(view);
      let laidOutSize = null;
      const viewSize = () => {
        const c = current && current.getContainer && current.getContainer();
        return c ? `${c.clientWidth}x${c.clientHeight}` : null;
      };
      view.after_layout = () => {
        const size = viewSize();
        if (baseAfterLayout && view._rendered && view._renderable && size !== null && size === laidOutSize) {
          baseAfterLayout.call(view);
          view.__elfLayoutsSkipped = (view.__elfLayoutsSkipped || 0) + 1;
          return;
        }
        afterLayout();
        laidOutSize = viewSize();
      };
      const invalidate = view.invalidate_render.bind(view);
      view.invalidate_render = () => {
        const rw = view.__elfKeep;
        if (rw && current == null) {  // Panel's scene-change handler: sync the new scene into the kept window
          view.__elfKeep = null;
          view._vtk_renwin = rw;
          view.model.renderer_el = view._vtk_renwin;
          view.__elfInPlace = true;
          view.plot();
          data.kept = data.kept + 1;
          return;
        }
        invalidate();
      };
    }
  }
};
state.patch();
state.timer = setInterval(state.patch, 500);  // the 3D view may be created after this component
""",
        "remove": "clearInterval(state.timer);",
    }


class DrawTracker(ReactiveHTML):
    """A busy indicator that lasts until the browser has drawn the last view of a change.

    The server calls :meth:`begin` when the session's state starts changing (before any view
    is recomputed), :meth:`bump` once every view has been sent, and :meth:`work_started` /
    :meth:`work_done` around background work (the metrics). The browser shows "working…"
    from the user's input (or :attr:`started`) until :attr:`seq` is drawn: the 3D scene
    synchronized, no page update for 120 ms, then two painted frames; it then sets
    :attr:`drawn`. Its element (class ``elf-busy``) carries ``data-busy``, ``data-seq`` and
    ``data-drawn`` for tests and benchmarks.
    """

    seq = param.Integer(default=0, doc="server: bumped once the views of a change were sent")
    started = param.Integer(default=0, doc="server: the seq a change in progress will end with")
    drawn = param.Integer(default=0, doc="browser: the last seq whose views are drawn")
    pending = param.Integer(default=0, doc="server: background computations still running (metrics)")

    _template = """
<div id="box" class="elf-busy" data-busy="0" data-seq="0" data-drawn="0"
     style="display:flex;align-items:center;gap:6px;color:white;font-size:14px;min-width:96px">
  <span id="spin" class="elf-spinner" style="visibility:hidden;width:14px;height:14px;border-radius:50%;
        border:2px solid rgba(255,255,255,0.35);border-top-color:white;display:inline-block;
        animation:elfspin 0.8s linear infinite"></span>
  <span id="label">ready</span>
  <style>@keyframes elfspin { to { transform: rotate(360deg); } }</style>
</div>
"""

    _scripts = {
        "render": """
state.user = false; state.drawing = false; state.lastChange = performance.now(); state.inputSeq = data.seq;
state.show = () => {
  const busy = state.user || state.drawing || data.started > data.drawn || data.pending > 0;
  box.dataset.busy = busy ? '1' : '0';
  box.dataset.seq = String(data.seq);
  box.dataset.drawn = String(data.drawn);
  spin.style.visibility = busy ? 'visible' : 'hidden';
  label.textContent = busy ? 'working…' : 'ready';
};
// 3D scene synchronizations in flight, counted by SceneKeeper (0 without a 3D view)
state.syncing = () => (window.__elfSceneSyncs || 0) > 0;
for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
  doc.on_change((ev) => { if (ev.model !== data && ev.model !== model) state.lastChange = performance.now(); });
}
state.waitDrawn = () => {
  const target = data.seq;
  const step = () => {
    if (data.seq !== target) return;  // a newer change takes over
    if (state.syncing() || performance.now() - state.lastChange < 120) { setTimeout(step, 30); return; }
    requestAnimationFrame(() => requestAnimationFrame(() => {
      if (data.seq !== target) return;
      state.drawing = false;
      if (target > state.inputSeq) state.user = false;
      data.drawn = target;
      state.show();
    }));
  };
  setTimeout(step, 0);
};
state.onInput = (ev) => {
  const path = ev.composedPath ? ev.composedPath() : [];
  const inSidebar = path.some((n) => n.id === 'sidebar');
  const control = path.some((n) => n.tagName && (['INPUT', 'SELECT', 'BUTTON'].includes(n.tagName) ||
      (n.classList && (n.classList.contains('noUi-handle') || n.classList.contains('noUi-base')))));
  if (!inSidebar || !control) return;
  if (ev.type === 'keydown' && !['ArrowLeft', 'ArrowRight', 'ArrowUp', 'ArrowDown', 'Home', 'End',
      'PageUp', 'PageDown', 'Enter', ' '].includes(ev.key)) return;
  state.user = true; state.inputSeq = data.seq; state.show();
  clearTimeout(state.userTimer);
  // an input that changes nothing (same value again) gets no answer: give up after 4 s without one
  state.userTimer = setTimeout(() => { if (data.started <= data.drawn && data.seq <= state.inputSeq) {
    state.user = false; state.show(); } }, 4000);
};
for (const type of ['change', 'click', 'keydown', 'pointerup']) {
  document.addEventListener(type, state.onInput, true);
}
state.show();
""",
        "seq": "state.drawing = true; state.show(); state.waitDrawn();",
        "started": "state.show();",
        "pending": "state.show();",
        "drawn": "state.show();",
        "remove": """for (const type of ['change', 'click', 'keydown', 'pointerup']) {
  document.removeEventListener(type, state.onInput, true);
}""",
    }

    def begin(self) -> None:
        """A change of the session's state starts (the browser shows "working…" right away)."""
        if self.started <= self.seq:
            self.started = self.seq + 1

    def bump(self) -> None:
        """Every view of the change has been sent: the browser reports when it has drawn them."""
        self.seq = max(self.seq + 1, self.started)

    def work_started(self) -> None:
        self.pending += 1

    def work_done(self) -> None:
        self.pending = max(0, self.pending - 1)
