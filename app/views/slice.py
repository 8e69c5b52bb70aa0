"""2D slice view: residual ``ELF_pred − ELF_ref`` (diverging, ±0.2) next to the ELF itself.

``residual_image``/``elf_image``/``atom_points`` are pure functions of a
:class:`~app.state.SliceData`; :class:`SliceView` binds them to a session's
state with HoloViews ``DynamicMap`` so a slider change only replaces data.
"""
from __future__ import annotations

import io

import holoviews as hv
import numpy as np
import panel as pn
import param

__all__ = [
    "RESIDUAL_RANGE",
    "RESIDUAL_CMAP",
    "ELF_CMAP",
    "residual_image",
    "elf_image",
    "atom_points",
    "slice_png",
    "SliceView",
]

#: Fixed colour range of the residual map (paper Fig. S3).
RESIDUAL_RANGE = (-0.2, 0.2)
RESIDUAL_CMAP = "RdBu_r"
ELF_CMAP = "viridis"
_KDIMS = [hv.Dimension("x", label="x", unit="Å"), hv.Dimension("y", label="y", unit="Å")]
SLICE_DEPS = (
    "case", "r_cut", "l_max", "n_shells", "squeeze", "view_field", "slice_mode", "slice_position",
    "plane_atom_1", "plane_atom_2", "plane_atom_3", "near_plane",
)


def _image(x, y, z, vdim: hv.Dimension) -> hv.Image:
    z = np.asarray(z, dtype=np.float64)
    return hv.Image((np.asarray(x), np.asarray(y), z.T), kdims=_KDIMS, vdims=[vdim])


def _empty_like(sd) -> np.ndarray:
    return np.full((len(sd.x), len(sd.y)), np.nan)


def residual_image(sd) -> hv.Image:
    """Residual on a diverging map fixed at −0.2 (blue) … +0.2 (red); NaN where there is no reference."""
    z = sd.residual if sd.residual is not None else _empty_like(sd)
    label = "ELF_corr − ELF_ref" if sd.kind == "corrected" else "ELF_pred − ELF_ref"
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


def slice_png(sd, *, dpi: int = 110) -> bytes:
    """The residual and ELF panels of a slice as one PNG (matplotlib, off screen)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2), dpi=dpi)
    axes = fig.subplots(1, 2)
    extent = (sd.x[0], sd.x[-1], sd.y[0], sd.y[-1])
    panels = [
        (sd.residual if sd.residual is not None else _empty_like(sd), RESIDUAL_CMAP, RESIDUAL_RANGE,
         "ELF_pred − ELF_ref"),
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
    fig.suptitle(sd.title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


class SliceView(pn.viewable.Viewer):
    """Residual and ELF slices of one session, side by side."""

    state = param.Parameter(precedence=-1)

    def __init__(self, state, **params):
        super().__init__(state=state, **params)
        deps = [state.param[p] for p in SLICE_DEPS]
        self.caption = pn.pane.Markdown(pn.bind(self._caption, *deps), margin=(0, 10))
        common = dict(frame_width=330, frame_height=330, framewise=True, data_aspect=1, xlabel="x (Å)", ylabel="y (Å)")
        res = hv.DynamicMap(pn.bind(self._residual, *deps)) * hv.DynamicMap(pn.bind(self._atoms, *deps))
        elf = hv.DynamicMap(pn.bind(self._elf, *deps)) * hv.DynamicMap(pn.bind(self._atoms, *deps))
        self.residual_pane = pn.pane.HoloViews(res.opts(hv.opts.Image(**common)), linked_axes=False)
        self.elf_pane = pn.pane.HoloViews(elf.opts(hv.opts.Image(**common)), linked_axes=False)

    def _data(self):
        return self.state.slice_data()

    def _caption(self, *_):
        sd = self._data()
        if isinstance(sd, str):
            return f"**Slice:** {sd}"
        extra = "" if sd.residual is not None else " — no DFT reference, residual not available"
        return f"**Slice:** {sd.title}; axes {sd.xlabel[:-5]} × {sd.ylabel[:-5]}; {len(sd.atoms_index)} atoms near the plane{extra}"

    def _blank(self):
        from app.state import SliceData

        z = np.full((2, 2), np.nan)
        return SliceData(z, z, np.array([0.0, 1.0]), np.array([0.0, 1.0]), "x (Å)", "y (Å)", "", np.zeros((0, 2)),
                         np.zeros(0, int))

    def _residual(self, *_):
        sd = self._data()
        return residual_image(self._blank() if isinstance(sd, str) else sd)

    def _elf(self, *_):
        sd = self._data()
        return elf_image(self._blank() if isinstance(sd, str) else sd)

    def _atoms(self, *_):
        sd = self._data()
        return atom_points(self._blank() if isinstance(sd, str) else sd)

    def png(self) -> bytes:
        """The current slice as PNG bytes."""
        sd = self._data()
        return slice_png(self._blank() if isinstance(sd, str) else sd)

    def __panel__(self):
        return pn.Column(self.caption, pn.Row(self.residual_pane, self.elf_pane), sizing_mode="stretch_width")
