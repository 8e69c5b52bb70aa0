"""Reports and scans of the k-space correction (``elfcore kcorrect --analysis/--scan``).

Built on the primitives of :mod:`elfcore.kspace`:

* :func:`residual_analysis` — where the power of a residual lies and how far it is correlated;
* :func:`shell_scan` — oracle correction for several numbers of shells;
* :func:`sparse_scan` — sparse-fit R² against the number of samples and of shells;
* :func:`ensemble_shell_scan` — :func:`shell_scan` per member of an ensemble.
"""
from __future__ import annotations

import logging
import math
import warnings
from typing import Iterable, Sequence

import numpy as np
import xarray as xr

from ..errors import GridError, SettingsError
from ..grid import field_cell, make_field
from ..kspace import (
    DEFAULT_EPS,
    DEFAULT_SHELL_TOL,
    IllConditionedWarning,
    autocorrelation,
    check_same_grid,
    correction_metrics,
    correlation_length,
    k_magnitudes,
    logit,
    logit_residual,
    low_k_fraction,
    lowk_basis,
    oracle_correction,
    power_spectrum,
    project,
    sigmoid,
    sparse_correction,
    synthesize,
)

__all__ = ["residual_analysis", "shell_scan", "sparse_scan", "ensemble_shell_scan"]

log = logging.getLogger(__name__)


def _residual(pred: xr.DataArray, ref: xr.DataArray, eps: float, space: str) -> xr.DataArray:
    """The logit residual Δ (``space="logit"``) or ``pred − ref`` (``space="elf"``)."""
    if space == "logit":
        return logit_residual(pred, ref, eps=eps)
    if space == "elf":
        check_same_grid(pred, ref)
        diff = np.asarray(pred.values, np.float64) - np.asarray(ref.values, np.float64)
        return make_field(diff, field_cell(pred), name="residual", attrs={"space": "elf"})
    raise SettingsError(f"space={space!r}; must be 'logit' or 'elf'")


def _k_centroid(res: xr.DataArray) -> float:
    """Power-weighted mean ``|G|`` over ``G ≠ 0`` (Å⁻¹); nan for a constant field."""
    arr = res.values
    power = np.abs(np.fft.fftn(arr)) ** 2 / arr.size**2
    kg = k_magnitudes(field_cell(res), arr.shape)
    nz = kg > 0
    total = float(power[nz].sum())
    return float((kg[nz] * power[nz]).sum() / total) if total > 0 else float("nan")


def residual_analysis(
    pred: xr.DataArray, ref: xr.DataArray, *, eps: float = DEFAULT_EPS, k_cut: float = 1.0, space: str = "logit"
) -> dict:
    """Spectral summary of a residual: where its power lies and how far it is correlated.

    Parameters
    ----------
    pred, ref : xarray.DataArray
        Predicted and reference ELF on one grid.
    eps : float
        Logit clip.
    k_cut : float
        Cut for the low-k power fraction, Å⁻¹.
    space : {"logit", "elf"}
        Analyse the logit residual Δ (default) or the ELF residual ``pred − ref``.

    Returns
    -------
    dict
        ``cell_lengths`` (Å), ``volume`` (Å³), ``grid``, ``k_first`` (Å⁻¹), ``rms``,
        ``mean``, ``low_k_fraction`` / ``low_k_fraction_fluct`` (power at ``|G| ≤ k_cut``,
        with / without ``G = 0``), ``k_centroid`` (power-weighted mean ``|G|`` over
        ``G ≠ 0``, Å⁻¹), ``wavelength_centroid = 2π / k_centroid`` (Å),
        ``correlation_length`` (1/e of the autocorrelation, Å; nan if beyond ``r_max``),
        ``r_max`` (Å), and ``spectrum`` (the :func:`~elfcore.kspace.power_spectrum` Dataset).
    """
    res = _residual(pred, ref, eps, space)
    cell = field_cell(res)
    arr = res.values
    kc = _k_centroid(res)
    lk = low_k_fraction(res, k_cut)
    ac = autocorrelation(res) if float(np.var(arr)) > 0 else None
    return {
        "space": space,
        "cell_lengths": [float(x) for x in np.linalg.norm(cell, axis=1)],
        "volume": float(abs(np.linalg.det(cell))),
        "grid": [int(n) for n in arr.shape],
        "k_first": lk["k_first"],
        "mean": float(arr.mean()),
        "rms": float(np.sqrt(np.mean(arr**2))),
        "k_cut": float(k_cut),
        "low_k_fraction": lk["fraction"],
        "low_k_fraction_fluct": lk["fraction_fluct"],
        "n_modes_below_cut": lk["n_modes"],
        "k_centroid": kc,
        "wavelength_centroid": 2 * math.pi / kc if kc > 0 else float("nan"),
        "correlation_length": correlation_length(res) if ac is not None else float("nan"),
        "r_max": float(ac.attrs["r_max"]) if ac is not None else float("nan"),
        "spectrum": power_spectrum(res),
    }


