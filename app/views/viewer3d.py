"""3D view: isosurfaces of an ELF field, atoms and the cell box (pyvista → ``pn.pane.VTK``).

The mesh builders are pure functions of a field; :class:`Viewer3D` owns one
``pyvista.Plotter(off_screen=True)`` per browser session, updates its meshes in
place when the state changes and then re-synchronizes the VTK pane.
"""
from __future__ import annotations

import io
import textwrap

import numpy as np
import panel as pn
import param
import pyvista as pv
import xarray as xr
from panel.pane.vtk.vtk import VTKRenderWindowSynchronized

from app.state import FIELD_DEPS, SLICE_DEPS

__all__ = [
    "display_strides", "isosurface", "atom_spheres", "cell_box", "slice_quad", "axes_ticks", "legend_html",
    "array_bytes", "solid_colour_mapper", "browser_camera", "SyncedVTK", "Viewer3D", "FIELD_COLOURS", "ATOM_COLOUR", "PLANE_COLOUR",
    "SURFACE_OPACITY", "VIEW_DEPS",
]

#: Surface colour per ELF kind.
FIELD_COLOURS = {"prediction": "#f2a541", "reference": "#4fa3a5", "corrected": "#9b6fd1"}
_RESIDUAL_POS = "#d7301f"
_RESIDUAL_NEG = "#2166ac"
#: Hydrogen atoms: light (as in the usual CPK colours), opaque, seen through the translucent surfaces.
ATOM_COLOUR = "#f4f6fa"
ATOM_RADIUS = 0.3
#: Opacity of the ELF isosurface: low enough for the atoms inside to show through it.
SURFACE_OPACITY = 0.4
#: Size (px) of the 3D export (:meth:`Viewer3D.png`), and of the server's unseen render before each
#: synchronization of the browser's scene (0.1 s at the export size, 0.02 s at this one).
EXPORT_SIZE = (640, 520)
SYNC_SIZE = (128, 104)
#: Colour of the current slice plane drawn in 3D.
PLANE_COLOUR = "#2a6f97"
#: State parameters the 3D view redraws on (the slice plane alone follows the slice choices).
VIEW_DEPS = (*FIELD_DEPS, "view_field", "iso", "show_residual", "residual_iso", "show_atoms", "show_cell")


def _index_to_cart(shape, cell) -> np.ndarray:
    """4×4 affine map from grid-index coordinates to Cartesian Å."""
    m = np.eye(4)
    m[:3, :3] = (np.asarray(cell, dtype=np.float64) / np.asarray(shape, dtype=np.float64)[:, None]).T
    return m


