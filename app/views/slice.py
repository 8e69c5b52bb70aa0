"""2D slice view: residual ``ELF_pred − ELF_ref`` (diverging, ±0.2) next to the ELF itself.

``residual_image``/``elf_image``/``atom_points`` are pure functions of a
:class:`~app.state.SliceData`; :class:`SliceView` binds them to a session's
state with HoloViews ``DynamicMap`` so a slider change only replaces data.
"""
from __future__ import annotations

import io

import holoviews as hv
from bokeh.models import ColorBar
import numpy as np
import panel as pn
import param

from app.state import SLICE_DEPS

__all__ = [
    "RESIDUAL_RANGE",
    "RESIDUAL_CMAP",
    "ELF_CMAP",
    "residual_image",
    "elf_image",
    "atom_points",
    "slice_png",
    "image_source_data",
    "picked_marks",
    "CANVAS_BACKEND",
    "residual_label",
    "SliceView",
]

#: Fixed colour range of the residual map (paper Fig. S3).
RESIDUAL_RANGE = (-0.2, 0.2)
RESIDUAL_CMAP = "RdBu_r"
ELF_CMAP = "viridis"
_KDIMS = [hv.Dimension("x", label="x", unit="Å"), hv.Dimension("y", label="y", unit="Å")]
#: State parameters of the clicked line-scan points drawn on the slice.
PICK_DEPS = ("line_source", "line_start", "line_end", "pending_point")
#: A clicked point is drawn when it lies within this distance (Å) of the shown plane.
ON_PLANE = 0.05
#: Bokeh output backend of the 2D figures. Not WebGL (HoloViews' default): the 3D view
#: creates a new WebGL context at each re-synchronization, and once the browser's
#: limit of live contexts is reached it drops the oldest ones, which were the slice
#: figures' (blank slices after a long session, "(regl) context lost").
CANVAS_BACKEND = "canvas"


def residual_label(sd) -> str:
    """What the residual map of ``sd`` shows: ``ELF_corr − ELF_ref`` with the corrected field, else
    ``ELF_pred − ELF_ref`` (also when the reference or the prediction is the ELF shown)."""
    return "ELF_corr − ELF_ref" if sd.kind == "corrected" else "ELF_pred − ELF_ref"


def _image(x, y, z, vdim: hv.Dimension) -> hv.Image:
    z = np.asarray(z, dtype=np.float64)
    return hv.Image((np.asarray(x), np.asarray(y), z.T), kdims=_KDIMS, vdims=[vdim])


def _empty_like(sd) -> np.ndarray:
    return np.full((len(sd.x), len(sd.y)), np.nan)


def residual_image(sd) -> hv.Image:
    """Residual on a diverging map fixed at −0.2 (blue) … +0.2 (red); NaN where there is no reference."""
    z = sd.residual if sd.residual is not None else _empty_like(sd)
    label = residual_label(sd)
    return _image(sd.x, sd.y, z, hv.Dimension("residual", label=label, range=RESIDUAL_RANGE)).opts(
        cmap=RESIDUAL_CMAP, clim=RESIDUAL_RANGE, colorbar=True, tools=["hover"], clipping_colors={"NaN": "#eeeeee"}
    )


def elf_image(sd) -> hv.Image:
    """The ELF of the shown kind on [0, 1]."""
    z = sd.elf if sd.elf is not None else _empty_like(sd)
    return _image(sd.x, sd.y, z, hv.Dimension("elf", label=f"ELF ({sd.kind})", range=(0.0, 1.0))).opts(
        cmap=ELF_CMAP, clim=(0.0, 1.0), colorbar=True, tools=["hover"]
    )


def atom_points(sd) -> hv.Points:
    """Atoms within the chosen distance of the plane, at their in-plane positions."""
    xy = np.asarray(sd.atoms_xy).reshape(-1, 2)
    data = {"x": xy[:, 0], "y": xy[:, 1], "atom": np.asarray(sd.atoms_index, dtype=int)}
    return hv.Points(data, kdims=_KDIMS, vdims=["atom"]).opts(
        color="black", marker="circle", size=9, fill_alpha=0.0, line_width=2, tools=["hover"]
    )


