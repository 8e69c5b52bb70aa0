"""Train the ELF MLP (or an ensemble) on reference ELF fields with the paper's protocol.

DATA are netCDF cases (their ``elf_ref``) or field files that carry atoms. From
each, ``--voxels`` random voxels are drawn; the model is written as a safetensors
file with the descriptor settings in its header.

Metal hydrides: the descriptor describes every element of ``--species`` (default
``auto``: H plus every element found in DATA); ``--compression`` combines their
densities (default ``off`` for H with one other element, ``mu1nu1`` for two or
more, see docs/descriptor.md). Pure-hydrogen data give the hydrogen descriptor,
bit for bit the same settings as before. docs/hydrides.md.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run", "render", "add_data_arguments", "load_data", "cache_dir_from_args",
           "data_species", "resolve_species", "default_compression"]

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


def load_data(paths: list[str], role: str | None = None, *,
              species: tuple[str, ...] | None = ("H",)) -> list[tuple[str, Any]]:
    """Read reference fields; keep those with ``role`` (when given). Returns [(name, field)].

    ``species``: elements the structures may hold (hydrogen by default; None: any, for
    ``elfcore train --species auto``, which checks them against the descriptor after).
    """
    from ..errors import ElfcoreError
    from ..train import load_reference

    out = []
    for p in paths:
        name, field = load_reference(p, species=species)
        if role is not None and str(field.attrs.get("role", "")) != role:
            log.info("skipping %s (role=%r)", name, field.attrs.get("role"))
            continue
        out.append((name, field))
    if not out:
        raise ElfcoreError(f"no data left after --role {role}" if role else "no data given")
    return out


def data_species(data: list[tuple[str, Any]]) -> dict[str, list[str]]:
    """Element → names of the cases that hold it, elements by increasing atomic number."""
    from ase.data import atomic_numbers, chemical_symbols

    found: dict[str, list[str]] = {}
    for name, field in data:
        for z in sorted({int(z) for z in field.attrs["numbers"]}):
            found.setdefault(chemical_symbols[z], []).append(name)
    return {sym: found[sym] for sym in sorted(found, key=lambda s: atomic_numbers[s])}


def resolve_species(requested: str, found: dict[str, list[str]]) -> tuple[str, ...]:
    """The descriptor's species for ``--species``.

    Parameters
    ----------
    requested : str
        ``"auto"`` (H plus every element of the data) or a comma list (``"H,La,Y"``).
    found : dict
        :func:`data_species` of the training data.

    Returns
    -------
    tuple of str
        Canonical order (increasing atomic number), as ``DescriptorSettings`` stores it.

    Raises
    ------
    SettingsError
        An entry that is not a chemical symbol, a list without H, or a list that
        misses an element of the data (named, with the cases that hold it).

    Examples
    --------
    >>> resolve_species("auto", {"H": ["a"], "La": ["a"]})
    ('H', 'La')
    >>> resolve_species("Y, H, La", {"H": ["a"]})
    ('H', 'Y', 'La')
    """
    from ..descriptor import DescriptorSettings
    from ..errors import ElfcoreError, SettingsError

    text = str(requested).strip()
    if text == "auto":
        wanted = ["H", *[sym for sym in found if sym != "H"]]
    else:
        wanted = [part.strip() for part in text.split(",") if part.strip()]
    try:
        species = DescriptorSettings(species=tuple(wanted)).species
    except ElfcoreError as exc:
        raise SettingsError(f"--species {requested}: {exc}") from None
    missing = [sym for sym in found if sym not in species]
    if missing:
        where = "; ".join(f"{sym} in {', '.join(found[sym][:3])}{' …' if len(found[sym]) > 3 else ''}"
                          for sym in missing)
        only = " (hydrogen only)" if species == ("H",) else ""
        raise SettingsError(f"--species {requested}{only} does not cover {', '.join(missing)} of the training data "
                            f"({where}); add {'it' if len(missing) == 1 else 'them'} or use --species auto")
    return species


def default_compression(species: tuple[str, ...]) -> str:
    """``--compression`` default: ``"off"`` with at most one element besides H, ``"mu1nu1"`` with two or more.

    The full species-pair spectrum grows as S² (docs/descriptor.md: 630 features for
    H + one metal, 1395 for two at the baseline); ``mu1nu1`` grows as S (600, 900).

    >>> default_compression(("H",)), default_compression(("H", "La")), default_compression(("H", "Y", "La"))
    ('off', 'off', 'mu1nu1')
    """
    return "mu1nu1" if len([sym for sym in species if sym != "H"]) >= 2 else "off"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments and options."""
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="output model file (.safetensors)")
    parser.add_argument("--rcut", type=float, default=3.0, help="descriptor cutoff r_cut in Å (default 3.0)")
    parser.add_argument("--lmax", type=int, default=2, help="descriptor l_max (default 2)")
    parser.add_argument("--nradial", type=int, default=10, help="descriptor n_radial (default 10)")
    parser.add_argument("--sigma", type=float, default=0.5, help="atom smearing σ in Å (default 0.5)")
    parser.add_argument("--species", default="auto", metavar="auto|H,La,…",
                        help="elements the descriptor describes: auto (default: H plus every element found in "
                        "DATA) or a comma list such as H,La,Y, which must cover every element of DATA")
    # choices are checked by DescriptorSettings (elfcore.descriptor.COMPRESSION_MODES) in run(): importing the
    # descriptor here would load torch for every command line
    parser.add_argument("--compression", default=None, metavar="off|mu1nu1|crossover|mu2",
                        help="how the species densities are combined (docs/descriptor.md): default off (full "
                        "species-pair spectrum) for H plus one other element, mu1nu1 (each species against "
                        "the total density, features linear in the number of species) for two or more; "
                        "leave it unset for pure hydrogen (off is the hydrogen descriptor)")
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
    from dataclasses import replace

    from ..descriptor import DescriptorSettings
    from ..errors import ElfcoreError
    from ..models import save_model
    from ..train import TrainSettings, train_on_fields

    # settings first (a typo fails before any data is read); species once the data are known
    settings = DescriptorSettings(r_cut=args.rcut, n_radial=args.nradial, l_max=args.lmax, sigma=args.sigma,
                                  compression=args.compression or "off")
    if str(args.species).strip() != "auto":
        resolve_species(args.species, {})  # syntax of an explicit list, before reading the data
    try:
        ts = TrainSettings(
            n_voxels=args.voxels, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
            huber_delta=args.huber_delta, val_fraction=args.val_fraction, width=args.width,
            hidden_layers=args.hidden_layers, storage_dtype="float16" if args.float16 else "float32",
        )
    except ValueError as exc:
        raise ElfcoreError(str(exc)) from exc
    data = load_data(args.data, args.role, species=None)
    species = resolve_species(args.species, data_species(data))
    compression = args.compression or default_compression(species)
    settings = replace(settings, species=species, compression=compression)
    if len(species) > 1:
        log.info("descriptor species %s, compression %s (%d features)", ", ".join(species), compression,
                 settings.n_features)
    model = train_on_fields(data, settings, ts, seed=args.seed, n_members=args.ensemble,
                            cache_dir=cache_dir_from_args(args), device=args.device, progress=True)
    path = save_model(model.cpu(), args.out, weights_dtype=args.weights_dtype)
    last = model.metadata["history"][-1]
    return {
        "model": str(path),
        "bytes": path.stat().st_size,
        "n_members": model.n_members,
        "descriptor": settings.to_dict(),
        "species": list(settings.species),
        "train_settings": ts.to_dict(),
        "training_cases": model.metadata["training_cases"],
        "train_seconds": model.metadata["train_seconds"],
        "validation": {k[4:]: v for k, v in last.items() if k.startswith("val_")},
    }


def render(summary: dict, args: argparse.Namespace) -> str:
    """The model written, its size and training time, and the validation metrics."""
    lines = [f"wrote {summary['model']} ({summary['bytes']} bytes, {summary['n_members']} member(s)) "
             f"trained on {len(summary['training_cases'])} case(s) in {summary['train_seconds']:.0f} s"]
    if summary.get("species", ["H"]) != ["H"]:
        lines.append(f"descriptor species: {', '.join(summary['species'])} "
                     f"(compression {summary['descriptor'].get('compression', 'off')})")
    v = summary["validation"]
    if v:
        lines.append(f"validation: MAE {v['mae']:.4f}  RMSE {v['rmse']:.4f}  R² {v['r2']:.4f}")
    return "\n".join(lines)
