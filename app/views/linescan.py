"""Line-scan view: ELF between two atoms (or two clicked points) for reference, prediction, k-corrected and the ensemble band."""
from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param

from app.state import LINE_DEPS
from app.views.slice import CANVAS_BACKEND

__all__ = ["line_overlay", "LineScanView", "CURVE_COLOURS", "LINE_DEPS"]

CURVE_COLOURS = {"reference": "#222222", "prediction": "#e07b00", "corrected": "#7b3fc4"}
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
    """The line scan of one session: built once with HoloViews, then updated by replacing source data."""

    state = param.Parameter(precedence=-1)

    def __init__(self, state, *, defer: bool = False, **params):
        super().__init__(state=state, **params)
        from bokeh.models import GlyphRenderer

        from app.state import LineData

        self._message = ""
        ld = LineData(np.array([0.0, 1.0]), {}, None, "") if defer else self._data()
        overlay = line_overlay(ld).opts(
            hv.opts.Overlay(legend_position="right"),
            hv.opts.Curve(width=900, height=280, ylim=(0, 1.02), show_grid=True),
            hv.opts.Area(width=900, height=280),
        )
        self.figure = hv.render(overlay, backend="bokeh")
        self.figure.output_backend = CANVAS_BACKEND  # see app.views.slice.CANVAS_BACKEND
        self._sources = {
            r.name: r.data_source for r in self.figure.renderers if isinstance(r, GlyphRenderer) and r.name
        }
        self.pane = pn.Column(pn.pane.Bokeh(self.figure), css_classes=["elf-line-plot"], sizing_mode="stretch_width")
        self.caption = pn.pane.Markdown("**Line scan:** *computing…*", margin=(0, 10))
        self.current = ld
        if not defer:  # deferred: the page calls refresh() once the browser is connected
            self.refresh()
        state.param.watch(lambda *_: self.refresh(), list(LINE_DEPS))

    def _data(self):
        from app.state import LineData

        ld = self.state.line_data()
        self._message = ld if isinstance(ld, str) else ""
        return LineData(np.array([0.0, 1.0]), {}, None, "") if isinstance(ld, str) else ld

    def refresh(self) -> None:
        """Put the current profiles into the figure (data only)."""
        ld = self._data()
        self.current = ld
        s = np.asarray(ld.s)
        for kind in CURVE_COLOURS:
            y = ld.curves.get(kind)
            self._sources[kind].data = {"s": s, "elf": np.full_like(s, np.nan) if y is None else np.asarray(y)}
        if ld.band is not None:
            lo, hi = ld.band
            band = {"x": np.concatenate([s, s[::-1]]), "y": np.concatenate([hi, lo[::-1]])}
        else:
            band = {"x": np.array([]), "y": np.array([])}
        self._sources["ensemble ±1σ"].data = band
        self.figure.x_range.start, self.figure.x_range.end = float(s[0]), float(s[-1])
        drawn = {kind: kind in ld.curves for kind in CURVE_COLOURS}
        drawn["ensemble ±1σ"] = ld.band is not None
        for legend in self.figure.legend:  # the legend lists only the curves drawn
            for item in legend.items:
                item.visible = any(drawn.get(r.name, True) for r in item.renderers)
        if self._message:
            self.caption.object = f"**Line scan:** {self._message}"
        else:
            self.caption.object = f"**Line scan:** {ld.title}; curves: {', '.join(ld.curves)}" + (
                "; band: ensemble ±1σ" if ld.band is not None else "; no ensemble band (single model)"
            )

    def __panel__(self):
        return pn.Column(self.caption, self.pane, sizing_mode="stretch_width")
