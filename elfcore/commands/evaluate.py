"""Score a model on reference ELF fields: MAE, RMSE and R² per case and overall.

MODEL is a model file or a zoo spec (``zoo:rcut=3.0,lmax=2``). DATA are netCDF
cases or field files that carry atoms. For an ensemble the numbers are the mean
over members ± their standard deviation.
"""
from __future__ import annotations

import argparse

from .train import add_data_arguments, cache_dir_from_args, load_data

__all__ = ["add_arguments", "run", "render"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments and options."""
    parser.add_argument("model", metavar="MODEL",
                        help="model file or zoo spec, e.g. zoo:rcut=3.0,lmax=2 (fluid zoo) or zoo:crystals "
                        "(fluid + atomic crystals)")
    add_data_arguments(parser)
    parser.add_argument("--voxels", type=int, default=150_000,
                        help="random voxels per case (paper: 150000; 0 = every voxel)")
    parser.add_argument("--seed", type=int, default=1, help="voxel sampling seed (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _fmt(row: dict) -> str:
    def one(k):
        s = f"{row[k]:.4f}"
        if f"{k}_std" in row:
            s += f"±{row[f'{k}_std']:.1e}"
        return s

    return f"{one('mae'):>16} {one('rmse'):>16} {one('r2'):>16} {row['n_voxels']:>9}"


def run(args: argparse.Namespace) -> dict:
    """Score the model on the data; the :func:`elfcore.train.evaluate_many` report."""
    from ..train import evaluate_many
    from ..zoo import resolve_model

    model = resolve_model(args.model)
    settings = getattr(model, "descriptor_settings", None)
    # the cases may hold the elements the model's descriptor describes (a hydride model: its metals too)
    data = load_data(args.data, args.role, species=tuple(settings.species) if settings is not None else ("H",))
    return evaluate_many(model, data, n_voxels=args.voxels or None, seed=args.seed,
                         cache_dir=cache_dir_from_args(args), device=args.device)


def render(report: dict, args: argparse.Namespace) -> str:
    """One row per case and an ``overall`` row: MAE, RMSE, R², voxels."""
    width = max(8, *(len(r["name"]) for r in report["cases"]))
    lines = [f"{'case':<{width}} {'MAE':>16} {'RMSE':>16} {'R²':>16} {'voxels':>9}"]
    lines += [f"{row['name']:<{width}} {_fmt(row)}" for row in report["cases"]]
    lines.append(f"{'overall':<{width}} {_fmt(report['overall'])}")
    return "\n".join(lines)
