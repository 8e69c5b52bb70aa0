"""3D view: isosurfaces of an ELF field, atoms and the cell box (pyvista → ``pn.pane.VTK``).

The mesh builders are pure functions of a field; :class:`Viewer3D` owns one
``pyvista.Plotter(off_screen=True)`` per browser session, updates its meshes in
place when the state changes and then re-synchronizes the VTK pane.
"""
from __future__ import annotations

import io

import numpy as np
import panel as pn
import param
import pyvista as pv
import xarray as xr

__all__ = ["isosurface", "atom_spheres", "cell_box", "Viewer3D", "FIELD_COLOURS"]

#: Surface colour per ELF kind.
FIELD_COLOURS = {"prediction": "#f2a541", "reference": "#4fa3a5", "corrected": "#9b6fd1"}
_RESIDUAL_POS = "#d7301f"
_RESIDUAL_NEG = "#2166ac"


def _index_to_cart(shape, cell) -> np.ndarray:
    """4×4 affine map from grid-index coordinates to Cartesian Å."""
    m = np.eye(4)
    m[:3, :3] = (np.asarray(cell, dtype=np.float64) / np.asarray(shape, dtype=np.float64)[:, None]).T
    return m


def isosurface(field: xr.DataArray, value: float, *, name: str = "elf") -> pv.PolyData:
    """Periodic isosurface ``{field = value}`` over one whole cell.

    Parameters
    ----------
    field : xarray.DataArray
        A field of the data model (dims a, b, c; attrs cell in Å).
    value : float
        Iso value.

    Returns
    -------
    pyvista.PolyData
        Triangles in Cartesian Å (the first grid plane is repeated at the far
        side so the surface closes at the cell faces). Empty when the value is
        outside the field's range.
    """
    values = np.asarray(field.values, dtype=np.float32)
    padded = np.pad(values, ((0, 1), (0, 1), (0, 1)), mode="wrap")
    img = pv.ImageData(dimensions=padded.shape)
    img.point_data[name] = padded.ravel(order="F")
    surf = img.contour([float(value)], scalars=name, method="flying_edges", compute_normals=False)
    if surf.n_points == 0:
        return pv.PolyData()
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


class Viewer3D(pn.viewable.Viewer):
    """The 3D pane of one session.

    Parameters
    ----------
    state : app.state.AppState
        The session's state; the view follows its parameters.
    """

    state = param.Parameter(precedence=-1)

    def __init__(self, state, **params):
        super().__init__(state=state, **params)
        self.plotter = pv.Plotter(off_screen=True, window_size=(640, 520))
        self.plotter.set_background("white")
        self._meshes = {k: pv.PolyData() for k in ("iso", "res_pos", "res_neg", "atoms", "box")}
        styles = {
            "iso": dict(color=FIELD_COLOURS["prediction"], opacity=0.85, smooth_shading=False),
            "res_pos": dict(color=_RESIDUAL_POS, opacity=0.55),
            "res_neg": dict(color=_RESIDUAL_NEG, opacity=0.55),
            "atoms": dict(color="#404040"),
            "box": dict(color="black", line_width=2),
        }
        self._actors = {}
        for k, mesh in self._meshes.items():
            self._actors[k] = self.plotter.add_mesh(mesh, **styles[k])
        self.pane = pn.pane.VTK(
            self.plotter.ren_win, sizing_mode="stretch_both", min_height=420, orientation_widget=True,
            enable_keybindings=False,
        )
        self.caption = pn.pane.Markdown("", margin=(0, 10))
        self._last_case = None
        self.update()
        state.param.watch(
            lambda *_: self.update(),
            ["case", "r_cut", "l_max", "n_shells", "squeeze", "view_field", "iso", "show_residual",
             "residual_iso", "show_atoms", "show_cell"],
        )

    def _set(self, key: str, mesh: pv.PolyData | None, visible: bool = True) -> None:
        target = self._meshes[key]
        if mesh is None or mesh.n_points == 0 or not visible:
            target.copy_from(pv.PolyData())
            self._actors[key].SetVisibility(False)
        else:
            target.copy_from(mesh)
            self._actors[key].SetVisibility(True)

    def update(self) -> None:
        """Rebuild the meshes from the state and push them to the browser."""
        s = self.state
        fs = s.fields()
        kind = s.shown_kind(fs)
        fld = fs.get(kind)
        notes = []
        if fld is None:
            self._set("iso", None)
            notes.append(fs.error or "No field to draw.")
        else:
            self._set("iso", isosurface(fld, s.iso))
            self._actors["iso"].GetProperty().SetColor(pv.Color(FIELD_COLOURS[kind]).float_rgb)
            label = f"**{kind}** ELF = {s.iso:.2f}"
            if fs.squeezed:
                label += f" — cell scaled ×{s.squeeze:.2f}, prediction only (no DFT reference)"
            notes.append(label)
            if kind != s.view_field:
                notes.append(f"({s.view_field} not available)")
        res = fs.residual_corrected if kind == "corrected" and fs.residual_corrected is not None else fs.residual
        show_res = s.show_residual and res is not None
        self._set("res_pos", isosurface(res, s.residual_iso) if show_res else None, show_res)
        self._set("res_neg", isosurface(res, -s.residual_iso) if show_res else None, show_res)
        if show_res:
            notes.append(f"residual ±{s.residual_iso:.2f} (red: over-predicted, blue: under-predicted)")
        elif s.show_residual:
            notes.append("no residual (needs a DFT reference)")
        atoms = fs.atoms
        if atoms is not None:
            self._set("atoms", atom_spheres(atoms.get_positions()), s.show_atoms)
            self._set("box", cell_box(np.asarray(atoms.cell[:])), s.show_cell)
        self.caption.object = " · ".join(notes)
        if s.case != self._last_case:
            self.plotter.reset_camera()
            self._last_case = s.case
        self.pane.synchronize()

    def png(self) -> bytes:
        """The current 3D picture as PNG bytes (rendered off screen)."""
        from PIL import Image

        img = self.plotter.screenshot(None, return_img=True)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        return buf.getvalue()

    def __panel__(self):
        return pn.Column(self.caption, self.pane, sizing_mode="stretch_both", min_height=460)