def display_strides(shape, max_points: int = 64) -> tuple[int, int, int]:
    """Per-axis sampling stride so the drawn grid has ≤ ``max_points`` per axis.

    Each stride divides the axis length, so the subsampled grid stays uniform
    and periodic (a 96³ grid is drawn on 48³); an axis with no suitable divisor
    is kept whole.
    """
    out = []
    for n in shape:
        n = int(n)
        stride = next(s for s in range(1, n + 1) if n % s == 0 and n // s <= max_points)
        out.append(stride if n // stride >= max_points // 2 else 1)  # never coarser than half the budget
    return tuple(out)


def isosurface(field: xr.DataArray, value: float, *, name: str = "elf", max_points: int | None = 64) -> pv.PolyData:
    """Periodic isosurface ``{field = value}`` over one whole cell.

    Parameters
    ----------
    field : xarray.DataArray
        A field of the data model (dims a, b, c; attrs cell in Å).
    value : float
        Iso value.
    max_points : int or None
        Draw on a subsampled grid of at most this many points per axis (see
        :func:`display_strides`; ``None`` = full grid). The browser then gets a
        few times fewer triangles, which keeps a slider step fast on 96³ grids.

    Returns
    -------
    pyvista.PolyData
        Triangles in Cartesian Å (the first grid plane is repeated at the far
        side so the surface closes at the cell faces). Empty when the value is
        outside the field's range.
    """
    values = np.asarray(field.values, dtype=np.float32)
    if max_points:
        sa, sb, sc = display_strides(values.shape, max_points)
        values = values[::sa, ::sb, ::sc]
    padded = np.pad(values, ((0, 1), (0, 1), (0, 1)), mode="wrap")
    img = pv.ImageData(dimensions=padded.shape)
    img.point_data[name] = padded.ravel(order="F")
    surf = img.contour([float(value)], scalars=name, method="flying_edges", compute_normals=False)
    if surf.n_points == 0:
        return pv.PolyData()
    surf.clear_data()  # geometry only: no scalars to ship to the browser
    return surf.transform(_index_to_cart(values.shape, field.attrs["cell"]), inplace=False)


def atom_spheres(positions_cart: np.ndarray, radius: float = 0.25) -> pv.PolyData:
    """Spheres of ``radius`` Å at the Cartesian atom positions (n, 3)."""
    pos = np.asarray(positions_cart, dtype=np.float64).reshape(-1, 3)
    if len(pos) == 0:
        return pv.PolyData()
    centres = pv.PolyData(pos)
    return centres.glyph(geom=pv.Sphere(radius=radius, theta_resolution=12, phi_resolution=12), scale=False, orient=False)


def cell_box(cell) -> pv.PolyData:
    """The 12 edges of the cell (rows = lattice vectors, Å) as lines."""
    cell = np.asarray(cell, dtype=np.float64)
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float) @ cell
    edges = []
    for a in range(8):
        for b in range(a + 1, 8):
            if bin(a ^ b).count("1") == 1:
                edges.append((a, b))
    lines = np.hstack([[2, a, b] for a, b in edges])
    return pv.PolyData(corners, lines=lines)


def slice_quad(sd) -> tuple[pv.PolyData, pv.PolyData]:
    """The drawn area of a slice (:class:`~app.state.SliceData`) in space: a filled quad and its outline.

    The corners are the slice's in-plane extent (pixel origins to one pixel past the last,
    which for a lattice plane is the whole cell face) placed by the slice's own geometry
    (:meth:`SliceData.to_cartesian`, from :func:`elfcore.grid.slice_geometry`).
    """
    x, y = np.asarray(sd.x, float), np.asarray(sd.y, float)
    dx = (x[-1] - x[0]) / max(len(x) - 1, 1)
    dy = (y[-1] - y[0]) / max(len(y) - 1, 1)
    x0, x1, y0, y1 = x[0], x[-1] + dx, y[0], y[-1] + dy
    corners = np.array([sd.to_cartesian(u, v) for u, v in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))])
    quad = pv.PolyData(corners, faces=np.array([4, 0, 1, 2, 3]))
    outline = pv.PolyData(corners, lines=np.array([5, 0, 1, 2, 3, 0]))
    return quad, outline


def axes_ticks(cell) -> dict:
    """Axes of the 3D pane (``pn.pane.VTK.axes``): Cartesian x, y, z in Å over the cell's extent.

    Ticks every 1 Å (2 Å beyond 12 Å); the last tick of each axis names it, e.g. ``"4 Å x"``.
    """
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float) @ np.asarray(cell, float)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    out = {}
    for axis, name in enumerate("xyz"):
        span = hi[axis] - lo[axis]
        step = 1.0 if span <= 12 else 2.0
        ticks = np.arange(np.ceil(lo[axis] / step) * step, hi[axis] + 1e-6, step)
        if len(ticks) < 2:
            ticks = np.array([lo[axis], hi[axis]])
        labels = [f"{t:g}" for t in ticks]
        labels[-1] = f"{ticks[-1]:g} Å {name}"
        out[f"{name}ticker"] = {"ticks": [float(t) for t in ticks], "labels": labels}
    out.update(origin=[float(v) for v in lo], digits=0, show_grid=False, axes_opacity=0.6, fontsize=13)
    return out


def _swatch(colour: str, opacity: float = 1.0, border: str = "#555") -> str:
    return (f'<span style="display:inline-block;width:14px;height:14px;vertical-align:-2px;margin-right:4px;'
            f'background:{colour};opacity:{max(opacity, 0.35)};border:1px solid {border};border-radius:2px"></span>')


def legend_html(kind: str, iso: float, *, residual: float | None = None, atoms: bool = True,
                plane: str = "", cell: bool = True) -> str:
    """The 3D view's legend: which field the surface colour means, the residual colours, atoms, plane, cell."""
    items = [f'{_swatch(FIELD_COLOURS[kind], SURFACE_OPACITY + 0.3)}surface: <b>ELF ({kind})</b> = {iso:.2f}']
    if residual is not None:
        items.append(f"{_swatch(_RESIDUAL_POS)}{_swatch(_RESIDUAL_NEG)}residual ±{residual:.2f} "
                     "(red: over-, blue: under-predicted)")
    if atoms:
        items.append(f'{_swatch(ATOM_COLOUR, border="#888")}H atoms (hover: index)')
    if plane:
        items.append(f"{_swatch(PLANE_COLOUR, 0.5)}slice: {plane}")
    if cell:
        items.append(f'{_swatch("#ffffff", border="#000")}cell')
    return '<div class="elf-3d-legend-items">' + " &nbsp;·&nbsp; ".join(items) + "</div>"


