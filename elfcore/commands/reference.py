"""Build the reference DFT data of dense hydrogen (CP2K ELF and density per case).

Actions:

``list``      the cases of the plan, their family, role and whether the file exists
``md``        run (or reuse) the Born–Oppenheimer MD of one or all pressures
``build``     compute every missing case and write ``OUT/<case>.nc`` (resumable)
``converge``  ELF RMSE of one case against one step up in cutoff and in basis
``qe``        Quantum ESPRESSO ELF of one case on the same grid, compared with CP2K
``summary``   per-case table (pressure, temperature, atoms, grid, CPU time) of OUT, and the
              decorrelation and g(r) checks of the large replicated cells
``replicas``  S(k) replica ratio along a large cell's MD (is the 2×2×2 period gone yet?)
``checkpoint`` copy the state of MDs (input, restart, energies, gzipped positions) to
              ``--checkpoints`` (default ``assets/md_checkpoints``), so a later build on
              another machine continues them; ``--restore`` copies them back into WORK

CP2K runs in WORK (default ``.cache/reference``); case files go to OUT (default
``assets/data``). A case file is written only when its run is complete.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

__all__ = ["add_arguments", "run", "render"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments and options."""
    parser.add_argument("action", choices=["list", "md", "build", "converge", "qe", "summary", "replicas", "checkpoint"],
                        help="what to do")
    parser.add_argument("cases", nargs="*", metavar="CASE",
                        help="case names or patterns (build, converge, qe); pressures like 76 or fluid_p076 (md)")
    parser.add_argument("--out", default="assets/data", help="folder of the case files (default: assets/data)")
    parser.add_argument("--work", default=".cache/reference", help="CP2K run folder (default: .cache/reference)")
    parser.add_argument("--threads", type=int, default=2, help="OpenMP threads of CP2K per MPI rank (default: 2)")
    parser.add_argument("--ranks", type=int, default=1,
                        help="MPI ranks of CP2K (mpirun -np; default: 1). On 2 cores '--ranks 2 --threads 1' is faster")
    parser.add_argument("--cp2k", default=None, help="CP2K binary (default: $ELFCORE_CP2K or cp2k.psmp on PATH)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--continue", dest="cont", action="store_true",
                        help="md: continue interrupted runs from their restart files")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--checkpoints", default="assets/md_checkpoints",
                        help="checkpoint: folder of the MD checkpoints (default: assets/md_checkpoints)")
    parser.add_argument("--restore", action="store_true",
                        help="checkpoint: copy the checkpoints into WORK/md instead (never over a longer MD)")
    parser.add_argument("--every-fs", type=float, default=5.0,
                        help="replicas: MD time between the frames checked, fs (default: 5)")


def _list(args, plan, out: Path) -> dict:
    """The cases of the plan and whether their files exist."""
    from ..reference import builder

    return {"cases": [{"name": spec.name, "family": spec.family, "role": spec.role,
                       "done": (out / f"{spec.name}.nc").exists()} for spec in builder.plan_cases(plan)]}


def _md(args, plan, out: Path) -> dict:
    """Run (or continue) the MD of the named pressures or large cells."""
    from ..errors import DFTError
    from ..reference import builder

    wanted = args.cases or [t.name for t in plan.fluids]
    step = builder.continue_md if args.cont else builder.run_md
    done = []
    for target in plan.all_fluids:
        keys = {target.name}
        if not target.tag:  # a bare pressure names the 64-atom MD; large cells go by name
            keys |= {f"{target.pressure_gpa:g}", str(int(round(target.pressure_gpa)))}
        if keys & set(wanted):
            md_dir = step(plan, target, args.work, executable=args.cp2k, threads=args.threads, ranks=args.ranks)
            done.append({"name": target.name, "dir": str(md_dir)})
    if not done:
        raise DFTError(f"no fluid target matches {wanted}; targets: {[t.name for t in plan.fluids]}")
    return {"md": done}


def _build(args, plan, out: Path) -> dict:
    """Compute every missing case of the plan (or of ``args.cases``)."""
    from ..reference import builder

    return builder.build(plan, out, args.work, only=args.cases or None, executable=args.cp2k,
                         threads=args.threads, ranks=args.ranks, progress=not args.no_progress)


def _one_case(args, action: str) -> str:
    from ..errors import DFTError

    if len(args.cases) != 1:
        raise DFTError(f"{action} needs exactly one case name")
    return args.cases[0]


def _converge(args, plan, out: Path) -> dict:
    """ELF RMSE of one case against one step up in cutoff and in basis."""
    from ..reference.checks import convergence_check

    name = _one_case(args, "converge")
    return convergence_check(plan, name, args.work, executable=args.cp2k, threads=args.threads)


