"""Correct a predicted ELF field in k-space against a reference (docs/science.md §6).

PRED and REF are any field files ``read_field`` reads, on the same grid and cell.
PRED may instead name a model (``zoo:rcut=3.0,lmax=2`` or a ``.safetensors`` file):
then the ELF is predicted on REF's structure and grid first.
For a netCDF case, PRED defaults to its ``elf_pred`` field and REF to ``elf_ref``
(override with ``--pred-name`` / ``--ref-name``). The logit residual
``logit(REF) − logit(PRED)`` is expanded in the low-k plane-wave basis of the cell
(``--shells N`` non-zero reciprocal-lattice shells plus the mean, or ``--kmax K`` in
Å⁻¹), either exactly from the whole REF ("oracle") or, with ``--sample M``, by least
squares from M random REF voxels only ("sparse"); the correction is added in logit
space and mapped back through the sigmoid. ``--out`` writes the corrected field.
"""
from __future__ import annotations

import argparse
import logging
import math

__all__ = ["add_arguments", "run", "render"]

log = logging.getLogger(__name__)


def _sample_arg(text: str) -> float:
    """``3000`` (voxels), ``0.01`` (fraction) or ``1%``."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--sample {text!r}; expected a count, a fraction or a percentage") from exc
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--sample {text!r}; must be > 0")
    return value


def _ridge_arg(text: str):
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--ridge {text!r}; expected 'auto' or a number ≥ 0") from exc
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"--ridge {text!r}; must be ≥ 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments and options."""
    parser.add_argument("pred", metavar="PRED",
                        help="predicted ELF field file, or a model (zoo:rcut=…,lmax=… or .safetensors) to predict it")
    parser.add_argument("ref", metavar="REF", help="reference ELF field file (same grid and cell)")
    sel = parser.add_mutually_exclusive_group()
    sel.add_argument("--shells", type=int, default=None, metavar="N",
                     help="number of non-zero reciprocal-lattice shells (the mean is always included; default 3)")
    sel.add_argument("--kmax", type=float, default=None, metavar="K",
                     help="keep every G with |G| ≤ K (Å⁻¹, angular 2π/λ)")
    parser.add_argument("--sample", type=_sample_arg, default=None, metavar="M",
                        help="fit from M random reference voxels only: a count (3000), fraction (0.01) or '1%%'")
    parser.add_argument("--longrange", nargs="?", const="auto", default=None, metavar="FILE",
                        help="predicted correction (no reference used; REF only scores it): the long-range model "
                             "shipped with the zoo model PRED (no FILE) or a file from 'elfcore longrange'")
    parser.add_argument("--seed", type=int, default=0, help="voxel sampling seed for --sample (default 0)")
    parser.add_argument("--ridge", type=_ridge_arg, default="auto",
                        help="ridge λ of the sparse fit, or 'auto' (0 unless ill-conditioned; default)")
    parser.add_argument("--eps", type=float, default=None, help="logit clip ε (default 1e-4)")
    parser.add_argument("--pred-name", default=None, help="field of PRED to use when it is a case file")
    parser.add_argument("--ref-name", default=None, help="field of REF to use when it is a case file")
    parser.add_argument("--analysis", action="store_true",
                        help="add the residual spectrum summary (power below 1 Å⁻¹, centroid, correlation length) "
                             "of the logit residual ('residual') and of ELF_pred − ELF_ref ('residual_elf')")
    parser.add_argument("--scan", action="store_true",
                        help="add the oracle R² for 0…8 shells and the sparse-fit R² for 1–3 shells from "
                             "0.1/0.3/1/3 %% of the voxels (3 draws each)")
    parser.add_argument("--out", default=None, metavar="FILE", help="write the corrected field here")
    parser.add_argument("--device", default="auto", help="device for predicting when PRED is a model")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _read(path: str, name: str | None, prefer: str):
    """One field of PRED/REF; from a netCDF case ``name``, else ``prefer`` if present."""
    from ..grid import case_field
    from ..io import read_case, read_field, sniff_format

    if path != "-" and sniff_format(path) == "netcdf":
        case = read_case(path)
        if name is None and prefer in case:
            name = prefer
        if name is not None:
            return case_field(case, name)
    return read_field(path, name=name)


def _is_model(text: str) -> bool:
    return text.startswith("zoo:") or text.endswith(".safetensors")


def _predict(model_spec: str, ref, device: str):
    """Predict the ELF with a model on the structure and grid of ``ref``."""
    from ..grid import field_atoms
    from ..predict import predict_field
    from ..zoo import resolve_model

    model = resolve_model(model_spec)
    return predict_field(field_atoms(ref), model, shape=ref.shape, device=device, progress=False).elf


def _scan_rows(pred, ref, eps: float, seed: int) -> dict:
    """``shell_scan`` (oracle, 0…8 shells) and ``sparse_scan`` (1–3 shells, 0.1–3 % of the voxels) as lists."""
    from ..reproduce import kscans

    sc = kscans.shell_scan(pred, ref, shells=range(9), eps=eps)
    fractions = (0.001, 0.003, 0.01, 0.03)
    counts = [max(1, int(round(f * pred.size))) for f in fractions]
    sp = kscans.sparse_scan(pred, ref, shells=(1, 2, 3), n_samples=counts, seed=seed, repeats=3, eps=eps)
    sparse_keys = ("r2_after", "r2_after_std", "mae_after", "condition_number", "n_regularised", "n_basis",
                   "r2_oracle")
    return {
        "shell_scan": {"n_shells": sc["n_shells"].values.tolist(),
                       **{k: sc[k].values.tolist() for k in sc.data_vars}},
        "sparse_scan": {"n_shells": sp["n_shells"].values.tolist(), "n_samples": counts,
                        "fraction": list(fractions), **{k: sp[k].values.tolist() for k in sparse_keys}},
    }


