"""Checks of the reference data: settings convergence, MD energy drift, per-case summary.

All error metrics compare two ELF fields of the same structure; a field on a
different grid is first sampled at the reference grid points by periodic cubic
B-spline interpolation (:func:`elfcore.grid.interpolate`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import DFTError

__all__ = ["field_errors", "convergence_check", "md_drift", "md_force_check", "summary_table"]

log = logging.getLogger(__name__)


def field_errors(ref, other) -> dict:
    """MAE, RMSE, max |Δ| and R² of ``other`` against ``ref``.

    Parameters
    ----------
    ref, other : xarray.DataArray
        Fields of the same cell; ``other`` is interpolated onto ``ref``'s grid when
        the shapes differ.

    Returns
    -------
    dict
        ``mae``, ``rmse``, ``max_abs``, ``r2``, ``grid_ref``, ``grid_other``.
    """
    from ..grid import grid_points_cart, interpolate

    a = np.asarray(ref.values, dtype=np.float64)
    if other.shape == ref.shape:
        b = np.asarray(other.values, dtype=np.float64)
    else:
        b = interpolate(other, grid_points_cart(ref).reshape(-1, 3), order=3).reshape(a.shape)
    d = b - a
    ss_res = float(np.sum(d**2))
    ss_tot = float(np.sum((a - a.mean()) ** 2))
    return {
        "mae": float(np.mean(np.abs(d))),
        "rmse": float(np.sqrt(np.mean(d**2))),
        "max_abs": float(np.max(np.abs(d))),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "grid_ref": list(ref.shape),
        "grid_other": list(other.shape),
    }


def convergence_check(
    plan,
    case_name: str,
    work_dir: str | os.PathLike,
    *,
    cutoff_up: dict | None = None,
    basis_up: str = "TZV2P-MOLOPT-PBE-GTH-q1",
    executable: str | None = None,
    threads: int = 2,
) -> dict:
    """ELF and pressure of one structure at the plan's ELF settings and one step up.

    Runs three single points in ``work_dir/converge/<case>/``: the plan's ELF
    settings (``base``), a higher cutoff and tighter thresholds (``cutoff``; default
    400 Ry, REL_CUTOFF 50, EPS_DEFAULT 1e-10, EPS_SCF 1e-7) and a larger basis
    (``basis``: ``basis_up`` at the base cutoff; the default TZVP-MOLOPT-PBE-GTH-q1 of
    ``BASIS_MOLOPT_UZH`` is one zeta step above DZVP-MOLOPT-SR-GTH and, unlike
    TZVP-MOLOPT-GTH, has no very diffuse primitive), and compares the ELFs. A run
    folder whose input is identical and whose output is complete is reused.

    Parameters
    ----------
    case_name : str
        A case of the plan, or ``<fluid target>_start`` (e.g. ``fluid_p115_start``)
        for the fcc starting structure of that target's MD.

    Returns
    -------
    dict
        ``case``, ``base`` (settings, pressure, CPU time, grid), and for ``cutoff`` and
        ``basis`` the same plus the :func:`field_errors` numbers against ``base``.
    """
    from . import builder
    from . import cp2k as _cp2k
    from .structures import fluid_start
    from ..io import read_field

    specs = {s.name: s for s in builder.plan_cases(plan)}
    starts = {f"{t.name}_start": t for t in plan.fluids}
    base_inp = Path(work_dir) / "converge" / case_name / "base" / "sp.inp"
    if case_name in starts and base_inp.exists():
        # keep the structure of an existing check (the plan's volume may have changed since)
        atoms = _cp2k.read_input_structure(base_inp)
    elif case_name in starts:
        t = starts[case_name]
        atoms = fluid_start(t.volume_per_atom, repeat=plan.repeat, seed=t.seed)
    elif case_name in specs:
        atoms, _ = builder.case_structure(specs[case_name], plan, work_dir, executable=executable,
                                          threads=threads)
    else:
        raise DFTError(f"unknown case {case_name!r}; use a case of the plan or one of {sorted(starts)}")
    up = dict(cutoff_ry=400.0, rel_cutoff_ry=50.0)
    up.update(cutoff_up or {})
    variants = {
        "base": plan.elf_dft,
        "cutoff": dataclasses.replace(plan.elf_dft, **up),
        "basis": dataclasses.replace(plan.elf_dft, basis=basis_up),
    }
    fields, info = {}, {}
    for key, settings in variants.items():
        run_dir = Path(work_dir) / "converge" / case_name / key
        text = _cp2k.single_point_input(atoms, settings, project="sp")
        out = run_dir / "sp.out"
        reuse = (out.exists() and (run_dir / "sp.inp").exists() and (run_dir / "sp.inp").read_text() == text
                 and "PROGRAM ENDED AT" in out.read_text(errors="replace"))
        if not reuse:
            out = _cp2k.run_cp2k(text, run_dir, case=f"{case_name}/{key}", project="sp",
                                 executable=executable, threads=threads)
        res = _cp2k.parse_output(out)
        cube = sorted(run_dir.glob("sp-ELF*.cube"))
        if not cube:
            raise DFTError(f"case {case_name}/{key}: no ELF cube; see {out}")
        fields[key] = read_field(cube[0], format="cube", name="elf")
        info[key] = {"settings": settings.to_dict(), "pressure_static_gpa": res["pressure_gpa"],
                     "cp2k_time_s": res["wall_s"], "scf_steps": res["scf_steps"][-1] if res["scf_steps"] else None,
                     "grid": list(fields[key].shape), "energy_ha_per_atom": res["energy_ha"] / len(atoms)}
    result = {"case": case_name, "natoms": len(atoms), "base": info["base"]}
    for key in ("cutoff", "basis"):
        result[key] = {**info[key], **field_errors(fields["base"], fields[key])}
    return result


def _drift_stats(e: np.ndarray, natoms: int) -> dict:
    from .cp2k import HARTREE_EV

    t = e[:, 1]
    cons = e[:, 5] * HARTREE_EV * 1000.0 / natoms
    if len(t) >= 2:
        slope, icpt = np.polyfit(t, cons, 1)
        resid = cons - (slope * t + icpt)
    else:
        slope, resid = float("nan"), np.zeros(1)
    moving = e[1:]  # the first row is the start point (step 0, or the last step of the previous segment)
    return {
        "steps": int(len(e) - 1) if len(e) else 0,
        "start_fs": float(t[0]),
        "time_fs": float(t[-1]),
        "drift_mev_per_atom_per_ps": float(slope * 1000.0),
        "std_mev_per_atom": float(resid.std()),
        "mean_temperature_k": float(moving[:, 3].mean()) if len(moving) else float("nan"),
        "std_temperature_k": float(moving[:, 3].std()) if len(moving) else float("nan"),
        "mean_s_per_step": float(moving[:, 6].mean()) if len(moving) else float("nan"),
    }


def md_drift(md_dir: str | os.PathLike, natoms: int) -> dict:
    """Drift and fluctuation of the MD's conserved quantity, whole run and per time-step segment.

    Returns
    -------
    dict
        Over the whole run: ``steps`` (last step number), ``time_fs``,
        ``drift_mev_per_atom_per_ps`` (slope of a linear fit), ``std_mev_per_atom``
        (fluctuation around the fit), ``mean_temperature_k``, ``std_temperature_k``,
        ``mean_s_per_step``; and ``segments``: the same statistics for each stretch of
        constant time step (``timestep_fs``, ``start_fs``, ``time_fs``, ``steps`` = steps
        in the segment), e.g. the 1 fs equilibration and the 0.5 fs production.
    """
    from .cp2k import read_ener

    e = read_ener(Path(md_dir) / "md-1.ener", unique_steps=True)
    whole = _drift_stats(e, natoms)
    whole["steps"] = int(e[-1, 0])
    dts = np.round(np.diff(e[:, 1]), 6)
    segments = []
    start = 0
    for i in range(1, len(dts) + 1):
        if i == len(dts) or dts[i] != dts[start]:
            seg = _drift_stats(e[start : i + 1], natoms)
            seg["timestep_fs"] = float(dts[start])
            segments.append(seg)
            start = i
    whole["segments"] = segments
    return whole


def md_force_check(md_out: str | os.PathLike, sp_out: str | os.PathLike) -> dict:
    """Forces of the MD settings against the ELF settings on the same structure.

    Both arguments are CP2K single-point outputs with printed forces.

    Returns
    -------
    dict
        ``rmse_ev_a``, ``rms_force_ev_a`` (of the reference), ``relative``.
    """
    from .cp2k import parse_output

    a = parse_output(sp_out)["forces_ev_a"]
    b = parse_output(md_out)["forces_ev_a"]
    if a is None or b is None or a.shape != b.shape:
        raise DFTError(f"no comparable forces in {md_out} and {sp_out}")
    rmse = float(np.sqrt(np.mean((a - b) ** 2)))
    rms = float(np.sqrt(np.mean(a**2)))
    return {"rmse_ev_a": rmse, "rms_force_ev_a": rms, "relative": rmse / rms}


def summary_table(out_dir: str | os.PathLike) -> list[dict]:
    """One row per case file in ``out_dir`` (sorted by name).

    Keys: ``name, family, role, natoms, volume_per_atom, pressure_gpa,
    pressure_static_gpa, pressure_kinetic_gpa, temperature_k, grid, cpu_time_s,
    md_step, target_pressure_gpa, time_fs, replica_sk_ratio, rdf_rms_vs_source`` (the
    last two only for replicated large cells, NaN otherwise) and ``size_mb``.
    """
    from ..io import read_case

    rows = []
    for path in sorted(Path(out_dir).glob("*.nc")):
        ds = read_case(path)
        a = ds.attrs
        rows.append({
            "name": path.stem,
            "family": a.get("family"),
            "role": a.get("role"),
            "natoms": int(a.get("natoms", ds.sizes["atom"])),
            "volume_per_atom": float(a.get("volume_per_atom", float("nan"))),
            "pressure_gpa": float(a.get("pressure_gpa", float("nan"))),
            "pressure_static_gpa": float(a.get("pressure_static_gpa", float("nan"))),
            "pressure_kinetic_gpa": float(a.get("pressure_kinetic_gpa", float("nan"))),
            "temperature_k": float(a.get("temperature_k", float("nan"))),
            "grid": [int(ds.sizes[d]) for d in ("a", "b", "c")],
            "cpu_time_s": float(a.get("cpu_time_s", float("nan"))),
            "md_step": a.get("md_step"),
            "target_pressure_gpa": float(a.get("target_pressure_gpa", float("nan"))),
            "time_fs": float(a.get("time_fs", float("nan"))),
            "replica_sk_ratio": float(a.get("replica_sk_ratio", float("nan"))),
            "rdf_rms_vs_source": float(a.get("rdf_rms_vs_source", float("nan"))),
            "size_mb": path.stat().st_size / 2**20,
        })
    return rows


def set_pressures(rows: list[dict], tolerance: float = 0.10) -> list[dict]:
    """Pressure of each fluid set (cases sharing a target pressure and cell size) against its target.

    Parameters
    ----------
    rows : list of dict
        Rows of :func:`summary_table`.
    tolerance : float
        Allowed relative deviation of the set mean from the target.

    Returns
    -------
    list of dict
        Per target and cell size (ascending): ``target_gpa``, ``natoms``, ``n``, ``mean_gpa``, ``std_gpa``, ``min_gpa``,
        ``max_gpa``, ``deviation`` (relative, of the mean), ``within`` (bool),
        ``temperature_k`` and ``temperature_std_k``.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        t = r.get("target_pressure_gpa", float("nan"))
        if r.get("family") == "fluid" and np.isfinite(t):
            groups.setdefault((float(t), int(r.get("natoms", 0))), []).append(r)
    out = []
    for (target, natoms), rs in sorted(groups.items()):
        p = np.array([r["pressure_gpa"] for r in rs])
        temp = np.array([r["temperature_k"] for r in rs])
        dev = float(p.mean() / target - 1.0)
        out.append({
            "target_gpa": target, "natoms": natoms, "n": len(rs), "mean_gpa": float(p.mean()), "std_gpa": float(p.std(ddof=1)) if len(p) > 1 else 0.0,
            "min_gpa": float(p.min()), "max_gpa": float(p.max()), "deviation": dev, "within": abs(dev) <= tolerance,
            "temperature_k": float(temp.mean()), "temperature_std_k": float(temp.std(ddof=1)) if len(temp) > 1 else 0.0,
        })
    return out
