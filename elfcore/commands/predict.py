"""Predict the ELF of a periodic hydrogen or metal-hydride structure on a full grid and write it to a file.

STRUCTURE is any periodic structure ase reads (POSCAR, CIF, extxyz, ...) or a
field file of elfcore's formats. The grid is ``--grid N`` (N³) or ``--grid Na,Nb,Nc``
or follows ``--spacing`` (Å, default 0.08). The output format follows the name
of ``--out`` (``.cube``, ``ELFCAR``, ``.nc``...). With an ensemble model the
standard deviation over members is written next to it (``<stem>_std<suffix>``).
``--longrange`` writes the ELF after the predicted long-range correction
(``docs/longrange.md``; "predicted, no reference").

``--model auto`` (the default) picks the model from the structure's elements: the most
accurate hydrogen zoo entry ``zoo:rcut=2.5,lmax=3`` for pure hydrogen (the paper's baseline
is ``--model zoo:rcut=3.0,lmax=2``), ``zoo:hydrides`` for a
hydride its species cover; an element no model knows is refused by name
(``docs/hydrides.md``). The model used and why are logged and in the ``--json`` summary.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

__all__ = ["add_arguments", "run", "render", "parse_grid", "std_path"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments and options."""
    from ..zoo import AUTO, BASELINE_SPEC, CRYSTAL_SPEC, DEFAULT_SPEC, HYDRIDE_SPEC

    parser.add_argument("structure", metavar="STRUCTURE", help="periodic structure file")
    parser.add_argument("--model", default=AUTO,
                        help=f"model file or zoo spec; default {AUTO}: {DEFAULT_SPEC} for pure hydrogen, "
                        f"{HYDRIDE_SPEC} when the structure holds other elements its species cover "
                        f"(an element no model knows is refused); {CRYSTAL_SPEC} for atomic or crystalline H; "
                        f"{BASELINE_SPEC} for the paper's baseline")
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument("--grid", default=None, help="grid points: N or Na,Nb,Nc")
    grid.add_argument("--spacing", type=float, default=0.08, help="largest grid spacing in Å (default 0.08)")
    parser.add_argument("--ensemble", action="store_true",
                        help="require an ensemble model and also write its standard deviation")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:N]")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="precision of the MLP's matrix products (default float32)")
    parser.add_argument("--longrange", nargs="?", const="auto", default=None, metavar="FILE",
                        help="add the predicted long-range correction (no reference needed): the one shipped with "
                             "the zoo model (no FILE) or a model written by 'elfcore longrange'")
    parser.add_argument("--format", default=None, help="output format (default: from the name of --out)")
    parser.add_argument("--out", required=True, help="output field file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print one JSON object describing the result")


def parse_grid(text: str | None) -> tuple[int, int, int] | None:
    """``"192"`` → (192, 192, 192); ``"90,96,100"`` → (90, 96, 100); None → None.

    Examples
    --------
    >>> parse_grid("8"), parse_grid("4,5,6")
    ((8, 8, 8), (4, 5, 6))
    """
    from ..errors import GridError

    if text is None:
        return None
    try:
        parts = [int(p) for p in str(text).replace("x", ",").split(",")]
    except ValueError as exc:
        raise GridError(f"--grid {text!r}; expected N or Na,Nb,Nc") from exc
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or min(parts) < 1:
        raise GridError(f"--grid {text!r}; expected N or Na,Nb,Nc with positive integers")
    return tuple(parts)


def std_path(out: str) -> Path:
    """Where the ensemble standard deviation goes: ``elf.cube`` → ``elf_std.cube``."""
    p = Path(out)
    name = p.name
    for suffix in (".nc", ".cube", ".xsf", ".vasp"):
        if name.lower().endswith(suffix):
            return p.with_name(name[: -len(suffix)] + "_std" + name[-len(suffix):])
    return p.with_name(name + "_std")


def run(args: argparse.Namespace) -> dict:
    """Predict, write the field (and the ensemble std next to it); a summary of the result."""
    import time

    import numpy as np

    from ..errors import ElfcoreError
    from ..io import read_structure, write_field
    from ..io.validate import check_output_path
    from ..predict import predict_field
    from ..zoo import choose_model, resolve_model

    check_output_path(args.out, what="--out", format=args.format, field=True)  # before the prediction
    atoms = read_structure(args.structure)
    choice = choose_model(atoms, args.model)
    if choice.automatic:  # a model named explicitly is not announced (the stderr of today's runs)
        log.info("model: %s (%s)", choice.spec, choice.reason)
    model = resolve_model(choice.spec)
    n_members = int(getattr(model, "n_members", 1))
    if args.ensemble and n_members < 2:
        raise ElfcoreError(f"--ensemble needs an ensemble model; {choice.spec} has one member")
    longrange = None
    if args.longrange is not None:  # found (or refused) before the prediction
        from ..longrange import resolve_longrange
        from ..zoo import CRYSTAL_SPEC, HYDRIDE_SPEC

        if str(args.longrange) == "auto" and choice.spec.replace(" ", "") in (HYDRIDE_SPEC, CRYSTAL_SPEC):
            raise ElfcoreError(f"no long-range correction is shipped for {choice.spec}; fit one with "
                               f"'elfcore longrange --model {choice.spec}' and pass its file to --longrange")
        longrange = resolve_longrange(args.longrange, choice.spec)
    t0 = time.perf_counter()
    mean, std = predict_field(atoms, model, shape=parse_grid(args.grid), spacing=args.spacing, device=args.device,
                              precision=args.precision, progress=not args.no_progress)
    correction = None
    if longrange is not None:
        from ..longrange import predicted_correction

        correction = predicted_correction(mean, longrange)
        mean = correction.corrected
    elapsed = time.perf_counter() - t0
    write_field(mean, args.out, format=args.format)
    written = [str(args.out)]
    if std is not None:
        write_field(std, std_path(args.out), format=args.format)
        written.append(str(std_path(args.out)))
    log.info("wrote %s (%s grid, %.1f s)", ", ".join(written), "×".join(map(str, mean.shape)), elapsed)
    summary = {
        "structure": str(args.structure),
        "atoms": len(atoms),
        "grid": list(mean.shape),
        "model": choice.spec,
        "model_choice": choice.reason,
        "members": n_members,
        "device": args.device,
        "seconds": elapsed,
        "elf_min": float(mean.min()),
        "elf_mean": float(mean.mean()),
        "elf_max": float(mean.max()),
        "files": written,
    }
    if std is not None:
        summary["std_mean"] = float(np.mean(std.values))
    if correction is not None:
        summary["kcorrection"] = {k: correction.info[k] for k in ("mode", "n_basis", "k_last", "local_model")}
    return summary


def render(summary: dict, args: argparse.Namespace) -> None:
    """Nothing on stdout: the output is the field file (the log line on stderr names it)."""
    return None