def slice_png(sd, *, dpi: int = 110, title: str = "") -> bytes:
    """The residual and ELF panels of a slice as one PNG (matplotlib, off screen); ``title`` (what
    is shown: case, field, model) goes above the plane's own title."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2), dpi=dpi)
    axes = fig.subplots(1, 2)
    extent = (sd.x[0], sd.x[-1], sd.y[0], sd.y[-1])
    panels = [
        (sd.residual if sd.residual is not None else _empty_like(sd), RESIDUAL_CMAP, RESIDUAL_RANGE,
         residual_label(sd)),
        (sd.elf if sd.elf is not None else _empty_like(sd), ELF_CMAP, (0.0, 1.0), f"ELF ({sd.kind})"),
    ]
    for ax, (z, cmap, clim, label) in zip(axes, panels):
        im = ax.imshow(np.asarray(z).T, origin="lower", extent=extent, cmap=cmap, vmin=clim[0], vmax=clim[1])
        xy = np.asarray(sd.atoms_xy).reshape(-1, 2)
        ax.scatter(xy[:, 0], xy[:, 1], s=30, facecolors="none", edgecolors="black")
        ax.set_xlabel(sd.xlabel)
        ax.set_ylabel(sd.ylabel)
        ax.set_title(label)
        fig.colorbar(im, ax=ax, shrink=0.85)
    fig.suptitle(f"{title}\n{sd.title}" if title else sd.title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def image_source_data(x: np.ndarray, y: np.ndarray, z: np.ndarray | None) -> dict:
    """Bokeh ``Image`` glyph data for values ``z`` (nx, ny) at the pixel centres ``x``, ``y`` (Å)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    dx = (x[-1] - x[0]) / max(len(x) - 1, 1)
    dy = (y[-1] - y[0]) / max(len(y) - 1, 1)
    img = np.full((len(y), len(x)), np.nan) if z is None else np.asarray(z, dtype=np.float64).T
    return {"image": [img], "x": [x[0] - dx / 2], "y": [y[0] - dy / 2], "dw": [x[-1] - x[0] + dx], "dh": [y[-1] - y[0] + dy]}


def picked_marks(sd, state) -> tuple[dict, dict]:
    """Bokeh data of the clicked line-scan segment and of a pending first click, in the plane of ``sd``.

    Points that do not lie on the shown plane (another slice position or
    axis) are left out, so a segment is drawn only on the slice it was
    clicked on.
    """
    seg = {"x": [], "y": []}
    if state.line_source == "points" and state.line_start is not None and state.line_end is not None:
        xy, off = sd.to_plane([state.line_start, state.line_end])
        if np.all(off <= ON_PLANE):
            seg = {"x": list(xy[:, 0]), "y": list(xy[:, 1])}
    pending = {"x": [], "y": []}
    if state.pending_point is not None:
        xy, off = sd.to_plane([state.pending_point])
        if off[0] <= ON_PLANE:
            pending = {"x": [float(xy[0, 0])], "y": [float(xy[0, 1])]}
    return seg, pending


def _renderer(fig, glyph: str):
    from bokeh.models import GlyphRenderer

    for r in fig.renderers:
        if isinstance(r, GlyphRenderer) and type(r.glyph).__name__ == glyph:
            return r
    raise LookupError(f"no {glyph} renderer in the figure")


