"""PNG figures of ``elfcore reproduce`` (matplotlib object API, Agg canvas; no pyplot state)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["figure_s1", "figure_s2", "figure_s3", "RESIDUAL_LIMIT"]

#: colour range of residual maps (docs/science.md §6: −0.2 blue … +0.2 red)
RESIDUAL_LIMIT = 0.2


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _slice_extent(cell: np.ndarray) -> list[float]:
    la, lb = np.linalg.norm(cell[0]), np.linalg.norm(cell[1])
    return [0.0, float(lb), 0.0, float(la)]


def _residual_map(ax, res2d: np.ndarray, cell: np.ndarray, title: str):
    im = ax.imshow(res2d, origin="lower", cmap="RdBu_r", vmin=-RESIDUAL_LIMIT, vmax=RESIDUAL_LIMIT,
                   extent=_slice_extent(cell), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("b (Å)", fontsize=8)
    ax.set_ylabel("a (Å)", fontsize=8)
    ax.tick_params(labelsize=7)
    return im


def figure_s1(cnn: dict, arrays: dict, path: Path) -> Path:
    """CNN: parity, error vs reference ELF (CNN and MLP), R² vs r_cut, residual slices."""
    fig = _figure(13, 7.5)
    axs = fig.subplots(2, 3)
    pred, ref, mlp = arrays["pred"], arrays["ref"], arrays["mlp"]
    b = cnn["baseline"]
    ax = axs[0, 0]
    hb = ax.hexbin(ref, pred, gridsize=50, extent=(0, 1, 0, 1), bins="log", cmap="viridis", mincnt=1)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("reference ELF")
    ax.set_ylabel("CNN ELF")
    ax.set_title(f"(a) CNN parity, r_cut = {b['r_cut']:g} Å: R² = {b['r2']:.3f}, MAE = {b['mae']:.3f}", fontsize=9)
    fig.colorbar(hb, ax=ax, label="voxels")

    ax = axs[0, 1]
    edges = np.linspace(0, 1, 21)
    centre = 0.5 * (edges[1:] + edges[:-1])
    which = np.clip(np.digitize(ref, edges) - 1, 0, len(centre) - 1)
    for values, label, colour in ((pred, "CNN", "C1"), (mlp, "MLP ensemble", "C0")):
        err = values - ref
        mae = np.array([np.abs(err[which == k]).mean() if np.any(which == k) else np.nan for k in range(len(centre))])
        bias = np.array([err[which == k].mean() if np.any(which == k) else np.nan for k in range(len(centre))])
        ax.plot(centre, mae, "-o", ms=3, color=colour, label=f"{label} |error|")
        ax.plot(centre, bias, "--", color=colour, label=f"{label} mean error")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("reference ELF")
    ax.set_ylabel("error")
    ax.set_title("(b) error vs reference ELF (same voxels)", fontsize=9)
    ax.legend(fontsize=7)

    ax = axs[0, 2]
    rc = [r["r_cut"] for r in cnn["sweep"]]
    r2 = [r["r2"] for r in cnn["sweep"]]
    ax.plot(rc, r2, "-o", color="C1")
    ax.set_xlabel("patch r_cut (Å)")
    ax.set_ylabel("R² (shown snapshots)")
    ax.set_title(f"(c) CNN R² vs r_cut (P = {cnn['patch']['patch_size']})", fontsize=9)
    ax.grid(alpha=0.3)

    cell = arrays["slice_cell"]
    res_cnn = arrays["slice_cnn"] - arrays["slice_ref"]
    res_mlp = arrays["slice_mlp"] - arrays["slice_ref"]
    _residual_map(axs[1, 0], res_mlp, cell, f"(d) MLP residual, {arrays['slice_case']}, c = 0")
    im = _residual_map(axs[1, 1], res_cnn, cell, "(e) CNN residual, same plane")
    fig.colorbar(im, ax=axs[1, :2], label="ELF_pred − ELF_ref", shrink=0.8)
    ax = axs[1, 2]
    ax.hexbin(res_mlp.ravel(), res_cnn.ravel(), gridsize=40, bins="log", cmap="magma", mincnt=1,
              extent=(-0.3, 0.3, -0.3, 0.3))
    ax.plot([-0.3, 0.3], [-0.3, 0.3], "k--", lw=0.8)
    ax.set_xlabel("MLP residual")
    ax.set_ylabel("CNN residual")
    ax.set_title(f"(f) residuals on the plane: Pearson r = {cnn['residual_correlation_slice']:.2f}", fontsize=9)
    return _save(fig, path)


_LABELS = {
    "width": "width",
    "hidden_layers": "hidden layers",
    "huber_delta": "Huber δ",
    "r_cut": "r_cut (Å)",
    "n_radial": "n_radial",
    "l_max": "l_max",
}


def figure_s2(sweeps: dict, path: Path) -> Path:
    """R² vs each hyperparameter, one at a time around the baseline."""
    fig = _figure(12, 6.5)
    axs = fig.subplots(2, 3).ravel()
    for ax, (name, label) in zip(axs, _LABELS.items()):
        p = sweeps["params"][name]
        x = [r["value"] for r in p["points"]]
        y = [r["r2"] for r in p["points"]]
        ax.plot(x, y, "-o", color="C0")
        if p["baseline"] in x:
            k = x.index(p["baseline"])
            ax.plot([x[k]], [y[k]], "*", ms=14, color="C3", label="baseline")
            ax.legend(fontsize=7)
        if name in ("width", "huber_delta"):
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("R²")
        ax.grid(alpha=0.3)
    fig.suptitle(f"MLP convergence (R² on {sweeps['eval_set']})", fontsize=10)
    return _save(fig, path)


def figure_s3(kres: dict, arrays: dict, path: Path) -> Path:
    """Residual slices (plane c = 0) per pressure before/after the k-correction."""
    rows = kres["cases"]
    fig = _figure(8, 3.3 * max(1, len(rows)) + 0.6)
    axs = np.atleast_2d(fig.subplots(len(rows), 2, squeeze=False))
    im = None
    for r, ax_row in zip(rows, axs):
        before, after, cell = arrays[r["case"]]
        p = "?" if r["pressure_gpa"] is None else f"{r['pressure_gpa']:.1f}"
        _residual_map(ax_row[0], before[:, :, 0], cell, f"{p} GPa, {r['case']}: before, R² = {r['r2_before']:.4f}")
        im = _residual_map(ax_row[1], after[:, :, 0], cell,
                           f"after {kres['n_shells']} shells ({r['n_basis']} functions), R² = {r['r2_after']:.4f}")
    fig.colorbar(im, ax=axs, label="ELF_pred − ELF_ref", shrink=0.6)
    return _save(fig, path)
