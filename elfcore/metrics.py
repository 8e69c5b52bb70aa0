"""Accuracy metrics of predicted ELF fields: the one definition used everywhere in elfcore.

:func:`metrics` gives MAE, RMSE and R² of one prediction; :func:`member_metrics`
applies it to every member of an ensemble prediction and :func:`summarise`
condenses those into the report rows of ``elfcore evaluate`` (mean and spread
over members, plus the metrics of the member-mean prediction).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["metrics", "member_metrics", "summarise"]


def _as_float64(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
    return np.asarray(values, dtype=np.float64).ravel()


def metrics(pred, ref) -> dict[str, float | int]:
    """Accuracy of a predicted ELF against the reference.

    Parameters
    ----------
    pred, ref : array_like or torch.Tensor, same shape (any)
        Predicted and reference values (dimensionless ELF).

    Returns
    -------
    dict
        ``mae`` (mean absolute error), ``rmse`` (root mean square error), ``r2``
        (coefficient of determination ``1 - Σ(p-r)² / Σ(r-mean r)²``, computed in
        float64; NaN for a constant reference) and ``n_voxels`` (number of values).

    Raises
    ------
    ValueError
        If the two inputs hold different numbers of values or none.

    Examples
    --------
    >>> m = metrics([0.1, 0.5, 0.9], [0.1, 0.5, 0.7])
    >>> round(m["mae"], 4), round(m["rmse"], 4), round(m["r2"], 4), m["n_voxels"]
    (0.0667, 0.1155, 0.7857, 3)
    """
    p, r = _as_float64(pred), _as_float64(ref)
    if p.shape != r.shape:
        raise ValueError(f"prediction has {p.size} values, reference {r.size}")
    if p.size == 0:
        raise ValueError("metrics of zero values")
    d = p - r
    ss_tot = float(np.sum((r - r.mean()) ** 2))
    ss_res = float(np.sum(d * d))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return {
        "mae": float(np.mean(np.abs(d))),
        "rmse": float(math.sqrt(ss_res / p.size)),
        "r2": float(r2),
        "n_voxels": int(p.size),
    }


def member_metrics(pred: torch.Tensor, ref: torch.Tensor) -> list[dict[str, float | int]]:
    """:func:`metrics` of every member: ``pred`` is (n_members, n), ``ref`` is (n,)."""
    return [metrics(p, ref) for p in pred]


def summarise(pred: torch.Tensor, ref: torch.Tensor) -> dict[str, Any]:
    """Report row of member predictions ``pred`` (n_members, n) against ``ref`` (n,).

    Returns
    -------
    dict
        One member: its :func:`metrics`. Several: ``mae``, ``rmse``, ``r2`` (mean
        over members), ``mae_std``, ``rmse_std``, ``r2_std`` (standard deviation over
        members, as in the paper's Table S1), ``n_voxels``, ``n_members``,
        ``ensemble_mean`` (metrics of the member-mean prediction) and
        ``mean_member_std`` (average predicted uncertainty).
    """
    per = member_metrics(pred, ref)
    if len(per) == 1:
        return dict(per[0])
    out: dict[str, Any] = {"n_voxels": per[0]["n_voxels"], "n_members": len(per)}
    for k in ("mae", "rmse", "r2"):
        vals = np.array([m[k] for m in per])
        out[k] = float(vals.mean())
        out[f"{k}_std"] = float(vals.std(ddof=1))
    out["ensemble_mean"] = metrics(pred.mean(0), ref)
    out["mean_member_std"] = float(pred.std(0, correction=0).mean())
    return out
