"""The runs behind ``elfcore reproduce``: ensemble, tables, sweeps, CNN, k-correction.

Every number is computed here from the shipped cases; nothing is typed in. The
functions return plain JSON-able dicts (numbers) plus, where a figure needs
them, numpy arrays kept in a separate ``arrays`` dict.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import xarray as xr

from ..descriptor import DescriptorSettings, compute_grid_descriptor
from ..errors import ElfcoreError
from ..settings import plain
from ..grid import field_atoms, field_cell, make_field
from ..reference import PAPER_PRESSURES_GPA
from ..train import TrainSettings, metrics, sample_voxels, train_model
from .settings import ReproduceSettings

__all__ = [
    "Case",
    "load_cases",
    "split_cases",
    "stride_field",
    "member_stats",
    "training_samples",
    "predict_members",
    "run_baseline",
    "run_sweeps",
    "run_cnn",
    "run_kcorrection",
    "run_large_cells",
    "LARGE_CELL_ATOMS",
]

log = logging.getLogger(__name__)

FAMILIES = ("cubic", "hexagonal")


# --------------------------------------------------------------------------- cases
@dataclass(eq=False)
class Case:
    """One reference case (a netCDF file of ``assets/data``).

    Attributes
    ----------
    name : str
        File stem.
    field : xarray.DataArray
        Reference ELF (``elf_ref``) carrying the structure and the case attrs.
    family : str
        ``"fluid"``, ``"cubic"``, ``"hexagonal"`` (attr ``family``; ``"unknown"`` if absent).
    role : str
        ``"train"`` or ``"test"`` (attr ``role``; ``"unknown"`` if absent).
    pressure : float or None
        ``pressure_gpa`` attr.
    md_step : int or None
        ``md_step`` attr.
    target_pressure : float or None
        ``target_pressure_gpa`` attr (the MD's target; snapshots of one MD share it),
        else ``pressure``.
    """

    name: str
    field: xr.DataArray
    family: str = "unknown"
    role: str = "unknown"
    pressure: float | None = None
    md_step: int | None = None
    target_pressure: float | None = None

    def __post_init__(self) -> None:
        if self.target_pressure is None:
            self.target_pressure = self.pressure

    @property
    def n_atoms(self) -> int:
        """Number of atoms of the case's structure."""
        return int(np.asarray(self.field.attrs.get("positions", np.zeros((0, 3)))).reshape(-1, 3).shape[0])

    def describe(self) -> dict[str, Any]:
        """Name, family, role, pressures, MD step, atoms and grid (JSON-ready)."""
        return {
            "name": self.name,
            "family": self.family,
            "role": self.role,
            "pressure_gpa": self.pressure,
            "md_step": self.md_step,
            "target_pressure_gpa": self.target_pressure,
            "n_atoms": self.n_atoms,
            "grid": list(self.field.shape),
        }


def load_cases(paths: Sequence[str | Path]) -> list[Case]:
    """Read reference cases (netCDF case files, or any field file with atoms).

    Returns
    -------
    list of Case
        Sorted by (family, target pressure, md_step, name).
    """
    from ..train import load_reference

    cases = []
    for p in paths:
        name, field = load_reference(p)
        a = field.attrs
        pressure = plain(a.get("pressure_gpa"))
        target = plain(a.get("target_pressure_gpa"))
        md = plain(a.get("md_step"))
        cases.append(Case(
            name=name,
            field=field,
            family=str(plain(a.get("family", "unknown"))),
            role=str(plain(a.get("role", "unknown"))),
            pressure=None if pressure is None or not np.isfinite(float(pressure)) else float(pressure),
            md_step=None if md is None else int(md),
            target_pressure=None if target is None or not np.isfinite(float(target)) else float(target),
        ))
    if not cases:
        raise ElfcoreError("no reference cases found")
    cases.sort(key=lambda c: (c.family, c.target_pressure if c.target_pressure is not None else -1.0,
                              c.md_step or 0, c.name))
    return cases


#: fluid cells with at least this many atoms are "large cells", kept out of the paper-protocol sets
LARGE_CELL_ATOMS = 500


def split_cases(cases: Sequence[Case], pressures: Sequence[float] | None = PAPER_PRESSURES_GPA) -> dict[str, Any]:
    """Group cases into the paper's sets.

    Parameters
    ----------
    cases : sequence of Case
    pressures : sequence of float, optional
        Keep only the fluid MDs whose target pressure is one of these (default: the
        paper's three; a note names the MDs left out). ``None``, or no fluid case at any of
        them, keeps every fluid case.

    Returns
    -------
    dict
        ``train`` (fluid snapshots with role "train"; if there are none, the first
        case), ``test`` (fluid snapshots with role "test"), both of cells below
        :data:`LARGE_CELL_ATOMS` atoms (the paper's protocol); ``large_train`` and
        ``large_test`` (the large fluid cells, kept apart), ``cubic``, ``hexagonal``
        (random crystals), ``shown`` (one snapshot per pressure for the figures: the
        first independent snapshot, else the training snapshot) and ``notes``.
    """
    notes = []
    cases = _at_pressures(cases, pressures, notes)
    large = [c for c in cases if c.family == "fluid" and c.n_atoms >= LARGE_CELL_ATOMS]
    fluid = [c for c in cases if c.family == "fluid" and c.n_atoms < LARGE_CELL_ATOMS]
    train = [c for c in fluid if c.role == "train"]
    if not train:
        train = [c for c in cases if c.role == "train"] or [cases[0]]
        notes.append(f"no fluid case has role 'train'; training on {[c.name for c in train]}")
    train_names = {c.name for c in train}
    test = [c for c in fluid if c.role == "test" and c.name not in train_names]
    out = {"train": train, "test": test, "notes": notes,
           "large_train": [c for c in large if c.role == "train"], "large_test": [c for c in large if c.role == "test"]}
    for fam in FAMILIES:
        out[fam] = [c for c in cases if c.family == fam and c.name not in train_names]
    shown: dict[Any, Case] = {}
    for c in test + train:
        key = c.target_pressure if c.target_pressure is not None else c.name
        shown.setdefault(key, c)
    out["shown"] = [shown[k] for k in sorted(shown, key=lambda k: (isinstance(k, str), k))]
    return out


def _at_pressures(cases: Sequence[Case], pressures: Sequence[float] | None, notes: list[str]) -> list[Case]:
    """``cases`` without the fluid MDs at other target pressures (see :func:`split_cases`)."""
    if pressures is None:
        return list(cases)

    def wanted(c: Case) -> bool:
        return c.target_pressure is not None and any(abs(c.target_pressure - p) < 0.05 for p in pressures)

    fluid = [c for c in cases if c.family == "fluid"]
    if not any(wanted(c) for c in fluid):
        return list(cases)
    left = sorted({c.target_pressure for c in fluid if not wanted(c)}, key=lambda p: (p is None, p or 0.0))
    if left:
        notes.append("fluid MDs at " + ", ".join("?" if p is None else f"{p:g}" for p in left)
                     + " GPa left out: the paper's protocol uses its pressures "
                     + ", ".join(f"{p:g}" for p in pressures) + " GPa (--all-pressures keeps them).")
    return [c for c in cases if c.family != "fluid" or wanted(c)]


def _divisor_stride(n: int, stride: int) -> int:
    return max(d for d in range(1, max(1, stride) + 1) if n % d == 0)


def stride_field(field: xr.DataArray, stride: int) -> xr.DataArray:
    """The sub-lattice field of every ``stride``-th grid point along each axis.

    Per axis the stride is the largest divisor of the grid size that is ≤ ``stride``,
    so the sub-lattice points are exactly grid points of ``field`` (no interpolation).
    """
    if stride <= 1:
        return field
    s = [_divisor_stride(n, stride) for n in field.shape]
    vals = np.asarray(field.values)[:: s[0], :: s[1], :: s[2]]
    attrs = {k: v for k, v in field.attrs.items() if k not in ("cell", "positions", "numbers")}
    return make_field(vals, field_cell(field), field.attrs["positions"], field.attrs["numbers"],
                      name=str(field.name), attrs=attrs)


# --------------------------------------------------------------------------- helpers
def member_stats(pred: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """Metrics of every member and their mean ± standard deviation.

    Parameters
    ----------
    pred : numpy.ndarray, shape (n_members, n)
    ref : numpy.ndarray, shape (n,)

    Returns
    -------
    dict
        ``mae``, ``rmse``, ``r2`` (member means), ``mae_std``, ``rmse_std``, ``r2_std``
        (sample standard deviation over members; 0 for one member), ``ensemble``
        (metrics of the member-mean prediction), ``n`` and ``n_members``.
    """
    pred = np.atleast_2d(np.asarray(pred, dtype=np.float64))
    per = [metrics(p, ref) for p in pred]
    out: dict[str, Any] = {"n": int(per[0]["n_voxels"]), "n_members": len(per)}
    for k in ("mae", "rmse", "r2"):
        v = np.array([m[k] for m in per])
        out[k] = float(v.mean())
        out[f"{k}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    out["ensemble"] = {k: v for k, v in metrics(pred.mean(0), ref).items() if k != "n_voxels"}
    return out


def _eval_voxels(pm: np.ndarray, field: xr.DataArray, stride: int) -> tuple[np.ndarray, np.ndarray, tuple]:
    """(member predictions, reference) flattened on the metric sub-lattice (:func:`stride_field`) of member
    predictions ``pm`` made on ``field``'s grid, and the sub-lattice's shape."""
    ev = stride_field(field, stride)
    sa = [n_f // n_e for n_f, n_e in zip(field.shape, ev.shape)]
    pe = pm[:, :: sa[0], :: sa[1], :: sa[2]].reshape(pm.shape[0], -1)
    return pe, np.asarray(ev.values, dtype=np.float64).reshape(-1), ev.shape


def _pressure_groups(cases: Sequence[Case]) -> dict[Any, list[Case]]:
    """Cases by target pressure (one MD each), in order of first appearance."""
    groups: dict[Any, list[Case]] = {}
    for c in cases:
        groups.setdefault(c.target_pressure, []).append(c)
    return groups


def _grid_descriptor(field: xr.DataArray, settings: DescriptorSettings, device) -> torch.Tensor:
    return compute_grid_descriptor(field_atoms(field), field.shape, settings, device=device, dtype=torch.float32)


def training_samples(
    cases: Sequence[Case],
    settings: DescriptorSettings,
    n_voxels: int,
    *,
    seed: int,
    stride: int = 1,
    device: str | torch.device = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Descriptors and ELF of random voxels of each training case.

    Voxels of case ``i`` are those :func:`elfcore.train.sample_voxels` draws with
    seed ``seed + 1000 i`` (the protocol of :func:`elfcore.train.train_on_fields`) on
    the (sub-lattice) grid; descriptors come from the exact FFT grid path.
    """
    Xs, ys = [], []
    for i, c in enumerate(cases):
        f = stride_field(c.field, stride)
        idx = sample_voxels(f.shape, n_voxels, seed=seed + 1000 * i)
        X = _grid_descriptor(f, settings, device)[idx.to(torch.long)].cpu()
        Xs.append(X)
        ys.append(torch.as_tensor(np.asarray(f.values, dtype=np.float32).reshape(-1)[idx.numpy()]))
    return torch.cat(Xs), torch.cat(ys)


@torch.no_grad()
def predict_members(model: torch.nn.Module, field: xr.DataArray, *, device: str | torch.device = "auto") -> np.ndarray:
    """Member predictions of an MLP/Ensemble on every voxel of ``field``'s grid.

    Returns
    -------
    numpy.ndarray, shape (n_members, Na, Nb, Nc), float32
    """
    from ..predict import predict_grid

    dev = next(model.parameters()).device
    n_out = int(getattr(model, "n_members", 1))

    def evaluate(feats: torch.Tensor) -> torch.Tensor:
        return model(feats.to(dev))

    out = predict_grid(field_atoms(field), field.shape, model.descriptor_settings, evaluate,
                       n_outputs=n_out, device=device)
    return out.numpy()


def _pred_field(values: np.ndarray, ref: xr.DataArray, name: str = "elf_pred") -> xr.DataArray:
    attrs = {k: v for k, v in ref.attrs.items() if k not in ("cell", "positions", "numbers")}
    return make_field(np.clip(values, 0.0, 1.0), field_cell(ref), ref.attrs["positions"],
                      ref.attrs["numbers"], name=name, attrs=attrs)


def _networking_value(field: xr.DataArray) -> float | None:
    from ..topology import networking_value

    v = networking_value(field)
    return None if v is None else float(v)


# --------------------------------------------------------------------------- baseline
def run_baseline(split: dict, s: ReproduceSettings, *, device: str | torch.device = "auto") -> tuple[dict, dict]:
    """Train the baseline ensemble and evaluate it everywhere (Tables S1, S2).

    Returns
    -------
    results : dict
        ``train`` (training data description), ``cases`` (per-case member stats),
        ``table_s1`` rows, ``table_s2`` rows, ``seconds``.
    arrays : dict
        ``model`` (the ensemble), ``shown`` {case name: member-mean full-grid
        prediction (Na, Nb, Nc)}, ``eval`` {case name: (member preds, ref)} on the
        metric voxels.
    """
    t0 = time.perf_counter()
    train_cases = split["train"]
    X, y = training_samples(train_cases, s.descriptor, s.train.n_voxels, seed=s.seed, device=device)
    log.info("baseline: %d training voxels from %d snapshots", len(y), len(train_cases))
    model = train_model(X, y, s.descriptor, s.train, seed=s.seed, n_members=s.n_members,
                        device=device, progress=False)
    t_train = time.perf_counter() - t0
    del X, y
    shown_names = {c.name for c in split["shown"]}
    crystals = {c.name for fam in FAMILIES for c in split[fam]}
    cases = _unique(split["train"] + split["test"] + split["cubic"] + split["hexagonal"] + split["shown"])
    per_case: dict[str, dict] = {}
    arrays: dict[str, Any] = {"model": model, "shown": {}, "eval": {}, "members_full": {}}
    phi: dict[str, dict] = {}
    for c in cases:
        full = c.name in shown_names or c.name in crystals
        f = c.field if full else stride_field(c.field, s.eval_stride)
        pm = predict_members(model, f, device=device)
        pe, ref, eval_grid = _eval_voxels(pm, f, s.eval_stride if full else 1)
        arrays["eval"][c.name] = (pe, ref)
        per_case[c.name] = {**c.describe(), **member_stats(pe, ref), "eval_grid": list(eval_grid)}
        if c.name in shown_names:
            arrays["shown"][c.name] = pm.mean(0)
        if full and (c.name in crystals or c.name in shown_names):
            phi[c.name] = _case_phi(c, pm, s.phi_members)
        log.info("evaluated %s (%s): R² %.4f", c.name, c.family, per_case[c.name]["r2"])

    rows_s1 = _table_s1_rows(split, arrays["eval"], phi)
    rows_s2 = _table_s2_rows(split, per_case, arrays["eval"])
    results = {
        "train": {
            "cases": [c.describe() for c in train_cases],
            "n_voxels_per_case": s.train.n_voxels,
            "n_members": s.n_members,
            "train_seconds": round(t_train, 1),
            "final_validation": {k: v for k, v in (model.metadata.get("history") or [{}])[-1].items()},
        },
        "cases": per_case,
        "phi": phi,
        "table_s1": rows_s1,
        "table_s2": rows_s2,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return results, arrays


def _case_phi(c: Case, pm: np.ndarray, n_members: int) -> dict:
    """Networking value of the reference, of the first ``n_members`` members and of their mean."""
    try:
        return {"ref": _networking_value(c.field),
                "members": [_networking_value(_pred_field(p, c.field)) for p in pm[:n_members]],
                "ensemble": _networking_value(_pred_field(pm.mean(0), c.field))}
    except ImportError as exc:  # topology module not installed in this tree
        return {"error": f"elfcore.topology unavailable: {exc}"}


def _table_s1_rows(split: dict, evals: dict, phi: dict) -> list[dict]:
    """Table S1 analogue: pooled ELF errors per set, then the networking value per crystal family."""
    rows = [_pooled_row("training snapshots, ELF", split["train"], evals)]
    if split["test"]:
        rows.append(_pooled_row("independent fluid snapshots, ELF", split["test"], evals))
    rows += [_pooled_row(f"random {fam} crystals, ELF", split[fam], evals) for fam in FAMILIES if split[fam]]
    rows += [_phi_row(f"random {fam} crystals, networking value", split[fam], phi) for fam in FAMILIES if split[fam]]
    if len(split["shown"]) >= 2:
        rows.append(_phi_row("shown fluid snapshots (one per pressure), networking value", split["shown"], phi))
    return rows


def _table_s2_rows(split: dict, per_case: dict, evals: dict) -> list[dict]:
    """Table S2 analogue: every independent snapshot, then all snapshots of each MD pooled."""
    rows = []
    for c in split["test"]:
        rows.append({"set": c.name, "pressure_gpa": c.pressure, "md_step": c.md_step,
                     **{k: per_case[c.name][k] for k in ("mae", "mae_std", "rmse", "rmse_std", "r2", "r2_std", "n")}})
    for p, cs in _pressure_groups(split["test"]).items():
        rows.append({**_pooled_row(f"all independent snapshots of the {p:g} GPa MD", cs, evals),
                     "pressure_gpa": p, "md_step": None})
    return rows


def pool_split(split: dict) -> dict[str, list[Case]] | None:
    """Training pool of the larger-training-set variant (docs/science.md §4).

    Per MD (target pressure), the independent snapshots are ordered by MD step; the
    2nd, 4th, ... join the training snapshot in the pool and the 1st, 3rd, 5th, ...
    are held out. Returns ``None`` when some MD has fewer than two independent
    snapshots (nothing to hold out then).
    """
    by_p = _pressure_groups(split["test"])
    if not by_p or any(len(v) < 2 for v in by_p.values()):
        return None
    extra, held = [], []
    for cs in by_p.values():
        cs = sorted(cs, key=lambda c: (c.md_step or 0, c.name))
        extra += cs[1::2]
        held += cs[0::2]
    return {"train": list(split["train"]) + extra, "held_out": held}


def run_pool_variant(
    split: dict, s: ReproduceSettings, baseline_arrays: dict, *, device: str | torch.device = "auto"
) -> dict:
    """Train the larger-training-set variant and score it beside the baseline.

    Both are scored on the same held-out snapshots (see :func:`pool_split`) with the
    same voxels; the variant uses the baseline protocol (voxels per snapshot, epochs)
    with ``s.pool_members`` members.

    Raises
    ------
    ElfcoreError
        If there are too few independent snapshots for a held-out set.
    """
    ps = pool_split(split)
    if ps is None:
        raise ElfcoreError("the pooled-training variant needs >= 2 independent snapshots per pressure")
    t0 = time.perf_counter()
    X, y = training_samples(ps["train"], s.descriptor, s.train.n_voxels, seed=s.seed, device=device)
    model = train_model(X, y, s.descriptor, s.train, seed=s.seed, n_members=s.pool_members, device=device,
                        progress=False)
    del X, y
    t_train = time.perf_counter() - t0
    ev = {}
    for c in ps["held_out"]:
        f = stride_field(c.field, s.eval_stride)
        pm = predict_members(model, f, device=device)
        ev[c.name] = (pm.reshape(pm.shape[0], -1), np.asarray(f.values, dtype=np.float64).reshape(-1))
    base_ev = baseline_arrays["eval"]
    n_base = len(split["train"])
    rows = [
        {**_pooled_row(f"paper protocol: {n_base} training snapshots (one per pressure)", ps["held_out"], base_ev),
         "n_train": n_base},
        {**_pooled_row(f"pooled: {len(ps['train'])} training snapshots", ps["held_out"], ev),
         "n_train": len(ps["train"])},
    ]
    per_case = []
    for c in ps["held_out"]:
        per_case.append({"case": c.name, "target_pressure_gpa": c.target_pressure,
                         "baseline": member_stats(*base_ev[c.name]), "pooled": member_stats(*ev[c.name])})
    return {"train_cases": [c.name for c in ps["train"]], "held_out": [c.name for c in ps["held_out"]],
            "rows": rows, "cases": per_case, "train_seconds": round(t_train, 1),
            "seconds": round(time.perf_counter() - t0, 1)}


def _unique(cases: Sequence[Case]) -> list[Case]:
    seen, out = set(), []
    for c in cases:
        if c.name not in seen:
            seen.add(c.name)
            out.append(c)
    return out


def _pooled_row(label: str, cases: Sequence[Case], ev: dict) -> dict:
    pe = np.concatenate([ev[c.name][0] for c in cases], axis=1)
    ref = np.concatenate([ev[c.name][1] for c in cases])
    return {"set": label, "n_cases": len(cases), **member_stats(pe, ref)}


def _phi_row(label: str, cases: Sequence[Case], phi: dict) -> dict:
    use = [c for c in cases if c.name in phi and "error" not in phi[c.name] and phi[c.name]["ref"] is not None
           and all(v is not None for v in phi[c.name]["members"])]
    row: dict[str, Any] = {"set": label, "n_cases": len(use), "skipped": [c.name for c in cases if c.name not in {u.name for u in use}]}
    if len(use) < 2:
        row["error"] = "fewer than two crystals with a networking value"
        return row
    ref = np.array([phi[c.name]["ref"] for c in use])
    pe = np.array([phi[c.name]["members"] for c in use]).T  # (members, crystals)
    row.update(member_stats(pe, ref))
    row["phi_ref"] = ref.tolist()
    row["phi_pred_mean"] = pe.mean(0).tolist()
    return row


# --------------------------------------------------------------------------- sweeps (Fig. S2)
def _sweep_eval_cases(split: dict, per_pressure: int) -> tuple[list[Case], str]:
    if split["test"]:
        by_p: dict[Any, list[Case]] = {}
        for c in split["test"]:
            by_p.setdefault(c.pressure, []).append(c)
        return [c for cs in by_p.values() for c in cs[:per_pressure]], "independent fluid snapshots"
    return list(split["train"]), "training snapshots (no independent snapshots available)"


def run_sweeps(split: dict, s: ReproduceSettings, *, device: str | torch.device = "auto") -> dict:
    """R² vs width, hidden layers, Huber δ, r_cut, n_radial, l_max (one at a time).

    Each point is one MLP trained with ``s.sweep_train`` on the training snapshots and
    scored on every voxel of the ``s.sweep_stride`` sub-lattice of the evaluation
    snapshots.
    """
    t0 = time.perf_counter()
    eval_cases, eval_label = _sweep_eval_cases(split, s.sweep_eval_per_pressure)
    base_d = s.descriptor
    base_t = s.sweep_train
    cache: dict[DescriptorSettings, tuple] = {}

    def data(d: DescriptorSettings):
        if d not in cache:
            X, y = training_samples(split["train"], d, base_t.n_voxels, seed=s.seed, stride=s.sweep_stride, device=device)
            ev = []
            for c in eval_cases:
                f = stride_field(c.field, s.sweep_stride)
                ev.append((_grid_descriptor(f, d, device).cpu(), np.asarray(f.values, dtype=np.float64).reshape(-1)))
            cache.clear()  # keep one descriptor set in memory
            cache[d] = (X, y, ev)
        return cache[d]

    def score(d: DescriptorSettings, t: TrainSettings) -> dict:
        X, y, ev = data(d)
        model = train_model(X, y, d, t, seed=s.seed, n_members=1, device=device, progress=False)
        with torch.no_grad():
            preds = [model.predict(Xe).cpu().numpy() for Xe, _ in ev]
        m = metrics(np.concatenate(preds), np.concatenate([r for _, r in ev]))
        return {k: m[k] for k in ("mae", "rmse", "r2")}

    params = {
        "width": [(base_d, dataclasses.replace(base_t, width=v)) for v in s.sweep_width],
        "hidden_layers": [(base_d, dataclasses.replace(base_t, hidden_layers=v)) for v in s.sweep_hidden_layers],
        "huber_delta": [(base_d, dataclasses.replace(base_t, huber_delta=v)) for v in s.sweep_huber_delta],
        "r_cut": [(dataclasses.replace(base_d, r_cut=v), base_t) for v in s.sweep_r_cut],
        "n_radial": [(dataclasses.replace(base_d, n_radial=v), base_t) for v in s.sweep_n_radial],
        "l_max": [(dataclasses.replace(base_d, l_max=v), base_t) for v in s.sweep_l_max],
    }
    values = {
        "width": s.sweep_width, "hidden_layers": s.sweep_hidden_layers, "huber_delta": s.sweep_huber_delta,
        "r_cut": s.sweep_r_cut, "n_radial": s.sweep_n_radial, "l_max": s.sweep_l_max,
    }
    baseline = {"width": base_t.width, "hidden_layers": base_t.hidden_layers, "huber_delta": base_t.huber_delta,
                "r_cut": base_d.r_cut, "n_radial": base_d.n_radial, "l_max": base_d.l_max}
    out: dict[str, Any] = {"eval_set": eval_label, "eval_cases": [c.name for c in eval_cases], "params": {}}
    done: dict[tuple, dict] = {}
    # descriptor-changing sweeps last, so the baseline descriptors are computed once
    for name in ("width", "hidden_layers", "huber_delta", "r_cut", "n_radial", "l_max"):
        rows = []
        for v, (d, t) in zip(values[name], params[name]):
            key = (d, t)
            if key not in done:
                done[key] = score(d, t)
                log.info("sweep %s=%s: R² %.4f", name, v, done[key]["r2"])
            rows.append({"value": v, **done[key]})
        out["params"][name] = {"baseline": baseline[name], "points": rows}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


# --------------------------------------------------------------------------- CNN (Fig. S1)
def run_cnn(
    split: dict, s: ReproduceSettings, baseline_arrays: dict, *, device: str | torch.device = "auto"
) -> tuple[dict, dict]:
    """Train the 3D CNN for every r_cut of the sweep and compare with the MLP.

    Returns
    -------
    results : dict
        ``sweep`` (r_cut → metrics on the shown snapshots), ``baseline`` (r_cut of
        ``s.cnn_patch``), ``residual_correlation`` (Pearson r between the CNN and MLP
        residuals on the shown voxels and on the slice).
    arrays : dict
        ``pred``/``mlp``/``ref`` on the scored voxels (baseline r_cut), and a slice:
        ``slice_cnn``, ``slice_mlp``, ``slice_ref`` (Na, Nb), ``slice_case``.
    """
    from ..models.cnn import cnn_voxel_samples, predict_cnn_points, train_cnn
    from ..train import voxel_points_cart

    t0 = time.perf_counter()
    shown = split["shown"]
    mlp_full = baseline_arrays["shown"]
    sweep = []
    arrays: dict[str, Any] = {}
    r_cuts = sorted(set(s.cnn_r_cuts) | {s.cnn_patch.r_cut})
    for rc in r_cuts:
        ps = dataclasses.replace(s.cnn_patch, r_cut=rc)
        Xs, ys = [], []
        for i, c in enumerate(split["train"]):
            X, y, _ = cnn_voxel_samples(c.field, ps, s.cnn_train.n_voxels, seed=s.seed + 1000 * i, device=device)
            Xs.append(X)
            ys.append(y)
        model = train_cnn(torch.cat(Xs), torch.cat(ys), ps, s.cnn_train, channels=s.cnn_channels,
                          seed=s.seed, device=device, progress=False)
        del Xs, ys
        preds, refs, mlps = [], [], []
        for c in shown:
            idx = sample_voxels(c.field.shape, s.cnn_eval_voxels, seed=s.seed + 1).numpy()
            pts = voxel_points_cart(c.field.shape, idx, field_cell(c.field))
            preds.append(predict_cnn_points(model, field_atoms(c.field), pts).numpy().astype(np.float64))
            refs.append(np.asarray(c.field.values, dtype=np.float64).reshape(-1)[idx])
            mlps.append(np.asarray(mlp_full[c.name], dtype=np.float64).reshape(-1)[idx])
        pred, ref, mlp = np.concatenate(preds), np.concatenate(refs), np.concatenate(mlps)
        m = metrics(pred, ref)
        row = {"r_cut": rc, **{k: m[k] for k in ("mae", "rmse", "r2", "n_voxels")},
               "train_seconds": model.metadata.get("train_seconds")}
        sweep.append(row)
        log.info("cnn r_cut=%.2f: R² %.4f", rc, m["r2"])
        if rc == s.cnn_patch.r_cut:
            arrays.update(pred=pred, ref=ref, mlp=mlp)
            c = shown[0]
            na, nb, _ = c.field.shape
            ij = np.stack(np.meshgrid(np.arange(na), np.arange(nb), indexing="ij"), -1).reshape(-1, 2)
            frac = np.column_stack([ij[:, 0] / na, ij[:, 1] / nb, np.zeros(len(ij))])
            sl = predict_cnn_points(model, field_atoms(c.field), frac @ field_cell(c.field)).numpy()
            arrays.update(
                slice_case=c.name,
                slice_cnn=sl.reshape(na, nb),
                slice_mlp=np.asarray(mlp_full[c.name])[:, :, 0],
                slice_ref=np.asarray(c.field.values)[:, :, 0],
                slice_cell=field_cell(c.field),
            )
    base = next(r for r in sweep if r["r_cut"] == s.cnn_patch.r_cut)
    res_cnn = arrays["pred"] - arrays["ref"]
    res_mlp = arrays["mlp"] - arrays["ref"]
    sl_cnn = (arrays["slice_cnn"] - arrays["slice_ref"]).ravel()
    sl_mlp = (arrays["slice_mlp"] - arrays["slice_ref"]).ravel()
    mlp_m = metrics(arrays["mlp"], arrays["ref"])
    results = {
        "patch": s.cnn_patch.to_dict(),
        "channels": list(s.cnn_channels),
        "train": s.cnn_train.to_dict(),
        "eval_cases": [c.name for c in shown],
        "sweep": sweep,
        "baseline": base,
        "best": max(sweep, key=lambda r: r["r2"]),
        "mlp_same_voxels": {k: mlp_m[k] for k in ("mae", "rmse", "r2")},
        "residual_correlation_voxels": float(np.corrcoef(res_cnn, res_mlp)[0, 1]),
        "residual_correlation_slice": float(np.corrcoef(sl_cnn, sl_mlp)[0, 1]),
        "residual_std_slice": {"cnn": float(sl_cnn.std()), "mlp": float(sl_mlp.std())},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return results, arrays


# --------------------------------------------------------------------------- k-correction (Fig. S3)
def run_kcorrection(split: dict, s: ReproduceSettings, baseline_arrays: dict) -> tuple[dict, dict]:
    """Oracle k-correction of the ensemble-mean prediction of each shown snapshot.

    Returns
    -------
    results : dict
        Per case: pressure, cell lengths, ``n_shells``, ``n_basis``, ``k_last`` and the
        before/after metrics from :func:`elfcore.kspace.oracle_correction`.
    arrays : dict
        {case name: (residual before (Na, Nb, Nc), residual after, cell)}.
    """
    rows, arrays = [], {}
    for c in split["shown"]:
        row, arrays[c.name] = _kcorrection_row(c, _pred_field(baseline_arrays["shown"][c.name], c.field), s.k_shells)
        rows.append(row)
    return {"n_shells": s.k_shells, "cases": rows}, arrays


def _kcorrection_row(c: Case, pred: xr.DataArray, n_shells: int) -> tuple[dict, tuple]:
    """The oracle k-correction of ``pred`` on case ``c``: its table row and (residual before, after, cell)."""
    from ..kspace import oracle_correction

    kc = oracle_correction(pred, c.field, n_shells=n_shells)
    info = {k: (plain(v) if np.ndim(v) == 0 else np.asarray(v).tolist()) for k, v in kc.info.items()}
    row = {"case": c.name, "pressure_gpa": c.pressure, "n_atoms": c.n_atoms,
           "cell_lengths": np.linalg.norm(field_cell(c.field), axis=1).tolist(), **info}
    ref = np.asarray(c.field.values, dtype=np.float64)
    return row, (np.asarray(pred.values) - ref, np.asarray(kc.corrected.values) - ref, field_cell(c.field))


# --------------------------------------------------------------------------- large cells
def run_large_cells(
    split: dict, s: ReproduceSettings, baseline_arrays: dict, *, device: str | torch.device = "auto"
) -> tuple[dict, dict]:
    """The large fluid cells (≥ :data:`LARGE_CELL_ATOMS` atoms): Tables S1/S2 and Fig. S3 on them.

    The baseline ensemble (paper protocol, 64-atom training snapshots) is scored on every
    large test cell; beside it a variant trained on the same snapshots plus the large
    training cells (baseline protocol, ``s.pool_members`` members) is scored on the same
    voxels. On the full grid of each large test cell the baseline's member-mean
    residual is analysed in k-space (:func:`elfcore.kspace.residual_analysis`: power below
    1 Å⁻¹, correlation length, oracle R² with ``s.large_shells`` shells, sparse fits
    from ``s.large_sparse_fractions`` of the voxels).

    Returns
    -------
    results : dict
        ``cases`` (per cell: description, ``baseline`` and ``variant`` member stats,
        ``kspace``), ``rows`` (pooled per target pressure and over all cells, both
        models), ``variant_train`` (case names), ``shells``, ``seconds``.
    arrays : dict
        {case name: (residual before, residual after ``s.k_shells`` shells, cell)} for
        the first large test cell of each pressure (Fig. S3 on a large cell; their rows,
        in the format of :func:`run_kcorrection`, are ``results["kcorrection"]``).

    Raises
    ------
    ElfcoreError
        If there is no large test cell.
    """
    from ..kspace import residual_analysis

    tests = sorted(split["large_test"], key=lambda c: (c.target_pressure or 0.0, c.md_step or 0, c.name))
    if not tests:
        raise ElfcoreError(f"no large test cell (fluid, role 'test', ≥ {LARGE_CELL_ATOMS} atoms)")
    t0 = time.perf_counter()
    base = baseline_arrays["model"]
    variant, variant_train = None, []
    if split["large_train"]:
        variant_train = list(split["train"]) + list(split["large_train"])
        X, y = training_samples(variant_train, s.descriptor, s.train.n_voxels, seed=s.seed, device=device)
        variant = train_model(X, y, s.descriptor, s.train, seed=s.seed, n_members=s.pool_members,
                              device=device, progress=False)
        del X, y
    t_train = time.perf_counter() - t0
    figure_names = {cs[0].name for cs in _pressure_groups(tests).values()}
    ev_base, ev_var, per_case, k_rows, arrays = {}, {}, [], [], {}
    for c in tests:
        pm = predict_members(base, c.field, device=device)
        ev_base[c.name] = _eval_voxels(pm, c.field, s.eval_stride)[:2]
        row = {**c.describe(), "baseline": member_stats(*ev_base[c.name])}
        if variant is not None:
            ev_var[c.name] = _eval_voxels(predict_members(variant, c.field, device=device), c.field,
                                          s.eval_stride)[:2]
            row["variant"] = member_stats(*ev_var[c.name])
        mean = _pred_field(pm.mean(0), c.field)
        del pm
        row["kspace"] = residual_analysis(mean, c.field, shells=s.large_shells,
                                          sparse_fractions=s.large_sparse_fractions, sparse_shells=s.k_shells,
                                          seed=s.seed)
        per_case.append(row)
        if c.name in figure_names:
            k_row, arrays[c.name] = _kcorrection_row(c, mean, s.k_shells)
            k_rows.append(k_row)
        log.info("large cell %s: R² %.4f (baseline)", c.name, row["baseline"]["r2"])
    rows = []
    groups = list(_pressure_groups(tests).items())
    for p, cs in groups + ([("all", tests)] if len(groups) > 1 else []):
        label = "all large test cells" if p == "all" else f"large test cells of the {p:g} GPa MD"
        r = {"set": label, "target_pressure_gpa": None if p == "all" else p, "n_cases": len(cs),
             "baseline": _pooled_row(label, cs, ev_base)}
        if variant is not None:
            r["variant"] = _pooled_row(label, cs, ev_var)
        rows.append(r)
    results = {"cases": per_case, "rows": rows, "variant_train": [c.name for c in variant_train],
               "variant_members": s.pool_members if variant is not None else 0,
               "shells": list(s.large_shells), "sparse_fractions": list(s.large_sparse_fractions),
               "k_shells": s.k_shells, "kcorrection": k_rows, "train_seconds": round(t_train, 1),
               "seconds": round(time.perf_counter() - t0, 1)}
    return results, arrays
