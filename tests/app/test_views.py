"""View functions and per-session views, without a browser."""
from __future__ import annotations

import io

import numpy as np
import pytest

from elfcore.grid import make_field


def _sphere_field(n=32, length=6.0, radius=1.5, cell=None):
    cell = np.eye(3) * length if cell is None else np.asarray(cell, float)
    s = (np.stack(np.meshgrid(*[np.arange(n) / n] * 3, indexing="ij"), -1) - 0.5) @ cell
    r = np.linalg.norm(s, axis=-1)
    return make_field(np.clip(1.0 - r / (2 * radius), 0, 1), cell)  # value 0.5 on the sphere of `radius`


def test_isosurface_is_the_expected_sphere():
    from app.views.viewer3d import isosurface

    f = _sphere_field()
    surf = isosurface(f, 0.5)
    centre = np.full(3, 3.0) * (31 / 32) / (31 / 32)  # cell centre in Å
    r = np.linalg.norm(np.asarray(surf.points) - 3.0, axis=1)
    assert surf.n_cells > 100
    assert np.allclose(r, 1.5, atol=0.05)
    assert surf.area == pytest.approx(4 * np.pi * 1.5**2, rel=0.03)
    assert isosurface(f, 2.0).n_points == 0  # outside the range: nothing
    del centre


def test_isosurface_follows_a_skewed_cell():
    from app.views.viewer3d import isosurface

    cell = [[6.0, 0, 0], [2.0, 6.0, 0], [0, 0, 6.0]]
    surf = isosurface(_sphere_field(cell=cell), 0.5)
    centre = 0.5 * np.sum(cell, axis=0)
    r = np.linalg.norm(np.asarray(surf.points) - centre, axis=1)
    assert np.allclose(r, 1.5, atol=0.08)


def test_cell_box_and_atoms():
    from app.views.viewer3d import atom_spheres, cell_box

    box = cell_box(np.diag([1.0, 2.0, 3.0]))
    assert box.n_lines == 12
    assert np.allclose(np.asarray(box.points).max(axis=0), [1, 2, 3])
    spheres = atom_spheres(np.array([[0.0, 0, 0], [1.0, 1, 1]]), radius=0.3)
    assert spheres.n_points > 0
    assert np.allclose(np.asarray(spheres.points).max(axis=0), [1.3, 1.3, 1.3], atol=0.02)
    assert atom_spheres(np.zeros((0, 3))).n_points == 0


def test_array_bytes_matches_panels_serializer():
    """Our vectorized export gives the same bytes as Panel's loop (guards against Panel changes)."""
    import panel as pn
    import pyvista as pv
    from bokeh.document import Document

    from app.views.viewer3d import SyncedVTK, array_bytes, isosurface

    pl = pv.Plotter(off_screen=True)
    pl.add_mesh(isosurface(_sphere_field(n=16), 0.5))
    pl.add_mesh(pv.Sphere())
    pane = SyncedVTK(pl.ren_win)
    root = pane.get_root(Document())
    ctx = pane._contexts[pane._models[root.ref["id"]][0].id]
    assert len(ctx.dataArrayCache) >= 4
    kinds = set()
    for name, record in ctx.dataArrayCache.items():
        kinds.add(record["array"].GetDataType())
        assert array_bytes(record["array"]) == ctx.getCachedDataArray(name, binary=True, compression=False)
    assert 12 in kinds  # the connectivity (vtkIdType) path was exercised
    del pn


def test_image_source_geometry():
    from app.views.slice import image_source_data

    x = np.arange(4) * 0.5
    y = np.arange(3) * 1.0
    z = np.arange(12.0).reshape(4, 3)
    d = image_source_data(x, y, z)
    assert d["image"][0].shape == (3, 4)  # bokeh: rows = y
    assert d["x"][0] == -0.25 and d["dw"][0] == 2.0
    assert d["y"][0] == -0.5 and d["dh"][0] == 3.0
    assert d["image"][0][2, 1] == z[1, 2]


