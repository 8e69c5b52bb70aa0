"""Screening view: φ of every frame of an open screening run (with its ensemble band and the 1D/2D
thresholds) against the run's axis, the shown frame marked; a click picks the frame to show."""
from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param

from app.views.slice import CANVAS_BACKEND

__all__ = ["ScreeningView", "screening_overlay", "SCREENING_CURVES"]

#: curves of the plot: label → (results column, colour, dash)
SCREENING_CURVES = {
    "φ (3D threshold)": ("phi", "#2a6f97", "solid"),
    "2D threshold": ("threshold_2d", "#e07b00", "dashed"),
    "1D threshold": ("threshold_1d", "#3c9d3c", "dotted"),
}
_BAND = "φ ± σ (ensemble)"
_SHOWN = "frame shown"
_ELF = hv.Dimension("elf", label="ELF")


def screening_overlay(x_label: str = "frame") -> hv.Overlay:
    """The empty plot: band, one curve per :data:`SCREENING_CURVES`, the marker of the shown frame."""
    xdim = hv.Dimension("x", label=x_label)
    empty = np.zeros(0)
    band = hv.Area((empty, empty, empty), kdims=[xdim], vdims=[_ELF, "elf_hi"], label=_BAND).opts(
        color=SCREENING_CURVES["φ (3D threshold)"][1], alpha=0.25, line_alpha=0.0
    )
    layers = [band]
    for label, (_, colour, dash) in SCREENING_CURVES.items():
        layers.append(hv.Curve((empty, empty), kdims=[xdim], vdims=[_ELF], label=label).opts(
            color=colour, line_width=2, line_dash=dash, tools=["hover", "tap"]))
    layers.append(hv.Scatter((empty, empty), kdims=[xdim], vdims=[_ELF], label=_SHOWN).opts(
        color="crimson", size=12, marker="diamond"))
    return hv.Overlay(layers)


class ScreeningView(pn.viewable.Viewer):
    """The φ plot of the session's open screening run (hidden while none is open).

    Built once with HoloViews; opening a run replaces the sources' data, a frame change
    moves the marker, and a click on the plot shows the nearest frame
    (:meth:`AppState.pick_frame_at`).
    """

    state = param.Parameter(precedence=-1)

    def __init__(self, state, **params):
        super().__init__(state=state, **params)
        from bokeh.events import DoubleTap, Tap
        from bokeh.models import GlyphRenderer, Span

        overlay = screening_overlay().opts(
            hv.opts.Overlay(legend_position="right"),
            hv.opts.Curve(width=900, height=240, show_grid=True),
            hv.opts.Area(width=900, height=240),
        )
        self.figure = hv.render(overlay, backend="bokeh")
        self.figure.output_backend = CANVAS_BACKEND
        self._sources = {
            r.name: r.data_source for r in self.figure.renderers if isinstance(r, GlyphRenderer) and r.name
        }
        self._span = Span(location=0.0, dimension="height", line_color="crimson", line_alpha=0.6, line_width=2)
        self.figure.add_layout(self._span)
        self.figure.on_event(Tap, self._on_tap)
        self.figure.on_event(DoubleTap, self._on_tap)  # a click within 300 ms of the last one comes as DoubleTap
        self.heading = pn.pane.Markdown("### Screening run", margin=(0, 10))
        self.summary = pn.pane.Markdown(pn.bind(lambda *_: state.frame_summary(), state.param.screen_frame,
                                                state.param.screening, state.param.case),
                                        css_classes=["elf-frame-summary"], margin=(0, 10))
        self.pane = pn.Column(
            self.heading, self.summary, pn.pane.Bokeh(self.figure),
            css_classes=["elf-screening"], sizing_mode="stretch_width", visible=bool(state.screening),
        )
        self._load()
        state.param.watch(lambda *_: self._load(), "screening")
        state.param.watch(lambda *_: self._mark(), "screen_frame")

    def _on_tap(self, event) -> None:
        if event.x is not None and self.state.run is not None:
            self.state.pick_frame_at(float(event.x))

    def _load(self) -> None:
        """Put the open run's columns into the plot (data only)."""
        run = self.state.run
        self.pane.visible = run is not None
        if run is None:
            return
        x = np.asarray(run.x, dtype=float)
        for label, (column, _, _) in SCREENING_CURVES.items():
            self._sources[label].data = {"x": x, "elf": run.column(column)}
        phi, std = run.column("phi"), run.column("phi_std")
        keep = np.isfinite(phi) & np.isfinite(std)
        xs, lo, hi = x[keep], (phi - std)[keep], (phi + std)[keep]
        self._sources[_BAND].data = {"x": np.concatenate([xs, xs[::-1]]), "y": np.concatenate([hi, lo[::-1]])}
        self.figure.xaxis.axis_label = run.x_label
        pad = 0.04 * (x.max() - x.min()) if x.max() > x.min() else 1.0
        self.figure.x_range.start, self.figure.x_range.end = float(x.min() - pad), float(x.max() + pad)
        values = np.concatenate([run.column(c) for c, _, _ in SCREENING_CURVES.values()] + [hi])
        top = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
        self.figure.y_range.start, self.figure.y_range.end = 0.0, min(1.0, top + 0.05)
        self.heading.object = f"### Screening run: {run.name} ({run.n_frames} frames; click the plot to show one)"
        self._mark()

    def _mark(self) -> None:
        run = self.state.run
        if run is None:
            return
        i = int(self.state.screen_frame)
        self._span.location = float(run.x[i])
        self._sources[_SHOWN].data = {"x": [float(run.x[i])], "elf": [float(run.column("phi")[i])]}

    def __panel__(self):
        return self.pane
