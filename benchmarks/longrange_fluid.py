"""k-space analysis and the predicted long-range correction on fluid cells of any size.

For every fluid case the local model's prediction is computed once on the case's own grid (cached as netCDF
under ``--cache``). A :class:`elfcore.longrange.LongRangeModel` is fitted to the oracle low-k coefficients of
the training cells (``--train``, default: the cases with role ``train`` among DATA) and applied, without
reference, to every other cell; the table gives R² before, after the predicted correction and after the
oracle correction on the same basis (the ceiling), and the share of the oracle gain the prediction recovers.
``--channels`` selects variants side by side. ``--analysis`` adds, per evaluated cell, the residual's power
below 1 Å⁻¹, its correlation length, the oracle R² with 1/2/3/8 shells and the sparse fit (3 shells) from 1 %
and 0.1 % of the voxels.

    OMP_NUM_THREADS=1 python benchmarks/longrange_fluid.py --model zoo:rcut=3.0,lmax=2 assets/data/fluid_*.nc \
        --save assets/models/longrange_rcut3.0_lmax2.json
    OMP_NUM_THREADS=1 python benchmarks/longrange_fluid.py --train assets/data/fluid_*_t0200.nc \
        --analysis assets/data/fluid512_*.nc
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from elfcore.grid import case_atoms, case_field
from elfcore.io import read_case
from elfcore.kspace import residual_analysis
from elfcore.longrange import LongRangeSettings, fit_longrange, predicted_correction
from elfcore.predict import predict_field
from elfcore.zoo import resolve_model


def cached_prediction(model_spec: str, model, path: Path, cache: Path) -> tuple[xr.DataArray, xr.DataArray, dict]:
    """(pred, ref, attrs) of a case; the prediction is read from / written to ``cache``."""
    ds = read_case(path)
    ref = case_field(ds, "elf_ref")
    tag = model_spec.replace(":", "_").replace(",", "_").replace("=", "")
    cfile = cache / f"{path.stem}__{tag}.nc"
    if cfile.exists():
        with xr.open_dataarray(cfile) as da:
            values = da.values
    else:
        values = predict_field(case_atoms(ds), model, shape=ref.shape, device="cpu", progress=False).elf.values
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cfile.with_suffix(".tmp")
        xr.DataArray(values.astype(np.float32), dims=("a", "b", "c"), name="elf").to_netcdf(tmp)
        tmp.replace(cfile)
    pred = ref.copy(data=values.astype(ref.dtype)).rename("elf")
    return pred, ref, dict(ds.attrs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="+", type=Path, help="fluid case files (roles train and test)")
    ap.add_argument("--train", nargs="+", type=Path, default=None,
                    help="training cells of the long-range model (default: the role-train cases in DATA)")
    ap.add_argument("--analysis", action="store_true", help="also the residual analysis of every evaluated cell")
    ap.add_argument("--model", default="zoo:rcut=3.0,lmax=2")
    ap.add_argument("--kmax", type=float, default=LongRangeSettings().k_max)
    ap.add_argument("--channels", nargs="+", default=["atoms", "atoms,bonds", "atoms,bonds,pred"],
                    help="variants, each a comma-separated channel list")
    ap.add_argument("--cache", type=Path, default=Path(".cache/predictions"))
    ap.add_argument("--save", type=Path, help="write the last variant's fitted model (JSON) here")
    ap.add_argument("--json", type=Path, help="also write all results to this JSON file")
    args = ap.parse_args(argv)

    model = resolve_model(args.model)
    cases = []
    train_paths = {p.resolve() for p in args.train} if args.train else None
    for path in sorted(set(args.data) | set(args.train or [])):
        pred, ref, attrs = cached_prediction(args.model, model, path, args.cache)
        if attrs.get("family") != "fluid":
            continue
        is_train = path.resolve() in train_paths if train_paths is not None else attrs.get("role") == "train"
        cases.append((path.stem, "train" if is_train else "eval", pred, ref))
        print(f"predicted {path.stem}", file=sys.stderr, flush=True)
    train = [(p, r) for _, role, p, r in cases if role == "train"]
    analysis = {}
    if args.analysis:
        for name, role, pred, ref in cases:
            if role != "train":
                analysis[name] = residual_analysis(pred, ref)
                print(f"analysed {name}", file=sys.stderr, flush=True)
        print("| case | L (Å) | k₁ (Å⁻¹) | modes ≤ 1 Å⁻¹ | Δ power ≤ 1 Å⁻¹ (of variance) | ξ (Å) | "
              "oracle R² 1 / 2 / 3 / 8 shells | sparse 1 % / 0.1 % (3 shells) |")
        print("|---|---|---|---|---|---|---|---|")
        for name, role, pred, _ in cases:
            if name in analysis:
                a = analysis[name]
                L = float(np.linalg.norm(np.asarray(pred.attrs["cell"]), axis=1).min())
                print(f"| {name} | {L:.2f} | {a['k_first']:.2f} | {a['n_modes_below']} | "
                      f"{100 * a['low_k_fraction']:.1f} % ({100 * a['low_k_fraction_fluct']:.2f} %) | {a['xi']:.2f} | "
                      + " / ".join(f"{a['oracle'][n]:.4f}" for n in (1, 2, 3, 8))
                      + f" | {a['sparse'][0.01]:.4f} / {a['sparse'][0.001]:.4f} |")
    results = {}
    for variant in args.channels:
        settings = LongRangeSettings(k_max=args.kmax, channels=tuple(variant.split(",")))
        lr = fit_longrange(train, settings, meta={"local_model": args.model,
                                                  "training_cells": [n for n, role, _, _ in cases if role == "train"]})
        rows = []
        for name, role, pred, ref in cases:
            if role == "train":
                continue
            info = predicted_correction(pred, lr, ref=ref).info
            gain = info["r2_oracle"] - info["r2_before"]
            share = (info["r2_after"] - info["r2_before"]) / gain if gain > 0 else float("nan")
            rows.append({"case": name, "r2_before": info["r2_before"], "r2_predicted": info["r2_after"],
                         "r2_oracle": info["r2_oracle"], "share_of_oracle_gain": share,
                         "mae_before": info["mae_before"], "mae_predicted": info["mae_after"],
                         "n_basis": info["n_basis"], "k_last": info["k_last"]})
        results[variant] = {"model": lr.to_dict(), "rows": rows, "analysis": analysis}
        if args.save and variant == args.channels[-1]:
            lr.save(args.save)
        print(f"\nchannels {variant} (k_max {args.kmax} Å⁻¹, {len(train)} training cells, "
              f"train captured {lr.meta['captured_train']:.3f})")
        print("| case | n_basis | R² before | R² predicted | R² oracle (same basis) | share of oracle gain |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['case']} | {r['n_basis']} | {r['r2_before']:.4f} | {r['r2_predicted']:.4f} | "
                  f"{r['r2_oracle']:.4f} | {r['share_of_oracle_gain']:.2f} |")
        m = lambda k: float(np.mean([r[k] for r in rows]))  # noqa: E731
        print(f"| mean | | {m('r2_before'):.4f} | {m('r2_predicted'):.4f} | {m('r2_oracle'):.4f} | "
              f"{np.nanmean([r['share_of_oracle_gain'] for r in rows]):.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