def _qe(args, plan, out: Path) -> dict:
    """Quantum ESPRESSO ELF of one case (its file, or the base run of ``converge``), compared with CP2K."""
    from ..errors import DFTError
    from ..reference.qe import case_from_run, cross_check

    name = _one_case(args, "qe")
    case = out / f"{name}.nc"
    if not case.exists():
        run_dir = Path(args.work) / "converge" / name / "base"
        if not (run_dir / "sp.out").exists():
            raise DFTError(f"no case file {case} and no converge run {run_dir}")
        case = case_from_run(run_dir, name=name, settings=plan.elf_dft)
    return cross_check(case, Path(args.work) / "qe" / name, threads=args.threads)


def _replicas(args, plan, out: Path) -> dict:
    """S(k) replica ratio along the MD of each large replicated cell."""
    from ..errors import DFTError
    from ..reference import builder
    from ..reference.decorrelation import replica_decorrelation

    result = []
    for name in args.cases or [t.name for t in plan.large_fluids]:
        target = plan.fluid(name)
        if target.replicas < 2:
            raise DFTError(f"{name} is not a replicated large cell")
        md_dir = Path(args.work) / "md" / name
        if not (md_dir / "md-pos-1.xyz").exists():
            raise DFTError(f"{name}: no MD trajectory in {md_dir} yet")
        every = max(1, int(round(args.every_fs / (target.timestep_fs or plan.production_timestep_fs))))
        for t, atoms in builder.md_frames(md_dir, 0.0, float("inf"), every=every):
            r = replica_decorrelation(atoms, target.replicas)
            result.append({"md": name, "time_fs": t, "sk_ratio": r["ratio"], "decorrelated": r["decorrelated"]})
    return {"replicas": result}


def _checkpoint(args, plan, out: Path) -> dict:
    """Save the MD checkpoints (or, with ``--restore``, copy them back into WORK)."""
    from ..reference import builder

    names = args.cases or [t.name for t in plan.all_fluids]
    for name in names:
        plan.fluid(name)  # unknown names are refused
    if args.restore:
        return {"restored": builder.restore_md_checkpoints(args.checkpoints, args.work, names)}
    return {"saved": builder.save_md_checkpoints(args.work, args.checkpoints, names)}


def _summary(args, plan, out: Path) -> dict:
    """Per-case table, MD drift rows and per-set pressures."""
    from ..reference.checks import set_pressures, summary_table

    rows = summary_table(out)
    return {"cases": rows, "md": _md_rows(plan, Path(args.work)), "sets": set_pressures(rows)}


_ACTIONS = {"list": _list, "md": _md, "build": _build, "converge": _converge, "qe": _qe,
            "replicas": _replicas, "checkpoint": _checkpoint, "summary": _summary}


def run(args: argparse.Namespace) -> dict:
    """Do ``args.action``; its result as a dict (see :func:`render` for the readable form)."""
    from ..errors import DFTError
    from ..reference import builder

    action = _ACTIONS.get(args.action)
    if action is None:  # pragma: no cover - argparse restricts the choices
        raise DFTError(f"unknown action {args.action}")
    return action(args, builder.ReferencePlan(), Path(args.out))


def _summary_text(res: dict) -> str:
    rows, md, sets = res["cases"], res["md"], res["sets"]
    parts = [_markdown(rows)]
    large = [r for r in rows if np.isfinite(r.get("replica_sk_ratio", float("nan")))]
    if large:
        parts.append(_large_markdown(large))
    if md:
        parts.append(_md_markdown(md))
    if sets:
        parts.append(_sets_markdown(sets))
    return "\n\n".join(parts)


def _replicas_text(res: dict) -> str:
    from ..reference.decorrelation import REPLICA_RATIO_MAX

    text = (f"S(k) at the small cell's reciprocal vectors / same |k| elsewhere "
            f"(fluid: ~1, accepted <= {REPLICA_RATIO_MAX})\n")
    return text + _table(["MD", "t (fs)", "S(k) ratio", "decorrelated"],
                         [[r["md"], f"{r['time_fs']:g}", f"{r['sk_ratio']:.3g}", "yes" if r["decorrelated"] else "no"]
                          for r in res["replicas"]])


def _checkpoint_text(res: dict) -> str:
    ((verb, rows),) = res.items()
    return "\n".join(f"{r['name']}: {verb} up to {r['time_fs']:g} fs" for r in rows) or "nothing to do"