def array_bytes(array) -> bytes:
    """Raw bytes of a VTK data array as vtk.js expects them.

    64-bit id/integer arrays (VTK types 12, 16, 17: cell connectivity) are sent
    as 32-bit (negative ids become −1 → 0xFFFFFFFF), as Panel's serializer
    does; this does it with numpy instead of a Python loop per value.
    """
    from vtkmodules.util.numpy_support import vtk_to_numpy

    values = vtk_to_numpy(array)
    kind = array.GetDataType()
    if kind in (12, 17):
        values = np.where(values < 0, -1, values).astype(np.int64).astype(np.uint32)
    elif kind == 16:
        values = np.where(values < 0, -1, values).astype(np.int32)
    return np.ascontiguousarray(values).tobytes()


def _update_mappers(ren_win) -> None:
    renderers = ren_win.GetRenderers()
    renderers.InitTraversal()
    for _ in range(renderers.GetNumberOfItems()):
        ren = renderers.GetNextItem()
        props = ren.GetViewProps()
        props.InitTraversal()
        for _ in range(props.GetNumberOfItems()):
            prop = props.GetNextProp()
            mapper = prop.GetMapper() if hasattr(prop, "GetMapper") else None
            if mapper is not None:
                mapper.Update()


class SyncedVTK(VTKRenderWindowSynchronized):
    """``pn.pane.VTK`` for a render window, with a vectorized array export.

    Panel converts every 64-bit connectivity array value by value in Python
    (seconds for an isosurface of a 96³ grid); this pane produces the same
    bytes with numpy. Everything else is Panel's synchronized VTK pane.
    """

    def _serialize_ren_win(self, ren_win, context, binary=False, compression=True, exclude_arrays=None):
        import panel.pane.vtk.synchronizable_serializer as rws

        exclude = set(exclude_arrays or ())
        ren_win.OffScreenRenderingOn()
        ren_win.Modified()
        _update_mappers(ren_win)
        ren_win.Render()  # as Panel does: the serialized scene (camera, sizes) needs one frame
        scene = rws.serializeInstance(None, ren_win, context.getReferenceId(ren_win), context, 0)
        scene["properties"]["numberOfLayers"] = 2  # the browser draws the orientation widget in layer 2
        # like Panel's own pane: raw bytes, uncompressed, whatever binary/compression say
        arrays = {
            name: array_bytes(record["array"])
            for name, record in context.dataArrayCache.items()
            if name not in exclude
        }
        return scene, arrays, context.getAnnotations()


