"""ELF topology of whole trajectories and structure sets, on Dask, into an ASE database.

Every frame of the INPUTs (files ase reads, with an optional frame selection
``file@start:stop:step``; directories; globs) is predicted on a grid of
``--spacing`` Å and its networking value φ, 1D/2D/3D percolation thresholds,
molecularity and ELF statistics (with an ensemble model, e.g. zoo:crystals, also
the spread of φ over the members) go as one row into the database ``--db``
(SQLite file, or a postgresql:// URL), keyed by input file and frame index. A
re-run skips the frames already there. Frames that cannot be screened
(elements the model does not know, non-periodic, unreadable) get a row with the reason.

The frames run on Dask distributed: a local cluster of ``--workers`` processes
with one thread each, or the cluster of ``--scheduler tcp://host:port``.

``--model auto`` (the default) chooses the model from the elements of all frames: the
default hydrogen entry for pure hydrogen, ``zoo:hydrides`` when its species cover the
hydrides among them; frames holding an element no model knows get a row with that
reason. The model and why it was chosen are logged and in the summary
(``model``, ``model_choice``).

``elfcore screen plot results.db [--out phi.png] [--x auto|frame|time|pressure]``
draws φ (with its ensemble band) and the thresholds of a database as PNG.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["add_arguments", "run", "render", "parse_cell"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments and options."""
    from ..zoo import AUTO, CRYSTAL_SPEC, DEFAULT_SPEC, HYDRIDE_SPEC

    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="structure files (file@start:stop:step selects frames), directories or globs; "
                        "or 'plot DB' to draw a results database")
    parser.add_argument("--db", default=None, help="results database (SQLite file or postgresql:// URL)")
    parser.add_argument("--model", default=AUTO,
                        help=f"model file or zoo spec; default {AUTO}: chosen from the elements of all frames "
                        f"({DEFAULT_SPEC} for pure hydrogen, {HYDRIDE_SPEC} for hydrides its species cover; frames "
                        f"with an element no model knows are skipped with the reason); {CRYSTAL_SPEC} is an "
                        "ensemble and gives the spread of phi")
    parser.add_argument("--spacing", type=float, default=0.08, help="largest grid spacing in Å (default 0.08)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="address of a running Dask scheduler (tcp://host:port); default: a local cluster")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="worker processes of the local cluster (default: one per core, one per GPU on CUDA)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if the worker has it), cpu or cuda[:N]")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="precision of the MLP's matrix products (default float32)")
    parser.add_argument("--upsample", type=int, default=0, metavar="K",
                        help="spline refinement of the grid before the topology sweep (0 = automatic, 1 = none)")
    parser.add_argument("--phi-only", action="store_true", help="percolation thresholds only (no molecularity)")
    parser.add_argument("--format", default=None, help="ase format of the input files (default: guessed)")
    parser.add_argument("--cell", default=None, metavar="A,B,C|9 numbers",
                        help="cell in Å for frames without one (CP2K or plain xyz trajectories)")
    parser.add_argument("--save-fields", default=None, metavar="DIR",
                        help="write each frame's predicted field as a netCDF case into DIR")
    parser.add_argument("--csv", default=None, metavar="FILE", help="also export the database as CSV")
    parser.add_argument("--relative-to", default=None, metavar="DIR",
                        help="key rows by input paths relative to DIR (a database that travels with its inputs); "
                        "default absolute paths")
    parser.add_argument("--out", default=None, help="plot: output image (default: <db stem>_phi.png)")
    parser.add_argument("--x", default="auto", choices=["auto", "frame", "time", "pressure"],
                        help="plot: horizontal axis (default auto: pressure, else time, else frame)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the run summary)")


def parse_cell(text: str | None) -> np.ndarray | None:
    """``"5.8"`` → cube, ``"5,6,7"`` → orthorhombic, 9 numbers → rows of the cell (Å).

    Examples
    --------
    >>> parse_cell("2,3,4").tolist()
    [[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 4.0]]
    """
    import numpy as np

    from ..errors import ElfcoreError

    if text is None:
        return None
    try:
        values = [float(v) for v in str(text).replace(" ", ",").split(",") if v]
    except ValueError:
        raise ElfcoreError(f"--cell {text!r}; expected 1, 3 or 9 numbers in Å") from None
    if len(values) == 1:
        values = values * 3
    if len(values) == 3:
        return np.diag(values)
    if len(values) == 9:
        return np.asarray(values).reshape(3, 3)
    raise ElfcoreError(f"--cell {text!r}; expected 1, 3 or 9 numbers in Å, got {len(values)}")


def _plot(args: argparse.Namespace) -> dict:
    """``screen plot DB``: draw the database; ``{"db", "plot"}``."""
    from ..errors import ElfcoreError
    from ..screen import plot_results

    if len(args.inputs) != 2:
        raise ElfcoreError("usage: elfcore screen plot DB [--out FILE.png] [--x auto|frame|time|pressure]")
    db = args.inputs[1]
    if not str(db).startswith(("postgresql://", "postgres://")) and not os.path.exists(db):
        raise FileNotFoundError(2, "No such file or directory", db)
    out = args.out or os.path.splitext(os.path.basename(db))[0] + "_phi.png"
    path = plot_results(db, out, x=args.x)
    log.info("wrote %s", path)
    return {"db": str(db), "plot": path}


def _log_summary(summary: dict) -> None:
    rate = summary["frames_per_s"]
    log.info(
        "%d frame(s): %d ok, %d skipped, %d failed, %d already in %s; %.1f s%s",
        summary["frames"], summary["ok"], summary["skipped"], summary["failed"], summary["already_done"],
        summary["db"], summary["seconds"], "" if rate is None else f" ({rate:.3g} frames/s computing)",
    )
    if summary["csv"]:
        log.info("wrote %s", summary["csv"])


def run(args: argparse.Namespace) -> dict:
    """Screen the INPUTs into ``--db`` (the run summary), or ``plot DB`` (``{"db", "plot"}``)."""
    from ..errors import ElfcoreError
    from ..screen import ScreenSettings, screen

    if args.inputs[0] == "plot" and not os.path.exists("plot"):
        return _plot(args)
    if args.db is None:
        raise ElfcoreError("--db is required: the results database to write (e.g. --db results.db)")
    settings = ScreenSettings(spacing=args.spacing, device=args.device, precision=args.precision,
                              upsample=args.upsample, molecularity=not args.phi_only)
    import distributed  # noqa: F401  (its import sets its loggers' levels; quiet them after it)

    if not getattr(args, "debug", False):
        logging.getLogger("distributed").setLevel(logging.ERROR)
    summary = screen(
        args.inputs,
        args.db,
        model=args.model,
        settings=settings,
        scheduler=args.scheduler,
        workers=args.workers,
        save_fields=args.save_fields,
        csv=args.csv,
        format=args.format,
        cell=parse_cell(args.cell),
        progress=not args.no_progress,
        relative_to=args.relative_to,
    )
    _log_summary(summary)
    return summary


def render(result: dict, args: argparse.Namespace) -> None:
    """Nothing on stdout: the results are in the database (the log lines on stderr sum them up)."""
    return None