def shell_scan(
    pred: xr.DataArray,
    ref: xr.DataArray,
    *,
    shells: Iterable[int] = range(9),
    eps: float = DEFAULT_EPS,
    shell_tol: float = DEFAULT_SHELL_TOL,
) -> xr.Dataset:
    """Oracle correction for several numbers of shells.

    Returns
    -------
    xarray.Dataset
        dim ``n_shells``; variables ``k_last`` (Å⁻¹), ``n_basis``, ``r2_after``,
        ``mae_after``, ``rmse_after``, ``captured_fraction`` (share of the mean square
        of Δ the basis holds); attrs ``r2_before``, ``mae_before``, ``rmse_before``,
        ``cell_lengths``, ``grid``. Shell counts beyond the grid's Nyquist limit are left out.
    """
    delta = logit_residual(pred, ref, eps=eps).values
    mean_square = float(np.mean(delta**2))
    lp = logit(pred.values, eps)
    rows = []
    for n in sorted(int(s) for s in shells):
        try:
            basis = lowk_basis(field_cell(pred), pred.shape, n_shells=n, shell_tol=shell_tol)
        except GridError as exc:
            log.info("shell_scan: stopping at n_shells=%d (%s)", n, exc)
            break
        c = project(delta, basis)
        m = correction_metrics(pred.values, ref.values, sigmoid(lp + synthesize(c, basis)))
        captured = float(np.sum(c**2) / mean_square) if mean_square > 0 else float("nan")
        rows.append((n, basis.k_last, basis.n_basis, m["r2_after"], m["mae_after"], m["rmse_after"], captured))
    before = correction_metrics(pred.values, ref.values, pred.values)
    cols = list(zip(*rows)) if rows else [[]] * 7
    names = ("k_last", "n_basis", "r2_after", "mae_after", "rmse_after", "captured_fraction")
    dtypes = (float, int, float, float, float, float)
    return xr.Dataset(
        {k: ("n_shells", np.asarray(col, dt)) for k, col, dt in zip(names, cols[1:], dtypes)},
        coords={"n_shells": np.asarray(cols[0], int)},
        attrs={
            "r2_before": before["r2_before"], "mae_before": before["mae_before"],
            "rmse_before": before["rmse_before"],
            "cell_lengths": np.linalg.norm(field_cell(pred), axis=1), "grid": np.asarray(pred.shape),
            "eps": float(eps), "mode": "oracle",
        },
    )


def _sparse_repeats(pred, ref, basis, n_samples: int, seeds, eps: float, ridge) -> dict:
    """Mean/std R², mean MAE, median condition number and regularised count over ``seeds``."""
    r2, mae, cond, n_reg = [], [], [], 0
    for seed in seeds:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", IllConditionedWarning)
            res = sparse_correction(pred, ref, n_samples=n_samples, seed=seed, basis=basis, eps=eps, ridge=ridge)
        n_reg += sum(issubclass(w.category, IllConditionedWarning) for w in caught)
        r2.append(res.info["r2_after"])
        mae.append(res.info["mae_after"])
        cond.append(res.info["condition_number"])
    return {"r2_after": np.mean(r2), "r2_after_std": np.std(r2), "mae_after": np.mean(mae),
            "condition_number": np.median(cond), "n_regularised": n_reg}