def test_metrics_markdown():
    from app.views.metrics import metrics_markdown

    m = {
        "errors": {"before": {"mae": 0.02, "rmse": 0.03, "r2": 0.99}, "after": {"mae": 0.01, "rmse": 0.015, "r2": 0.997}},
        "topology": {"reference": {"phi": 0.51, "molecularity": 0.7}, "prediction": {"phi": float("nan"), "molecularity": 0.69}},
        "note": "",
    }
    md = metrics_markdown(m, n_shells=3)
    assert "0.9900" in md and "0.9970" in md and "3 shells" in md
    assert "| prediction | – | 0.690 |" in md
    assert "No metrics" in metrics_markdown({})
    md = metrics_markdown(m, correction="k_max = 1.50 Å⁻¹")
    assert "| k-corrected (k_max = 1.50 Å⁻¹) | 0.0100 | 0.0150 | 0.9970 |" in md


def test_slice_png(state):
    from app.views.slice import slice_png

    data = slice_png(state.slice_data())
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_teaching_text_follows_state(state):
    from app.views.teaching import teaching_text

    assert teaching_text(state) == ""
    state.teaching = True
    t = teaching_text(state)
    assert "GPa" in t and "±0.2" in t
    state.squeeze = 0.9
    assert "prediction only" in teaching_text(state)


@pytest.fixture
def page(state):
    """A built session, attached to a Bokeh document as `panel serve` would."""
    from bokeh.document import Document

    from app.main import build_session

    sess = build_session(state)
    sess.template.server_doc(Document())
    return sess


def test_page_views_follow_sliders(page, state):
    viewer, sl, ln = page.viewer, page.slice, page.line

    iso0 = viewer._meshes["iso"].n_points
    state.iso = 0.4
    assert viewer._meshes["iso"].n_points != iso0

    img0 = sl._images["residual"].data["image"][0].copy()
    state.slice_position = 0.1
    assert not np.allclose(img0, sl._images["residual"].data["image"][0], equal_nan=True)

    band0 = ln._sources["prediction"].data["elf"].copy()
    state.r_cut = 2.0  # another model: every view changes
    assert not np.allclose(band0, ln._sources["prediction"].data["elf"])
    state.n_shells = 2
    assert np.isfinite(ln._sources["corrected"].data["elf"]).all()
    state.param.update(show_residual=True, residual_iso=0.02)
    assert viewer._actors["res_pos"].GetVisibility() or viewer._actors["res_neg"].GetVisibility()
    png = viewer.png()
    assert png[:4] == b"\x89PNG"
    from PIL import Image

    from app.views.viewer3d import EXPORT_SIZE, SYNC_SIZE

    w, h = Image.open(io.BytesIO(png)).size
    assert w == EXPORT_SIZE[0] and h > EXPORT_SIZE[1]  # exported at full size, under a title band,
    assert tuple(viewer.plotter.window_size) == SYNC_SIZE  # the server's unseen render stays small


def test_page_sessions_do_not_share_widgets(pipeline):
    from app.main import build_session
    from app.state import AppState

    a, b = AppState(pipeline=pipeline), AppState(pipeline=pipeline)
    sa, sb = build_session(a), build_session(b)
    assert sa.viewer.plotter is not sb.viewer.plotter
    assert sa.controls["iso"] is not sb.controls["iso"]
    a.iso = 0.3
    assert b.iso == 0.75


def test_3d_scene_carries_no_colour_tables(state):
    """Every actor has one solid colour: its mapper's lookup table has 2 entries, not pyvista's 256, so the
    scene synchronized on each update stays small (it was ~180 kB of colour nodes)."""
    import json

    import panel.pane.vtk.synchronizable_serializer as rws

    from app.views.viewer3d import Viewer3D

    viewer = Viewer3D(state)
    for actor in viewer._actors.values():
        mapper = actor.GetMapper()
        assert mapper.GetLookupTable().GetNumberOfTableValues() == 2
        assert not mapper.GetScalarVisibility()
    ctx = rws.SynchronizationContext(id_root="test")
    scene, _, _ = viewer.pane._serialize_ren_win(viewer.plotter.ren_win, ctx)
    assert len(json.dumps(scene)) < 60_000


def test_hidden_meshes_hold_triangles_not_vertices(state):
    """Hidden meshes are zero-area triangles: a vertex-only mesh kept translucent actors from drawing later."""
    from app.views.viewer3d import Viewer3D

    viewer = Viewer3D(state)
    assert not state.show_residual
    for key in ("res_pos", "res_neg"):
        mesh = viewer._meshes[key]
        assert mesh.n_verts == 0 and mesh.n_lines == 0 and mesh.n_cells >= 1
        assert np.ptp(mesh.points, axis=0).max() == 0.0  # zero area: nothing is drawn
    state.param.update(show_residual=True, residual_iso=0.02)
    drawn = [viewer._meshes[k] for k in ("res_pos", "res_neg") if viewer._actors[k].GetVisibility()]
    assert drawn and all(m.n_verts == 0 and m.n_cells > 1 for m in drawn)


