"""Figure: is the local model's residual long-wavelength in a large cell? (Fig. S3 analogue on a 512-atom cell).

(a) Spectral density of the logit residual Δ = logit(ELF_ref) − logit(ELF_pred) (power per Å⁻¹, bins of
``--dk``) of each given cell, large and small, on one axis; (b–d) residual ELF_pred − ELF_ref on the plane
c = 0 of the first cell, before, after the oracle correction with ``--shells`` shells, and after the
predicted long-range correction (``--longrange`` JSON, if given). Colour range −0.2 … +0.2.

    OMP_NUM_THREADS=1 python benchmarks/kspace_large_figure.py assets/data/fluid512_p076_t0100.nc \
        assets/data/fluid_p076_t0250.nc --out docs/figures/kspace_fluid512.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from elfcore.grid import case_atoms, case_field
from elfcore.io import read_case
from elfcore.kspace import logit_residual, oracle_correction, power_spectrum
from elfcore.longrange import LongRangeModel, predicted_correction
from elfcore.predict import predict_field
from elfcore.zoo import resolve_model

LIMIT = 0.2


def _pred_ref(path: Path, model):
    ds = read_case(path)
    ref = case_field(ds, "elf_ref")
    pred = predict_field(case_atoms(ds), model, shape=ref.shape, device="cpu", progress=False).elf
    return pred, ref


def _slice(ax, values: np.ndarray, cell: np.ndarray, title: str):
    la, lb = np.linalg.norm(cell[0]), np.linalg.norm(cell[1])
    im = ax.imshow(values, origin="lower", cmap="RdBu_r", vmin=-LIMIT, vmax=LIMIT, extent=[0, lb, 0, la],
                   interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("b (Å)", fontsize=8)
    ax.set_ylabel("a (Å)", fontsize=8)
    ax.tick_params(labelsize=7)
    return im


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="+", type=Path, help="case files; the first is shown in the slices")
    ap.add_argument("--model", default="zoo:rcut=3.0,lmax=2")
    ap.add_argument("--shells", type=int, default=3)
    ap.add_argument("--dk", type=float, default=0.25)
    ap.add_argument("--kmax-plot", type=float, default=12.0, help="upper |k| of the spectrum panel, Å⁻¹")
    ap.add_argument("--longrange", type=Path, help="predicted long-range correction model (JSON)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    model = resolve_model(args.model)
    fig = Figure(figsize=(13, 3.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axs = fig.subplots(1, 4)
    summary = {}
    first = None
    for path in args.cases:
        pred, ref = _pred_ref(path, model)
        first = first or (path, pred, ref)
        spec = power_spectrum(logit_residual(pred, ref), dk=args.dk)
        k = spec["k"].values
        L = float(np.linalg.norm(np.asarray(pred.attrs["cell"]), axis=1).min())
        has = spec["n_modes"].values[1:] > 0  # bins below a small cell's first shell hold no mode
        axs[0].plot(k[1:][has], spec["power"].values[1:][has] / args.dk, ".-", ms=3, lw=0.8,
                    label=f"{path.stem} (L = {L:.1f} Å)")
        axs[0].axvline(spec.attrs["k_first"], ls=":", lw=0.7, color=axs[0].lines[-1].get_color())
        summary[path.stem] = {"k_first": spec.attrs["k_first"], "mean_square": spec.attrs["mean_square"],
                              "fraction_below_1": float(spec["power"].values[k <= 1.0].sum() / spec["power"].sum())}
    axs[0].set_xlabel("|k| (Å⁻¹)")
    axs[0].set_ylabel("power of Δ per Å⁻¹ (logit²·Å)")
    axs[0].set_yscale("log")
    axs[0].set_xlim(0, args.kmax_plot)
    shown = [ln.get_ydata()[ln.get_xdata() <= args.kmax_plot] for ln in axs[0].lines if len(ln.get_xdata()) > 2]
    low = min(float(np.min(y[y > 0])) for y in shown if np.any(y > 0))
    axs[0].set_ylim(bottom=low / 3)
    axs[0].axvspan(0, 1.0, color="0.9", zorder=-1)
    axs[0].legend(fontsize=7)
    axs[0].set_title("(a) residual spectrum (dotted: first shell of each cell)", fontsize=8)

    path, pred, ref = first
    cell = np.asarray(pred.attrs["cell"])
    oracle = oracle_correction(pred, ref, n_shells=args.shells)
    _slice(axs[1], (pred - ref).values[:, :, 0], cell,
           f"(b) {path.stem}: before, R² = {oracle.info['r2_before']:.4f}")
    im = _slice(axs[2], (oracle.corrected - ref).values[:, :, 0], cell,
                f"(c) oracle, {args.shells} shells ({oracle.info['n_basis']} functions), R² = {oracle.info['r2_after']:.4f}")
    summary["oracle"] = oracle.info
    if args.longrange:
        lr = predicted_correction(pred, LongRangeModel.load(args.longrange), ref=ref)
        _slice(axs[3], (lr.corrected - ref).values[:, :, 0], cell,
               f"(d) predicted, no reference ({lr.info['n_basis']} functions), R² = {lr.info['r2_after']:.4f}")
        summary["predicted"] = lr.info
    else:
        axs[3].set_axis_off()
    fig.colorbar(im, ax=list(axs[1:]), label="ELF_pred − ELF_ref", shrink=0.8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(json.dumps(summary, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
