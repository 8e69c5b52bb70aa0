"""Regenerate the paper's tables and figures (S1, S2, S1–S3 analogues) from the shipped data.

Trains the baseline ensemble, the convergence sweeps and the 3D CNN itself, evaluates
them on the reference cases, runs the oracle k-correction and writes PNG figures and
``reproduce.json`` to --out and the tables plus a generated discussion into the marked
block of --results. ``--quick`` runs reduced sizes in a few minutes (for CI).
"""
from __future__ import annotations

import argparse
import shlex

__all__ = ["add_arguments", "run", "render", "exit_code"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments and options."""
    parser.add_argument("--quick", action="store_true", help="reduced voxels/epochs/ensemble/sweeps (minutes)")
    parser.add_argument("--out", default="docs/figures", help="directory of the figures and reproduce.json")
    parser.add_argument("--data", default=None,
                        help="directory of the *.nc reference cases (default: the shipped assets/data)")
    parser.add_argument("--cases", nargs="+", metavar="FILE", help="use these case files instead of --data")
    parser.add_argument("--results", default="docs/results.md",
                        help="markdown file whose reproduce block is replaced ('-' = only OUT/reproduce.md)")
    parser.add_argument("--all-pressures", action="store_true",
                        help="use the fluid MDs at every target pressure (default: the paper's 76.0, 115.1 and "
                             "138.5 GPa when the data has them)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0 = torch's default; 1 is fastest on a busy machine)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def _command_line(args: argparse.Namespace) -> str:
    """The ``elfcore reproduce`` command line these arguments stand for (recorded in the outputs)."""
    parts = ["elfcore", "reproduce"] + (["--quick"] if args.quick else []) + ["--out", args.out]
    parts += ["--cases", *args.cases] if args.cases else (["--data", args.data] if args.data else [])
    parts += ["--all-pressures"] if args.all_pressures else []
    parts += ["--results", args.results, "--seed", str(args.seed)]
    parts += ["--threads", str(args.threads)] if args.threads else []
    return " ".join(shlex.quote(str(p)) for p in parts)


def run(args: argparse.Namespace) -> dict:
    """Run every part; the :func:`~elfcore.reproduce.run_reproduce` summary."""
    import torch

    from ..assets import data_dir
    from ..errors import ElfcoreError
    from ..reference import PAPER_PRESSURES_GPA
    from ..reproduce import ReproduceSettings, find_cases, run_reproduce

    if args.threads < 0:
        raise ElfcoreError(f"--threads={args.threads}; must be ≥ 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = args.cases if args.cases else find_cases(args.data or data_dir())
    settings = ReproduceSettings.quick(args.seed) if args.quick else ReproduceSettings.full(args.seed)
    return run_reproduce(
        paths, args.out, settings,
        results_md=None if args.results == "-" else args.results,
        mode="quick" if args.quick else "full",
        command=_command_line(args),
        device=args.device,
        pressures=None if args.all_pressures else PAPER_PRESSURES_GPA,
    )


def render(summary: dict, args: argparse.Namespace) -> str:
    """Cases and time, the figures written, where the tables went, and the parts that failed."""
    lines = [f"reproduce ({summary['mode']}): {summary['n_cases']} cases in {summary['seconds']:.0f} s"]
    lines += [f"  figure {f}" for f in summary["figures"]]
    lines.append(f"  tables in {summary['results_md']}")
    lines += [f"  part {k} did not run: {v}" for k, v in summary["errors"].items()]
    return "\n".join(lines)


def exit_code(summary: dict) -> int:
    """1 when a part failed, else 0."""
    return 1 if summary["errors"] else 0
