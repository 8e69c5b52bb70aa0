"""Fit the predicted long-range correction of a local model (docs/longrange.md).

CASES are reference cases (netCDF with ``elf_ref``): the local model ``--model`` predicts
each on its own grid, and a :class:`~elfcore.longrange.LongRangeModel` is fitted to the
low-k part of the logit residual (oracle coefficients for ``0 < |G| ≤ --kmax`` and the
mean). ``--eval`` cases are then corrected without their reference and scored against
it, beside the oracle correction on the same basis (the ceiling). The model is written to
``--out`` (JSON); use it with ``elfcore predict --longrange FILE`` or
``elfcore kcorrect --longrange FILE``.
"""
from __future__ import annotations

import argparse
import logging

__all__ = ["add_arguments", "run", "render"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments and options."""
    from ..longrange import CHANNELS, LongRangeSettings
    from ..zoo import DEFAULT_SPEC

    d = LongRangeSettings()
    parser.add_argument("cases", nargs="+", metavar="CASE", help="training cases (netCDF with elf_ref)")
    parser.add_argument("--model", default=DEFAULT_SPEC,
                        help=f"local model whose residual is learned (default {DEFAULT_SPEC})")
    parser.add_argument("--out", required=True, help="long-range model file to write (.json)")
    parser.add_argument("--eval", nargs="+", default=[], metavar="CASE", help="cases to score the fit on")
    parser.add_argument("--kmax", type=float, default=d.k_max, help=f"largest |G| corrected, Å⁻¹ (default {d.k_max})")
    parser.add_argument("--channels", default=",".join(d.channels),
                        help=f"comma-separated densities, from {','.join(CHANNELS)} (default {','.join(d.channels)})")
    parser.add_argument("--n-radial", type=int, default=d.n_radial, help=f"radial functions (default {d.n_radial})")
    parser.add_argument("--ridge", type=float, default=d.ridge, help=f"ridge strength (default {d.ridge})")
    parser.add_argument("--device", default="auto", help="device of the local model's predictions")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _pred_ref(path: str, model, device: str):
    """(prediction of the local model, reference) on the case's grid."""
    from ..grid import case_atoms, case_field
    from ..io import read_case
    from ..predict import predict_field

    ds = read_case(path)
    ref = case_field(ds, "elf_ref")
    pred = predict_field(case_atoms(ds), model, shape=ref.shape, device=device, progress=False).elf
    return pred, ref


def run(args: argparse.Namespace) -> dict:
    """Fit, write and (with ``--eval``) score a long-range model; a summary dict."""
    from pathlib import Path

    from tqdm.auto import tqdm

    from ..io.validate import check_output_path
    from ..longrange import LongRangeSettings, fit_longrange, predicted_correction
    from ..zoo import resolve_model

    check_output_path(args.out, what="--out")
    settings = LongRangeSettings(k_max=args.kmax, channels=tuple(c.strip() for c in args.channels.split(",") if c),
                                 n_radial=args.n_radial, ridge=args.ridge)
    model = resolve_model(args.model)
    train = [_pred_ref(p, model, args.device) for p in tqdm(args.cases, desc="training cells", unit="cell")]
    lr = fit_longrange(train, settings, meta={"local_model": str(args.model),
                                              "training_cells": [Path(p).stem for p in args.cases]})
    lr.save(args.out)
    log.info("wrote %s", args.out)
    rows = []
    for path in tqdm(args.eval, desc="evaluation cells", unit="cell"):
        pred, ref = _pred_ref(path, model, args.device)
        info = predicted_correction(pred, lr, ref=ref).info
        rows.append({"case": Path(path).stem, **{k: info[k] for k in (
            "n_basis", "k_last", "r2_before", "r2_after", "r2_oracle", "mae_before", "mae_after", "coefficient_error")}})
    return {"out": str(args.out), "settings": settings.to_dict(), "meta": lr.meta, "eval": rows}


def render(result: dict, args: argparse.Namespace) -> str:
    """Training summary and one line per evaluation cell."""
    m = result["meta"]
    lines = [f"long-range model  {result['out']} for {m['local_model']}, {m['n_cells']} training cells, "
             f"captures {100 * m['captured_train']:.1f} % of their low-k coefficients' power"]
    if result["eval"]:
        lines.append(f"{'case':<28}{'n_basis':>8}{'R² before':>11}{'predicted':>11}{'oracle':>9}")
        lines += [f"{r['case']:<28}{r['n_basis']:>8}{r['r2_before']:>11.5f}{r['r2_after']:>11.5f}{r['r2_oracle']:>9.5f}"
                  for r in result["eval"]]
    return "\n".join(lines)