def sparse_scan(
    pred: xr.DataArray,
    ref: xr.DataArray,
    *,
    shells: Iterable[int] = (1, 2, 3),
    n_samples: Iterable[int] = (100, 300, 1000, 3000),
    seed: int = 0,
    repeats: int = 3,
    eps: float = DEFAULT_EPS,
    ridge: float | str = "auto",
) -> xr.Dataset:
    """R² of the sparse correction versus number of samples M and of shells.

    Each (n_shells, M) is fitted ``repeats`` times with voxel draws seeded by
    ``numpy.random.SeedSequence(seed)`` children; ill-conditioned fits are regularised
    (``ridge="auto"``) and their warnings are collected into ``n_regularised``.

    Returns
    -------
    xarray.Dataset
        dims ``(n_shells, n_samples)``; variables ``r2_after`` (mean over repeats),
        ``r2_after_std``, ``mae_after``, ``condition_number`` (median), ``n_regularised``,
        ``n_basis`` (per shell), ``r2_oracle`` (per shell); attrs ``r2_before``.
    """
    check_same_grid(pred, ref)
    shells = list(shells)
    n_samples = list(n_samples)
    if repeats < 1:
        raise SettingsError(f"repeats={repeats}; must be ≥ 1")
    seeds = iter(np.random.SeedSequence(seed).spawn(len(shells) * len(n_samples) * repeats))
    grid = {k: np.full((len(shells), len(n_samples)), np.nan)
            for k in ("r2_after", "r2_after_std", "mae_after", "condition_number")}
    grid["n_regularised"] = np.zeros((len(shells), len(n_samples)), int)
    n_basis = np.zeros(len(shells), int)
    r2_oracle = np.zeros(len(shells))
    for i, ns in enumerate(shells):
        basis = lowk_basis(field_cell(pred), pred.shape, n_shells=ns)
        n_basis[i] = basis.n_basis
        r2_oracle[i] = oracle_correction(pred, ref, basis=basis, eps=eps).info["r2_after"]
        for j, m in enumerate(n_samples):
            draws = [next(seeds) for _ in range(repeats)]
            for k, v in _sparse_repeats(pred, ref, basis, m, draws, eps, ridge).items():
                grid[k][i, j] = v
    before = correction_metrics(pred.values, ref.values, pred.values)
    dims = ("n_shells", "n_samples")
    return xr.Dataset(
        {**{k: (dims, v) for k, v in grid.items()},
         "n_basis": ("n_shells", n_basis), "r2_oracle": ("n_shells", r2_oracle)},
        coords={"n_shells": np.asarray(shells, int), "n_samples": np.asarray(n_samples, int)},
        attrs={"r2_before": before["r2_before"], "mae_before": before["mae_before"], "repeats": int(repeats),
               "seed": int(seed), "eps": float(eps), "grid": np.asarray(pred.shape)},
    )


def ensemble_shell_scan(
    preds: Sequence[xr.DataArray],
    ref: xr.DataArray,
    *,
    shells: Iterable[int] = range(9),
    eps: float = DEFAULT_EPS,
) -> xr.Dataset:
    """:func:`shell_scan` for every member of an ensemble of predictions.

    Parameters
    ----------
    preds : sequence of xarray.DataArray
        One predicted field per ensemble member (same grid as ``ref``).

    Returns
    -------
    xarray.Dataset
        The :func:`shell_scan` variables with an extra leading dim ``member``, plus
        ``r2_before`` and ``mae_before`` over ``member``; take ``.mean("member")`` /
        ``.std("member")`` for the ensemble spread.
    """
    preds = list(preds)
    if not preds:
        raise SettingsError("no ensemble members given")
    shells = list(shells)
    scans = [shell_scan(p, ref, shells=shells, eps=eps) for p in preds]
    n = min(len(s["n_shells"]) for s in scans)
    ds = xr.concat([s.isel(n_shells=slice(0, n)) for s in scans], dim="member", combine_attrs="drop")
    ds["r2_before"] = ("member", np.array([s.attrs["r2_before"] for s in scans]))
    ds["mae_before"] = ("member", np.array([s.attrs["mae_before"] for s in scans]))
    ds.attrs.update(eps=float(eps), mode="oracle", n_members=len(preds))
    return ds
