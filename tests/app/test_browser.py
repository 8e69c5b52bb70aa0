"""The app in a real browser: `panel serve app/main.py` driven by headless Debian Chromium.

One server and one page serve all the steps (they run in file order): the
views render, every slider changes a picture or a number, uploads of a valid
and an invalid file, a line scan by two clicks on the slice, and four sessions
that keep their own state.
Screenshots go to ``test-output/app/``.

The served cases and models are small stand-ins written by the fixture
(``ELFCORE_DATA_DIR``/``ELFCORE_ZOO_DIR``): synthetic fields and untrained
networks that exercise the plumbing, not the science.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest


CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("Debian chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) is not installed")

from app.drive import CHROMIUM_ARGS, DEEP_TEXT_JS, KEPT_JS, free_port, stop_process, wait_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-output" / "app"
LOAD_S = float(os.environ.get("ELFCORE_BROWSER_LOAD_S", 420))  # first page: server start-up, first prediction (s)
pytestmark = [pytest.mark.browser, pytest.mark.timeout(max(900, LOAD_S + 600))]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Start `panel serve app/main.py` on a free localhost port with stand-in cases and models."""
    from elfcore.grid import make_case
    from tests.app.conftest import gaussian_elf, make_test_zoo, random_h

    base = tmp_path_factory.mktemp("browser")
    data, zoo = base / "data", base / "zoo"
    data.mkdir()
    rng = np.random.default_rng(99)
    structures = []
    # two "fluid test snapshots" at the paper's first two MD targets, then an "atomic test crystal" the tour
    # shows with the crystal model (names and metadata only: the fields are synthetic)
    for p, length, name, meta in (
        (80.0, 4.0, "synthetic_80", {"family": "fluid", "role": "test", "target_pressure_gpa": 76.0}),
        (130.0, 5.0, "synthetic_130", {"family": "fluid", "role": "test", "target_pressure_gpa": 115.1}),
        (150.0, 4.0, "cubic_sg207", {"family": "cubic", "role": "test"}),
    ):  # two cell sizes: the 3D view must reframe on a case change
        atoms = random_h(rng, n=8, length=length)
        ref = gaussian_elf(atoms, (16, 16, 16), 0.45)
        make_case(atoms, {"elf_ref": ref}, attrs={"pressure_gpa": p, "name": name, **meta}).to_netcdf(
            data / f"{name}.nc", engine="h5netcdf"
        )
        structures.append(atoms)
    make_test_zoo(zoo, structures[0])
    # a stand-in for the fluid + crystals model: other random weights at the baseline descriptor
    from elfcore import zoo as elf_zoo

    (base / "zoo_crystals").mkdir(exist_ok=True)
    make_test_zoo(base / "zoo_crystals", structures[0], pairs=(elf_zoo.BASELINE,), seed=8)
    stand_in = elf_zoo.zoo_path(*elf_zoo.BASELINE, directory=base / "zoo_crystals")
    stand_in.rename(elf_zoo.crystal_model_path(directory=zoo))
    # the shipped long-range correction of the baseline entry (a kernel on the atomic density: any structure)
    from elfcore.longrange import shipped_path

    if shipped_path("zoo:rcut=3.0,lmax=2").is_file():
        shutil.copy(shipped_path("zoo:rcut=3.0,lmax=2"), zoo)
    port = free_port()
    env = dict(os.environ, ELFCORE_DATA_DIR=str(data), ELFCORE_ZOO_DIR=str(zoo), OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    panel = Path(sys.executable).with_name("panel")
    log = open(base / "serve.log", "wb")
    proc = subprocess.Popen(
        [str(panel), "serve", "app/main.py", "--port", str(port), "--address", "127.0.0.1",
         "--session-token-expiration", "3600", "--unused-session-lifetime", "900000"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/main"
    if not wait_port(port, proc, 120, poll_s=1):  # the port only: a GET would already build a whole session
        proc.kill()
        pytest.fail(f"panel serve did not start; log:\n{(base / 'serve.log').read_text()[-3000:]}")
    yield {"url": url, "base": base, "structures": structures, "log": base / "serve.log"}
    stop_process(proc)
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1500, "height": 1100},
        )
        yield ctx
        ctx.close()


def _wait_views(page, timeout_s=LOAD_S):
    """Wait for the three views' canvases, then for their first drawing (no "computing…" caption left)."""
    page.wait_for_selector(".elf-3d canvas", timeout=timeout_s * 1000)
    page.wait_for_selector(".elf-slice-residual canvas", timeout=timeout_s * 1000)
    page.wait_for_selector(".elf-line-plot canvas", timeout=timeout_s * 1000)
    deadline = time.time() + timeout_s
    while page.get_by_text("omputing…").count() > 0:
        if time.time() > deadline:
            raise AssertionError(f"views still computing after {timeout_s} s")
        time.sleep(1)


@pytest.fixture(scope="module")
def page(served, browser):
    OUT.mkdir(parents=True, exist_ok=True)
    pg = browser.new_page()
    pg.console_errors = []  # browser-side errors, written next to the screenshots when a check fails
    pg.on("console", lambda msg: pg.console_errors.append(msg.text) if msg.type == "error" else None)
    pg.on("pageerror", lambda exc: pg.console_errors.append(f"pageerror: {exc} | {(getattr(exc, 'stack', '') or '')[:300]}"))
    pg.set_default_timeout(120_000)  # a loaded 2-core machine can keep the page busy for a while
    pg.goto(served["url"], timeout=LOAD_S * 1000)
    _wait_views(pg)
    wait_idle(pg)
    return pg


def wait_idle(page, seconds: float = 1.0):
    """Give the server a moment to answer (the checks below poll for the change itself)."""
    time.sleep(seconds)


def shot(page, css: str, name: str | None = None) -> np.ndarray:
    """Screenshot of the first element matching ``css`` as an RGB array (saved when ``name`` is given)."""
    from PIL import Image

    from playwright.sync_api import Error as PlaywrightError

    for attempt in range(20):
        # Panel may replace the element (e.g. the VTK canvas) while it redraws; take the new one.
        try:
            el = page.locator(css).first
            el.scroll_into_view_if_needed(timeout=10_000)
            png = el.screenshot(timeout=10_000)
            break
        except PlaywrightError:
            if attempt == 19:
                raise
            time.sleep(0.5)
    if name:
        (OUT / f"{name}.png").write_bytes(png)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def non_blank(img: np.ndarray) -> float:
    """Fraction of pixels that differ from the most common (background) colour."""
    flat = img.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    bg = colours[np.argmax(counts)]
    return float(np.mean(np.any(np.abs(flat - bg) > 12, axis=1)))


def changed(page, css: str, before: np.ndarray, timeout_s: float = 90) -> np.ndarray:
    """Wait until the element's picture differs from ``before``; return the new picture."""
    deadline = time.time() + timeout_s
    while True:
        now = shot(page, css)
        if now.shape != before.shape or np.mean(np.any(now != before, axis=-1)) > 0.002:
            return now
        if time.time() > deadline:
            raise AssertionError(f"{css} did not change within {timeout_s} s")
        time.sleep(0.5)




def text_of(page, css: str) -> str:
    """All text under the first element matching ``css``, shadow roots included (Panel renders into them)."""
    return page.locator(css).first.evaluate(DEEP_TEXT_JS)


def text_changed(page, css: str, before: str, timeout_s: float = 120) -> str:
    deadline = time.time() + timeout_s
    while True:
        now = text_of(page, css)
        if now != before and now.strip():
            return now
        if time.time() > deadline:
            raise AssertionError(f"text of {css} did not change within {timeout_s} s: {before!r}")
        time.sleep(0.5)


def press(page, widget: str, key: str = "ArrowRight", times: int = 3) -> None:
    """Move a slider widget by keyboard (its noUiSlider handle)."""
    handle = page.locator(f".elf-{widget} .noUi-handle").first
    for _ in range(times):
        for attempt in range(10):  # Panel may re-render a widget between two key presses
            try:
                handle.scroll_into_view_if_needed(timeout=10000)
                handle.press(key, timeout=10000)
                break
            except sync_api.Error:
                if attempt == 9:
                    raise
                time.sleep(1)
    wait_idle(page)


# --------------------------------------------------------------------------- steps
def test_views_render_non_blank(page):
    page.screenshot(path=str(OUT / "page.png"))
    assert non_blank(shot(page, ".elf-3d canvas", "3d")) > 0.02
    assert non_blank(shot(page, ".elf-slice", "slice")) > 0.1
    assert non_blank(shot(page, ".elf-line", "line")) > 0.05
    # the metrics are computed in a worker thread (first use compiles the topology kernels): poll for them
    deadline = time.time() + 180
    metrics = text_of(page, ".elf-metrics")
    while "MAE" not in metrics and time.time() < deadline:
        time.sleep(1.0)
        metrics = text_of(page, ".elf-metrics")
    assert "MAE" in metrics and "R²" in metrics


def test_iso_slider_changes_3d(page):
    before = shot(page, ".elf-3d canvas")
    press(page, "iso", "ArrowLeft", 10)
    after = changed(page, ".elf-3d canvas", before)
    shot(page, ".elf-3d canvas", "3d_iso_moved")
    assert non_blank(after) > 0.02


def test_3d_updates_keep_the_render_window(page):
    """An iso step is synchronized into the same vtk.js window (app.views.browser.SceneKeeper), not a rebuilt view."""
    kept = page.evaluate(KEPT_JS)
    assert kept is not None
    before = shot(page, ".elf-3d canvas")
    press(page, "iso", "ArrowRight", 2)
    changed(page, ".elf-3d canvas", before)
    deadline = time.time() + 60
    while page.evaluate(KEPT_JS) <= kept:
        assert time.time() < deadline, "the 3D view was rebuilt instead of updated in place"
        time.sleep(0.5)
    # one render per in-place update (vtk.js and Panel rendered each new scene three times), and a
    # relayout of the page (e.g. a caption's new text) does not render the view again when its size is kept
    page.evaluate(COUNT_RENDERS_JS)
    syncs_before = page.evaluate(SYNCS_JS)
    before = shot(page, ".elf-3d canvas")
    press(page, "iso", "ArrowLeft", 1)
    changed(page, ".elf-3d canvas", before)
    time.sleep(2.0)
    assert page.evaluate("() => window.__elfRenders") == 1
    # the busy indicator sees the scene synchronization (counted page-wide) and is done only when none is left
    _wait_drawn(page)
    syncs = page.evaluate(SYNCS_JS)
    assert syncs["total"] > syncs_before["total"] and syncs["in_flight"] == 0, (syncs_before, syncs)
    page.evaluate(COUNT_RENDERS_JS)
    page.evaluate(RELAYOUT_JS)
    time.sleep(1.0)
    counts = page.evaluate("() => ({renders: window.__elfRenders, skipped: window.__elfSkipped()})")
    assert counts == {"renders": 0, "skipped": 1}, counts
    # the axis labels are drawn without reading the depth buffer back on every render, and still drawn
    axes = page.evaluate(AXES_JS)
    assert axes["read_depth"] is False
    assert axes["label_pixels"] > 100


SYNCS_JS = "() => ({total: window.__elfSceneSyncsTotal || 0, in_flight: window.__elfSceneSyncs || 0})"

# Counts the 3D view's renders from now on: each vtk.js render (0.1–0.3 s of software WebGL here) clears the
# depth buffer alone once, in its camera pass (gl.clear(DEPTH_BUFFER_BIT)); the other clears clear colour too.
COUNT_RENDERS_JS = """() => {
  let view = null;
  for (const doc of Bokeh.documents) for (const m of doc._all_models.values())
    if (m.renderer_el && m.renderer_el.getRenderWindow) view = Bokeh.index.find_one(m);
  const gl = view._vtk_renwin.getRenderWindow().getViews()[0].getContext();
  window.__elfRenders = 0;
  if (!gl.__elfCounted) {
    gl.__elfCounted = true;
    const clear = gl.clear.bind(gl);
    gl.clear = (mask) => { if (mask === gl.DEPTH_BUFFER_BIT) window.__elfRenders += 1; return clear(mask); };
  }
  const skipped0 = view.__elfLayoutsSkipped || 0;
  window.__elfSkipped = () => (view.__elfLayoutsSkipped || 0) - skipped0;
}"""


# A relayout of the 3D view, as a change elsewhere on the page causes one.
RELAYOUT_JS = """() => { for (const doc of Bokeh.documents) for (const m of doc._all_models.values())
  if (m.renderer_el && m.renderer_el.getRenderWindow) Bokeh.index.find_one(m).invalidate_layout(); }"""


AXES_JS = """() => { for (const doc of Bokeh.documents) for (const m of doc._all_models.values()) {
  if (!m.renderer_el || !m.renderer_el.getRenderWindow) continue;
  const view = Bokeh.index.find_one(m);
  const ps = view && view._axes && view._axes.psActor;
  if (!ps) continue;
  const canvas = view._axes_canvas;  // Panel draws the tick labels on this 2D overlay
  const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < px.length; i += 4) if (px[i] > 0) painted += 1;
  return {read_depth: ps.getMapper().getUseZValues(), label_pixels: painted}; } return null; }"""


def test_residual_isosurface_and_slider(page):
    before = shot(page, ".elf-3d canvas")
    page.locator(".elf-show-residual input").first.check()
    shown = changed(page, ".elf-3d canvas", before)
    shot(page, ".elf-3d canvas", "3d_residual")
    press(page, "residual-iso", "ArrowLeft", 6)
    changed(page, ".elf-3d canvas", shown)
    page.locator(".elf-show-residual input").first.uncheck()
    wait_idle(page)


def test_slice_position_slider_changes_slice(page):
    before = shot(page, ".elf-slice-residual canvas")
    press(page, "slice-position", "ArrowRight", 15)
    changed(page, ".elf-slice-residual canvas", before)
    shot(page, ".elf-slice", "slice_moved")


def test_slice_through_three_atoms(page):
    before = shot(page, ".elf-slice-elf canvas")
    page.locator(".elf-slice-mode button", has_text="atoms").first.click()
    wait_idle(page)
    changed(page, ".elf-slice-elf canvas", before)
    assert "plane through atoms" in text_of(page, ".elf-slice")


def test_k_shells_slider_changes_metrics(page):
    before = text_of(page, ".elf-metrics")
    press(page, "n-shells", "ArrowRight", 2)
    text_changed(page, ".elf-metrics", before)
    # the two key presses may arrive as two changes (throttled slider): wait for the second one's table
    deadline = time.time() + 120
    while "k-corrected (2 shells)" not in text_of(page, ".elf-metrics"):
        assert time.time() < deadline, text_of(page, ".elf-metrics")
        time.sleep(0.5)


def test_k_max_slider_changes_metrics(page):
    before = text_of(page, ".elf-metrics")
    press(page, "k-max", "End", 1)  # the largest k_max: the basis is now truncated by k_max
    after = text_changed(page, ".elf-metrics", before)
    assert "k-corrected (k_max = 4.00 Å⁻¹)" in after
    press(page, "n-shells", "ArrowLeft", 1)  # back to shells (1 shell)
    deadline = time.time() + 120
    while "k-corrected (1 shell)" not in text_of(page, ".elf-metrics"):
        assert time.time() < deadline, "the metrics did not follow the k-shells slider back"
        time.sleep(0.5)


def test_predicted_k_correction_button(page):
    """'predicted (no reference)' corrects with the long-range model, labels it so and greys out the oracle basis."""
    from elfcore.longrange import shipped_path

    if not shipped_path("zoo:rcut=3.0,lmax=2").is_file():
        pytest.skip("no shipped long-range correction")
    page.locator(".elf-k-source button", has_text="predicted").first.click()
    deadline = time.time() + 120
    while "k-corrected (predicted, no reference)" not in text_of(page, ".elf-metrics"):
        assert time.time() < deadline, f"no predicted correction in the metrics: {text_of(page, '.elf-metrics')!r}"
        time.sleep(0.5)
    assert page.locator(".elf-n-shells .noUi-target").first.get_attribute("disabled") is not None
    page.locator(".elf-k-source button", has_text="oracle").first.click()
    deadline = time.time() + 120
    while ("predicted, no reference" in text_of(page, ".elf-metrics")
           or page.locator(".elf-n-shells .noUi-target").first.get_attribute("disabled") is not None):
        assert time.time() < deadline, "the oracle correction and its k-shells slider did not come back"
        time.sleep(0.5)


def test_paper_baseline_button(page):
    """'paper baseline' puts the model back on r_cut 3.0 Å, l_max 2 (the stand-in zoo has no default entry)."""
    press(page, "r-cut", "ArrowLeft", 1)
    deadline = time.time() + 120
    while "r_cut (Å): 2" not in text_of(page, ".elf-r-cut"):
        assert time.time() < deadline, text_of(page, ".elf-r-cut")
        time.sleep(0.5)
    page.locator(".elf-use-baseline button").first.click()
    while "r_cut (Å): 3" not in text_of(page, ".elf-r-cut") or "l_max: 2" not in text_of(page, ".elf-l-max"):
        assert time.time() < deadline, (text_of(page, ".elf-r-cut"), text_of(page, ".elf-l-max"))
        time.sleep(0.5)
    page.locator(".elf-use-default button").first.click()  # no such entry in the stand-in zoo: a message says so
    page.wait_for_selector(".elf-message >> text=has no entry", timeout=60_000)


def test_training_set_buttons_change_the_prediction(page):
    before = text_of(page, ".elf-metrics")
    page.locator(".elf-training button", has_text="crystals").first.click()
    after = text_changed(page, ".elf-metrics", before, timeout_s=180)
    page.locator(".elf-training button", has_text="fluid").first.click()
    text_changed(page, ".elf-metrics", after, timeout_s=180)


def test_model_sliders_change_every_view(page):
    views = {css: shot(page, css) for css in (".elf-3d canvas", ".elf-line-plot canvas")}
    before = text_of(page, ".elf-metrics")
    press(page, "r-cut", "ArrowLeft", 1)
    for css, img in views.items():
        changed(page, css, img, timeout_s=180)
    text_changed(page, ".elf-metrics", before, timeout_s=180)
    line = shot(page, ".elf-line-plot canvas")
    press(page, "l-max", "ArrowLeft", 1)
    changed(page, ".elf-line-plot canvas", line, timeout_s=180)
    shot(page, ".elf-line", "line_other_model")


def test_line_atoms_change_line(page):
    before = shot(page, ".elf-line-plot canvas")
    sel = page.locator(".elf-line-atom-2 select").first
    options = sel.locator("option").all_inner_texts()
    current = sel.input_value()
    sel.select_option(next(o for o in options if o != current and o != "0"))
    wait_idle(page)
    changed(page, ".elf-line-plot canvas", before)


def _click_slice(page, fx: float, fy: float) -> None:
    """Click the ELF slice at the fractions (fx, fy) of its canvas (retried if Panel replaces the canvas).

    A mouse click at page coordinates: Bokeh's event layer lies over the canvas and receives it.
    """
    for attempt in range(10):
        try:
            canvas = page.locator(".elf-slice-elf canvas").first
            canvas.scroll_into_view_if_needed(timeout=10_000)
            box = canvas.bounding_box(timeout=10_000)
            page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
            return
        except sync_api.Error:
            if attempt == 9:
                raise
            time.sleep(0.5)


def test_line_scan_by_clicking_two_points(page):
    before = shot(page, ".elf-line-plot canvas")
    slice_before = shot(page, ".elf-slice-elf canvas")
    _click_slice(page, 0.35, 0.35)
    page.wait_for_selector(".elf-message >> text=click a second point", timeout=60_000)
    _click_slice(page, 0.6, 0.7)
    changed(page, ".elf-line-plot canvas", before)
    changed(page, ".elf-slice-elf canvas", slice_before)  # the canvas redraws after the clicks
    caption = text_of(page, ".elf-line")
    assert ") → (" in caption, caption
    assert "points" in text_of(page, ".elf-line-source")
    shot(page, ".elf-line", "line_clicked")


def test_line_scan_by_two_quick_clicks(page):
    """Two clicks within Bokeh's 300 ms double-tap window: the second arrives as a DoubleTap and still counts."""
    before = text_of(page, ".elf-line")
    canvas = page.locator(".elf-slice-elf canvas").first
    canvas.scroll_into_view_if_needed(timeout=10_000)
    box = canvas.bounding_box(timeout=10_000)
    for fx, fy in ((0.3, 0.65), (0.7, 0.3)):  # back to back: a few ms apart
        page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
    caption = text_changed(page, ".elf-line", before, timeout_s=90)
    assert ") → (" in caption, caption
    assert "between the clicked points" in text_of(page, ".elf-message")


def test_slice_still_drawn_after_clicks(page):
    """After many 3D redraws (each a new WebGL context) the slices still draw: they do not use WebGL."""
    deadline = time.time() + 60
    while non_blank(shot(page, ".elf-slice-elf canvas")) < 0.1:
        shot(page, ".elf-slice", "slice_clicked_line")
        if time.time() > deadline:
            _dump_slice_state(page)
            raise AssertionError("the slice stayed blank after the clicks (state in test-output/app/slice_blank.json)")
        time.sleep(1)
    shot(page, ".elf-slice", "slice_clicked_line")
    assert not [e for e in page.console_errors if "context lost" in e]


_FIGURE_STATE = """() => {
    const out = [];
    for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
        for (const m of doc._all_models.values()) {
            if (!m.title || !m.x_range || !m.renderers) continue;
            const rs = m.renderers.map((r) => {
                const d = r.data_source ? r.data_source.data : {};
                const img = d.image ? d.image[0] : null;
                return {glyph: r.glyph ? r.glyph.type : null, visible: r.visible,
                        columns: Object.keys(d), n: d.x ? d.x.length : null,
                        image: img ? [img.length, img.shape ? img.shape.join("x") : null] : null,
                        x: d.x ? Array.from(d.x).slice(0, 4) : null, y: d.y ? Array.from(d.y).slice(0, 4) : null};
            });
            out.push({title: m.title.text, x_range: [m.x_range.start, m.x_range.end],
                      y_range: [m.y_range.start, m.y_range.end], renderers: rs});
        }
    }
    return out;
}"""


def _dump_slice_state(page) -> None:
    """Write what the browser holds for the slice figures (ranges, glyph data) and a page screenshot."""
    import json

    page.screenshot(path=str(OUT / "slice_blank_page.png"), full_page=True)
    canvases = page.locator(".elf-slice-elf canvas")
    boxes = [canvases.nth(i).bounding_box() for i in range(canvases.count())]
    state = {"canvas_boxes": boxes, "figures": page.evaluate(_FIGURE_STATE),
             "console_errors": getattr(page, "console_errors", [])[-30:]}
    (OUT / "slice_blank.json").write_text(json.dumps(state, indent=1, default=str))


def test_squeeze_slider_is_prediction_only(page):
    before = shot(page, ".elf-3d canvas")
    press(page, "squeeze", "ArrowLeft", 5)
    changed(page, ".elf-3d canvas", before, timeout_s=180)
    text = text_of(page, ".elf-3d")
    assert "prediction only" in text
    shot(page, ".elf-3d", "3d_squeezed")
    press(page, "squeeze", "ArrowRight", 5)


def test_teaching_mode(page):
    page.locator(".elf-teaching button").first.click()
    wait_idle(page)
    page.wait_for_selector(".elf-teaching-text >> text=Guided tour", timeout=120_000)
    shot(page, ".elf-teaching-text", "teaching")


_CAMERA = """() => {
    for (const doc of (window.Bokeh ? Bokeh.documents : []))
        for (const m of doc._all_models.values())
            if (m.camera !== undefined && m.scene !== undefined && m.camera && m.camera.focalPoint)
                return {focalPoint: m.camera.focalPoint, position: m.camera.position, viewAngle: m.camera.viewAngle};
    return null;
}"""


def test_case_change_frames_the_new_cell(page):
    """Zoom in on one case, switch to a larger cell: the browser's camera frames the new cell."""
    canvas = page.locator(".elf-3d canvas").first
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(5):
        page.mouse.wheel(0, -300)  # zoom in
        time.sleep(0.2)
    before = shot(page, ".elf-3d canvas")
    page.evaluate(COUNT_RENDERS_JS)
    sel = page.locator(".elf-case select").first
    target = next(o for o in sel.locator("option").all_inner_texts() if o.startswith("synthetic_130"))
    sel.select_option(label=target)
    changed(page, ".elf-3d canvas", before, timeout_s=LOAD_S)
    time.sleep(1.5)
    # the new camera and the new scene are drawn in one render (the camera alone rendered the old scene first)
    assert page.evaluate("() => window.__elfRenders") == 1
    deadline = time.time() + 60
    while True:
        cam = page.evaluate(_CAMERA)
        ok = cam is not None and np.allclose(cam["focalPoint"], [2.5, 2.5, 2.5], atol=0.35)
        if ok or time.time() > deadline:
            break
        time.sleep(0.5)
    assert ok, cam
    # framed like vtk's ResetCamera of the 5 Å cell: bounding sphere radius / sin(view angle / 2)
    dist = np.linalg.norm(np.subtract(cam["position"], cam["focalPoint"]))
    expected = (5.0 * np.sqrt(3) / 2) / np.sin(np.radians(cam["viewAngle"]) / 2)
    assert 0.8 * expected < dist < 1.3 * expected, (dist, expected)
    shot(page, ".elf-3d", "3d_other_case")


def test_upload_invalid_file_shows_message(page, served):
    bad = served["base"] / "broken.cube"
    bad.write_text("this is not a cube file\n1 2 3\n")
    page.locator(".elf-upload input[type=file]").first.set_input_files(str(bad))
    page.wait_for_selector(".elf-message >> text=Could not use", timeout=60000)
    assert "Traceback" not in page.content()
    shot(page, ".elf-message", "upload_invalid")
    before = shot(page, ".elf-slice-residual canvas")  # the session keeps working
    page.locator(".elf-slice-mode button", has_text="b").first.click()
    changed(page, ".elf-slice-residual canvas", before)


def test_upload_valid_structure(page, served):
    import ase.io

    path = served["base"] / "mine.cif"
    ase.io.write(path, served["structures"][1])
    before = shot(page, ".elf-3d canvas")
    page.locator(".elf-upload input[type=file]").first.set_input_files(str(path))
    page.wait_for_selector(".elf-message >> text=Loaded", timeout=LOAD_S * 1000)
    wait_idle(page)
    changed(page, ".elf-3d canvas", before, timeout_s=LOAD_S)
    assert page.locator(".elf-case select").first.input_value() == "upload: mine.cif"
    page.screenshot(path=str(OUT / "page_after_upload.png"))


def test_four_sessions_keep_their_own_state(served, browser, page):
    """The first session plus three more, open at the same time, each with its own choices."""
    import re

    def iso_of(pg) -> str:
        found = re.search(r"ELF = (\d\.\d\d)", text_of(pg, ".elf-3d"))
        assert found, "no iso value in the 3D caption"
        return found.group(1)

    first_iso = iso_of(page)
    others = [browser.new_page() for _ in range(3)]
    for pg in others:
        pg.set_default_timeout(120_000)
        pg.goto(served["url"], timeout=LOAD_S * 1000)
    for pg in others:
        _wait_views(pg)
    for pg, mode in zip(others, ("a", "b", "atoms")):
        before = shot(pg, ".elf-slice-residual canvas")
        pg.locator(".elf-slice-mode button", has_text=mode).first.click()
        changed(pg, ".elf-slice-residual canvas", before)
    before = shot(others[1], ".elf-3d canvas")
    press(others[1], "iso", "ArrowLeft", 5)
    changed(others[1], ".elf-3d canvas", before)
    expected = [("plane a =", "ELF = 0.75"), ("plane b =", "ELF = 0.70"), ("plane through atoms", "ELF = 0.75")]
    for i, (pg, (plane, iso)) in enumerate(zip(others, expected)):
        assert plane in text_of(pg, ".elf-slice"), i
        assert iso in text_of(pg, ".elf-3d"), i
        # the first session's upload stays there
        assert "upload" not in pg.locator(".elf-case select").first.inner_text()
        assert pg.locator(".elf-case select").first.input_value().startswith("synthetic_80")
        pg.screenshot(path=str(OUT / f"session_{i + 2}.png"))
    assert page.locator(".elf-case select").first.input_value() == "upload: mine.cif"
    assert iso_of(page) == first_iso  # the other sessions' iso step did not reach the first one
    for pg in others:
        pg.close()


# --------------------------------------------------------------------------- tour, labels, 3D, console
def _case_value(page) -> str:
    return page.locator(".elf-case select").first.input_value()


def _wait_drawn(page, timeout_s: float = 300) -> None:
    """Wait until the busy indicator says the last change is drawn in the browser."""
    deadline = time.time() + timeout_s
    while True:
        box = page.locator(".elf-busy").first
        if box.get_attribute("data-busy") == "0" and int(box.get_attribute("data-drawn") or 0) >= int(
            box.get_attribute("data-seq") or 0
        ):
            return
        if time.time() > deadline:
            raise AssertionError("the page stayed busy")
        time.sleep(0.2)


def test_guided_tour_order_and_models(page):
    """The tour: the fluid at 76 then 115.1 GPa with the fluid model, then the atomic crystal with the crystal model.

    The session has not used the tour yet: the first click shows step 1; after step 3 it starts again.
    """
    expected = {1: ("synthetic_80", "fluid", "Fluid at 76 GPa"), 2: ("synthetic_130", "fluid", "Fluid at 115.1 GPa"),
                3: ("cubic_sg207", "crystals", "Crystal cubic_sg207")}
    for n in (1, 2, 3, 1):
        page.locator(".elf-next-preset button").first.click()
        page.wait_for_selector(f".elf-message >> text=Tour {n}/3", timeout=120_000)
        case, training, title = expected[n]
        msg = text_of(page, ".elf-message")
        assert title in msg, msg
        assert ("fluid + atomic crystals" in msg) == (training == "crystals"), msg
        assert _case_value(page).startswith(case), (_case_value(page), msg)
        active = page.locator(".elf-training button.bk-active").first.inner_text().strip()
        assert active == training, (active, msg)
        _wait_drawn(page)
        shot(page, ".elf-message", f"tour_step_{n}")


def test_domain_badge_for_a_crystal_with_the_fluid_model(page):
    sel = page.locator(".elf-case select").first
    target = next(o for o in sel.locator("option").all_inner_texts() if o.startswith("cubic_sg207"))
    sel.select_option(label=target)
    page.locator(".elf-training button", has_text="fluid").first.click()
    page.wait_for_selector(".elf-domain-warning >> text=outside the training domain", timeout=120_000)
    assert "crystals" in text_of(page, ".elf-domain-warning")
    shot(page, ".elf-domain-warning", "domain_badge")
    page.locator(".elf-training button", has_text="crystals").first.click()
    deadline = time.time() + 120
    while page.locator(".elf-domain-warning").first.is_visible():
        assert time.time() < deadline, "the domain warning stayed with the crystal model"
        time.sleep(0.3)
    _wait_drawn(page)


_FIGURE_LABELS = """() => {
    const out = [];
    for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
        for (const m of doc._all_models.values()) {
            if (!m.title || !m.x_range || !m.renderers || !m.below) continue;
            const bars = (m.right || []).concat(m.left || []).filter((r) => r.color_mapper).map((r) => r.title);
            const hover = (m.toolbar ? m.toolbar.tools : []).filter((t) => t.tooltips).map((t) =>
                JSON.stringify(t.tooltips));
            out.push({title: m.title.text, x: m.below.map((a) => a.axis_label), y: m.left.map((a) => a.axis_label),
                      bars: bars, hover: hover});
        }
    }
    return out;
}"""


def test_labels_follow_the_field_and_the_plane(page):
    page.locator(".elf-view-field button", has_text="reference").first.click()
    page.locator(".elf-slice-mode button", has_text="a").first.click()
    deadline = time.time() + 120
    while "ELF (reference)" not in text_of(page, ".elf-3d-legend") or "plane a" not in text_of(page, ".elf-slice"):
        assert time.time() < deadline, text_of(page, ".elf-3d-legend")
        time.sleep(0.3)
    _wait_drawn(page)
    figures = page.evaluate(_FIGURE_LABELS)
    titles = [f["title"] for f in figures]
    assert "ELF (reference)" in titles, titles
    assert any(t.startswith("ELF_pred − ELF_ref") for t in titles), titles
    slices = [f for f in figures if f["title"].startswith(("ELF (", "ELF_"))]
    for f in slices:
        assert f["x"] == ["along b (Å)"] and f["y"] == ["along c (Å)"], f
        assert any("ELF" in b for b in f["bars"]), f
        assert any("atom" in h for h in f["hover"]), f  # atom index on hover in the slice
    legend = text_of(page, ".elf-3d-legend")
    assert "surface: ELF (reference)" in legend and "H atoms" in legend and "slice: plane a" in legend
    page.locator(".elf-view-field button", has_text="prediction").first.click()
    page.locator(".elf-slice-mode button", has_text="c").first.click()
    _wait_drawn(page)


def test_3d_atom_index_on_hover(page):
    canvas = page.locator(".elf-3d canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    tip = page.locator(".elf-atom-tip")
    found = None
    for fy in np.linspace(0.15, 0.85, 15):
        for fx in np.linspace(0.15, 0.85, 15):
            page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
            if tip.count() and tip.first.is_visible():
                found = tip.first.inner_text()
                break
        if found:
            break
    assert found is not None, "no atom tooltip anywhere over the 3D view"
    import re

    assert re.fullmatch(r"H atom \d+", found), found
    shot(page, ".elf-3d", "3d_hover")


_AXES = """() => {
    for (const doc of (window.Bokeh ? Bokeh.documents : []))
        for (const m of doc._all_models.values())
            if (m.scene !== undefined && m.axes)
                return [m.axes.xticker.labels, m.axes.yticker.labels, m.axes.zticker.labels];
    return null;
}"""


def test_3d_axes_are_labelled(page):
    labels = page.evaluate(_AXES)
    assert labels is not None, "no axes on the 3D view"
    assert [axis[-1].split()[-1] for axis in labels] == ["x", "y", "z"], labels
    assert all(axis[-1].endswith(f"Å {name}") for axis, name in zip(labels, "xyz")), labels


def test_screening_run_upload_and_plot_click(page, served):
    from elfcore.screen.database import write_frame

    db = served["base"] / "run.db"
    for i, (atoms, p) in enumerate(zip(served["structures"], (80.0, 130.0, 150.0))):
        write_frame(db, atoms, {"source": "/data/set.xyz", "frame": i, "status": "ok", "pressure_gpa": p,
                                "phi": 0.2 + 0.001 * p, "threshold_1d": 0.4, "threshold_2d": 0.35})
    before = shot(page, ".elf-3d canvas")
    page.locator(".elf-upload input[type=file]").first.set_input_files(str(db))
    page.wait_for_selector(".elf-message >> text=Opened the screening run", timeout=LOAD_S * 1000)
    assert "Frame 1/3" in text_of(page, ".elf-frame-summary") and "80.0" in text_of(page, ".elf-frame-summary")
    changed(page, ".elf-3d canvas", before, timeout_s=LOAD_S)
    plot = page.locator(".elf-screening canvas").first
    plot.scroll_into_view_if_needed()
    box = plot.bounding_box()
    before, summary = shot(page, ".elf-3d canvas"), text_of(page, ".elf-frame-summary")
    page.mouse.click(box["x"] + box["width"] * 0.72, box["y"] + box["height"] * 0.5)  # right end: 150 GPa
    text_changed(page, ".elf-frame-summary", summary, timeout_s=LOAD_S)
    assert "Frame 3/3" in text_of(page, ".elf-frame-summary")
    changed(page, ".elf-3d canvas", before, timeout_s=LOAD_S)
    assert "frame 3/3" in page.locator(".elf-case select").first.input_value()
    page.screenshot(path=str(OUT / "page_screening.png"))


def test_no_console_errors(page):
    assert page.console_errors == [], page.console_errors[:20]