class SliceView(pn.viewable.Viewer):
    """Residual and ELF slices of one session, side by side.

    The two figures are built once per session with HoloViews (``hv.render``);
    a state change then only replaces the data of their Bokeh sources, which
    keeps a slider step far below the cost of re-rendering a HoloViews plot.
    A click (Bokeh ``Tap`` or, for a quick second click, ``DoubleTap`` event) on either figure picks a line-scan end point
    (:meth:`AppState.pick_point`); the clicked segment is drawn on both.
    """

    state = param.Parameter(precedence=-1)

    def __init__(self, state, *, defer: bool = False, **params):
        super().__init__(state=state, **params)
        self._message = ""
        sd = self._blank() if defer else self._data()
        common = dict(frame_width=330, frame_height=330, data_aspect=1, xlabel="x (Å)", ylabel="y (Å)")
        res = (residual_image(sd) * atom_points(sd)).opts(hv.opts.Image(**common))
        elf = (elf_image(sd) * atom_points(sd)).opts(hv.opts.Image(**common))
        self.figures = {"residual": hv.render(res, backend="bokeh"), "elf": hv.render(elf, backend="bokeh")}
        for fig in self.figures.values():
            fig.output_backend = CANVAS_BACKEND
        self._images = {k: _renderer(f, "Image").data_source for k, f in self.figures.items()}
        self._points = {k: _renderer(f, "Scatter").data_source for k, f in self.figures.items()}
        from bokeh.events import DoubleTap, Tap
        from bokeh.models import ColumnDataSource

        self._segment = ColumnDataSource({"x": [], "y": []})
        self._pending = ColumnDataSource({"x": [], "y": []})
        for fig in self.figures.values():
            fig.line("x", "y", source=self._segment, line_color="white", line_width=4)
            fig.line("x", "y", source=self._segment, line_color="black", line_width=2, line_dash="dashed")
            fig.scatter("x", "y", source=self._segment, marker="x", size=12, line_color="black", line_width=2)
            fig.scatter("x", "y", source=self._pending, marker="x", size=14, line_color="magenta", line_width=3)
            # Bokeh reports a click within 300 ms of the one before as a DoubleTap *instead of* a Tap,
            # wherever it lands: a quick second point would be lost without the DoubleTap handler.
            fig.on_event(Tap, self._on_tap)
            fig.on_event(DoubleTap, self._on_tap)
        self.residual_pane = pn.Column(pn.pane.Bokeh(self.figures["residual"]), css_classes=["elf-slice-residual"])
        self.elf_pane = pn.Column(pn.pane.Bokeh(self.figures["elf"]), css_classes=["elf-slice-elf"])
        self.caption = pn.pane.Markdown("**Slice:** *computing…*", margin=(0, 10))
        self.current = sd
        if not defer:  # deferred: the page calls refresh() once the browser is connected
            self.refresh()
        state.param.watch(lambda *_: self.refresh(), list(SLICE_DEPS))
        state.param.watch(lambda *_: self._draw_marks(), list(PICK_DEPS))

    def _on_tap(self, event) -> None:
        """A click on a slice: one end of a line scan (see :meth:`AppState.pick_point`)."""
        if event.x is None or event.y is None or self._message:
            return
        self.state.pick_point(float(event.x), float(event.y))

    def _draw_marks(self) -> None:
        seg, pending = picked_marks(self.current, self.state)
        self._segment.data = seg
        self._pending.data = pending

    def _data(self):
        sd = self.state.slice_data()
        self._message = sd if isinstance(sd, str) else ""
        return self._blank() if isinstance(sd, str) else sd

    @staticmethod
    def _blank():
        from app.state import SliceData

        z = np.full((2, 2), np.nan)
        return SliceData(z, z, np.array([0.0, 1.0]), np.array([0.0, 1.0]), "x (Å)", "y (Å)", "", np.zeros((0, 2)),
                         np.zeros(0, int))

    def refresh(self) -> None:
        """Put the current slice into the figures (data only)."""
        sd = self._data()
        self.current = sd
        xy = np.asarray(sd.atoms_xy).reshape(-1, 2)
        pts = {"x": xy[:, 0], "y": xy[:, 1], "atom": np.asarray(sd.atoms_index, dtype=int)}
        for key, z in (("residual", sd.residual), ("elf", sd.elf)):
            data = image_source_data(sd.x, sd.y, z)
            self._images[key].data = data
            self._points[key].data = pts
            fig = self.figures[key]
            x0, y0 = data["x"][0], data["y"][0]
            fig.x_range.start, fig.x_range.end = x0, x0 + data["dw"][0]
            fig.y_range.start, fig.y_range.end = y0, y0 + data["dh"][0]
        label = residual_label(sd)
        self.figures["residual"].title.text = label + ("" if sd.residual is not None else " (no DFT reference)")
        self.figures["elf"].title.text = f"ELF ({sd.kind})"
        for key, bar in (("residual", label), ("elf", f"ELF ({sd.kind})")):
            fig = self.figures[key]
            fig.xaxis.axis_label, fig.yaxis.axis_label = sd.xlabel, sd.ylabel  # plane a: along b, c
            for colorbar in fig.select(type=ColorBar):  # the colour-bar title follows the field shown
                colorbar.title = bar
        self.caption.object = self._caption(sd)
        self._draw_marks()

    def _caption(self, sd) -> str:
        if self._message:
            return f"**Slice:** {self._message}"
        extra = "" if sd.residual is not None else " — no DFT reference, residual not available"
        axes = f"{sd.xlabel.replace(' (Å)', '')} × {sd.ylabel.replace(' (Å)', '')}"
        return (
            f"**Slice:** {sd.title}; axes {axes}; {len(sd.atoms_index)} atoms near the plane{extra}. "
            "Click two points for a line scan between them."
        )

    def png(self) -> bytes:
        """The current slice as PNG bytes."""
        return slice_png(self._data(), title=self.state.export_title())

    def __panel__(self):
        return pn.Column(self.caption, pn.Row(self.residual_pane, self.elf_pane), sizing_mode="stretch_width")