def _residual_rows(pred, ref, eps: float) -> dict:
    """Spectral summary of the logit residual (``residual``) and of ELF_pred − ELF_ref (``residual_elf``)."""
    from ..reproduce import kscans

    out = {}
    for key, space in (("residual", "logit"), ("residual_elf", "elf")):
        ana = kscans.residual_analysis(pred, ref, eps=eps, k_cut=1.0, space=space)
        out[key] = {k: v for k, v in ana.items() if k not in ("spectrum", "cell_lengths", "volume", "grid")}
    return out


def _correct(pred, ref, args: argparse.Namespace, eps: float):
    """Oracle, sparse (``--sample``) or predicted (``--longrange``) correction, and its basis."""
    from .. import kspace

    if args.longrange is not None:
        from ..errors import ElfcoreError
        from ..longrange import predicted_correction, resolve_longrange

        if args.sample is not None or args.shells is not None or args.kmax is not None:
            raise ElfcoreError("--longrange uses the basis of its model; drop --sample/--shells/--kmax")
        lr = resolve_longrange(args.longrange, args.pred if _is_model(args.pred) else None)
        return predicted_correction(pred, lr, ref=ref), lr.basis_for(pred)

    n_shells = args.shells if args.shells is not None or args.kmax is not None else 3
    basis = kspace.lowk_basis(pred.attrs["cell"], pred.shape, n_shells=n_shells, k_max=args.kmax)
    if args.sample is None:
        return kspace.oracle_correction(pred, ref, basis=basis, eps=eps), basis
    m = int(round(args.sample * pred.size)) if args.sample < 1 else int(args.sample)
    m = max(1, min(m, pred.size))
    result = kspace.sparse_correction(pred, ref, n_samples=m, seed=args.seed, basis=basis, eps=eps, ridge=args.ridge)
    return result, basis


def run(args: argparse.Namespace) -> dict:
    """Correct PRED against REF; the correction's ``info`` plus basis, analysis and scans as asked."""
    from .. import kspace
    from ..io.validate import check_output_path

    if args.out:
        check_output_path(args.out, what="--out", field=True)
    eps = kspace.DEFAULT_EPS if args.eps is None else args.eps
    ref = _read(args.ref, args.ref_name, "elf_ref")
    if _is_model(args.pred):
        pred = _predict(args.pred, ref, args.device)
    else:
        pred = _read(args.pred, args.pred_name, "elf_pred")
    result, basis = _correct(pred, ref, args, eps)
    info = dict(result.info)
    info.update(pred=args.pred, ref=args.ref, k_max=args.kmax, shell_k=basis.shell_k.tolist(),
                shell_counts=basis.shell_counts.tolist())
    if args.analysis:
        info.update(_residual_rows(pred, ref, eps))
    if args.scan:
        info.update(_scan_rows(pred, ref, eps, args.seed))
    if args.out:
        from ..io import write_field

        write_field(result.corrected, args.out)
        info["out"] = args.out
        log.info("wrote %s", args.out)
    return info


def _scan_text(info: dict) -> list[str]:
    sc = info["shell_scan"]
    lines = ["oracle scan   n_shells  k_last/Å⁻¹  n_basis      R²       MAE"]
    lines += [f"{'':14}{n:>8} {sc['k_last'][i]:>11.3f} {sc['n_basis'][i]:>8} "
              f"{sc['r2_after'][i]:>8.5f} {sc['mae_after'][i]:>8.5f}" for i, n in enumerate(sc["n_shells"])]
    sp = info["sparse_scan"]
    lines.append("sparse scan   n_shells  " + "  ".join(f"{100 * f:>6.1f}%" for f in sp["fraction"]) + "   oracle")
    lines += [f"{'':14}{n:>8}  " + "  ".join(f"{v:>7.5f}" for v in sp["r2_after"][i]) + f"  {sp['r2_oracle'][i]:>7.5f}"
              for i, n in enumerate(sp["n_shells"])]
    return lines


def render(info: dict, args: argparse.Namespace) -> str:
    """Cell, basis, before/after metrics, and the residual summary and scans when present."""
    lengths = " × ".join(f"{x:.3f}" for x in info["cell_lengths"])
    lines = [
        f"cell        {lengths} Å, grid {'×'.join(map(str, info['grid']))}",
        f"basis       {info['n_shells']} shells + mean, {info['n_basis']} functions, "
        f"|k| ≤ {info['k_last']:.3f} Å⁻¹ (first shell {info['k_first_shell']:.3f} Å⁻¹)",
    ]
    if info["mode"] == "predicted":
        lines.append(f"predicted   no reference used (long-range model for {info['local_model']}); "
                     f"the oracle on the same basis reaches R² {info['r2_oracle']:.5f}")
    if info["mode"] == "sparse":
        lines.append(f"sparse fit  {info['n_samples']} voxels ({100 * info['sample_fraction']:.2f} %), "
                     f"condition number {info['condition_number']:.3g}, ridge {info['ridge']:g}")
    lines.append(f"{'':12}{'R²':>10} {'MAE':>10} {'RMSE':>10}")
    for when in ("before", "after"):
        r2, mae, rmse = (info[f"{m}_{when}"] for m in ("r2", "mae", "rmse"))
        lines.append(f"{when:<12}{r2:>10.5f} {mae:>10.5f} {rmse:>10.5f}")
    if "residual" in info:
        r = info["residual"]
        lines.append(f"residual    {100 * r['low_k_fraction_fluct']:.1f} % of its variance at |k| ≤ 1 Å⁻¹, "
                     f"correlation length {r['correlation_length']:.3f} Å")
    if "shell_scan" in info:
        lines += _scan_text(info)
    return "\n".join(lines)