def render(res: dict, args: argparse.Namespace) -> str:
    """The readable form of each action's result (tables as markdown)."""
    action = args.action
    if action == "list":
        return "\n".join(f"{r['name']:22s} {r['family']:19s} {r['role']:6s} {'done' if r['done'] else '-'}"
                         for r in res["cases"])
    if action == "md":
        return "\n".join(f"{d['name']}: {d['dir']}" for d in res["md"])
    if action == "build":
        return f"written: {len(res['written'])}, skipped (already done): {len(res['skipped'])}"
    if action == "replicas":
        return _replicas_text(res)
    if action == "checkpoint":
        return _checkpoint_text(res)
    if action == "summary":
        return _summary_text(res)
    return "\n".join(f"{k}: {v}" for k, v in res.items())  # converge, qe


def _md_rows(plan, work: Path) -> list[dict]:
    """Per MD and time-step segment: conserved-quantity drift and temperature (``md_drift``)."""
    from ..reference.checks import md_drift

    rows = []
    for target in plan.all_fluids:
        md_dir = work / "md" / target.name
        if not (md_dir / "md-1.ener").exists():
            continue
        natoms = 8 * plan.repeat**3 * target.replicas**3  # fcc H2 start: 4 molecules per conventional cell
        d = md_drift(md_dir, natoms)
        for seg in d["segments"]:
            rows.append({"md": target.name, "volume_per_atom": target.volume_per_atom, **seg})
    return rows


def _table(head: list[str], rows: list[list]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in cells) + " |" for cells in rows]
    return "\n".join(lines)


def _md_markdown(rows: list[dict]) -> str:
    head = ["MD", "V (Å³/atom)", "time step (fs)", "from–to (fs)", "steps", "drift (meV/atom/ps)",
            "fluctuation (meV/atom)", "T (K)", "s per step"]
    return _table(head, [
        [r["md"], f"{r['volume_per_atom']:.2f}", f"{r['timestep_fs']:g}", f"{r['start_fs']:.0f}–{r['time_fs']:.0f}",
         r["steps"], f"{r['drift_mev_per_atom_per_ps']:.0f}", f"{r['std_mev_per_atom']:.1f}",
         f"{r['mean_temperature_k']:.0f} ± {r['std_temperature_k']:.0f}", f"{r['mean_s_per_step']:.1f}"]
        for r in rows
    ])


def _sets_markdown(sets: list[dict]) -> str:
    """One line per fluid set: mean ± stdev pressure against the target (±10 % criterion)."""
    lines = ["Pressure of each fluid set (mean ± stdev over its snapshots, training snapshot included):", ""]
    for s in sets:
        lines.append(
            f"- {s['target_gpa']:g} GPa: {s['n']} snapshots{_atoms_note(s)}, "
            f"P = {s['mean_gpa']:.1f} ± {s['std_gpa']:.1f} GPa "
            f"({100 * s['deviation']:+.1f} % of the target, {'within' if s['within'] else 'outside'} ±10 %; "
            f"snapshots {s['min_gpa']:.1f}–{s['max_gpa']:.1f}), T = {s['temperature_k']:.0f} ± "
            f"{s['temperature_std_k']:.0f} K"
        )
    return "\n".join(lines)


def _atoms_note(s: dict) -> str:
    return f" of {s['natoms']} atoms" if s.get("natoms") else ""


def _markdown(rows: list[dict]) -> str:
    head = ["case", "family", "role", "atoms", "V (Å³/atom)", "P (GPa)", "P_static", "P_kin", "T (K)", "grid",
            "CPU (s)"]
    return _table(head, [
        [r["name"], r["family"], r["role"], r["natoms"], f"{r['volume_per_atom']:.3f}", f"{r['pressure_gpa']:.1f}",
         f"{r['pressure_static_gpa']:.1f}", f"{r['pressure_kinetic_gpa']:.1f}", f"{r['temperature_k']:.0f}",
         "×".join(map(str, r["grid"])), f"{r['cpu_time_s']:.0f}"]
        for r in rows
    ])


def _large_markdown(rows: list[dict]) -> str:
    """Large replicated cells: decorrelation and g(r) checks next to the pressure."""
    from ..reference.decorrelation import RDF_RMS_MAX, REPLICA_RATIO_MAX

    head = ["case", "atoms", "t (fs)", "P (GPa)", "target (GPa)", "P within ±10 %",
            f"S(k) ratio (≤ {REPLICA_RATIO_MAX:g})", f"g(r) RMS vs 64-atom MD (≤ {RDF_RMS_MAX:g})"]
    return _table(head, [
        [r["name"], r["natoms"], f"{r['time_fs']:g}", f"{r['pressure_gpa']:.1f}", f"{r['target_pressure_gpa']:g}",
         "yes" if abs(r["pressure_gpa"] / r["target_pressure_gpa"] - 1) <= 0.10 else "no",
         f"{r['replica_sk_ratio']:.2f}", f"{r['rdf_rms_vs_source']:.3f}"]
        for r in rows
    ])
