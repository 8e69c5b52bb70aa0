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
import json
import logging
import sys
from pathlib import Path

import numpy as np

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def _print(args, obj: dict, text: str) -> None:
    if args.json:
        print(json.dumps(obj, default=str))
    else:
        print(text)


def run(args) -> int:
    from ..errors import DFTError
    from ..reference import builder

    plan = builder.ReferencePlan()
    out = Path(args.out)
    if args.action == "list":
        rows = []
        for spec in builder.plan_cases(plan):
            rows.append({"name": spec.name, "family": spec.family, "role": spec.role,
                         "done": (out / f"{spec.name}.nc").exists()})
        text = "\n".join(
            f"{r['name']:22s} {r['family']:19s} {r['role']:6s} {'done' if r['done'] else '-'}" for r in rows
        )
        _print(args, {"cases": rows}, text)
        return 0
    if args.action == "md":
        wanted = args.cases or [t.name for t in plan.fluids]
        done = []
        for target in plan.all_fluids:
            keys = {target.name}
            if not target.tag:  # a bare pressure names the 64-atom MD; large cells go by name
                keys |= {f"{target.pressure_gpa:g}", str(int(round(target.pressure_gpa)))}
            if keys & set(wanted):
                if args.cont:
                    md_dir = builder.continue_md(plan, target, args.work, executable=args.cp2k, threads=args.threads,
                                                 ranks=args.ranks)
                else:
                    md_dir = builder.run_md(plan, target, args.work, executable=args.cp2k, threads=args.threads,
                                            ranks=args.ranks)
                done.append({"name": target.name, "dir": str(md_dir)})
        if not done:
            raise DFTError(f"no fluid target matches {wanted}; targets: {[t.name for t in plan.fluids]}")
        _print(args, {"md": done}, "\n".join(f"{d['name']}: {d['dir']}" for d in done))
        return 0
    if args.action == "build":
        res = builder.build(plan, out, args.work, only=args.cases or None, executable=args.cp2k,
                            threads=args.threads, ranks=args.ranks, progress=not args.no_progress)
        _print(args, res, f"written: {len(res['written'])}, skipped (already done): {len(res['skipped'])}")
        return 0
    if args.action == "converge":
        from ..reference.checks import convergence_check

        if len(args.cases) != 1:
            raise DFTError("converge needs exactly one case name")
        res = convergence_check(plan, args.cases[0], args.work, executable=args.cp2k, threads=args.threads)
        text = "\n".join(f"{k}: {v}" for k, v in res.items())
        _print(args, res, text)
        return 0
    if args.action == "qe":
        from ..reference.qe import cross_check

        if len(args.cases) != 1:
            raise DFTError("qe needs exactly one case name")
        name = args.cases[0]
        case = out / f"{name}.nc"
        if not case.exists():
            # the structure of the base run of `elfcore reference converge NAME`
            from ..reference.qe import case_from_run

            run_dir = Path(args.work) / "converge" / name / "base"
            if not (run_dir / "sp.out").exists():
                raise DFTError(f"no case file {case} and no converge run {run_dir}")
            case = case_from_run(run_dir, name=name, settings=plan.elf_dft)
        res = cross_check(case, Path(args.work) / "qe" / name, threads=args.threads)
        text = "\n".join(f"{k}: {v}" for k, v in res.items())
        _print(args, res, text)
        return 0
    if args.action == "replicas":
        from ..reference.decorrelation import REPLICA_RATIO_MAX, replica_decorrelation

        names = args.cases or [t.name for t in plan.large_fluids]
        result = []
        for name in names:
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
        text = (f"S(k) at the small cell's reciprocal vectors / same |k| elsewhere "
                f"(fluid: ~1, accepted <= {REPLICA_RATIO_MAX})\n")
        text += _table(["MD", "t (fs)", "S(k) ratio", "decorrelated"],
                       [[r["md"], f"{r['time_fs']:g}", f"{r['sk_ratio']:.3g}", "yes" if r["decorrelated"] else "no"]
                        for r in result])
        _print(args, {"replicas": result}, text)
        return 0
    if args.action == "checkpoint":
        names = args.cases or [t.name for t in plan.all_fluids]
        for name in names:
            plan.fluid(name)  # unknown names are refused
        if args.restore:
            res = builder.restore_md_checkpoints(args.checkpoints, args.work, names)
            verb = "restored"
        else:
            res = builder.save_md_checkpoints(args.work, args.checkpoints, names)
            verb = "saved"
        text = "\n".join(f"{r['name']}: {verb} up to {r['time_fs']:g} fs" for r in res) or "nothing to do"
        _print(args, {verb: res}, text)
        return 0
    if args.action == "summary":
        from ..reference.checks import set_pressures, summary_table

        rows = summary_table(out)
        md = _md_rows(plan, Path(args.work))
        sets = set_pressures(rows)
        if args.json:
            print(json.dumps({"cases": rows, "md": md, "sets": sets}, default=str))
        else:
            print(_markdown(rows))
            large = [r for r in rows if np.isfinite(r.get("replica_sk_ratio", float("nan")))]
            if large:
                print()
                print(_large_markdown(large))
            if md:
                print()
                print(_md_markdown(md))
            if sets:
                print()
                print(_sets_markdown(sets))
        return 0
    raise DFTError(f"unknown action {args.action}")  # pragma: no cover


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
