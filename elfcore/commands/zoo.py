"""The model zoo: list the shipped models, or (re)build them from training data.

``elfcore zoo list`` shows every (r_cut, l_max) entry; ``elfcore zoo build DATA…``
trains the missing or outdated entries into ``assets/models`` (resumable).
"""
from __future__ import annotations

import argparse

from .train import add_data_arguments, cache_dir_from_args, load_data

__all__ = ["add_arguments", "run", "render"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``list`` and ``build`` actions and their options."""
    sub = parser.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    p_list = sub.add_parser("list", help="list zoo entries")
    p_list.add_argument("--dir", default=None, help="zoo directory (default assets/models)")
    p_list.add_argument("--json", action="store_true", help="print one JSON object")
    p_build = sub.add_parser("build", help="train the zoo models (skips up-to-date files)")
    add_data_arguments(p_build)
    p_build.add_argument("--dir", default=None, help="zoo directory (default assets/models)")
    p_build.add_argument("--only", action="append", default=None, metavar="SPEC",
                         help="build only this entry, e.g. zoo:rcut=2.0,lmax=1 (repeatable)")
    p_build.add_argument("--no-resume", action="store_true", help="retrain entries even if up to date")
    p_build.add_argument("--seed", type=int, default=0)
    p_build.add_argument("--epochs", type=int, default=None,
                         help="override the schedule's epochs for every entry (quick builds)")
    p_build.add_argument("--voxels", type=int, default=None,
                         help="override the schedule's voxels per snapshot for every entry (quick builds)")
    p_build.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> dict:
    """``list``: ``{"directory", "entries"}``; ``build``: ``{"entries"}`` with each entry's status."""
    from .. import zoo

    if args.zoo_command == "list":
        return {"directory": str(args.dir or zoo.default_zoo_dir()), "entries": zoo.zoo_entries(args.dir)}
    from ..train import TrainSettings

    data = load_data(args.data, args.role)
    entries = [zoo.parse_spec(s) for s in args.only] if args.only else None
    override = {k: v for k, v in (("epochs", args.epochs), ("n_voxels", args.voxels)) if v is not None}
    rows = zoo.build_zoo(data, directory=args.dir, entries=entries, base=TrainSettings(),
                         seed=args.seed, cache_dir=cache_dir_from_args(args), device=args.device,
                         resume=not args.no_resume, override=override or None)
    return {"entries": rows}


def _r2(row: dict) -> str:
    return f"{row['val_r2']:.4f}" if row.get("val_r2") is not None else "-"


def render(result: dict, args: argparse.Namespace) -> str:
    """``list``: a table of the entries; ``build``: one line per entry with its status."""
    rows = result["entries"]
    if args.zoo_command != "list":
        return "\n".join(f"{r['file']:<36} {r['status']:<8} val R² {_r2(r)}" for r in rows)
    lines = [f"{'r_cut':>5} {'l_max':>5} {'file':<36} {'kB':>6} {'epochs':>6} {'val R²':>8}"]
    for r in rows:
        head = f"{r['r_cut']:>5} {r['l_max']:>5} {r['file']:<36}"
        if r["present"]:
            lines.append(f"{head} {r['bytes'] / 1000:>6.0f} {r.get('epochs') or '-':>6} {_r2(r):>8}")
        else:
            lines.append(f"{head} {'missing':>6}")
    return "\n".join(lines)
