"""Networking value φ, 1D/2D/3D percolation thresholds and molecularity of ELF files.

For every FILE (any format elfcore reads: ELFCAR, cube, XSF, netCDF case) the
superlevel-set merge tree of the periodic field gives the values at which the
ELF isosurface first percolates in 1, 2 and 3 dimensions (φ = the 3D value,
refined to the saddle of the tricubic interpolant), the molecularity index
(highest value at which hydrogens of different molecules connect) and TcESTIME's
φ* (highest value at which one component holds two hydrogen nuclei). Unless
--no-bcp, the critical points are counted too (persistent homology of the
superlevel sets; pairs with persistence ≤ --min-persistence cancel, so the Morse
relation n_max − n_bond + n_ring − n_cage = 0 holds exactly) and φ is recomputed
from the Newton-refined bond critical points (TcESTIME-like), exact and rounded
to 2 decimals.

A FILE may also be a structure without an ELF (POSCAR, CIF, extxyz... anything ase
reads that is not one of elfcore's field formats): its ELF is predicted first on a
grid of ``--spacing`` Å with ``--model`` (default ``auto``: the default hydrogen entry for
pure hydrogen, ``zoo:hydrides`` for a hydride its species cover, an element no model
knows is refused by name; ``docs/hydrides.md``). Such results carry ``model`` and
``model_choice``.
"""
from __future__ import annotations

import argparse
import fnmatch
import logging
import os
import time

