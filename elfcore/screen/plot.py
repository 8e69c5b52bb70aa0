"""Picture of a screening run: φ with its ensemble band and the 1D/2D thresholds against frame, time or pressure."""
from __future__ import annotations

import os

import numpy as np

from ..errors import ElfcoreError

__all__ = ["plot_results", "x_axis", "X_AXES"]

#: x-axis choices of :func:`plot_results`: column and label
X_AXES = {
    "frame": (None, "frame"),
    "time": ("time_fs", "time (fs)"),
    "pressure": ("pressure_gpa", "pressure (GPa)"),
}


def x_axis(ds, x: str = "auto") -> tuple[str, np.ndarray, str]:
    """The horizontal axis of a screening run: ``(name, values per frame, label)``.

    Parameters
    ----------
    ds : xarray.Dataset
        :func:`elfcore.screen.database.results_dataset` of a run.
    x : {"auto", "frame", "time", "pressure"}
        "auto" takes the pressure when every frame has one, else the time, else
        the frame number.

    Raises
    ------
    ElfcoreError
        An unknown ``x``, or an axis some frames lack.
    """
    if x == "auto":
        x = "frame"
        for name in ("pressure", "time"):
            col = X_AXES[name][0]
            if ds.sizes["frame"] and np.all(np.isfinite(ds[col].values)):
                x = name
                break
    if x not in X_AXES:
        raise ElfcoreError(f"x={x!r}; must be 'auto' or one of {sorted(X_AXES)}")
    col, label = X_AXES[x]
    values = np.arange(ds.sizes["frame"], dtype=float) if col is None else np.asarray(ds[col].values, dtype=float)
    if not np.all(np.isfinite(values)):
        raise ElfcoreError(f"x={x!r}: {int(np.sum(~np.isfinite(values)))} frame(s) have no {col}")
    return x, values, label


def plot_results(results, path: str | os.PathLike, *, x: str = "auto", title: str | None = None) -> str:
    """Draw φ (with ±1 standard deviation over ensemble members) and the 1D/2D thresholds as a PNG.

    Parameters
    ----------
    results : str, os.PathLike, ase.db database or xarray.Dataset
        A results database or :func:`elfcore.screen.database.results_dataset` of one.
    path : str or os.PathLike
        Output image (format from the suffix, e.g. ``.png``).
    x : {"auto", "frame", "time", "pressure"}
        Horizontal axis; "auto" takes the pressure when every frame has one, else
        the time, else the frame number (rows in source and frame order). Frames
        are sorted along it.
    title : str, optional

    Returns
    -------
    str
        The path written.

    Raises
    ------
    ElfcoreError
        No screened frame in the database, or an x axis some frames lack.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import xarray as xr

    from .database import results_dataset

    ds = results if isinstance(results, xr.Dataset) else results_dataset(results, status="ok")
    if ds.sizes.get("frame", 0) == 0:
        raise ElfcoreError("no screened frame (status 'ok') to plot")
    _, xs, label = x_axis(ds, x)
    order = np.argsort(xs, kind="stable")
    xs = xs[order]

    def col_values(name):
        return ds[name].values[order]

    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    phi = col_values("phi")
    std = col_values("phi_std")
    marker = "o" if len(xs) <= 60 else None
    ax.plot(xs, phi, color="C0", marker=marker, ms=3, lw=1.5, label="φ (3D threshold)")
    if np.any(np.isfinite(std)):
        ax.fill_between(xs, phi - std, phi + std, color="C0", alpha=0.25, lw=0, label="φ ± σ (ensemble)")
    ax.plot(xs, col_values("threshold_2d"), color="C1", ls="--", lw=1, label="2D threshold")
    ax.plot(xs, col_values("threshold_1d"), color="C2", ls=":", lw=1, label="1D threshold")
    if np.any(np.isfinite(col_values("molecularity"))):
        ax.plot(xs, col_values("molecularity"), color="0.4", lw=0.8, alpha=0.8, label="molecularity")
    ax.set_xlabel(label)
    ax.set_ylabel("ELF")
    ax.set_title(title or f"ELF topology of {ds.sizes['frame']} frame(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    out = os.fspath(path)
    fig.savefig(out)
    plt.close(fig)
    return out