def titled_png(img: np.ndarray, lines: list[str], *, line_px: int = 18) -> bytes:
    """PNG bytes of an RGB(A) image with text lines above it, wrapped to the image's width
    (matplotlib's bundled font, so every glyph, Å included, is drawn offline)."""
    from matplotlib.figure import Figure

    h, w = img.shape[:2]
    lines = [part for text in lines for part in textwrap.wrap(text, width=max(20, w // 7)) or [""]]
    band = line_px * len(lines) + 8
    dpi = 100
    fig = Figure(figsize=(w / dpi, (h + band) / dpi), dpi=dpi)
    fig.figimage(img, xo=0, yo=0)
    for i, text in enumerate(lines):
        fig.text(4 / w, 1 - (4 + line_px * (i + 0.8)) / (h + band), text, fontsize=line_px * 0.5, va="baseline")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def cell_bounds(cell) -> tuple:
    """``(xmin, xmax, ymin, ymax, zmin, zmax)`` of the eight corners of a cell: what a new case is framed on
    (not the slice plane or labels, which may reach outside the cell)."""
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float) @ np.asarray(cell, float)
    lo, hi = corners.min(0), corners.max(0)
    return (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])


def browser_camera(camera) -> dict:
    """A pyvista camera as the state dict of the browser's vtk.js camera (``pn.pane.VTK.camera``)."""
    return {
        "position": [float(v) for v in camera.position],
        "focalPoint": [float(v) for v in camera.focal_point],
        "viewUp": [float(v) for v in camera.up],
        "viewAngle": float(camera.view_angle),
        "parallelScale": float(camera.parallel_scale),
        "clippingRange": [float(v) for v in camera.clipping_range],
    }


def solid_colour_mapper(mapper) -> None:
    """Make ``mapper`` draw its actor's solid colour with a 2-entry lookup table.

    Every surface here has one colour, so the lookup table is never used; but
    pyvista gives each mapper a 256-entry table, which the synchronized scene
    carries as 256 colour nodes per actor (~160 kB of JSON on every update of
    the 3D view, each time serialized, sent and parsed).
    """
    from vtkmodules.vtkCommonCore import vtkLookupTable

    lut = vtkLookupTable()
    lut.SetNumberOfTableValues(2)
    lut.Build()
    mapper.SetLookupTable(lut)
    mapper.ScalarVisibilityOff()


def _placeholder() -> pv.PolyData:
    """A zero-area triangle standing in for "nothing" (the VTK pane cannot serialize empty meshes).

    It is a triangle, not a lone vertex, on purpose: in the browser (vtk.js) a
    translucent actor whose mesh started as a vertex-only placeholder never
    draws the triangles it is given later, so the residual isosurfaces
    (opacity < 1) stayed invisible after the checkbox was ticked. With a
    triangle placeholder every actor holds the same kind of cells throughout.
    """
    return pv.PolyData(np.zeros((3, 3)), faces=np.array([3, 0, 1, 2]))


class Viewer3D(pn.viewable.Viewer):
    """The 3D pane of one session.

    Parameters
    ----------
    state : app.state.AppState
        The session's state; the view follows its parameters.
    defer : bool
        Start empty and draw on the first :meth:`update` (so a page can be
        shown before the first prediction is ready).
    """

    state = param.Parameter(precedence=-1)

    def __init__(self, state, *, defer: bool = False, **params):
        super().__init__(state=state, **params)
        from app.views.browser import AtomHover, SceneKeeper

        # The server's own render of the scene (done before each synchronization, for the camera's clipping
        # range) is never shown: it runs on a small window, and exports render at EXPORT_SIZE.
        self.plotter = pv.Plotter(off_screen=True, window_size=SYNC_SIZE)
        self.plotter.set_background("white")
        self._meshes = {
            k: _placeholder() for k in ("atoms", "iso", "res_pos", "res_neg", "plane", "plane_edge", "box")
        }
        styles = {  # opaque atoms first, then the translucent surfaces: every atom shows through
            "atoms": dict(color=ATOM_COLOUR, specular=0.4, ambient=0.25, smooth_shading=True),
            "iso": dict(color=FIELD_COLOURS["prediction"], opacity=SURFACE_OPACITY, smooth_shading=False),
            "res_pos": dict(color=_RESIDUAL_POS, opacity=0.5),
            "res_neg": dict(color=_RESIDUAL_NEG, opacity=0.5),
            "plane": dict(color=PLANE_COLOUR, opacity=0.18),
            "plane_edge": dict(color=PLANE_COLOUR, line_width=3),
            "box": dict(color="black", line_width=2),
        }
        self._actors = {}
        for k, mesh in self._meshes.items():
            self._actors[k] = self.plotter.add_mesh(mesh, **styles[k])
            solid_colour_mapper(self._actors[k].GetMapper())
        # No orientation widget: vtk.js raises "Cannot read properties of undefined (reading '0')" in
        # computeViewport for it on every scene update; the labelled x/y/z axes give the orientation.
        self.pane = SyncedVTK(
            self.plotter.ren_win, sizing_mode="stretch_width", height=520, orientation_widget=False,
            enable_keybindings=False,
        )
        self.caption = pn.pane.Markdown("*Computing…*", margin=(0, 10))
        self.legend = pn.pane.HTML("", margin=(0, 10), css_classes=["elf-3d-legend"], sizing_mode="stretch_width")
        self.hover = AtomHover()
        self.keeper = SceneKeeper()
        self._last_case = None
        self._atoms_key = None
        self._axes_key = None
        self._plane_label = ""
        if not defer:  # deferred: the page calls update() once the browser is connected
            self.update()
        state.param.watch(lambda *_: self.update(), list(VIEW_DEPS))
        state.param.watch(lambda *_: self.update_plane(), [d for d in SLICE_DEPS if d not in VIEW_DEPS])

    def _set(self, key: str, mesh: pv.PolyData | None, visible: bool = True) -> None:
        target = self._meshes[key]
        if mesh is None or mesh.n_points == 0 or not visible:
            target.copy_from(_placeholder())
            self._actors[key].SetVisibility(False)
        else:
            target.copy_from(mesh)
            self._actors[key].SetVisibility(True)

    def _draw_plane(self) -> None:
        """The current slice plane (the slice view's own geometry) as a translucent quad with an outline."""
        sd = self.state.slice_data()
        if isinstance(sd, str):
            self._set("plane", None)
            self._set("plane_edge", None)
            self._plane_label = ""
            return
        quad, outline = slice_quad(sd)
        self._set("plane", quad)
        self._set("plane_edge", outline)
        self._plane_label = sd.title

    def update_plane(self) -> None:
        """Move the slice plane only (a slice choice changed) and push it to the browser.

        While a new case is being set up (its plane atoms are reset before the views hear of the
        case), nothing is sent: the case's full :meth:`update` follows and draws the plane with it.
        """
        if self.state.case != self._last_case:
            return
        self._draw_plane()
        self._legend()
        self.pane.synchronize()

    def _legend(self) -> None:
        s = self.state
        kind = getattr(self, "_kind", None)
        if kind is None:
            self.legend.object = ""
            return
        self.legend.object = legend_html(
            kind, s.iso, residual=s.residual_iso if getattr(self, "_residual_shown", False) else None,
            atoms=s.show_atoms, plane=self._plane_label, cell=s.show_cell,
        )

    def update(self) -> None:
        """Rebuild the meshes from the state and push them to the browser.

        Everything the browser gets from one update (a new case's camera, the scene, caption and
        legend) goes out in one message: the browser then draws the new scene once, from the new
        camera, instead of first drawing the old scene from the new camera.
        """
        from panel.io.document import hold

        with hold():
            self._update()

    def _update(self) -> None:
        s = self.state
        fs = s.fields()
        kind = s.shown_kind(fs)
        fld = fs.get(kind)
        notes = []
        if fld is None:
            self._set("iso", None)
            self._kind = None
            notes.append(fs.error or "No field to draw.")
        else:
            self._set("iso", isosurface(fld, s.iso))
            self._actors["iso"].GetProperty().SetColor(pv.Color(FIELD_COLOURS[kind]).float_rgb)
            self._kind = kind
            label = f"**{kind}** ELF = {s.iso:.2f}"
            if fs.squeezed:
                label += f" — cell scaled ×{s.squeeze:.2f}, prediction only (no DFT reference)"
            strides = display_strides(fld.shape)
            if max(strides) > 1:
                label += f" (drawn on a {'×'.join(str(n // k) for n, k in zip(fld.shape, strides))} sub-grid)"
            notes.append(label)
            if kind != s.view_field:
                notes.append(f"({s.view_field} not available)")
        res = fs.residual_corrected if kind == "corrected" and fs.residual_corrected is not None else fs.residual
        show_res = s.show_residual and res is not None
        self._residual_shown = show_res
        self._set("res_pos", isosurface(res, s.residual_iso) if show_res else None, show_res)
        self._set("res_neg", isosurface(res, -s.residual_iso) if show_res else None, show_res)
        if show_res:
            notes.append(f"residual ±{s.residual_iso:.2f} (red: over-predicted, blue: under-predicted)")
        elif s.show_residual:
            notes.append("no residual (needs a DFT reference)")
        atoms = fs.atoms
        if atoms is not None:
            cell = np.asarray(atoms.cell[:])
            key = (atoms.get_positions().tobytes(), cell.tobytes(), s.show_atoms, s.show_cell)
            if key != self._atoms_key:  # rebuild atoms and box only when they change
                self._set("atoms", atom_spheres(atoms.get_positions(), ATOM_RADIUS), s.show_atoms)
                self._set("box", cell_box(cell), s.show_cell)
                self.hover.param.update(positions=atoms.get_positions().round(4).tolist(),
                                        symbols=list(atoms.get_chemical_symbols()), active=bool(s.show_atoms))
                self._atoms_key = key
            if cell.tobytes() != self._axes_key:
                self.pane.axes = axes_ticks(cell)
                self._axes_key = cell.tobytes()
        self._draw_plane()
        self.caption.object = " · ".join(notes)
        self._legend()
        if s.case != self._last_case:
            # The browser re-applies the pane's ``camera`` (the last view it reported) to
            # every re-synchronized scene, so framing the new cell needs an explicit camera;
            # within one case the user's rotation and zoom are kept.
            self.plotter.reset_camera(bounds=cell_bounds(atoms.cell[:]) if atoms is not None else None)
            self.pane.camera = browser_camera(self.plotter.camera)
            self._last_case = s.case
        self.pane.synchronize()

    def png(self) -> bytes:
        """The current 3D picture as PNG bytes (rendered off screen), titled with what it shows
        (:meth:`AppState.export_title`) and the caption's surface line."""
        self.plotter.window_size = EXPORT_SIZE
        try:
            img = self.plotter.screenshot(None, return_img=True)
        finally:
            self.plotter.window_size = SYNC_SIZE
        lines = [self.state.export_title(), str(self.caption.object).replace("**", "")]
        return titled_png(img, lines)

    def __panel__(self):
        return pn.Column(self.caption, self.legend, self.pane, self.hover, self.keeper, sizing_mode="stretch_width")