def test_metrics_pane_keeps_following_after_overlapping_refreshes(state, monkeypatch):
    """Two refreshes that overlap: the newest wins, and the pane still follows later changes."""
    import asyncio
    import time

    import param

    from app.views.metrics import metrics_pane

    original = state.metrics

    def slow_metrics():
        time.sleep(0.6 if state.n_shells == 1 else 0.05)  # the first of two quick steps finishes last
        return original()

    monkeypatch.setattr(state, "metrics", slow_metrics)

    async def scenario():
        monkeypatch.setattr(param.parameterized, "async_executor", lambda fn: asyncio.ensure_future(fn()))
        pane = metrics_pane(state)
        await asyncio.sleep(0.5)
        assert "MAE" in pane.object
        state.n_shells = 1
        await asyncio.sleep(0.1)  # its refresh is running
        state.n_shells = 2
        await asyncio.sleep(1.2)
        assert "k-corrected (2 shells)" in pane.object  # not overwritten by the older, slower refresh
        before = pane.object
        state.r_cut = 2.0
        await asyncio.sleep(0.8)
        assert pane.object != before and "k-corrected (2 shells)" in pane.object
        state.n_shells = 3
        await asyncio.sleep(0.8)
        assert "k-corrected (3 shells)" in pane.object

    asyncio.run(scenario())


def test_case_change_synchronizes_the_3d_scene_once(state):
    """A new case resets the slice-plane atoms before the views hear of the case: the plane is drawn with
    the case's own scene update, not sent in a scene update of its own first."""
    from app.views.viewer3d import Viewer3D, slice_quad

    viewer = Viewer3D(state)
    state.param.update(slice_mode="atoms", plane_atom_1=3)
    calls = []
    viewer.pane.synchronize = lambda: calls.append(state.case)
    state.plane_atom_1 = 4  # a slice choice alone: the plane moves at once
    assert len(calls) == 1
    calls.clear()
    state.case = list(state.param.case.objects.values())[1]
    assert state.plane_atom_1 == 0  # reset by the case change, and drawn with the new case
    assert calls == [state.case]
    quad, _ = slice_quad(state.slice_data())
    assert np.allclose(viewer._meshes["plane"].points, quad.points)  # the new case's plane


def test_case_change_sets_the_browser_camera_to_the_new_cell(state):
    """A new case (another cell) sends the browser an explicit camera framing the new scene.

    The browser re-applies the pane's last camera to every re-synchronized scene, so
    a reset request alone would keep the previous cell's zoom.
    """
    from app.views.viewer3d import Viewer3D

    viewer = Viewer3D(state)
    cam = dict(viewer.pane.camera)
    centre = np.asarray(state.fields().atoms.cell[:]).sum(axis=0) / 2
    assert cam["focalPoint"] == pytest.approx(centre, abs=0.3)
    user = dict(cam, position=[p * 2 for p in cam["position"]])
    viewer.pane.camera = user  # what the browser reports after the user zooms out
    state.iso = 0.6
    assert viewer.pane.camera == user  # same case: the user's camera stays
    state.case = list(state.param.case.objects.values())[1]
    new = viewer.pane.camera
    assert new != user
    assert new["focalPoint"] == pytest.approx(np.asarray(state.fields().atoms.cell[:]).sum(axis=0) / 2, abs=0.3)
    dist = np.linalg.norm(np.subtract(new["position"], new["focalPoint"]))
    assert dist == pytest.approx(np.linalg.norm(np.subtract(viewer.plotter.camera.position,
                                                            viewer.plotter.camera.focal_point)))


