"""Train the ELF MLP (or an ensemble) on reference ELF fields with the paper's protocol.

DATA are netCDF cases (their ``elf_ref``) or field files that carry atoms. From
each, ``--voxels`` random voxels are drawn; the model is written as a safetensors
file with the descriptor settings in its header.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run", "render", "add_data_arguments", "load_data", "cache_dir_from_args"]

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$ELFCORE_CACHE`` or ``~/.cache/elfcore/descriptors``."""
    env = os.environ.get("ELFCORE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "elfcore" / "descriptors"


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """DATA…, --role, --cache-dir, --no-cache, --device (shared by train, evaluate, zoo build)."""
    parser.add_argument("data", nargs="+", metavar="DATA", help="netCDF case(s) or field file(s) with atoms")
    parser.add_argument("--role", default=None, help="use only cases whose 'role' attribute is this (e.g. train, test)")
    parser.add_argument("--cache-dir", default=None, help="descriptor cache (default $ELFCORE_CACHE or ~/.cache/elfcore/descriptors)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the descriptor cache")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda[:N]")


def cache_dir_from_args(args: argparse.Namespace) -> Path | None:
    """The descriptor cache the arguments name; None with ``--no-cache``."""
    if args.no_cache:
        return None
    return Path(args.cache_dir) if args.cache_dir else default_cache_dir()


def load_data(paths: list[str], role: str | None = None) -> list[tuple[str, Any]]:
    """Read reference fields; keep those with ``role`` (when given). Returns [(name, field)]."""
    from ..errors import ElfcoreError
    from ..train import load_reference

    out = []
    for p in paths:
        name, field = load_reference(p)
        if role is not None and str(field.attrs.get("role", "")) != role:
            log.info("skipping %s (role=%r)", name, field.attrs.get("role"))
            continue
        out.append((name, field))
    if not out:
        raise ElfcoreError(f"no data left after --role {role}" if role else "no data given")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments and options."""
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="output model file (.safetensors)")
    parser.add_argument("--rcut", type=float, default=3.0, help="descriptor cutoff r_cut in Å (default 3.0)")
    parser.add_argument("--lmax", type=int, default=2, help="descriptor l_max (default 2)")
    parser.add_argument("--nradial", type=int, default=10, help="descriptor n_radial (default 10)")
    parser.add_argument("--sigma", type=float, default=0.5, help="atom smearing σ in Å (default 0.5)")
    parser.add_argument("--epochs", type=int, default=80, help="epochs (paper: 80)")
    parser.add_argument("--voxels", type=int, default=50_000, help="random voxels per snapshot (paper: 50000)")
    parser.add_argument("--batch-size", type=int, default=512, help="voxels per Adam step (default 512)")
    parser.add_argument("--lr", type=float, default=1e-3, help="initial Adam learning rate (cosine decay)")
    parser.add_argument("--huber-delta", type=float, default=0.03, help="Huber δ (paper: 0.03)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="voxels held out for validation")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--hidden-layers", type=int, default=2)
    parser.add_argument("--float16", action="store_true", help="store sampled descriptors as float16")
    parser.add_argument("--weights-dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument("--seed", type=int, default=0, help="sampling and training seed")
    parser.add_argument("--ensemble", type=int, default=1, metavar="N", help="train N models (seeds seed..seed+N-1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> dict:
    """Train and write the model; a summary (file, members, settings, validation metrics)."""
    from ..descriptor import DescriptorSettings
    from ..models import save_model
    from ..train import TrainSettings, train_on_fields

    settings = DescriptorSettings(r_cut=args.rcut, n_radial=args.nradial, l_max=args.lmax, sigma=args.sigma)
    try:
        ts = TrainSettings(
            n_voxels=args.voxels, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
            huber_delta=args.huber_delta, val_fraction=args.val_fraction, width=args.width,
            hidden_layers=args.hidden_layers, storage_dtype="float16" if args.float16 else "float32",
        )
    except ValueError as exc:
        from ..errors import ElfcoreError

        raise ElfcoreError(str(exc)) from exc
    data = load_data(args.data, args.role)
    model = train_on_fields(data, settings, ts, seed=args.seed, n_members=args.ensemble,
                            cache_dir=cache_dir_from_args(args), device=args.device, progress=True)
    path = save_model(model.cpu(), args.out, weights_dtype=args.weights_dtype)
    last = model.metadata["history"][-1]
    return {
        "model": str(path),
        "bytes": path.stat().st_size,
        "n_members": model.n_members,
        "descriptor": settings.to_dict(),
        "train_settings": ts.to_dict(),
        "training_cases": model.metadata["training_cases"],
        "train_seconds": model.metadata["train_seconds"],
        "validation": {k[4:]: v for k, v in last.items() if k.startswith("val_")},
    }


def render(summary: dict, args: argparse.Namespace) -> str:
    """The model written, its size and training time, and the validation metrics."""
    lines = [f"wrote {summary['model']} ({summary['bytes']} bytes, {summary['n_members']} member(s)) "
             f"trained on {len(summary['training_cases'])} case(s) in {summary['train_seconds']:.0f} s"]
    v = summary["validation"]
    if v:
        lines.append(f"validation: MAE {v['mae']:.4f}  RMSE {v['rmse']:.4f}  R² {v['r2']:.4f}")
    return "\n".join(lines)
