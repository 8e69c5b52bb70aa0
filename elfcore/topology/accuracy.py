"""Networking-value accuracy of predicted ELF fields (paper Table S1, ``docs/science.md`` §5).

φ is computed with the same merge-tree routine for the reference (DFT) and the
predicted field of every case, and the errors are pooled per crystal family.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import xarray as xr

from ..grid import case_field
from .mergetree import TopologySettings, networking_value

__all__ = ["phi_metrics", "networking_value_errors", "case_networking_errors"]


def phi_metrics(phi_ref: Sequence[float | None], phi_pred: Sequence[float | None]) -> dict:
    """MAE, RMSE and R² of predicted vs reference networking values.

    Pairs where either value is None (no 3D network) are left out and counted in
    ``n_missing``. R² is ``1 - SS_res / SS_tot`` (None with fewer than 2 pairs or no
    spread in the reference; every undefined metric is None, so the dict is valid JSON).
    """
    pairs = [(float(r), float(p)) for r, p in zip(phi_ref, phi_pred) if r is not None and p is not None]
    n_missing = len(list(zip(phi_ref, phi_pred))) - len(pairs)
    if not pairs:
        return {"mae": None, "rmse": None, "r2": None, "n": 0, "n_missing": n_missing}
    ref = np.array([r for r, _ in pairs])
    pred = np.array([p for _, p in pairs])
    err = pred - ref
    ss_tot = float(np.sum((ref - ref.mean()) ** 2))
    r2 = 1.0 - float(np.sum(err**2)) / ss_tot if len(ref) > 1 and ss_tot > 0 else None
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": r2,
        "n": len(pairs),
        "n_missing": n_missing,
    }


def networking_value_errors(
    items: Iterable[tuple[str, str, xr.DataArray, xr.DataArray]],
    settings: TopologySettings | None = None,
) -> dict:
    """φ of predicted vs reference fields, per case and pooled per family.

    Parameters
    ----------
    items : iterable of (name, family, reference field, predicted field)
        Both fields on the same periodic cell (grids may differ).
    settings : TopologySettings, optional

    Returns
    -------
    dict
        ``cases``: list of {name, family, phi_ref, phi_pred, error};
        ``families``: {family: phi_metrics(...)}; ``all``: metrics over every case.
    """
    settings = settings or TopologySettings()
    cases = []
    for name, family, ref, pred in items:
        r = networking_value(ref, settings)
        p = networking_value(pred, settings)
        err = None if r is None or p is None else float(p - r)
        cases.append({"name": str(name), "family": str(family), "phi_ref": r, "phi_pred": p, "error": err})
    families: dict[str, dict] = {}
    for fam in sorted({c["family"] for c in cases}):
        sel = [c for c in cases if c["family"] == fam]
        families[fam] = phi_metrics([c["phi_ref"] for c in sel], [c["phi_pred"] for c in sel])
    return {
        "cases": cases,
        "families": families,
        "all": phi_metrics([c["phi_ref"] for c in cases], [c["phi_pred"] for c in cases]),
        "settings": settings.to_dict(),
    }


def case_networking_errors(
    cases: Mapping[str, xr.Dataset] | Sequence[xr.Dataset],
    *,
    ref: str = "elf_ref",
    pred: str = "elf_pred",
    settings: TopologySettings | None = None,
) -> dict:
    """:func:`networking_value_errors` over case Datasets holding both fields.

    The family is read from the case attrs (``family``, default ``"unknown"``), the
    name from ``name`` (default: the mapping key or the position).
    """
    if isinstance(cases, Mapping):
        named = list(cases.items())
    else:
        named = [(ds.attrs.get("name", str(i)), ds) for i, ds in enumerate(cases)]
    items = (
        (name, ds.attrs.get("family", "unknown"), case_field(ds, ref), case_field(ds, pred)) for name, ds in named
    )
    return networking_value_errors(items, settings)