def test_slice_clicks_make_a_line_scan_and_are_drawn(state):
    """Two Bokeh Tap events on a slice: the state gets the segment, the figures draw it on that plane only."""
    from types import SimpleNamespace

    import app.main  # noqa: F401  (loads the plotting extensions as the served page does)
    from app.views.slice import SliceView

    state.param.update(slice_mode="c", slice_position=0.5)
    view = SliceView(state)
    view._on_tap(SimpleNamespace(x=0.5, y=1.0))
    assert state.pending_point == pytest.approx((0.5, 1.0, 2.0))
    assert view._pending.data["x"] == pytest.approx([0.5]) and view._segment.data["x"] == []
    view._on_tap(SimpleNamespace(x=3.5, y=3.0))
    assert state.line_source == "points" and view._pending.data["x"] == []
    assert view._segment.data["x"] == pytest.approx([0.5, 3.5]) and view._segment.data["y"] == pytest.approx([1.0, 3.0])
    state.slice_position = 0.25  # another plane: the segment is not on it
    assert view._segment.data["x"] == []
    state.slice_position = 0.5
    assert len(view._segment.data["x"]) == 2
    view._on_tap(SimpleNamespace(x=None, y=None))  # a click outside the plot area is ignored
    assert state.pending_point is None


def test_2d_figures_do_not_use_webgl(state):
    """The 3D view's WebGL contexts must not be able to evict the 2D views' (blank slices in long sessions)."""
    import app.main  # noqa: F401  (loads the plotting extensions as the served page does)
    from app.views.linescan import LineScanView
    from app.views.slice import SliceView

    view = SliceView(state)
    assert {f.output_backend for f in view.figures.values()} == {"canvas"}
    assert LineScanView(state).figure.output_backend == "canvas"


def test_slice_plane_in_3d_matches_the_slice(state):
    """The plane drawn in 3D spans the slice's area: a whole cell face for a lattice plane."""
    from app.views.viewer3d import slice_quad

    state.param.update(slice_mode="c", slice_position=0.5)
    sd = state.slice_data()
    quad, outline = slice_quad(sd)
    cell = np.asarray(state.fields().atoms.cell[:])
    z = quad.points[:, 2]
    assert np.allclose(z, z[0])  # a plane c = const of a cubic cell
    lo, hi = quad.points[:, :2].min(axis=0), quad.points[:, :2].max(axis=0)
    assert np.allclose(lo, 0.0, atol=1e-9) and np.allclose(hi, np.diag(cell)[:2])
    assert quad.n_cells == 1 and outline.n_lines == 1


def test_3d_view_draws_light_atoms_translucent_surface_plane_and_legend(page, state):
    from app.views.viewer3d import ATOM_COLOUR, SURFACE_OPACITY

    viewer = page.viewer
    assert viewer._actors["iso"].GetProperty().GetOpacity() == pytest.approx(SURFACE_OPACITY) and SURFACE_OPACITY <= 0.5
    rgb = np.array(viewer._actors["atoms"].GetProperty().GetColor())
    assert rgb.min() > 0.9 and np.allclose(rgb, np.array([int(ATOM_COLOUR[i:i + 2], 16) for i in (1, 3, 5)]) / 255)
    assert viewer._actors["plane"].GetVisibility() and viewer._actors["plane_edge"].GetVisibility()
    assert "surface: <b>ELF (prediction)</b>" in viewer.legend.object and "slice: plane c" in viewer.legend.object
    assert len(viewer.hover.positions) == len(state.fields().atoms)
    axes = viewer.pane.axes
    assert [axes[f"{a}ticker"]["labels"][-1].split()[-1] for a in "xyz"] == ["x", "y", "z"]
    z0 = viewer._meshes["plane"].points[:, 2].copy()
    state.slice_position = 0.1  # the plane follows the slice
    assert not np.allclose(z0, viewer._meshes["plane"].points[:, 2])
    state.view_field = "reference"
    assert "ELF (reference)" in viewer.legend.object


def test_metrics_table_warns_when_the_correction_hurts():
    from app.views.metrics import metrics_markdown

    m = {"errors": {"before": {"mae": 0.036, "rmse": 0.05, "r2": 0.9}, "after": {"mae": 0.04, "rmse": 0.05, "r2": 0.89}},
         "correction_warning": "The k-correction (2 shells) makes this case worse: MAE 0.0360 → 0.0400."}
    assert "⚠ The k-correction (2 shells) makes this case worse" in metrics_markdown(m)
    assert "⚠" not in metrics_markdown({**m, "correction_warning": ""})


