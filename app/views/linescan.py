"""Line-scan view: ELF between two atoms for reference, prediction, k-corrected and the ensemble band."""
from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param

__all__ = ["line_overlay", "LineScanView", "CURVE_COLOURS", "LINE_DEPS"]

CURVE_COLOURS = {"reference": "#222222", "prediction": "#e07b00", "corrected": "#7b3fc4"}
LINE_DEPS = ("case", "r_cut", "l_max", "n_shells", "squeeze", "line_atom_1", "line_atom_2")
_S = hv.Dimension("s", label="distance along the line", unit="Å")
_ELF = hv.Dimension("elf", label="ELF", range=(0.0, 1.0))


def line_overlay(ld) -> hv.Overlay:
    """Band (±1σ ensemble) plus one curve per ELF kind; missing kinds are drawn empty so the legend is stable."""
    s = np.asarray(ld.s)
    lo, hi = ld.band if ld.band is not None else (np.full_like(s, np.nan), np.full_like(s, np.nan))
    band = hv.Area((s, lo, hi), kdims=[_S], vdims=[_ELF, "elf_hi"], label="ensemble ±1σ").opts(
        color=CURVE_COLOURS["prediction"], alpha=0.25, line_alpha=0.0
    )
    layers = [band]
    for kind, colour in CURVE_COLOURS.items():
        y = ld.curves.get(kind)
        if y is None:
            y = np.full_like(s, np.nan)
        layers.append(
            hv.Curve((s, y), kdims=[_S], vdims=[_ELF], label=kind).opts(
                color=colour, line_width=2, line_dash="dashed" if kind == "corrected" else "solid", tools=["hover"]
            )
        )
    return hv.Overlay(layers)


class LineScanView(pn.viewable.Viewer):
    """The line scan of one session."""

    state = param.Parameter(precedence=-1)

    def __init__(self, state, **params):
        super().__init__(state=state, **params)
        deps = [state.param[p] for p in LINE_DEPS]
        self.caption = pn.pane.Markdown(pn.bind(self._caption, *deps), margin=(0, 10))
        dmap = hv.DynamicMap(pn.bind(self._plot, *deps)).opts(
            hv.opts.Overlay(legend_position="top_right", framewise=True),
            hv.opts.Curve(responsive=True, height=280, ylim=(0, 1.02), show_grid=True),
            hv.opts.Area(responsive=True, height=280),
        )
        self.pane = pn.pane.HoloViews(dmap, sizing_mode="stretch_width", height=300, linked_axes=False)

    def _caption(self, *_):
        ld = self.state.line_data()
        if isinstance(ld, str):
            return f"**Line scan:** {ld}"
        return f"**Line scan:** {ld.title}; curves: {', '.join(ld.curves)}" + (
            "; band: ensemble ±1σ" if ld.band is not None else ""
        )

    def _plot(self, *_):
        from app.state import LineData

        ld = self.state.line_data()
        if isinstance(ld, str):
            ld = LineData(np.array([0.0, 1.0]), {}, None, "")
        return line_overlay(ld)

    def __panel__(self):
        return pn.Column(self.caption, self.pane, sizing_mode="stretch_width")