__all__ = ["add_arguments", "run", "render", "is_structure_file"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments and options."""
    from ..zoo import AUTO, DEFAULT_SPEC, HYDRIDE_SPEC

    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="ELF field or case files, or structure files (their ELF is predicted with --model)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--exclude-radius",
        type=float,
        default=0.0,
        metavar="R",
        help="leave out spheres of R Å around non-hydrogen nuclei (default 0)",
    )
    parser.add_argument("--field", default=None, help="field name inside a netCDF case (default elf_ref/elf)")
    parser.add_argument("--format", default=None,
                        help="file format: one of elfcore's field formats, or an ase format for structure FILEs "
                        "(default: from name and content)")
    parser.add_argument("--no-bcp", action="store_true", help="skip critical points and the bcp route")
    parser.add_argument("--no-refine", action="store_true", help="report grid-resolution thresholds only")
    parser.add_argument(
        "--bonds",
        action="store_true",
        help="list bond critical points, hydrogen basins and the refined critical-point census",
    )
    parser.add_argument(
        "--min-persistence",
        type=float,
        default=None,
        metavar="P",
        help="critical-point census: cancel pairs whose ELF values differ by at most P (default 0.01; 0 = all)",
    )
    parser.add_argument(
        "--census-max-points",
        type=int,
        default=None,
        metavar="N",
        help="skip the critical-point census on grids of more than N points (default 2500000: ~3 GB at 128^3)",
    )
    parser.add_argument(
        "--phi-only",
        action="store_true",
        help="fast path: percolation thresholds only (no molecularity, no critical points)",
    )
    parser.add_argument(
        "--model",
        default=AUTO,
        help=f"structure FILEs (no ELF in them): model file or zoo spec that predicts their ELF; default {AUTO} "
        f"({DEFAULT_SPEC} for pure hydrogen, {HYDRIDE_SPEC} for hydrides its species cover; an element no model "
        "knows is refused)",
    )
    parser.add_argument("--spacing", type=float, default=0.08,
                        help="structure FILEs: largest grid spacing of the predicted ELF in Å (default 0.08)")
    parser.add_argument("--device", default="auto", help="structure FILEs: auto (CUDA if available), cpu, cuda[:N]")


#: name patterns (upper case) of VASP structure files, whose content looks like an ELFCAR's header
_STRUCTURE_NAMES = ("POSCAR*", "CONTCAR*", "*.VASP", "*.POSCAR")


def is_structure_file(path: str, format: str | None = None) -> bool:
    """Whether netval should predict the ELF of ``path`` (a structure) rather than read one from it.

    A structure is a file whose ``format`` is not one of elfcore's field formats, a
    VASP POSCAR/CONTCAR (by name), or a file neither name nor content identify as a field.
    """
    from ..errors import UnknownFormatError
    from ..io import FORMATS, sniff_format
    from ..io.formats import _format_from_name

    if format is not None:
        return format.lower() not in FORMATS
    if _format_from_name(os.fspath(path)) is not None:
        return False
    name = os.path.basename(os.fspath(path)).upper()
    for suffix in (".GZ", ".BZ2", ".XZ"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in _STRUCTURE_NAMES):
        return True
    try:
        sniff_format(path)
    except UnknownFormatError:
        return True
    return False


def _predicted_field(path: str, args: argparse.Namespace, models: dict):
    """(predicted ELF field, ModelChoice) of a structure file; loaded models are kept in ``models``."""
    from ..errors import FormatError
    from ..io import read_structure
    from ..predict import predict_field
    from ..zoo import choose_model, resolve_model

    try:
        atoms = read_structure(path, format=args.format)  # None, or an ase format (is_structure_file)
    except FormatError as exc:
        raise FormatError(f"neither an ELF file of elfcore's formats nor a structure ase reads ({exc})",
                          os.fspath(path)) from None
    choice = choose_model(atoms, args.model)
    log.info("%s: no ELF in the file; predicting it, model: %s (%s)", path, choice.spec, choice.reason)
    if choice.spec not in models:
        models[choice.spec] = resolve_model(choice.spec)
    result = predict_field(atoms, models[choice.spec], spacing=args.spacing, device=args.device, progress=False)
    return result.elf, choice


def run(args: argparse.Namespace) -> dict:
    """``{"results": [...]}``: the :func:`~elfcore.topology.topology_summary` of every FILE."""
    from ..io import read_field
    from ..topology import TopologySettings, topology_summary

    extra = {k: v for k, v in (("min_persistence", args.min_persistence),
                                ("census_max_points", args.census_max_points)) if v is not None}
    settings = TopologySettings(exclude_radius=args.exclude_radius, refine=not args.no_refine, **extra)
    results = []
    models: dict = {}
    for path in args.files:
        t0 = time.perf_counter()
        choice = None
        if is_structure_file(path, args.format):
            field, choice = _predicted_field(path, args, models)
        else:
            field = read_field(path, format=args.format, name=args.field)
        t_read = time.perf_counter() - t0
        res = topology_summary(
            field,
            settings,
            bcp=not (args.no_bcp or args.phi_only),
            bonds=args.bonds,
            molecularity=not args.phi_only,
        )
        row = {"file": str(path), **res, "seconds_read": round(t_read, 4)}
        if choice is not None:
            row.update(model=choice.spec, model_choice=choice.reason, seconds_predict=row.pop("seconds_read"))
        results.append(row)
    return {"results": results}


def render(result: dict, args: argparse.Namespace) -> str:
    """A few lines per file: φ, percolation thresholds, molecularity, critical points, time."""
    return "\n".join(_human(res) for res in result["results"])


def _fmt(x, nd=4):
    return "none" if x is None else f"{x:.{nd}f}"


def _human(res: dict) -> str:
    p = res["percolation"]
    lines = [
        f"{res['file']}  grid {'x'.join(str(n) for n in res['grid'])}",
        *([f"  predicted ELF, model: {res['model']} ({res['model_choice']})"] if "model" in res else []),
        f"  networking value phi = {_fmt(res['networking_value'], 6)}  (2 decimals: {_fmt(res['phi_2dec'], 2)};"
        f" grid {_fmt(res['networking_value_grid'], 6)})",
        f"  percolation 1D {_fmt(p['1'])}  2D {_fmt(p['2'])}  3D {_fmt(p['3'])}",
    ]
    if res["molecules"] is not None:
        lines.append(
            f"  molecularity index {_fmt(res['molecularity'])}   phi* (TcESTIME) {_fmt(res['phi_star'])}"
            f"   hydrogens {res['n_hydrogens']}, molecules {len(res['molecules'])}"
        )
    if "phi_bcp" in res:
        lines.append(
            f"  bcp route phi = {_fmt(res['phi_bcp'], 6)} (2 decimals: {_fmt(res['phi_bcp_2dec'], 2)})"
        )
        c, a = res["critical_points"], res["critical_points_all"]
        if c is None:
            lines.append(f"  {res['census_skipped']}")
        else:
            lines.append(
                f"  critical points (persistence > {res['min_persistence']:g}): max {c['max']} bond {c['bond']}"
                f" ring {c['ring']} cage {c['cage']}, Morse sum {res['morse_sum']};"
                f" all {a['max']}/{a['bond']}/{a['ring']}/{a['cage']}"
            )
    lines.append(f"  {res['seconds']:.2f} s")
    return "\n".join(lines)