def test_state_metrics_carry_the_correction_warning(state, monkeypatch):
    state.n_shells = 2
    assert state.metrics()["correction_warning"] == ""  # the stand-in correction always helps
    from tests.app.conftest import StandInEngine

    real = StandInEngine.correction

    def worse(self, pred, ref, n_shells, k_max=0.0):
        out = real(self, pred, ref, n_shells, k_max)
        out.info["mae_after"] = out.info["mae_before"] * 1.1
        return out

    monkeypatch.setattr(StandInEngine, "correction", worse)
    state.pipeline.cache.clear()
    assert "makes this case worse: MAE" in state.metrics()["correction_warning"]


def test_sliders_apply_released_values_and_follow_the_state(page, state):
    w = page.controls["iso"]
    assert w.value == state.iso
    w._process_events({"value": 0.45})  # dragging: not applied yet
    assert state.iso != 0.45
    w._process_events({"value": 0.5, "value_throttled": 0.5})  # released
    assert state.iso == 0.5
    state.iso = 0.6  # a change from the state (a tour step...) moves the slider
    assert w.value == 0.6
    assert page.controls["r_cut"].value == state.r_cut
    w._process_events({"value": 0.5, "value_throttled": 0.5})  # released at the last released value again
    assert state.iso == 0.5


def test_busy_tracker_counts_a_change(page, state):
    t = page.tracker
    seq = t.seq
    state.iso = 0.42
    assert t.seq > seq and t.started <= t.seq


def test_hiding_atoms_completes_the_change_and_turns_the_atom_tooltip_off(page, state):
    # Panel 1.9 raised on a ReactiveHTML list parameter set to [] (the tooltip's positions), which cut the
    # change short: the busy indicator never reported it drawn
    t, hover = page.tracker, page.viewer.hover
    seq = t.seq
    state.show_atoms = False
    assert t.seq > seq and hover.active is False and len(hover.positions) == len(state.fields().atoms)
    assert not page.viewer._actors["atoms"].GetVisibility()
    state.show_atoms = True
    assert hover.active is True and page.viewer._actors["atoms"].GetVisibility()


def test_metrics_table_names_the_predicted_correction():
    from app.views.metrics import metrics_markdown

    errs = {"before": {"mae": 0.03, "rmse": 0.04, "r2": 0.98}}
    with_after = {"errors": {**errs, "after": {"mae": 0.02, "rmse": 0.03, "r2": 0.99}}}
    assert "| k-corrected (predicted, no reference) | 0.0200 |" in metrics_markdown(
        with_after, correction="predicted, no reference")
    missing = metrics_markdown({"errors": errs}, correction="predicted, no reference")
    assert "no predicted correction for this model" in missing and "k-shells" not in missing
    assert "k-shells / k_max = 0" in metrics_markdown({"errors": errs}, correction="none")


def test_picture_exports_name_case_field_and_settings(page, state):
    """Both picture downloads carry the case, the view, the field and the settings in their file
    name, and the same in a title inside the image."""
    from PIL import Image

    from app.main import _downloads

    state.param.update(r_cut=2.0, l_max=1, iso=0.6, slice_mode="b", slice_position=0.25)
    slice_dl, iso_dl = _downloads(state, page.viewer, page.slice)[:2]
    stem = state.export_stem()
    data = slice_dl.callback().getvalue()
    assert slice_dl.filename == f"{stem}_slice_b0.25_prediction_r2_l1.png" == state.png_name("slice")
    assert data[:4] == b"\x89PNG"
    data = iso_dl.callback().getvalue()
    assert iso_dl.filename == f"{stem}_3d_iso0.60_prediction_r2_l1.png"
    assert Image.open(io.BytesIO(data)).size[1] > 100
    title = state.export_title()
    assert stem in title and "prediction ELF" in title and "r_cut 2 Å, l_max 1" in title
    state.param.update(n_shells=2, view_field="corrected")
    assert state.png_name("3d").endswith("_3d_iso0.60_corrected_r2_l1_k2.png")
    assert "k-correction 2 shells" in state.export_title()


def test_slice_png_carries_the_title(state, monkeypatch):
    import matplotlib.figure

    from app.views.slice import slice_png

    seen = {}
    orig = matplotlib.figure.Figure.suptitle

    def record(self, text, **kw):
        seen["title"] = text
        return orig(self, text, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle", record)
    data = slice_png(state.slice_data(), title="case X · prediction ELF")
    assert data[:4] == b"\x89PNG"
    assert seen["title"].startswith("case X · prediction ELF\n") and "plane" in seen["title"]
